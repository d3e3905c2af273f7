"""The documenter's settings: ``[modules.documenter]`` in fano.toml (every key optional; defaults shown)::

    [modules.documenter]
    evaluators = 3                  # evaluation panel: 2 or 3 evaluators, on different accounts where possible
    panel_accounts = []             # accounts that evaluate; empty = every configured account
    max_active = 2                  # incorporation pipelines in flight at once
    max_disputes = 3                # failed steps before an insight waits for a human
    comment_max_failures = 3        # unusable answers to an author comment before it waits for a human
    review_share = 0.3              # share of section reviews in the work while there is other work
    section_stale_days = 7.0        # days after its last review when a section is due for review again
    backlog_boosts = [[10, 15], [20, 30]]   # [blessed insights waiting, boost]: +15 above 10, +30 above 20
    comment_boost = 100             # attrs.comment_boost of address_comment tasks (the author's voice first)
    section_priority = 5            # seed-priority equivalent of a section review
    member_patience = 300.0         # world seconds an evaluator's task may wait on an account without room

**Following capacity** (:mod:`.seats`; headroom read from the broker, :mod:`services.modules.capacity`):
a new evaluation panel is drawn from the panel accounts that have standard room now or within
``member_patience`` (when at least two do; else from all of them, as before). An evaluator whose task
has waited ``member_patience`` while its account has no room goes to a panel account that has room and
is not on the panel; without one it is left out when two evaluators remain (all of those must still
answer INCLUDE); else it waits.

**How documenter work competes with exploration** (the scheduler adds ``seed_weight`` x
``attrs.seed_priority`` to every task, docs/scheduling.md § Priority). The explorer's tasks about an insight carry the
insight's priority; so do the documenter's (a planning turn carries the highest priority among the
insights it offers), so that reviewing an insight and incorporating a blessed one compete on the same
scale, and only the base priorities by kind and the age decide between them. Without this a documenter
task (no seed priority) lost to every explorer task by 10 x the seed priority and starved on any
account the explorer kept busy (the demo showed no section in 20 minutes: every evaluation panel has a
seat on the slowest account). Equal footing is not enough either: the explorer always has more work
than the accounts can do, so work on a seed of priority 8 would still go before incorporating an
insight of priority 7. fano.toml therefore gives the documenter a module weight (``[scheduler]
module_weights``, 20 = two seed-priority steps); its work is small and bounded (one planning turn and at
most ``max_active`` pipelines in flight), so that cannot starve exploration.

The documenter's backlog boost (docs/research.md § Default priorities) counts *blessed insights waiting*
(not yet incorporated, whether planned or not): it is added to the task's own ``priority`` (the scheduler's
"offset around 50"), so it reaches the scheduler without a scheduler change. The scheduler's own
``backlog_boosts`` count queued tasks per module, which for the documenter (a handful at a time) never
reaches the threshold; fano.toml turns that one off for the documenter so the two cannot add up.
"""
from __future__ import annotations

from dataclasses import dataclass

from services.modules.settings_table import check_known
from shared.config import ConfigError

MODULE = "documenter"


@dataclass(frozen=True)
class Settings:
    evaluators: int = 3
    panel_accounts: tuple = ()
    max_active: int = 2
    max_disputes: int = 3
    comment_max_failures: int = 3
    review_share: float = 0.3
    section_stale_days: float = 7.0
    backlog_boosts: tuple = ((10, 15), (20, 30))
    comment_boost: float = 100.0
    section_priority: int = 5
    member_patience: float = 300.0

    @property
    def section_stale(self) -> float:
        """``section_stale_days`` in world seconds."""
        return float(self.section_stale_days) * 86400.0

    def backlog_boost(self, waiting: int) -> int:
        """The priority added to documenter tasks while ``waiting`` blessed insights wait."""
        boost = 0
        for threshold, value in self.backlog_boosts:
            if waiting > threshold:
                boost = max(boost, int(value))
        return boost


def _number(value, where: str, *, integer: bool = False, low: float = 0.0, high: float | None = None):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        raise ConfigError(f"{where} must be {'an integer' if integer else 'a number'}, got {value!r}")
    if value < low or (high is not None and value > high):
        raise ConfigError(f"{where} must be in [{low:g}, {high:g}]" if high is not None
                          else f"{where} must be >= {low:g}")
    return value


def settings_from_table(table: dict, where: str = "[modules.documenter]") -> Settings:
    """Validate a ``[modules.documenter]`` table; unknown keys are errors, like the rest of the config."""
    check_known(Settings, table, where)
    kw = {}
    for key, value in (table or {}).items():
        at = f"{where}.{key}"
        if key == "evaluators":
            kw[key] = _number(value, at, integer=True, low=2, high=3)
        elif key in ("max_active", "max_disputes", "comment_max_failures"):
            kw[key] = _number(value, at, integer=True, low=1)
        elif key == "section_priority":
            kw[key] = _number(value, at, integer=True, low=1, high=10)
        elif key == "section_stale_days":
            kw[key] = float(_number(value, at, low=0.0))
            if kw[key] <= 0:
                raise ConfigError(f"{at} must be > 0")
        elif key == "review_share":
            kw[key] = float(_number(value, at, high=1.0))
        elif key == "member_patience":
            kw[key] = float(_number(value, at, low=0.0))
        elif key == "comment_boost":
            kw[key] = float(_number(value, at, high=1e6))
        elif key == "panel_accounts":
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise ConfigError(f"{at} must be a list of account names")
            kw[key] = tuple(value)
        elif key == "backlog_boosts":
            ok = isinstance(value, list) and all(
                isinstance(p, list) and len(p) == 2 and all(not isinstance(x, bool) and isinstance(x, (int, float))
                                                          for x in p) for p in value)
            if not ok:
                raise ConfigError(f"{at} must be a list of [waiting, boost] pairs, e.g. [[10, 15], [20, 30]]")
            kw[key] = tuple(sorted((int(w), int(b)) for w, b in value))
    return Settings(**kw)


def load_settings(config) -> Settings:
    """The ``[modules.documenter]`` table of ``config`` (``Config.modules``), or the defaults."""
    table = (getattr(config, "modules", None) or {}).get(MODULE) or {}
    path = getattr(config, "path", None)
    return settings_from_table(dict(table), f"{path}: [modules.documenter]" if path else "[modules.documenter]")
