"""A web chat site as data: ``sites/<name>.toml`` (selectors, mode steps, message patterns).

Selectors and UI wording change often; keeping them in one data file per site means a layout change is
an edit there (and in the stand-in skin), not in code. Every selector entry is an ordered list of CSS
fallbacks, best first. Message entries are lists of case-insensitive regular expressions.

File layout (every key below is required unless marked optional; :func:`load_site` refuses a file that
lacks one)::

    [site]
    name = "chatgpt"
    url = "https://chatgpt.com"          # default base URL (an account's ``url`` setting overrides it)
    new_chat_path = "/"                  # where a fresh conversation starts
    conversation_path = '^/c/...$'       # regex on the URL path of a persisted conversation
    progress_grace = 90                  # optional (default 90): seconds after sending within which the
                                         # page must show a sign of work (see provider.py)

    [selectors]                          # lists of CSS selectors
    composer, send, stop, user_turn, assistant_turn, reply_text, finished, thinking, banners, login,
    challenge
    turn_error                           # optional: the assistant turn's own error container
    history_item                         # optional: a link of the history list (sidebar) to a conversation,
                                         # newest first: how a turn sent before its URL was recorded is
                                         # found again (provider.py, reconcile)
    turn_mode                            # optional: the element of an assistant turn that names the model
                                         # or mode that answered it (its text holds the mode's label): how
                                         # a reconciled scarce-mode turn is confirmed; without it such a
                                         # turn is unconfirmed, so never delivered as that mode

    [messages]                           # lists of regexes
    quota, capacity, auth, transient     # notice classes, searched in notices: banners, toasts, dialogs,
                                         # the turn's error container, the title — never in a reply
    thinking                             # a short reply text that is a "still generating" placeholder
    signin_page, human_check             # optional: the text of a page with no composer that is the
                                         # site's sign-in page / a human check ("sign-in needed", "human
                                         # check" at once, not "the layout may have changed" later)
    downgrade                            # optional: a notice, after sending, that another (standard)
                                         # model answered: a scarce-mode turn is then not delivered

    [reply_notices]                      # optional: refusals the site renders AS the reply (both sites)
    quota, capacity, auth, transient     # lists of regexes of whole, distinctive phrases, matched at the
                                         # start of a short reply only: a genuine answer that mentions
                                         # "quota" is an answer

    [modes.standard] / [modes.deep]
    label = "Pro"                        # the UI's name for the mode ("{label}" in steps/verify)
    steps = [ {click = [...]}, {choose = [...], text = "{label}"}, ... ]
    verify = [ {selector = [...], text = "{label}"} | {absent = [...]} ]

A step clicks the first visible element of ``click``, or (``choose``) the first visible element whose text
matches ``text`` as a whole word and that is not disabled. ``if_visible`` / ``unless_visible`` (selector
lists) make a step conditional, e.g. "open Tools unless the Deep Think chip is already there". After the
steps every ``verify`` check must hold, read back from the page: the mode is confirmed, or not used.
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

SITES_DIR = Path(__file__).resolve().parent / "sites"
REQUIRED_SELECTORS = ("composer", "send", "stop", "user_turn", "assistant_turn", "reply_text", "finished",
                      "thinking", "banners", "login", "challenge")
OPTIONAL_SELECTORS = ("turn_error", "history_item", "turn_mode")
DEFAULT_PROGRESS_GRACE = 90.0
NOTICE_CLASSES = ("auth", "quota", "capacity", "transient")     # in order of precedence
REQUIRED_MESSAGES = NOTICE_CLASSES + ("thinking",)
REQUIRED_MODES = ("standard", "deep")


class SiteError(ValueError):
    """A site data file is missing, malformed or incomplete."""


@dataclass(frozen=True)
class Step:
    action: str                            # "click" | "choose"
    selectors: tuple[str, ...]
    text: str | None = None                # "choose": word to match ("{label}" substituted)
    if_visible: tuple[str, ...] = ()
    unless_visible: tuple[str, ...] = ()


@dataclass(frozen=True)
class Check:
    selectors: tuple[str, ...]
    text: str | None = None                # the element's text must contain this word
    absent: bool = False                   # none of the selectors may be visible


@dataclass(frozen=True)
class ModeSpec:
    label: str
    steps: tuple[Step, ...]
    verify: tuple[Check, ...]


@dataclass(frozen=True)
class SiteSpec:
    name: str
    url: str
    new_chat_path: str
    conversation_path: re.Pattern
    selectors: dict[str, tuple[str, ...]]
    messages: dict[str, tuple[re.Pattern, ...]]
    modes: dict[str, ModeSpec]
    reply_notices: dict[str, tuple[re.Pattern, ...]] = field(default_factory=dict)
    progress_grace: float = DEFAULT_PROGRESS_GRACE

    def is_conversation(self, path: str) -> bool:
        return bool(self.conversation_path.search(path))


def _selectors(value, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise SiteError(f"{where} must be a non-empty list of CSS selectors")
    return tuple(value)


def _patterns(value, where: str) -> tuple[re.Pattern, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise SiteError(f"{where} must be a non-empty list of regular expressions")
    try:
        return tuple(re.compile(v, re.IGNORECASE) for v in value)
    except re.error as exc:
        raise SiteError(f"{where}: bad regular expression: {exc}") from None


def _step(raw, where: str) -> Step:
    if not isinstance(raw, dict):
        raise SiteError(f"{where} must be a table")
    actions = [a for a in ("click", "choose") if a in raw]
    if len(actions) != 1:
        raise SiteError(f"{where} needs exactly one of click / choose")
    unknown = set(raw) - {"click", "choose", "text", "if_visible", "unless_visible"}
    if unknown:
        raise SiteError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    action = actions[0]
    text = raw.get("text")
    if action == "choose" and not (isinstance(text, str) and text):
        raise SiteError(f"{where}: choose needs text")
    return Step(action, _selectors(raw[action], f"{where}.{action}"), text,
                _selectors(raw["if_visible"], f"{where}.if_visible") if "if_visible" in raw else (),
                _selectors(raw["unless_visible"], f"{where}.unless_visible") if "unless_visible" in raw else ())


def _check(raw, where: str) -> Check:
    if not isinstance(raw, dict) or ("selector" in raw) == ("absent" in raw):
        raise SiteError(f"{where} must be a table with exactly one of selector / absent")
    if "absent" in raw:
        return Check(_selectors(raw["absent"], f"{where}.absent"), None, True)
    text = raw.get("text")
    if text is not None and not isinstance(text, str):
        raise SiteError(f"{where}.text must be a string")
    return Check(_selectors(raw["selector"], f"{where}.selector"), text, False)


def _mode(raw, where: str) -> ModeSpec:
    if not isinstance(raw, dict) or not isinstance(raw.get("label"), str) or not raw["label"]:
        raise SiteError(f"{where} must be a table with a label")
    steps = raw.get("steps", [])
    verify = raw.get("verify")
    if not isinstance(steps, list) or not isinstance(verify, list) or not verify:
        raise SiteError(f"{where} needs steps (a list, may be empty) and verify (a non-empty list)")
    return ModeSpec(raw["label"], tuple(_step(s, f"{where}.steps[{i}]") for i, s in enumerate(steps)),
                    tuple(_check(c, f"{where}.verify[{i}]") for i, c in enumerate(verify)))


def parse_site(data: dict, where: str = "site file") -> SiteSpec:
    """Validate a parsed data file. Raises SiteError naming the first problem."""
    site = data.get("site")
    if not isinstance(site, dict):
        raise SiteError(f"{where}: missing [site]")
    for key in ("name", "url", "new_chat_path", "conversation_path"):
        if not isinstance(site.get(key), str) or not site[key]:
            raise SiteError(f"{where}: [site] needs {key}")
    try:
        conv = re.compile(site["conversation_path"])
    except re.error as exc:
        raise SiteError(f"{where}: conversation_path: {exc}") from None
    sels = data.get("selectors")
    msgs = data.get("messages")
    modes = data.get("modes")
    if not isinstance(sels, dict) or not isinstance(msgs, dict) or not isinstance(modes, dict):
        raise SiteError(f"{where}: needs [selectors], [messages] and [modes.*]")
    for key in REQUIRED_SELECTORS:
        if key not in sels:
            raise SiteError(f"{where}: [selectors] lacks {key}")
    for key in REQUIRED_MESSAGES:
        if key not in msgs:
            raise SiteError(f"{where}: [messages] lacks {key}")
    for key in REQUIRED_MODES:
        if key not in modes:
            raise SiteError(f"{where}: lacks [modes.{key}]")
    return SiteSpec(
        name=site["name"], url=site["url"].rstrip("/"), new_chat_path=site["new_chat_path"],
        conversation_path=conv,
        selectors={k: _selectors(v, f"{where}: selectors.{k}") for k, v in sels.items()},
        messages={k: _patterns(v, f"{where}: messages.{k}") for k, v in msgs.items()},
        modes={k: _mode(v, f"{where}: modes.{k}") for k, v in modes.items()},
        reply_notices=_reply_notices(data.get("reply_notices", {}), where),
        progress_grace=_grace(site.get("progress_grace", DEFAULT_PROGRESS_GRACE), where))


def _reply_notices(raw, where: str) -> dict[str, tuple[re.Pattern, ...]]:
    if not isinstance(raw, dict) or set(raw) - set(NOTICE_CLASSES):
        raise SiteError(f"{where}: [reply_notices] may only hold {', '.join(NOTICE_CLASSES)}")
    return {k: _patterns(v, f"{where}: reply_notices.{k}") for k, v in raw.items()}


def _grace(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 3600:
        raise SiteError(f"{where}: [site] progress_grace must be seconds in (0, 3600], got {value!r}")
    return float(value)


_cache: dict[str, SiteSpec] = {}


def load_site(name: str, directory: Path | None = None) -> SiteSpec:
    """The site ``name`` from ``sites/<name>.toml`` (cached when read from the package)."""
    if directory is None and name in _cache:
        return _cache[name]
    path = (directory or SITES_DIR) / f"{name}.toml"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SiteError(f"no site data file {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SiteError(f"{path}: {exc}") from None
    spec = parse_site(data, str(path))
    if directory is None:
        _cache[name] = spec
    return spec
