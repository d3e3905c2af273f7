"""``claude``: the Anthropic Messages API through the official ``anthropic`` SDK (docs/architecture.md § Backends).

Settings (the ``[accounts.NAME]`` table; all optional; each key declared once in :class:`ClaudeSettings` and
validated by :mod:`shared.settings`)::

    [accounts.claude-main]
    backend = "claude"
    modes = ["standard", "deep"]
    api_key_env = "ANTHROPIC_API_KEY"     # or api_key_file = "~/.config/fano/claude.key" (never api_key)
    base_url = "https://api.anthropic.com" # default: the SDK's (a stand-in's URL in tests)
    model = "claude-sonnet-4-6"           # standard mode
    deep_model = "claude-opus-4-5"        # deep mode (with thinking = "enabled": a model that accepts
                                          # budget_tokens; Claude 4.7 and later need "adaptive")
    max_tokens = 8192                     # standard mode
    deep_max_tokens = 32000               # deep mode; must exceed thinking_budget
    thinking = "enabled"                  # deep mode: "enabled" (extended thinking, budget_tokens) or
                                          # "adaptive" (effort)
    thinking_budget = 16000               # >= 1024, for thinking = "enabled"
    effort = "high"                       # low|medium|high|xhigh|max, for thinking = "adaptive"
    system = ""                           # an optional system prompt for every request
    transcript_chars = 60000              # replay budget of a conversation (prompts + replies)
    timeout = 600                         # seconds without a byte from the API before giving up
    connect_timeout = 10
    billing_retry = 21600                 # cool-down after a spend-limit / credit refusal (seconds)
    proactive_cooldown = true             # requests bucket at 0: report the cool-down, do not send

Behaviour:

* The SDK's own retries are off (``max_retries=0``): every failure becomes a classified ProviderError
  (:mod:`services.backends.claude_errors`) and the worker/broker schedule the waits — including a
  ``retry-after`` of hours, which the SDK would not honour.
* Turns are streamed in a helper thread; ``send`` waits in slices of SLICE seconds looking at
  ``cancelled()`` and the helper stops between two stream events once told to, so a cancel returns at
  once and aborts the stream. An ``event: error`` after HTTP 200 is classified like the status it names.
* The ``anthropic-ratelimit-*`` headers of every answer (and of errors other than a quota refusal, which
  is its own report) are kept per model and returned in ``Reply.meta["ratelimit"]``; when the requests
  bucket is at 0 with a reset ahead, the next request is not sent and the cool-down is reported instead
  (``quota``, ``sent=False``).
* Conversations (docs/tasks.md § Conversations): the transcript lives in the account's
  :class:`~services.backends.conversations.ConversationStore` (``<data_dir>/backends/<account>/``). A
  turn replays a bounded window of the earlier exchanges; the summary of what is cut goes into the system
  prompt, where it stays pinned. ``mark_sent`` is written before the request leaves and ``record_reply``
  after the reply, both naming the task and attempt, so ``reconcile`` returns a reply this task received
  before a crash; otherwise the API is stateless and re-sending is allowed (None), and the log says
  whether the earlier attempt may have reached the API or never left (:meth:`resend_note`). ``send``
  never answers from the transcript: another task with the same conversation, turn index and prompt (a
  module re-asking after an unusable answer) is a new request.
* A bucket snapshot refuses one request at most: after reporting the cool-down it is dropped, so a
  ``fanoctl quota reset`` is not undone by stale headers (the API answers the next request itself).
* A reply that stopped at its token budget (``stop_reason: "max_tokens"``) is never the answer: the
  task's next attempt asks for twice the budget, once; cut again, it fails naming the setting to raise
  (:func:`services.backends.api_errors.length_cut`). A reply that finished with no text is not an answer
  either: ``transient`` (sent), so the next attempt asks again.
* Money is the organisation's: a spend-limit or credit refusal cools every mode of the account
  (``scope="account"``), not only the mode that hit it.
* A key in ``api_key_file`` is read again before every request; a changed key gets a new client, so
  after correcting the file, ``fanoctl backends resume`` is enough. A missing or unreadable file is an
  ``auth`` failure of each request (the account pauses, nothing is sent), never a failed worker start.
  ``check`` reports an unknown model as a model problem (``ok: false``, the setting to fix), not as a
  refused key.

The key is read by :class:`services.backends.secrets.KeySource` (once from the environment, before each
request from a file) and handed only to the SDK; it is in no message, no meta and no file of ours.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from services.backends.api_errors import length_cut, token_budget
from services.backends.base import ProviderError, Reply, Turn
from services.backends.claude_errors import classify_exception, exhausted_until, parse_ratelimit
from services.backends.conversations import Replay, TranscriptProvider, conversation_key, replay_window
from services.backends.secrets import KeyFileUnreadable, KeySource
from shared.config import ConfigError
from shared.settings import Invalid, load, setting

if TYPE_CHECKING:
    import anthropic

log = logging.getLogger("fano.backends.claude")

MODES = ("standard", "deep")
SLICE = 0.05                     # real seconds between two looks at cancelled()
EFFORTS = ("low", "medium", "high", "xhigh", "max")


def _url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise Invalid(f"expected an http:// or https:// URL, got {value!r}")
    return value.rstrip("/")


@dataclass(frozen=True)
class ClaudeSettings:
    """The ``[accounts.NAME]`` table of a ``claude`` account, each key declared once (see the module
    docstring for an example)."""

    modes: tuple = setting(("standard",), "the account's modes", choices=MODES, min_items=1)
    api_key_env: str | None = setting(None, "the variable holding the key", kind="str", nonempty=True)
    api_key_file: str | None = setting(None, "the file holding the key", kind="str", nonempty=True)
    base_url: str | None = setting(None, "the API's URL; default: the SDK's", kind="str", parse=_url,
                                   expected="an http:// or https:// URL")
    model: str = setting("claude-sonnet-4-6", "standard mode's model", nonempty=True)
    deep_model: str = setting("claude-opus-4-5", "deep mode's model (thinking = \"enabled\" needs one that "
                                                 "accepts budget_tokens)", nonempty=True)
    max_tokens: int = setting(8192, "standard mode", lo=1, hi=1_000_000)
    deep_max_tokens: int = setting(32000, "deep mode; must exceed thinking_budget", lo=1, hi=1_000_000)
    thinking: str = setting("enabled", "deep mode: extended thinking with a budget, or adaptive (effort)",
                            choices=("enabled", "adaptive"))
    thinking_budget: int = setting(16000, "for thinking = \"enabled\"", lo=1024, hi=1_000_000)
    effort: str = setting("high", "for thinking = \"adaptive\"", choices=EFFORTS)
    system: str = setting("", "an optional system prompt for every request")
    transcript_chars: int = setting(60000, "replay budget of a conversation (prompts + replies)", lo=1000,
                                    hi=10_000_000)
    timeout: float = setting(600.0, "seconds without a byte from the API before giving up", lo=0, lo_open=True,
                             hi=86400)
    connect_timeout: float = setting(10.0, "seconds to connect", lo=0, lo_open=True, hi=600)
    billing_retry: float = setting(21600.0, "cool-down after a spend-limit / credit refusal (seconds)", lo=59,
                                   lo_open=True, hi=90 * 86400)
    proactive_cooldown: bool = setting(True, "requests bucket at 0: report the cool-down, do not send")

    def check(self):
        if self.thinking == "enabled" and "deep" in self.modes and self.thinking_budget >= self.deep_max_tokens:
            raise Invalid(f"expected below deep_max_tokens ({self.deep_max_tokens}): the answer needs room after "
                          f"the thinking, got {self.thinking_budget}", key="thinking_budget")


def parse_settings(settings: dict, where: str = "claude settings") -> ClaudeSettings:
    """Validate an account's settings with :mod:`shared.settings` (raises its SettingsError naming the key);
    the key's placement is checked by :func:`load_api_key`, which also refuses an inline ``api_key``."""
    table = {k: v for k, v in settings.items() if k != "api_key"} if isinstance(settings, dict) else settings
    return load(ClaudeSettings, table, where)


def _usage(message) -> dict:
    usage = getattr(message, "usage", None)
    if usage is None:
        return {}
    data = usage.model_dump() if hasattr(usage, "model_dump") else dict(usage)
    return {k: v for k, v in data.items() if v is not None}


class ClaudeProvider(TranscriptProvider):
    """The Anthropic API for one account. See the module docstring for settings and semantics."""

    backend = "claude"

    def __init__(self, account: str, settings: dict, clock, data_dir, environ: dict | None = None):
        super().__init__(account, settings, clock, data_dir)
        self.config = parse_settings(settings or {}, f"[accounts.{account}]")
        self.keys = KeySource(account, "claude", settings or {}, environ=environ)
        try:
            # a misplaced key (inline, inside the repository) or a missing variable fails here, at start
            self.secret = self.keys.current()
        except KeyFileUnreadable as exc:
            # fixable in place: every request reports it (auth: the account pauses) until the file is right
            log.warning("%s: %s; requests are refused as auth failures until it can be read", account, exc)
            self.secret = None
        self.root = Path(data_dir) / "backends" / account
        self.transcripts = self.root / "conversations"
        self.client: anthropic.Anthropic | None = None   # built by start (the SDK is imported only then)
        self.limits: dict[str, dict] = {}      # model -> the rate-limit headers of its last answer

    @property
    def modes(self) -> list[str]:
        return list(self.config.modes)

    def start(self) -> None:
        self.transcript()
        try:
            self._refresh_key()
        except ProviderError:
            return   # an unreadable key file: send and check report it; the worker itself keeps running
        if self.client is None and self.secret is not None:
            import anthropic  # here, not at import: building the provider must stay cheap

            self.client = anthropic.Anthropic(
                api_key=self.secret.reveal(), base_url=self.config.base_url, max_retries=0,
                timeout=anthropic.Timeout(self.config.timeout, connect=self.config.connect_timeout))

    def _api(self) -> anthropic.Anthropic:
        """The client :meth:`start` built; an auth failure (nothing sent) when it could not, for want of a key."""
        if self.client is None:
            raise ProviderError("auth", f"{self.account}: no API key could be read", sent=False)
        return self.client

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    def _refresh_key(self) -> None:
        """Re-read an ``api_key_file`` (see :class:`~services.backends.secrets.KeySource`); a changed key
        gets a new client, so the request after ``fanoctl backends resume`` carries the corrected key. An
        unreadable file is an auth failure (the account pauses, nothing is sent), not a crash."""
        if not self.keys.from_file:
            return
        try:
            secret = self.keys.current()
        except ConfigError as exc:
            raise ProviderError("auth", f"{exc} (fix the file, then fanoctl backends resume "
                                f"{self.account})", sent=False) from None
        if secret is not None and (self.secret is None or secret.reveal() != self.secret.reveal()):
            log.info("%s: api_key_file changed; using the new key", self.account)
            self.secret = secret
            self.close()

    # --- building a request -------------------------------------------------------------------------

    def model_for(self, mode: str) -> str:
        return self.config.deep_model if mode == "deep" else self.config.model

    def replay_for(self, turn: Turn) -> Replay | None:
        """The bounded window of the conversation's earlier exchanges (None for a one-shot turn)."""
        if not turn.conversation:
            return None
        prior = [ex for ex in self.transcript().turns(conversation_key(turn)) if ex.index < turn.turn_index]
        return replay_window(prior, self.config.transcript_chars)

    def request_params(self, turn: Turn, replay: Replay | None) -> dict:
        """The keyword arguments of ``messages.stream`` for ``turn`` (pure: no I/O)."""
        cfg = self.config
        deep = turn.mode == "deep"
        params: dict = {"model": self.model_for(turn.mode),
                        "max_tokens": cfg.deep_max_tokens if deep else cfg.max_tokens,
                        "messages": replay.messages(turn.prompt) if replay else
                        [{"role": "user", "content": turn.prompt}]}
        if deep and cfg.thinking == "enabled":
            params["thinking"] = {"type": "enabled", "budget_tokens": cfg.thinking_budget}
        elif deep:
            params["thinking"] = {"type": "adaptive"}
            params["output_config"] = {"effort": cfg.effort}
        system = [part for part in (cfg.system.strip(), replay.summary_block() if replay else "") if part]
        if system:
            params["system"] = "\n\n".join(system)
        return params

    # --- the request path ---------------------------------------------------------------------------

    def send(self, turn: Turn, cancelled: Callable[[], bool]) -> Reply:
        """Stream one turn to the API; every failure is a classified ProviderError."""
        self._refresh_key()   # an unreadable key file: auth, nothing sent
        self.start()
        store = self.transcript()
        if turn.mode not in self.config.modes:
            raise ProviderError("terminal", f"claude account {self.account} has no mode {turn.mode!r}", sent=False)
        if not turn.prompt.strip():
            raise ProviderError("terminal", "empty prompt: the API refuses empty messages", sent=False)
        key = conversation_key(turn)
        # no look at the stored transcript here: an earlier attempt of this task whose outcome is unknown
        # was reconciled by the runtime before this send, and any other task is a new question to send
        model = self.model_for(turn.mode)
        now = self.clock.world()
        until = exhausted_until(self.limits.get(model), now) if self.config.proactive_cooldown else None
        if until is not None:
            log.info("%s: requests bucket of %s empty until %.0f: not sending task %s", self.account, model,
                     until, turn.task_id)
            # reported once: the broker now cools the account until then, and the next lease comes only
            # after that time or after an operator's ``fanoctl quota reset``, which a stale snapshot must
            # not undo (the API itself then says whether the bucket is really still empty)
            self.limits.pop(model, None)
            raise ProviderError("quota", f"requests rate limit of {model} exhausted (remaining 0); it resets in "
                                f"{until - now:.0f} s", retry_after=until - now, sent=False)
        replay = self.replay_for(turn)
        params = self.request_params(turn, replay)
        configured = params["max_tokens"]
        # an earlier attempt of this task was cut at its budget: this one asks for more (api_errors)
        params["max_tokens"] = token_budget(configured, store.cut_at(turn))
        if cancelled():
            raise ProviderError("transient", "cancelled before sending", retry_after=0.0, sent=False)
        store.mark_sent(key, turn.turn_index, turn.prompt, task_id=turn.task_id, attempt=turn.attempt,
                             mode=turn.mode, model=model)
        message, headers = self._stream(params, cancelled)
        text = "".join(block.text for block in message.content if getattr(block, "type", None) == "text")
        if message.stop_reason == "refusal":
            raise ProviderError("terminal", f"the model refused to answer (stop_reason refusal){_rid(headers)}")
        if message.stop_reason == "max_tokens":
            # half an answer (or thinking with none) is never the answer: once more with a larger budget
            store.note_cut(turn, params["max_tokens"])
            what = f"the answer cut after {len(text)} characters" if text.strip() else "no answer text"
            raise length_cut(params["max_tokens"], configured, f"{what}{_rid(headers)}",
                             f"raise {'deep_max_tokens' if turn.mode == 'deep' else 'max_tokens'} of "
                             f"accounts.{self.account}")
        if not text.strip():
            # the model finished without a word: not an answer, and a new attempt may well give one (a cut
            # at the budget is the max_tokens case above)
            raise ProviderError("transient", f"the model finished (stop_reason {message.stop_reason}) with no "
                                f"answer text; not an answer{_rid(headers)}", sent=True)
        meta = {"model": message.model, "mode": turn.mode, "stop_reason": message.stop_reason,
                "usage": _usage(message), "message_id": message.id,
                "request_id": headers.get("request-id"), "ratelimit": parse_ratelimit(headers)}
        if replay is not None:
            meta["replay"] = {"exchanges": len(replay.pinned) + len(replay.recent), "summarized": replay.cut}
        store.record_reply(key, turn.turn_index, turn.prompt, text, task_id=turn.task_id,
                                attempt=turn.attempt, mode=turn.mode, model=message.model,
                                stop_reason=message.stop_reason)
        return Reply(text, meta)

    def _stream(self, params: dict, cancelled: Callable[[], bool]):
        """(final message, response headers). The HTTP exchange runs in a helper thread so that a cancel
        is noticed within SLICE seconds even while no byte arrives; the helper stops reading at the next
        event once told to, and the response is closed (which ends the stream at the API)."""
        box: dict = {}
        done, abort = threading.Event(), threading.Event()
        model = params["model"]
        client = self._api()

        def pump():
            try:
                with client.messages.stream(**params) as stream:
                    box["stream"] = stream
                    box["headers"] = stream.response.headers
                    self.limits[model] = parse_ratelimit(stream.response.headers)
                    for event in stream:
                        if abort.is_set():
                            return
                        if event.type == "message_stop":
                            box["stopped"] = True
                    box["message"] = stream.get_final_message()
            except BaseException as exc:   # handed to the waiting thread, which classifies it
                box["error"] = exc
            finally:
                done.set()

        threading.Thread(target=pump, name=f"claude-{self.account}-stream", daemon=True).start()
        while not done.wait(SLICE):
            if cancelled():
                abort.set()
                stream = box.get("stream")
                if stream is not None:   # closing may wait on the reader: never let it delay the cancel
                    threading.Thread(target=_quiet_close, args=(stream,), daemon=True).start()
                raise ProviderError("unknown", "cancelled while the API was answering (stream aborted)", sent=True)
        error = box.get("error")
        if error is not None:
            raise self._classified(error, model)
        headers = box.get("headers") or {}
        if not box.get("stopped"):
            raise ProviderError("transient", f"the stream ended before message_stop{_rid(headers)}", sent=True)
        return box["message"], headers

    def _classified(self, exc: BaseException, model: str | None = None) -> ProviderError:
        if isinstance(exc, ProviderError):
            return exc
        error = classify_exception(exc, self.clock.world(), self.config.billing_retry)
        if error is None:
            log.warning("%s: unclassified error from the API client: %s", self.account, type(exc).__name__)
            error = ProviderError("unknown", f"{type(exc).__name__}: {exc}"[:500], sent=True)
        response = getattr(exc, "response", None)
        if model is not None and response is not None and getattr(response, "headers", None) is not None:
            snapshot = parse_ratelimit(response.headers)
            if error.error_class == "quota":
                # the refusal itself is the report (the broker cools until its reset): keeping its empty
                # bucket would refuse the next lease again, even one an operator's quota reset allowed
                self.limits.pop(model, None)
            elif any(k in snapshot for k in ("requests", "tokens")):
                self.limits[model] = snapshot
        return error

    def configured_timeout(self, mode: str) -> float | None:
        """The account's ``timeout`` (the longest silence from the API), whatever the mode."""
        return float(self.config.timeout)

    def check(self) -> dict:
        """Is the key accepted and does each mode's model exist? One Models API call per model (no
        message is generated, nothing is billed)."""
        self._refresh_key()
        self.start()
        client = self._api().with_options(timeout=min(30.0, self.config.timeout))
        models = {mode: self.model_for(mode) for mode in self.modes}
        now = self.clock.world()
        missing = []
        for model in sorted(set(models.values())):
            try:
                client.models.retrieve(model)
            except Exception as exc:
                if getattr(exc, "status_code", None) == 404:
                    # the key got past the door (a bad key is a 401 first): the model name is what is wrong
                    missing.append(model)
                    continue
                raise self._classified(exc) from None
            until = exhausted_until(self.limits.get(model), now) if self.config.proactive_cooldown else None
            if until is not None:
                raise ProviderError("quota", f"requests rate limit of {model} exhausted; resets in "
                                    f"{until - now:.0f} s", retry_after=until - now, sent=False)
        names = ", ".join(f"{mode}: {model}" for mode, model in models.items())
        if missing:
            settings = ", ".join(("deep_model" if mode == "deep" else "model") for mode, model in models.items()
                                 if model in missing)
            return {"ok": False, "detail": f"claude: key accepted, but the API has no model "
                    f"{', '.join(missing)} (fix the account's {settings} setting); {names}",
                    "model": self.config.model, "models": models, "missing_models": missing}
        return {"ok": True, "detail": f"claude: key accepted; {names}", "model": self.config.model,
                "models": models}


def _rid(headers) -> str:
    rid = headers.get("request-id") if headers else None
    return f" [request-id {rid}]" if rid else ""


def _quiet_close(stream) -> None:
    try:
        stream.close()
    except Exception as exc:  # the reader may be mid-read; whatever it raises, the stream is gone
        log.debug("closing an abandoned stream: %s: %s", type(exc).__name__, exc)
