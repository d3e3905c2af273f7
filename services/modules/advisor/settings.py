"""The advisor's settings: ``[modules.advisor]`` in fano.toml (every key optional; defaults shown)::

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

from services.modules.settings_table import coerce_table
from shared.config import ConfigError

MODULE = "advisor"


@dataclass(frozen=True)
class Settings:
    enabled: bool = False
    auto_apply: bool = False
    max_share: float = 0.05
    interval: float = 1800.0
    min_backlog: int = 10
    imbalance_ratio: float = 3.0
    weight_scale: float = 20.0
    max_weight: float = 40.0
    modules: tuple = ("explorer", "documenter", "researcher")
    backends: tuple = ()
    sample_interval: float = 900.0


def settings_from_table(table: dict, where: str = "[modules.advisor]") -> Settings:
    """Validate a ``[modules.advisor]`` table; unknown keys are errors (a typo in ``enabled`` must not
    silently mean "off")."""
    s = coerce_table(Settings, table, where)
    if not 0 < s.max_share <= 0.05:
        raise ConfigError(f"{where}.max_share must be in (0, 0.05]: the advisor may use at most 5% of requests")
    if not all(s.modules) or not all(s.backends):
        raise ConfigError(f"{where}: modules and backends must be lists of names")
    if len(s.modules) < 2:
        raise ConfigError(f"{where}.modules must name at least two modules to balance")
    if s.imbalance_ratio < 1:
        raise ConfigError(f"{where}.imbalance_ratio must be >= 1")
    return s


def load_settings(config) -> Settings:
    table = (getattr(config, "modules", None) or {}).get(MODULE) or {}
    path = getattr(config, "path", None)
    return settings_from_table(dict(table), f"{path}: [modules.advisor]" if path else "[modules.advisor]")
