"""The page object: drives one chat site through a Playwright page, using only its data file.

No selector or UI string lives here — they come from the :class:`~.site.SiteSpec`. Each poll reads every
signal in one ``evaluate`` round trip (:meth:`ChatPage.sample`), so polling stays cheap. Problems are
raised as :class:`SiteProblem` with a kind (``login``, ``challenge``, ``layout``, ``mode``);
the provider decides what they mean for the request (it knows whether the prompt had left).
"""
from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from services.backends.web.site import OPTIONAL_SELECTORS, ModeSpec, SiteSpec

STEP_TIMEOUT = 5.0     # seconds a mode step waits for its element (menus animate in)
VERIFY_TIMEOUT = 3.0   # seconds the read-back of a mode may take to show
MENU_SETTLE = 1.0      # seconds an open menu may take to add the item we look for
log = logging.getLogger("fano.backends.web.page")
CONFIRM = {"login": 1.0, "challenge": 3.0}   # seconds a sign-in wall / human check must last to count


def playwright_error():
    """Playwright's Error class (imported lazily: importing the web backends must not need playwright)."""
    from playwright.sync_api import Error
    return Error


class SiteProblem(Exception):
    """The page is not in a state we can work with. ``kind``: login | challenge | layout | mode."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass
class PageSample:
    url: str = ""
    title: str = ""
    composer: bool = False
    composer_text: str = ""
    login: bool = False
    challenge: bool = False
    stop: bool = False
    send: bool = False
    users: int = 0
    assistants: int = 0
    last_user: str = ""
    first_user: str = ""
    exists: bool = False         # the awaited assistant turn exists
    text: str = ""               # its reply text
    turn_text: str = ""          # its whole text (labels, inline errors)
    turn_error: str = ""         # what its error container shows (the site file's turn_error), if visible
    turn_mode: str = ""          # what its model/mode label shows (the site file's turn_mode), if visible
    bar: bool = False            # its finished marker
    thinking: bool = False       # a thinking indicator is visible in it
    banners: list[str] = field(default_factory=list)
    body: str = ""               # the page's text, only when no composer shows (a sign-in page, a check)

    @property
    def path(self) -> str:
        return urlsplit(self.url).path


# One round trip per poll. ``a.sel`` maps selector names to lists (fallbacks, best first); ``a.index`` is
# the assistant turn awaited (-1: the last one).
_SAMPLE_JS = r"""
(a) => {
  const S = a.sel;
  const vis = (el) => {
    if (!el || !el.isConnected) return false;
    if (!el.getClientRects().length) return false;
    const st = getComputedStyle(el);
    return st.visibility !== 'hidden' && st.display !== 'none' && st.opacity !== '0';
  };
  const q = (root, s) => { try { return Array.from(root.querySelectorAll(s)); } catch (e) { return []; } };
  const union = (sels, root) => {
    const out = []; for (const s of sels) for (const e of q(root, s)) if (!out.includes(e)) out.push(e); return out;
  };
  const firstList = (sels, root) => {
    for (const s of sels) { const l = q(root, s); if (l.length) return l; } return [];
  };
  const anyVis = (sels, root) => union(sels, root || document).some(vis);
  const textOf = (el, n) => el ? (el.innerText || el.textContent || '').slice(0, n) : '';
  const users = firstList(S.user_turn, document);
  const assistants = firstList(S.assistant_turn, document);
  const idx = a.index < 0 ? assistants.length - 1 : a.index;
  const turn = idx >= 0 && idx < assistants.length ? assistants[idx] : null;
  let reply = null;
  if (turn) { const r = firstList(S.reply_text, turn); reply = r.length ? r[r.length - 1] : null; }
  const composer = union(S.composer, document).filter(vis)[0] || null;
  const banners = [];
  for (const el of union(S.banners, document)) {
    if (!vis(el)) continue;
    const t = textOf(el, 600).trim();
    if (t && !banners.includes(t)) banners.push(t);
    if (banners.length >= 12) break;
  }
  return {
    url: location.href, title: document.title,
    composer: !!composer, composer_text: composer ? textOf(composer, 200000) || composer.value || '' : '',
    login: anyVis(S.login), challenge: union(S.challenge, document).length > 0,
    stop: anyVis(S.stop), send: anyVis(S.send),
    users: users.length, assistants: assistants.length,
    last_user: users.length ? textOf(users[users.length - 1], 4000) : '',
    first_user: users.length ? textOf(users[0], 4000) : '',
    exists: !!turn, text: reply ? textOf(reply, 2000000) : '', turn_text: turn ? textOf(turn, 4000) : '',
    bar: turn ? anyVis(S.finished, turn) : false, thinking: turn ? anyVis(S.thinking, turn) : false,
    turn_error: turn ? union(S.turn_error, turn).filter(vis).map(e => textOf(e, 600).trim())
      .filter(t => t).join(' ') : '',
    turn_mode: turn ? union(S.turn_mode, turn).filter(vis).map(e => textOf(e, 200).trim())
      .filter(t => t).join(' ') : '',
    banners: banners,
    body: composer || !document.body ? '' : textOf(document.body, 3000),
  };
}
"""

# Finds the element a mode step or check targets and tags it for a trusted Playwright click.
_FIND_JS = r"""
(a) => {
  const vis = (el) => {
    if (!el || !el.getClientRects().length) return false;
    const st = getComputedStyle(el);
    return st.visibility !== 'hidden' && st.display !== 'none';
  };
  const q = (s) => { try { return Array.from(document.querySelectorAll(s)); } catch (e) { return []; } };
  document.querySelectorAll('[data-fano-pick]').forEach(e => e.removeAttribute('data-fano-pick'));
  const re = a.word ? new RegExp('(^|[^\\p{L}\\p{N}])' + a.word + '($|[^\\p{L}\\p{N}])', 'iu') : null;
  let disabled = 0, seen = 0, candidates = 0;
  const shown = [];   // what the candidates say instead (for a clear "reads back differently" message)
  for (const s of a.sels) {
    for (const el of q(s)) {
      if (!vis(el)) continue;
      candidates++;
      const text = (el.innerText || el.textContent || '') + ' ' + (el.getAttribute('aria-label') || '');
      if (re && !re.test(text)) {
        const t = (el.innerText || el.textContent || '').trim().replace(/\s+/g, ' ').slice(0, 80);
        if (t && shown.length < 3 && !shown.includes(t)) shown.push(t);
        continue;
      }
      seen++;
      if (el.getAttribute('aria-disabled') === 'true' || el.disabled) { disabled++; continue; }
      if (a.tag) el.setAttribute('data-fano-pick', '1');
      return {found: true, text: text.trim().slice(0, 200)};
    }
  }
  return {found: false, disabled: disabled, seen: seen, candidates: candidates, shown: shown};
}
"""


# The history list's links, in page order (newest first); hidden ones too (a collapsed sidebar).
_HISTORY_JS = r"""
(a) => {
  for (const s of a.sels) {
    let els = [];
    try { els = Array.from(document.querySelectorAll(s)); } catch (e) { continue; }
    if (els.length) return els.slice(0, a.limit).map(e => ({url: e.href || '',
      title: (e.innerText || e.textContent || e.getAttribute('title') || '').trim()}));
  }
  return [];
}
"""


def _word(text: str) -> str:
    """A label as a JS regex fragment matching it literally."""
    return re.sub(r"[.*+?^${}()|[\]\\/]", lambda m: "\\" + m.group(0), text.strip())


class ChatPage:
    """One site on one Playwright page. Every wait is a poll with a deadline."""

    def __init__(self, page, site: SiteSpec, base_url: str):
        self.page = page
        self.site = site
        self.base_url = base_url.rstrip("/")
        self._sel = {k: list(v) for k, v in site.selectors.items()}
        for name in OPTIONAL_SELECTORS:            # optional in the site file
            self._sel.setdefault(name, [])

    # --- navigation --------------------------------------------------------------------------------------

    @property
    def new_chat_url(self) -> str:
        return self.base_url + self.site.new_chat_path

    def conversation_url(self, url: str) -> bool:
        """Whether ``url`` is a persisted conversation of this site (not a transient ``/c/WEB:...``)."""
        return self.site.is_conversation(urlsplit(url).path)

    def history(self, limit: int = 30) -> list[dict] | None:
        """The history list's conversations, newest first: ``[{"url", "title"}]`` (at most ``limit``); None
        when the site file names no ``history_item`` or the page shows no such list."""
        if not self._sel["history_item"]:
            return None
        items = self.page.evaluate(_HISTORY_JS, {"sels": self._sel["history_item"], "limit": limit * 2})
        if not items:
            return None
        out, seen = [], set()
        for item in items:
            if self.conversation_url(item["url"]) and item["url"] not in seen:
                seen.add(item["url"])
                out.append({"url": item["url"], "title": " ".join(item["title"].split())[:200]})
        return out[:limit]

    def goto(self, url: str, timeout: float) -> None:
        self.page.goto(url, wait_until="domcontentloaded", timeout=timeout * 1000)

    def sample(self, index: int = -1) -> PageSample:
        raw = self.page.evaluate(_SAMPLE_JS, {"sel": self._sel, "index": index})
        return PageSample(**raw)

    def wait_ready(self, timeout: float, min_users: int = 0, poll: float = 0.1) -> PageSample:
        """Wait until the composer is usable (and at least ``min_users`` user turns are shown).

        Raises SiteProblem login/challenge when the site wants a person, layout when the composer never
        shows (the page changed: fail closed)."""
        deadline = time.monotonic() + timeout
        since: dict[str, float | None] = {"login": None, "challenge": None}
        while True:
            s = self.sample()
            now = time.monotonic()
            # a signed-out visitor may get a composer too (and a "Log in" button): a visible login control
            # means signed out. Challenge scripts also ride along on normal pages: only a challenge with no
            # composer counts. Both must last a moment, so a page still loading is not misread.
            # A page without a composer is read too: a sign-in page or a human check of its own (the site
            # file's [messages] signin_page / human_check), or another host (sent to the sign-in service),
            # is reported as such at once, not as a changed layout after ready_timeout.
            wall = self._wall(s)
            seen = {"login": s.login or wall == "login", "challenge": (s.challenge and not s.composer)
                    or wall == "challenge"}
            for kind, on in seen.items():
                first = since[kind] = (since[kind] or now) if on else None
                if first is not None and (now - first >= CONFIRM[kind] or now > deadline):
                    raise SiteProblem(kind, f"sign-in needed: the site asks to sign in at {s.url} ({s.title!r})"
                                      if kind == "login" else
                                      f"human check: the site shows a human check at {s.url} ({s.title!r})")
            if s.composer and not s.login and s.users >= min_users:
                return s
            if now > deadline:
                if s.composer and not s.login:
                    return s   # fewer turns than expected: the caller decides what that means
                raise SiteProblem("layout", f"no composer found at {s.url} within {timeout:g}s "
                                            f"(title {s.title!r}): the page layout may have changed")
            time.sleep(poll)

    def _wall(self, s: PageSample) -> str | None:
        """What a page with no composer is: "challenge" (its text matches ``human_check``), "login" (its text
        matches ``signin_page``, or it is on another host than the site's), or None."""
        if s.composer:
            return None
        text = f"{s.title}\n{s.body}"
        msgs = self.site.messages
        if any(p.search(text) for p in msgs.get("human_check", ())):
            return "challenge"
        if any(p.search(text) for p in msgs.get("signin_page", ())):
            return "login"
        host = urlsplit(s.url).netloc
        if s.url.startswith("http") and host and host != urlsplit(self.base_url).netloc:
            return "login"
        return None

    # --- modes -------------------------------------------------------------------------------------------

    def _find(self, selectors, word: str | None = None, tag: bool = False) -> dict:
        return self.page.evaluate(_FIND_JS, {"sels": list(selectors), "word": _word(word) if word else None,
                                             "tag": tag})

    def _visible(self, selectors) -> bool:
        return bool(self._find(selectors)["found"])

    def select_mode(self, mode: str, spec: ModeSpec, label: str) -> str:
        """Run the mode's steps, then read the mode back. Returns what confirmed it; raises
        SiteProblem("mode") when it cannot be confirmed (the request must then not be sent)."""
        for n, step in enumerate(spec.steps):
            if step.if_visible and not self._visible(step.if_visible):
                continue
            if step.unless_visible and self._visible(step.unless_visible):
                continue
            word = step.text.replace("{label}", label) if step.text else None
            deadline = time.monotonic() + STEP_TIMEOUT
            while True:
                found = self._find(step.selectors, word, tag=True)
                if found["found"]:
                    break
                if found.get("candidates"):   # the menu is open without our item: it will not come
                    deadline = min(deadline, time.monotonic() + MENU_SETTLE)
                what = f"{word!r} " if word else ""
                if found.get("disabled"):   # shown but greyed out: definitive, no need to wait
                    raise SiteProblem("mode", f"mode {mode} ({label}): the {what}option is shown but "
                                              "disabled (not available on this plan or account now)")
                if time.monotonic() > deadline:
                    raise SiteProblem("mode", f"mode {mode} ({label}): step {n + 1} found no {what}element "
                                              f"among {list(step.selectors)}")
                time.sleep(0.1)
            self.page.click('[data-fano-pick="1"]', timeout=STEP_TIMEOUT * 1000)
        return self.verify_mode(mode, spec, label)

    def verify_mode(self, mode: str, spec: ModeSpec, label: str, timeout: float = VERIFY_TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while True:
            failed = None
            shown = []
            for check in spec.verify:
                word = check.text.replace("{label}", label) if check.text else None
                found = self._find(check.selectors, word)
                if check.absent and found["found"]:
                    failed = f"{list(check.selectors)} should not be shown"
                elif not check.absent and not found["found"]:
                    failed = (f"the mode control shows {found['shown'][0]!r}, not {word!r}" if found.get("shown")
                              else f"no {list(check.selectors)}" + (f" showing {word!r}" if word else ""))
                elif not check.absent:
                    shown.append(found.get("text", ""))
                if failed:
                    break
            if failed is None:
                return "; ".join(shown) or f"{mode} confirmed"
            if time.monotonic() > deadline:
                raise SiteProblem("mode", f"mode {mode} ({label}) could not be confirmed: {failed}")
            time.sleep(0.1)

    def missing_controls(self, modes: dict[str, ModeSpec]) -> list[str]:
        """On an idle page, the controls the given modes start with that cannot be found: for each mode,
        its first step whose conditions hold, if it is a click (a menu item needs its menu open, so a
        ``choose`` is not checked here). [] when every one is shown."""
        missing = []
        for mode, spec in modes.items():
            for step in spec.steps:
                if step.if_visible and not self._visible(step.if_visible):
                    continue
                if step.unless_visible and self._visible(step.unless_visible):
                    continue
                if step.action == "click" and not self._visible(step.selectors):
                    missing.append(f"mode {mode}: no {list(step.selectors)}")
                break
        return missing

    # --- the prompt --------------------------------------------------------------------------------------

    def type_prompt(self, text: str) -> None:
        """Put ``text`` into the composer (an input event, like a paste) and check it arrived."""
        if not self._find(self._sel["composer"], tag=True)["found"]:
            raise SiteProblem("layout", "no visible composer to type into")
        self.page.click('[data-fano-pick="1"]', timeout=STEP_TIMEOUT * 1000)
        self.page.keyboard.insert_text(text)
        deadline = time.monotonic() + STEP_TIMEOUT
        flat = " ".join(text.split())
        while True:
            got = " ".join(self.sample().composer_text.split())
            # an editor may restyle markdown as it arrives ("- " -> a list item): demand the opening words
            # or most of the length, not an exact copy
            if got and (flat[:40] in got or len(got) >= 0.5 * len(flat)):
                return
            if time.monotonic() > deadline:
                raise SiteProblem("layout", f"the prompt did not reach the composer (it shows {got[:80]!r})")
            time.sleep(0.05)

    def submit(self) -> None:
        """Press the send button (Enter in the composer when no send button is visible)."""
        found = self._find(self._sel["send"], tag=True)
        if found["found"]:
            self.page.click('[data-fano-pick="1"]', timeout=STEP_TIMEOUT * 1000)
        else:
            self.page.keyboard.press("Enter")

    def screenshot(self, path) -> bool:
        """Save what the page shows to ``path``; False (and a log line) when the page cannot be captured
        (closed, crashed, too slow) or the file cannot be written: a screenshot illustrates a problem
        already reported, it must not replace it."""
        try:
            self.page.screenshot(path=str(path), full_page=False, timeout=10_000)
            return True
        except Exception as exc:   # whatever it is (Playwright's errors, a full disk, ...), not in place of the problem
            log.warning("no screenshot %s: %s: %s", path, type(exc).__name__, str(exc)[:200])
            return False
