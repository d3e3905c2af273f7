"""``sim``: the simulated LLM provider, the embedded default backend (docs/architecture.md § Backends).

It behaves like a real service so that the whole system can run and be tested without any account:
latency per mode on the world clock, rate limits it enforces itself (and tells about, like a web UI:
"You've reached your limit ... until 14:56"), injected faults, and a durable log of every request it saw
(:mod:`services.backends.sim_log`) which it re-reads at start, so its limits and its memory of served
turns survive worker restarts. Answers come from :mod:`services.backends.sim_answers`.

Settings (the ``[accounts.NAME]`` table minus ``backend``; all optional; each key declared once in
:class:`SimSettings` and validated by :mod:`shared.settings`)::

    seed = 7                       # int; all randomness derives from (seed, account, turn, attempt)
    latency = {standard = {dist = "lognormal", median = 2.0, sigma = 0.5},
               deep = {dist = "uniform", low = 30, high = 90}}
                                   # world seconds per mode; dist lognormal|uniform|fixed (value)|zero;
                                   # a single spec (or a number, or "zero") applies to every mode
    rate_limits = {deep = ["20/day@00:00 UTC"], standard = ["50/3h"]}   # shared.quota windows, no reserves
    timeout = {standard = 60, deep = 900}
                                   # world seconds the worker lets one request run before cancelling it
                                   # (then reconciled); a number applies to every mode. Default per mode:
                                   # TIMEOUT_FACTOR x the slowest latency, at least TIMEOUT_MIN
    transient_rate = 0.0           # "500 Internal Server Error" after part of the latency, before any
                                   # output: not served, never counts (reported sent=False)
    overload_rate = 0.0            # "A lot of people are using ... right now": refused, retry in 2-10 s
                                   # (not served: sent=False)
    hang_rate = 0.0                # never finishes until cancelled (or timed out); counts as served
    ratelimit_rate = 0.0           # "429 Too Many Requests ... try again at 14:56": refused with a reset
                                   # time RATELIMIT_RESET world seconds ahead (the worker cools the
                                   # account down until then; not served: sent=False)
    answer_size = {standard = {low = 2000, high = 20000}, deep = {low = 10000, high = 60000}}
                                   # bytes (UTF-8) of each reply, drawn uniformly per turn; the kind's
                                   # template answer is padded with plausible working notes where its
                                   # parser ignores text (sim_answers.pad). A number fixes the size; a
                                   # single {low, high} applies to every mode. Default: the bare template
    terminal_rate = 0.0            # "400 prompt is too long": park
    auth_fail = false              # every request: auth error, never reaches the provider
    sloppy_rate = 0.05             # answers with format deviations a tolerant parser must accept
    garbage_rate = 0.0             # answers with none of the kind's tags
    reviews = {good = 0.35, bad = 0.2, agree = 0.85, persuade = 0.4, favour = 0.0}   # latent review
                                   # verdicts; favour: share of subjects every documenter vote approves
    fsync = false                  # fsync each log record (power-loss durability; kill -9 needs none)

Refusals (quota, an injected 429, overload, the injected 500) are decided at the door and logged as ``refused``: the
provider never served them and they never count against its limits, so they are reported ``sent=False``
(the broker refunds the unit; nothing to reconcile). A request the provider received (``received``) and
did not fail is counted and may be served even if the worker is gone: that is what ``reconcile`` finds.

Determinism: the *answer* depends on (seed, account, turn content) but not on the attempt, so a run
with crashes and retries converges to the same research as a run without; latency and format deviations
depend on the attempt too, and faults on the lease (epoch: a refusal gives its attempt back), so a retry
can succeed. "Turn content" is the kind, the payload,
the conversation position (and the prompt when the payload is empty) — never the broker's task id,
which depends on how submissions from several modules interleaved.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from zoneinfo import ZoneInfo

from services.backends import sim_answers
from services.backends.base import Provider, ProviderError, Reply, Turn
from services.backends.sim_log import SimLog, window_count, window_frees_at
from shared import latency
from shared.clock import FakeClock
from shared.config import MODES
from shared.latency import DEFAULT_LATENCY, slowest
from shared.quota import QuotaSpecError, describe, normalize_windows
from shared.settings import Invalid, load, number, setting

SLICE = 0.05                      # real seconds between two looks at cancelled() (the brief: <= 50 ms)
FAULTS = ("terminal_rate", "transient_rate", "overload_rate", "hang_rate", "ratelimit_rate")
RATELIMIT_RESET = (60.0, 900.0)   # world seconds until an injected 429 says the limit resets (uniform)
TIMEOUT_FACTOR = 5.0    # default request timeout: this many times the mode's slowest latency ...
TIMEOUT_MIN = 30.0      # ... but at least this (world seconds): a zero latency must not time out at once


def _rate_limits(limits: dict) -> dict:
    out = {}
    for mode, windows in limits.items():
        if mode not in MODES:
            raise Invalid(f"expected a mode ({', '.join(MODES)}), got {mode!r}", key=f"rate_limits.{mode}")
        try:
            norm = normalize_windows(windows)
        except QuotaSpecError as exc:
            raise Invalid(exc.message, key=f"rate_limits.{mode}") from None
        if any(w.get("reserves") for w in norm):
            raise Invalid("a provider knows no modules; drop the reserves", key=f"rate_limits.{mode}")
        out[mode] = norm
    return out


def _reviews(value: dict) -> dict:
    if set(value) - set(sim_answers.DEFAULT_REVIEWS):
        raise Invalid(f"expected a table with keys among {', '.join(sim_answers.DEFAULT_REVIEWS)}, got {value!r}")
    out = {k: number(value.get(k, d), f"reviews.{k}", 0.0, 1.0) for k, d in sim_answers.DEFAULT_REVIEWS.items()}
    if out["good"] + out["bad"] > 1.0:
        raise Invalid(f"expected reviews.good + reviews.bad at most 1, got {out['good'] + out['bad']:g}")
    return out


def _size_spec(spec, where: str) -> tuple[int, int]:
    """``answer_size`` of one mode: a number of bytes or ``{low, high}``; returns (low, high)."""
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        n = int(number(spec, where, 0, 1e8))
        return n, n
    if not isinstance(spec, dict) or set(spec) != {"low", "high"}:
        raise Invalid(f"expected a number of bytes or a table {{low, high}}, got {spec!r}", key=where)
    low, high = (int(number(spec[k], f"{where}.{k}", 0, 1e8)) for k in ("low", "high"))
    if low > high:
        raise Invalid(f"expected low <= high (low must be at most high), got {low} > {high}", key=where)
    return low, high


def _answer_sizes(value) -> dict:
    """mode -> (low, high) bytes."""
    if isinstance(value, dict) and set(value) <= set(MODES) and value:
        return {mode: _size_spec(spec, f"answer_size.{mode}") for mode, spec in value.items()}
    if isinstance(value, dict) and set(value) & set(MODES):
        raise Invalid(f"expected keys that are modes ({', '.join(MODES)}) or low/high, got {value!r}")
    one = _size_spec(value, "answer_size")
    return {m: one for m in MODES}


def _timeout(value):
    """World seconds: one number for every mode, or a table per mode (validated; resolved by
    :attr:`SimSettings.timeouts`)."""
    if isinstance(value, dict):
        for mode, seconds in value.items():
            if mode not in MODES:
                raise Invalid(f"expected a mode ({', '.join(MODES)}), got {mode!r}", key=f"timeout.{mode}")
            number(seconds, f"timeout.{mode}", 0.001, 1e7)
        return {mode: float(seconds) for mode, seconds in value.items()}
    return number(value, "timeout", 0.001, 1e7)


def _rate(doc: str, default: float = 0.0):
    return setting(default, doc, lo=0, hi=1)


@dataclasses.dataclass(frozen=True)
class SimSettings:
    """A sim account's ``[accounts.NAME]`` table, each key declared once (the module docstring explains
    them with an example)."""

    seed: int = setting(0, "all randomness derives from (seed, account, turn, attempt)")
    latency: dict = setting(DEFAULT_LATENCY, "world seconds per mode: {dist = lognormal|uniform|fixed|zero, ...}, "
                                             "a table per mode or one spec for every mode", parse=latency.parse,
                            expected="a latency spec or a table of mode = spec")
    rate_limits: dict = setting({}, "mode -> list of provider-side quota windows (no reserves)", kind="table",
                                parse=_rate_limits, expected='a table of mode = windows, e.g. {deep = ["20/day"]}')
    timeout: object = setting(None, "world seconds the worker lets one request run before cancelling it; default "
                                    f"per mode {TIMEOUT_FACTOR:g} x the slowest latency, at least {TIMEOUT_MIN:g}",
                              parse=_timeout, expected="a number of seconds or a table of mode = seconds")
    transient_rate: float = _rate("500 Internal Server Error before any output (not served)")
    overload_rate: float = _rate("\"A lot of people are using ... right now\": refused, retry in 2-10 s")
    hang_rate: float = _rate("never finishes until cancelled or timed out; counts as served")
    ratelimit_rate: float = _rate("429 with a reset time ahead (not served)")
    terminal_rate: float = _rate("400 prompt is too long: park")
    answer_size: dict = setting({}, "bytes of each reply per mode ({low, high} or a number); "
                                    "default: the bare template", parse=_answer_sizes,
                                expected="a number of bytes, a table {low, high}, or a table of mode = either")
    auth_fail: bool = setting(False, "every request: auth error, never reaches the provider")
    sloppy_rate: float = _rate("answers with format deviations a tolerant parser must accept", 0.05)
    garbage_rate: float = _rate("answers with none of the kind's tags")
    reviews: dict = setting(dict(sim_answers.DEFAULT_REVIEWS), "latent review verdicts (favour: share of "
                            "subjects every documenter vote approves)", kind="table", parse=_reviews,
                            expected="a table with keys among " + ", ".join(sim_answers.DEFAULT_REVIEWS))
    fsync: bool = setting(False, "fsync each log record (power-loss durability; kill -9 needs none)")
    modes: tuple = setting(MODES, "the account's modes", choices=MODES)

    def check(self):
        if sum(getattr(self, k) for k in FAULTS) > 1.0:
            raise Invalid(f"expected {', '.join(FAULTS)} to add up to at most 1", key=FAULTS[0])

    @functools.cached_property
    def timeouts(self) -> dict:
        """World seconds per mode before the worker cancels a request."""
        out = {m: max(TIMEOUT_MIN, TIMEOUT_FACTOR * slowest(self.latency[m])) for m in MODES}
        if isinstance(self.timeout, dict):
            return {**out, **self.timeout}
        return out if self.timeout is None else {m: self.timeout for m in MODES}


def parse_settings(settings: dict, where: str = "sim settings") -> SimSettings:
    """Validate the account's settings with :mod:`shared.settings`: the frozen settings, complete with
    defaults; raises its SettingsError naming the key."""
    return load(SimSettings, settings, where)


def content_key(turn: Turn) -> str:
    """What identifies a turn's content independently of broker task ids (see the module docstring)."""
    basis = {"kind": turn.kind, "payload": turn.payload, "conversation": turn.conversation,
             "turn_index": turn.turn_index}
    if not turn.payload:
        basis["prompt"] = turn.prompt
    text = json.dumps(basis, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


class SimProvider(Provider):
    """The simulated provider of one account. See the module docstring for settings and semantics."""

    backend = "sim"

    def __init__(self, account: str, settings: dict, clock, data_dir):
        super().__init__(account, settings, clock, data_dir)
        self.config = parse_settings(settings or {}, f"[accounts.{account}]")
        self.log_path = Path(data_dir) / "sim" / account / "requests.jsonl"
        self.log: SimLog | None = None
        # under a FakeClock nothing moves by itself: simulated latency advances the fake world instead
        self.sleep: Callable[[float], None] = clock.advance if isinstance(clock, FakeClock) else time.sleep

    @property
    def modes(self) -> list[str]:
        return list(self.config.modes)

    def request_timeout(self, mode: str) -> float:
        """The ``timeout`` setting (world seconds) as real seconds: the worker's deadline is monotonic,
        the simulated latency runs on the (possibly scaled) world clock."""
        world = self.config.timeouts.get(mode, self.config.timeouts["standard"])
        return world / (getattr(self.clock, "scale", 1.0) or 1.0)

    def start(self) -> None:
        self.opened()

    def opened(self) -> SimLog:
        """The request log, opened on first use."""
        if self.log is None:
            self.log = SimLog(self.log_path, fsync=self.config.fsync)
        return self.log

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
            self.log = None

    # --- randomness -----------------------------------------------------------------------------------

    def _rng(self, *parts):
        return sim_answers.derive_rng(self.config.seed, self.account, *parts)

    def latency(self, mode: str, key: str, attempt: int) -> float:
        """The simulated latency (world seconds) of one attempt of a turn."""
        spec = self.config.latency.get(mode, DEFAULT_LATENCY["standard"])
        rng = self._rng(key, attempt, "latency")
        if spec["dist"] == "lognormal":
            return spec["median"] * math.exp(spec["sigma"] * rng.gauss(0.0, 1.0))
        if spec["dist"] == "uniform":
            return rng.uniform(spec["low"], spec["high"])
        return spec.get("value", 0.0)

    def fate(self, key: str, epoch: int) -> tuple[str | None, float]:
        """Which fault (if any) hits the request sent under lease ``epoch``, and at which fraction of the
        latency. Drawn per lease, not per attempt: a refusal gives its attempt back (the broker does not
        burn it), and the next lease must not meet the same fault again."""
        rng = self._rng(key, epoch, "fault")
        u, frac = rng.random(), rng.uniform(0.1, 0.9)
        edge = 0.0
        for name in FAULTS:
            edge += getattr(self.config, name)
            if u < edge:
                return name.removesuffix("_rate"), frac
        return None, frac

    def answer_text(self, turn: Turn, key: str, attempt: int) -> str:
        """The reply text: content from (seed, account, key), decoration from the attempt too."""
        cfg = self.config
        text = sim_answers.answer(turn.kind, dict(turn.payload), turn.prompt or str(turn.payload.get("prompt", "")),
                                  turn.mode, self._rng(key, "answer"), seed=cfg.seed, account=self.account,
                                  reviews=cfg.reviews)
        text = sim_answers.decorate(text, turn.kind, self._rng(key, attempt, "style"), cfg.sloppy_rate,
                                    cfg.garbage_rate)
        size = cfg.answer_size.get(turn.mode)
        if size is None:
            return text
        rng = self._rng(key, "size")     # like the content: the same on every attempt
        return sim_answers.pad(text, turn.kind, rng.randint(*size), rng)

    # --- the request path -----------------------------------------------------------------------------

    def _record(self, turn: Turn, event: str, key: str, **extra) -> dict:
        return self.opened().append({"ts": self.clock.world(), "event": event, "task_id": turn.task_id,
                                "epoch": turn.epoch, "attempt": turn.attempt, "turn_key": turn.turn_key,
                                "mode": turn.mode, "kind": turn.kind, "key": key, **extra})

    def _quota_refusal(self, mode: str, now: float) -> tuple[float, dict] | None:
        """(retry_after, the binding window) when a request now would exceed a window, else None."""
        times, worst = self.opened().times(mode), None
        for window in self.config.rate_limits.get(mode, []):
            if window_count(times, window, now) >= window["limit"]:
                wait = max(0.0, window_frees_at(times, window, now) - now)
                if worst is None or wait > worst[0]:
                    worst = (wait, window)
        return worst

    def send(self, turn: Turn, cancelled: Callable[[], bool]) -> Reply:
        """Serve one turn like a real service would; every failure is a classified ProviderError."""
        self.start()
        if turn.mode not in self.config.modes:
            raise ProviderError("terminal", f"sim account {self.account} has no mode {turn.mode!r}", sent=False)
        if self.config.auth_fail:
            raise ProviderError("auth", "401 authentication_error: your session has expired, please log in again",
                                sent=False)
        key = content_key(turn)
        now = self.clock.world()
        refusal = self._quota_refusal(turn.mode, now)
        if refusal is not None:
            wait, window = refusal
            self._record(turn, "refused", key, reason="quota", retry_after=wait)
            raise ProviderError("quota", f"You've reached your limit for {turn.mode} requests "
                                f"until {_until(now, wait, window)} (window {describe(window)})",
                                retry_after=wait, sent=False)
        fault, frac = self.fate(key, turn.epoch)
        if fault == "overload":
            wait = round(2.0 + 8.0 * frac, 3)
            self._record(turn, "refused", key, reason="overload", retry_after=wait)
            raise ProviderError("transient", f"A lot of people are using {turn.mode} mode right now. "
                                "Please try again in a few seconds.", retry_after=wait, sent=False)
        if fault == "ratelimit":
            # an HTTP 429 whose reset time the provider names: a limit of its own, beyond the configured
            # windows (real providers' are undocumented and move); the account cools down until then
            wait = round(RATELIMIT_RESET[0] + (RATELIMIT_RESET[1] - RATELIMIT_RESET[0]) * frac, 3)
            self._record(turn, "refused", key, reason="ratelimit", retry_after=wait)
            raise ProviderError("quota", f"429 Too Many Requests: rate limit reached, try again at "
                                f"{_until(now, wait, {})}", retry_after=wait, sent=False)
        latency = self.latency(turn.mode, key, turn.attempt)
        if fault == "transient":
            # a 5xx before any output: the client waited, the provider served nothing and counts nothing
            self._wait(latency * frac, cancelled)
            self._record(turn, "refused", key, reason="error", error="transient")
            raise ProviderError("transient", "500 Internal Server Error: something went wrong while "
                                "generating the response", sent=False)
        recv = self._record(turn, "received", key)      # before any processing: the provider has it now
        if fault == "terminal":
            self._record(turn, "failed", key, recv_seq=recv["seq"], error="terminal")
            raise ProviderError("terminal", "400 invalid_request_error: prompt is too long", sent=True)
        if fault == "hang":
            self._wait(math.inf, cancelled)             # returns only by raising unknown
        self._wait(latency, cancelled)
        return self._serve(turn, key, recv["seq"], turn.attempt, latency, reconciled=False)

    def _wait(self, world_seconds: float, cancelled: Callable[[], bool]) -> None:
        """Let ``world_seconds`` of world time pass (L / clock.scale real seconds), looking at
        ``cancelled()`` at least every SLICE real seconds."""
        deadline = self.clock.world() + world_seconds
        while True:
            remaining = deadline - self.clock.world()
            if remaining <= 0:
                return
            if cancelled():
                # the provider keeps generating; reconcile() will find the reply
                raise ProviderError("unknown", "cancelled while the provider was generating", sent=True)
            self.sleep(min(SLICE, remaining / self.clock.scale))

    def _serve(self, turn: Turn, key: str, recv_seq: int, attempt: int, latency: float, reconciled: bool) -> Reply:
        text = self.answer_text(turn, key, attempt)
        rec = self.opened().append({"ts": self.clock.world(), "event": "served", "task_id": turn.task_id,
                               "epoch": turn.epoch, "attempt": attempt, "turn_key": turn.turn_key,
                               "mode": turn.mode, "kind": turn.kind, "key": key, "recv_seq": recv_seq,
                               "latency": latency, "reconciled": reconciled, "reply": text})
        return Reply(text, meta={"model": f"sim-{turn.mode}", "latency": latency, "served_seq": rec["seq"],
                                 "attempt": attempt, "reconciled": reconciled})

    def reconcile(self, turn: Turn) -> Reply | None:
        """The provider's view of a turn whose outcome the worker does not know.

        Looks at every request received for (task id, turn key), whatever its attempt, and takes the
        latest one that did not fail: served -> its reply; received but not served (the worker died
        or cancelled mid-request) -> the provider finished it anyway, so it is served now and returned.
        None when no request of this turn is pending or served: sending is then safe.
        """
        self.start()
        alive = [e for e in self.opened().turn(turn.task_id, turn.turn_key) if not e.failed]
        if not alive:
            return None
        entry = alive[-1]
        served = self.opened().served_record(entry)
        if served is not None:
            return Reply(served["reply"], meta={"model": f"sim-{served['mode']}", "latency": served["latency"],
                                                "served_seq": served["seq"], "attempt": served["attempt"],
                                                "reconciled": True})
        key = content_key(turn)
        original = dataclasses.replace(turn, mode=entry.mode, epoch=entry.epoch)
        return self._serve(original, key, entry.seq, entry.attempt, self.latency(entry.mode, key, entry.attempt),
                           reconciled=True)

    def unspent(self, turn: Turn) -> bool:
        """Provider.unspent: no request of that attempt reached the sim (its log has none), so it cost
        nothing. A request that arrived and failed inside the sim keeps its unit: Fano counts what it sent."""
        self.start()
        return not any(e.attempt == turn.attempt for e in self.opened().turn(turn.task_id, turn.turn_key))


def _until(now: float, wait: float, window: dict) -> str:
    """'14:56 UTC' (or 'Jan 10, 14:56 UTC' when more than a day away), in the window's time zone."""
    when = dt.datetime.fromtimestamp(now + wait, ZoneInfo(window.get("tz", "UTC")))
    return when.strftime("%b %d, %H:%M %Z" if wait >= 86400 else "%H:%M %Z")
