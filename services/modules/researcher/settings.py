"""The researcher's settings: ``[modules.researcher]`` in fano.toml (every key optional).

``shared.config`` keeps each ``[modules.NAME]`` table raw (``Config.modules``); this module validates its own
table from the same file. Unknown keys are errors, as everywhere in the configuration (a typo in
``auto_promote`` must not silently mean "off")::

    [modules.researcher]
    plan_interval = 5.0             # seconds between planning passes (also after every applied result)
    observe_interval = 30.0         # seconds between looks at new insights and sections
    questions_batch = 20            # at most this many insights/sections per generate_questions task
    dedup_threshold = 0.8           # lexical similarity from which a question/finding duplicates a stored one
    sources = []                    # URLs to research from the start (origin "config")
    trusted_domains = {}            # domain -> listed score 0-100, added to (or overriding) the defaults
    replace_trusted = false         # true: trusted_domains replaces the default allow-list
    excluded_domains = []           # never fetched, trust 0
    trust_min = 50                  # sources below are ignored
    evaluations = 1                 # LLM evaluations per source (their mean counts); the original used 3
    min_confidence = 0.5            # findings below are kept but marked low_confidence
    auto_promote = false            # promote findings to seeds without the user
    auto_promote_min_confidence = 0.8
    auto_promote_requires_crossref = true
    max_sources = 500               # backend-proposed sources stop being added above this many
    eval_chars = 4000               # page text quoted in an evaluation prompt
    extract_chars = 12000           # page text quoted in an extraction prompt
    [modules.researcher.fetch]
    min_interval = 2.0              # seconds between two requests to one domain
    timeout = 20.0                  # seconds per socket operation (the whole body: twice that)
    max_bytes = "2MiB"
    cache_ttl = 604800.0            # seconds a cached page is used without asking the server
    cache_max_bytes = "200MiB"
    content_types = ["text/html", "application/xhtml+xml", "text/plain"]
    user_agent = "FanoResearcher/1.0 (research tool)"
    max_attempts = 3                # fetches of one source before it is fetch_failed
    retry_backoff = 60.0            # world seconds before the 2nd attempt, doubled after each failure
    max_text_chars = 20000          # page text stored in the broker
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields

from services.modules.researcher.fetch import DEFAULT_TYPES
from services.modules.settings_table import coerce_table
from shared.config import ConfigError

SIZES = frozenset({"max_bytes", "cache_max_bytes"})   # keys that take a size such as "2MiB"


@dataclass(frozen=True)
class FetchSettings:
    min_interval: float = 2.0
    timeout: float = 20.0
    max_bytes: int = 2 * 1024 * 1024
    cache_ttl: float = 7 * 86400.0
    cache_max_bytes: int = 200 * 1024 * 1024
    content_types: tuple = DEFAULT_TYPES
    user_agent: str = "FanoResearcher/1.0 (research tool)"
    max_attempts: int = 3
    retry_backoff: float = 60.0
    max_text_chars: int = 20000


@dataclass(frozen=True)
class Settings:
    plan_interval: float = 5.0
    observe_interval: float = 30.0
    questions_batch: int = 20
    dedup_threshold: float = 0.8
    sources: tuple = ()
    trusted_domains: dict = field(default_factory=dict)
    replace_trusted: bool = False
    excluded_domains: tuple = ()
    trust_min: float = 50.0
    evaluations: int = 1
    min_confidence: float = 0.5
    auto_promote: bool = False
    auto_promote_min_confidence: float = 0.8
    auto_promote_requires_crossref: bool = True
    max_sources: int = 500
    eval_chars: int = 4000
    extract_chars: int = 12000
    fetch: FetchSettings = field(default_factory=FetchSettings)


def load_settings(config) -> Settings:
    """The ``[modules.researcher]`` table of the config (defaults when there is none)."""
    if config is None or getattr(config, "path", None) is None:
        return Settings()
    where = f"{config.path}: [modules.researcher]"
    table = dict((getattr(config, "modules", None) or {}).get("researcher") or {})
    fetch_table = table.pop("fetch", {})
    if not isinstance(fetch_table, dict):
        raise ConfigError(f"{where}: fetch must be a table")
    settings = coerce_table(Settings, table, where, SIZES)
    fetch = coerce_table(FetchSettings, fetch_table, where + ".fetch", SIZES)
    if not 0.35 <= settings.dedup_threshold <= 1.0:
        raise ConfigError(f"{where}.dedup_threshold must be in [0.35, 1] (below 0.35 every text is alike)")
    if settings.evaluations < 1:
        raise ConfigError(f"{where}.evaluations must be at least 1")
    if fetch.max_attempts < 1:
        raise ConfigError(f"{where}.fetch.max_attempts must be at least 1")
    return Settings(**{**{f.name: getattr(settings, f.name) for f in fields(Settings)}, "fetch": fetch})
