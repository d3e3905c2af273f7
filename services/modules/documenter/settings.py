"""The documenter's settings: ``[modules.documenter]`` in fano.toml (every key optional; declared in
:class:`Settings` below, validated by :mod:`shared.settings`; defaults shown)::

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
    max_tasks_per_hour = 300        # tasks the documenter creates per hour; then new work waits (0 = no limit)
    pause_after = 5                 # unusable answers in a row that pause planning (or section reviews)

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

from shared import settings
from shared.settings import setting

MODULE = "documenter"


def _boosts(value) -> tuple:
    ok = isinstance(value, list) and all(
        isinstance(p, list) and len(p) == 2 and all(not isinstance(x, bool) and isinstance(x, (int, float))
                                                  for x in p) for p in value)
    if not ok:
        raise settings.Invalid(f"expected a list of [waiting, boost] pairs, e.g. [[10, 15], [20, 30]], got {value!r}")
    return tuple(sorted((int(w), int(b)) for w, b in value))


@dataclass(frozen=True)
class Settings:
    evaluators: int = setting(3, "evaluation panel: 2 or 3 evaluators, on different accounts where possible",
                              lo=2, hi=3)
    panel_accounts: tuple = setting((), "accounts that evaluate; empty = every configured account", nonempty=True)
    max_active: int = setting(2, "incorporation pipelines in flight at once", lo=1)
    max_disputes: int = setting(3, "failed steps before an insight waits for a human", lo=1)
    comment_max_failures: int = setting(3, "unusable answers to an author comment before it waits for a human",
                                        lo=1)
    review_share: float = setting(0.3, "share of section reviews in the work while there is other work", lo=0, hi=1)
    section_stale_days: float = setting(7.0, "days after its last review when a section is due for review again",
                                        lo=0, lo_open=True)
    backlog_boosts: tuple = setting(((10, 15), (20, 30)), "[blessed insights waiting, boost]: +15 above 10, "
                                    "+30 above 20", parse=_boosts,
                                    expected="a list of [waiting, boost] pairs, e.g. [[10, 15], [20, 30]]")
    comment_boost: float = setting(100.0, "attrs.comment_boost of address_comment tasks (the author's voice first)",
                                   lo=0, hi=1e6)
    section_priority: int = setting(5, "seed-priority equivalent of a section review", lo=1, hi=10)
    member_patience: float = setting(300.0, "world seconds an evaluator's task may wait on an account without room",
                                     lo=0)
    max_tasks_per_hour: int = setting(300, "tasks the documenter creates per hour (world clock); once reached, new "
                                      "work (planning turns, section reviews, comments) waits for the next hour "
                                      "while started pipelines finish; a backstop against a runaway loop "
                                      "(0 = no limit)", lo=0)
    pause_after: int = setting(5, "unusable answers in a row to planning turns (or to section reviews) that pause "
                               "that work until `fanoctl document resume` (0 = never)", lo=0)

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


def settings_from_table(table: dict, where: str = "[modules.documenter]") -> Settings:
    """Validate a ``[modules.documenter]`` table; unknown keys are errors, like the rest of the config."""
    return settings.load(Settings, table, where)


def load_settings(config) -> Settings:
    """The ``[modules.documenter]`` table of ``config`` (``Config.modules``), or the defaults."""
    return settings.module_settings(Settings, config, MODULE)
