"""The advisor's settings: ``[modules.advisor]`` in fano.toml (every key optional; declared in
:class:`Settings` below, validated by :mod:`shared.settings`; defaults shown)::

    [modules.advisor]
    enabled = false                 # off by default (docs/research.md § Advisor): the program runs but proposes nothing
    auto_apply = false              # true: set the proposed weights in the scheduler; false: only record them
    max_share = 0.05                # the advisor's tasks are at most this share of all tasks (<= 0.05)
    interval = 1800.0               # world seconds between two looks at the backlogs
    min_backlog = 10                # a backlog below this is never "out of balance"
    imbalance_ratio = 3.0           # out of balance: the largest backlog >= ratio x the smallest non-empty one
    weight_scale = 20.0             # a factor f becomes the additive weight weight_scale * log2(f)
    max_weight = 40.0               # |additive weight| is capped at this
    modules = ["explorer", "documenter", "researcher"]   # the modules it weighs
    backends = []                   # accounts that may answer it; empty = any
    sample_interval = 900.0         # world seconds between throughput samples (24 h throughput)
"""
from __future__ import annotations

from dataclasses import dataclass

from shared import settings
from shared.settings import setting

MODULE = "advisor"


@dataclass(frozen=True)
class Settings:
    enabled: bool = setting(False, "off by default (docs/research.md § Advisor): the program runs but proposes "
                                          "nothing")
    auto_apply: bool = setting(False, "true: set the proposed weights in the scheduler; false: only record them")
    max_share: float = setting(0.05, "the advisor's tasks are at most this share of all tasks (at most 5%)",
                               lo=0, lo_open=True, hi=0.05)
    interval: float = setting(1800.0, "world seconds between two looks at the backlogs", lo=0)
    min_backlog: int = setting(10, "a backlog below this is never out of balance", lo=0)
    imbalance_ratio: float = setting(3.0, "out of balance: the largest backlog ≥ ratio x the smallest non-empty "
                                          "one", lo=1)
    weight_scale: float = setting(20.0, "a factor f becomes the additive weight weight_scale * log2(f)", lo=0)
    max_weight: float = setting(40.0, "the additive weight is capped at ± this", lo=0)
    modules: tuple = setting(("explorer", "documenter", "researcher"), "the modules it weighs (at least two)",
                             nonempty=True, min_items=2)
    backends: tuple = setting((), "accounts (or backend kinds) that may answer it; empty = any", nonempty=True)
    sample_interval: float = setting(900.0, "world seconds between throughput samples (24 h throughput)", lo=0)


def settings_from_table(table: dict, where: str = "[modules.advisor]") -> Settings:
    """Validate a ``[modules.advisor]`` table; unknown keys are errors (a typo in ``enabled`` must not
    silently mean "off")."""
    return settings.load(Settings, table, where)


def load_settings(config) -> Settings:
    """The ``[modules.advisor]`` table of ``config`` (``Config.modules``), or the defaults."""
    return settings.module_settings(Settings, config, MODULE)
