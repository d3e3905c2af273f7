"""The researcher's settings: ``[modules.researcher]`` in fano.toml (every key optional).

``shared.config`` keeps each ``[modules.NAME]`` table raw (``Config.modules``); :class:`Settings` below
declares this module's keys and :mod:`shared.settings` validates its table from the same file. Unknown keys
are errors, as everywhere in the configuration (a typo in ``auto_promote`` must not silently mean "off")::

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
    max_tasks_per_hour = 300        # tasks the researcher creates per hour; then new work waits (0 = no limit)
    pause_after = 5                 # unusable question batches in a row that pause observing
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

from dataclasses import dataclass

from services.modules.researcher.fetch import DEFAULT_TYPES
from shared import settings
from shared.settings import setting


def _scores(table: dict) -> dict:
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 100 for v in table.values()):
        raise settings.Invalid(f"expected a table of domain = score (0-100), got {table!r}")
    return table


@dataclass(frozen=True)
class FetchSettings:
    min_interval: float = setting(2.0, "seconds between two requests to one domain", lo=0)
    timeout: float = setting(20.0, "seconds per socket operation (the whole body: twice that)", lo=0)
    max_bytes: int = setting(2 * 1024 * 1024, "the largest page fetched", kind="size", lo=0)
    cache_ttl: float = setting(7 * 86400.0, "seconds a cached page is used without asking the server", lo=0)
    cache_max_bytes: int = setting(200 * 1024 * 1024, "the page cache's size", kind="size", lo=0)
    content_types: tuple = setting(DEFAULT_TYPES, "content types fetched")
    user_agent: str = setting("FanoResearcher/1.0 (research tool)", "the User-Agent header")
    max_attempts: int = setting(3, "fetches of one source before it is fetch_failed", lo=1)
    retry_backoff: float = setting(60.0, "world seconds before the 2nd attempt, doubled after each failure", lo=0)
    max_text_chars: int = setting(20000, "page text stored in the broker", lo=0)


@dataclass(frozen=True)
class Settings:
    plan_interval: float = setting(5.0, "seconds between planning passes (also after every applied result)", lo=0)
    observe_interval: float = setting(30.0, "seconds between looks at new insights and sections", lo=0)
    questions_batch: int = setting(20, "at most this many insights/sections per generate_questions task", lo=0)
    dedup_threshold: float = setting(0.8, "lexical similarity from which a question/finding duplicates a stored "
                                          "one (below 0.35 every text is alike)", lo=0.35, hi=1)
    sources: tuple = setting((), "URLs to research from the start (origin config)")
    trusted_domains: dict = setting({}, "domain -> listed score 0-100, added to (or overriding) the defaults",
                                    kind="table", parse=_scores, expected="a table of domain = score (0-100)")
    replace_trusted: bool = setting(False, "true: trusted_domains replaces the default allow-list")
    excluded_domains: tuple = setting((), "never fetched, trust 0")
    trust_min: float = setting(50.0, "sources below are ignored", lo=0)
    evaluations: int = setting(1, "LLM evaluations per source (their mean counts); the original used 3", lo=1)
    min_confidence: float = setting(0.5, "findings below are kept but marked low_confidence", lo=0)
    auto_promote: bool = setting(False, "promote findings to seeds without the user")
    auto_promote_min_confidence: float = setting(0.8, "the confidence an automatically promoted finding needs",
                                                 lo=0)
    auto_promote_requires_crossref: bool = setting(True, "automatic promotion needs a cross-reference")
    max_sources: int = setting(500, "backend-proposed sources stop being added above this many", lo=0)
    eval_chars: int = setting(4000, "page text quoted in an evaluation prompt", lo=0)
    extract_chars: int = setting(12000, "page text quoted in an extraction prompt", lo=0)
    max_tasks_per_hour: int = setting(300, "tasks the researcher creates per hour (world clock); once reached, new "
                                      "work (question batches, fetches whose pages are evaluated) waits for the "
                                      "next hour while started sources finish; a backstop against a runaway "
                                      "loop (0 = no limit)", lo=0)
    pause_after: int = setting(5, "unusable answers in a row to generate_questions batches that pause them until "
                               "`fanoctl research resume` (0 = never)", lo=0)
    fetch: FetchSettings = setting(doc="[modules.researcher.fetch]: how pages are fetched", nested=FetchSettings)


def load_settings(config) -> Settings:
    """The ``[modules.researcher]`` table of the config (defaults when there is none)."""
    if config is None or getattr(config, "path", None) is None:
        return Settings()
    return settings.module_settings(Settings, config, "researcher")
