"""When is a web chat's reply finished? A pure classifier fed one sample per poll
(docs/providers.md § Reply completion).

"Done" is positive proof, never silence: a settled ChatGPT Pro *preamble* has no stop button and stable
text seconds before the long thinking phase starts, and the finished-turn action bar can flash while the
model is still thinking. A turn is terminal only when, at the same time:

* the reply text is non-empty and no stop control is visible;
* no thinking indicator is active (shimmer, progress bar, "Pro thinking", "check back later", ...);
* the finished marker (ChatGPT's action bar / copy button, Gemini's ``.response-footer.complete``) has
  been seen on ``bar_confirm_polls`` consecutive polls with no content change in between;
* the content has been unchanged for at least ``min_stable`` seconds.

Any change of the content fingerprint — even a rewrite of the same length — restarts the debounce.
The page object (:mod:`services.backends.web.page`) takes the samples; this module only decides, so it is
unit-tested with synthetic sequences (tests/unit/test_web_gate.py).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Sample:
    """What one poll saw of the reply being waited for."""

    now: float                 # seconds (any monotonic origin)
    text: str                  # the reply's text so far ("" when the turn does not exist yet)
    stop_visible: bool         # the composer's stop control
    bar_visible: bool          # the finished-turn marker of this reply
    thinking: bool = False     # a thinking/progress indicator or a "still generating" placeholder


@dataclass(frozen=True)
class GateConfig:
    bar_confirm_polls: int = 3
    min_stable: float = 1.2    # seconds the content must stay unchanged

    def __post_init__(self):
        if self.bar_confirm_polls < 1 or self.min_stable < 0:
            raise ValueError("bar_confirm_polls must be >= 1 and min_stable >= 0")


def fingerprint(text: str) -> str:
    """Content key: equal lengths with different content must differ (a rewrite restarts the debounce)."""
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()


class TurnGate:
    """Feed samples in order; :meth:`feed` returns True once the turn is terminal (and stays True for as
    long as later samples keep satisfying the conditions — a caller normally stops at the first True).

    ``state`` names what the last sample was waiting for, for logs and timeouts."""

    def __init__(self, config: GateConfig | None = None):
        self.config = config or GateConfig()
        self._key: str | None = None
        self._changed_at: float | None = None
        self._bar_streak = 0
        self.state = "waiting"
        self.samples = 0

    def feed(self, s: Sample) -> bool:
        self.samples += 1
        key = fingerprint(s.text)
        changed_at = self._changed_at
        if key != self._key or changed_at is None:
            self._key = key
            self._changed_at = changed_at = s.now
            self._bar_streak = 0
        if not s.text.strip():
            self._bar_streak = 0
            self.state = "no reply yet"
            return False
        if s.stop_visible:
            self._bar_streak = 0
            self.state = "generating (stop control visible)"
            return False
        if s.thinking:
            self._bar_streak = 0
            self.state = "thinking"
            return False
        if not s.bar_visible:
            self._bar_streak = 0
            self.state = "waiting for the finished marker"
            return False
        self._bar_streak += 1
        if self._bar_streak < self.config.bar_confirm_polls:
            self.state = f"finished marker seen {self._bar_streak}/{self.config.bar_confirm_polls}"
            return False
        if s.now - changed_at < self.config.min_stable:
            self.state = "text settling"
            return False
        self.state = "complete"
        return True


class ProgressWatch:
    """Does the page still show signs of work on the awaited turn? Catches a layout change after sending.

    When the assistant-turn, stop or thinking selectors stop matching, the :class:`TurnGate` never sees a
    reply and would wait out the whole turn timeout (20-60 minutes) to end in an ``unknown`` that
    reconciliation repeats. Feed it the same polls; :meth:`feed` returns a description of the stall (None
    while all is well) once

    * no sign of work appeared within ``grace`` seconds of sending: no assistant turn, no stop control,
      no thinking indicator; or
    * after that, nothing moved for ``grace`` seconds — no stop control, no thinking indicator, the text
      unchanged — while the turn is still not complete (the reply or finished-marker selectors no longer
      match what the page shows).

    ``grace`` must exceed the quiet moments of real turns (a Pro preamble settles for seconds, not a
    minute): the site file's ``progress_grace``, 60-120 s."""

    def __init__(self, grace: float, start: float):
        self.grace = grace
        self.started = start
        self.last = start          # the last time something moved
        self.seen = False          # any sign of work since sending
        self._key = fingerprint("")
        self._exists = False

    def feed(self, now: float, exists: bool, text: str, stop: bool, thinking: bool) -> str | None:
        key = fingerprint(text)
        moved = stop or thinking or key != self._key or (exists and not self._exists)
        self._key, self._exists = key, exists
        if stop or thinking or exists:
            self.seen = True
        if moved:
            self.last = now
            return None
        if now - self.last < self.grace:
            return None
        if not self.seen:
            return (f"no assistant turn, stop control or thinking indicator appeared within {self.grace:g}s "
                    "of sending")
        if not text.strip():
            return f"the assistant turn showed no reply text, and nothing moved for {self.grace:g}s"
        return (f"the reply stopped changing {self.grace:g}s ago with no finished marker and no stop control "
                "or thinking indicator")
