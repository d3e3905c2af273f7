"""The advisor's decisions as pure functions: when backlogs are out of balance, whether one more request
keeps it within its share, how an answer becomes weights, and whether it may apply them.

Inputs are the broker's ``stats`` answer (``modules``: per-module task counts by state; ``quota``: one row
per account, mode and window) and numbers the service reads from the modules' namespaces.
"""
from __future__ import annotations

import math
import re

from services.modules import parsing
from services.modules.parsing import ParseError

KIND = "advisor.weights"
MODULE = "advisor"
FACTOR_MIN, FACTOR_MAX = 0.05, 20.0   # a "weight" outside this is not a factor (a misread number)
SAMPLE_KEEP = 26 * 3600.0             # throughput samples older than this are dropped


# --- observing -------------------------------------------------------------------------------------------

def _counts(stats: dict) -> dict[str, dict]:
    mods = stats.get("modules") if isinstance(stats, dict) else None
    return {m: s for m, s in (mods or {}).items() if isinstance(s, dict)}


def _n(value) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def backlogs(stats: dict, modules, documenter_waiting: int = 0) -> dict[str, int]:
    """Per module: its PENDING tasks; the documenter's also counts the blessed insights waiting for it
    (its real backlog: it plans only a few tasks at a time)."""
    counts = _counts(stats)
    out = {m: _n((counts.get(m) or {}).get("PENDING")) for m in modules}
    if "documenter" in out:
        out["documenter"] += max(0, int(documenter_waiting or 0))
    return out


def imbalance(backlog: dict[str, int], min_backlog: int, ratio: float) -> str | None:
    """Why the backlogs are out of balance, or None: at least two modules wait, the largest backlog is at
    least ``min_backlog`` and at least ``ratio`` times the smallest non-empty one. (One module alone
    with work is not out of balance: nobody competes with it.)"""
    busy = {m: n for m, n in backlog.items() if n > 0}
    if len(busy) < 2:
        return None
    hi = max(sorted(busy), key=lambda m: busy[m])
    lo = min(sorted(busy), key=lambda m: busy[m])
    if busy[hi] < min_backlog or busy[hi] < ratio * busy[lo]:
        return None
    return f"{hi} has {busy[hi]} waiting against {busy[lo]} for {lo} (x{busy[hi] / busy[lo]:.1f} >= x{ratio:g})"


def request_counts(stats: dict) -> tuple[int, int]:
    """(the advisor's tasks, all tasks) the broker knows of, in every state."""
    counts = _counts(stats)
    total = sum(_n(v) for states in counts.values() for v in states.values())
    mine = sum(_n(v) for v in (counts.get(MODULE) or {}).values())
    return mine, total


def may_ask(mine: int, total: int, share: float) -> bool:
    """One more advisor task keeps the advisor's tasks at most ``share`` of all tasks, itself included:
    ``mine + 1 <= share * (total + 1)``. (With share 0.05: one request per 20.)"""
    return mine + 1 <= share * (total + 1) + 1e-9


def add_sample(samples: list, now: float, done: dict[str, int], every: float) -> list:
    """Append ``[now, done]`` (DONE tasks per module) if the last sample is ``every`` seconds old; drop
    samples older than 26 h. Returns the new list (the same object if nothing changed)."""
    if samples and now - samples[-1][0] < every:
        return samples
    return [s for s in samples if now - s[0] <= SAMPLE_KEEP] + [[now, dict(done)]]


def throughput(samples: list, now: float, done: dict[str, int], window: float = 86400.0) -> tuple[dict, float]:
    """(DONE tasks per module over the last ``window`` seconds, or since the oldest sample, and the
    span in seconds it covers)."""
    base = next((s for s in samples if now - s[0] <= window), None)
    if base is None:
        return {m: 0 for m in done}, 0.0
    return {m: max(0, n - _n(base[1].get(m))) for m, n in done.items()}, now - base[0]


def done_counts(stats: dict, modules) -> dict[str, int]:
    counts = _counts(stats)
    return {m: _n((counts.get(m) or {}).get("DONE")) for m in modules}


# --- the answer ------------------------------------------------------------------------------------------

def tag(module: str) -> str:
    return f"{module.upper()}_WEIGHT"


_FACTOR = re.compile(r"(-?)\s*[x×]?\s*(\d+(?:[.,]\d+)?|[.,]\d+)\s*(%)?", re.IGNORECASE)


def parse_factor(value: str, name: str) -> float:
    """``1.2``, ``x1.2``, ``1.2x``, ``1,2``, ``120%`` -> 1.2 (the first number in the value)."""
    m = _FACTOR.search(value)
    if not m:
        raise ParseError(f"{name}: expected a number such as 1.5, got {value!r}")
    if m.group(1):
        raise ParseError(f"{name}: a weight factor cannot be negative, got {value!r}")
    f = float(m.group(2).replace(",", "."))
    if m.group(3):
        f /= 100.0
    if not FACTOR_MIN <= f <= FACTOR_MAX:
        raise ParseError(f"{name}: {f:g} is not a weight factor (expected about 0.5 to 2.0)")
    return f


def parse_weights(text: str, modules) -> tuple[dict[str, float], str]:
    """``({module: factor}, reasoning)`` from ``EXPLORER_WEIGHT: 1.2`` ... ``REASONING:`` lines.

    Tolerant of what models do (bold tag names, ``Explorer weight = 1.2``, ``x1.2``, ``120%``, a decimal
    comma, prose around); a weight missing for any module the prompt asked about, or a value that is not a
    factor, is an error (stored by the framework), never a silent 1.0."""
    tags = [tag(m) for m in modules] + ["REASONING"]
    factors, missing = {}, []
    for m in modules:
        value = parsing.field(text, tag(m), required=False)
        if not value:
            missing.append(tag(m))
            continue
        factors[m] = parse_factor(value, tag(m))
    if missing:
        raise ParseError(f"no {', '.join(missing)} in the answer")
    reasoning = parsing.field(text, "REASONING", required=False, multiline=True, stop_tags=tags) or ""
    return factors, reasoning.strip()[:2000]


def to_weights(factors: dict[str, float], scale: float, cap: float) -> dict[str, float]:
    """Factors (1.0 = unchanged) as the scheduler's additive weights: ``scale * log2(f)``, capped at
    ``±cap`` (so halving and doubling move a module by the same amount either way)."""
    return {m: round(max(-cap, min(cap, scale * math.log2(f))), 1) + 0.0 for m, f in factors.items()}


def may_apply(current: dict, configured: dict, last_applied: dict | None, modules) -> bool:
    """Whether auto-apply may change the scheduler's weights: only while they are what the configuration
    says (a fresh or restarted scheduler) or what the advisor itself set last. Anything else is a
    user's override (``fanoctl modules weights --set``), and that stands."""
    def norm(d):
        return {m: float((d or {}).get(m, 0.0)) for m in modules}
    cur = norm(current)
    return cur == norm(configured) or (last_applied is not None and cur == norm(last_applied))


# --- the prompt ------------------------------------------------------------------------------------------

def quota_lines(stats: dict) -> str:
    rows = []
    for q in (stats.get("quota") or []) if isinstance(stats, dict) else []:
        if not isinstance(q, dict):
            continue
        cool = f", cooling down until {q['cooldown_until']:.0f}" if q.get("cooldown_until") else ""
        rows.append(f"- {q.get('account')} {q.get('mode')} ({q.get('window')}): {q.get('remaining')} of "
                    f"{q.get('limit')} left{cool}")
    return "\n".join(rows) or "(no quotas configured)"


def table(values: dict, unit: str = "") -> str:
    return "\n".join(f"- {m}: {n}{unit}" for m, n in values.items()) or "(none)"
