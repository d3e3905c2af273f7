"""Researcher entities and their key layout in the broker (namespace ``researcher``). Pure functions.

Keys (every id is deterministic, so re-proposing anything is harmless and a crash never duplicates)::

    questions/<qid>            Question; qid = sha256(normalised question text)[:12]
    sources/<sid>              Source; sid = sha256(canonical URL)[:16]
    content/<sid>              {url, title, text, content_hash, content_type, fetched_at}: the page as text
                               (what the evaluate/extract prompts quote; kept apart so that scans stay light;
                               working data once the source is extracted or ignored)
    queue/fetch/<sid>          {url, added}: index of sources waiting for a fetch; deleted in the same
                               transaction that records the fetch outcome
    findings/<fid>             Finding; fid = sha256(sid + "\\x1f" + normalised summary)[:12]
    crossrefs/number/<n>       CrossRef; n = canonical number text ("168", "2.5")
    crossrefs/concept/<slug>   CrossRef; slug = lower-case words joined by "-"
    promotions/<fid>           Promotion (see below)
    observed/explorer/<id>     {version, at, task_id}: an explorer insight already turned into questions
                               (once per insight: a reworded insight is the same claim)
    observed/documenter/<sid>/<rev>
                               {version, at, task_id}: revision <rev> of a documenter section already turned
                               into questions; a revised section is observed again, at most once per
                               revision (a revert to an observed revision is not). ``<rev>`` is the
                               section's ``rev`` (the broker's key version for a record without one).
                               A key ``observed/documenter/<sid>`` (written before revisions were
                               observed) covers the revision current at its ``at``
    state/questions            {key, kind, payload, observed}: the generate_questions batch in flight
    state/question_streak      {failures, paused, pause_reason, paused_at}: unusable batches in a row
    pace/hour                  {window_start, tasks, limit}: tasks created this hour (modules/pace.py)
    errors/<task id>           unusable answers (written by the ModuleService base class; working data)

**Dedup** (:func:`services.modules.dedup.lexical_duplicate`, shared with the other modules): a new
question is compared with every stored question, a new finding with every stored finding (of any
source). An exact or close rewording (similarity >= ``dedup_threshold``, 0.8, and no different
numbers) is not stored again: it is recorded on the stored record (``duplicates``, the last
``DUPLICATES_KEPT``, and ``duplicate_count``), so a repeat is visible and counted, never silently
dropped. A duplicate finding's numbers and concepts still count for its own source's domain in the
cross-references (listed under the stored finding's id): the same claim on a second site is a
cross-reference. There is no LLM duplicate check here (it would need a task kind of its own), so the
threshold is set high: a reworded duplicate that scores lower is stored as new.

Entities (values are msgpack maps)::

    Question  {id, question, type: supporting|challenging|alternative|contextual, concepts: [str],
               numbers: [n], priority: 1-10, urls: [str], batch: task key, created: world time,
               duplicate_count: n, duplicates: [{question, type, score, batch, at}]}
    Source    {id, url, domain, origin: "user" | "config" | "question:<qid>", note, added, status,
               fetch_attempts, next_fetch_at, fetched_at, fetch_count, cache: hit|revalidated|miss,
               content_type, content_hash, title, error, listed_score: int|None,
               evaluations: {"<n>": {score, scholarly_tone, cites_primary, reasons}}, trust_score: 0-100,
               trust_tier: 0-3, trust_reasons: [str], evaluated_at, findings: int (stored),
               duplicates: int (findings recorded as duplicates of stored ones), numbers: [mention],
               extracted_at}
      status: new -> fetched -> trusted -> extracted; or ignored (trust below the minimum), excluded
              (domain on the deny list, never fetched), empty (no text), fetch_failed,
              evaluation_failed, extraction_failed (each with ``error``)
    Finding   {id, source_id, url, domain, type, summary, quote, concepts: [str], numbers: [n],
               confidence: 0-1, status: kept|low_confidence, related_questions: [qid], extracted_at,
               task_id, duplicate_count: n, duplicates: [{source_id, url, domain, summary, quote, type,
               confidence, score, task_id, at}]}
    CrossRef  {kind: number|concept, value, domains: [str], findings: [fid], active: len(domains) >= 2,
               strength: 1 - 1/len(domains), updated}

**Promotion contract** (read by the explorer; the researcher never writes the explorer's namespace and
the explorer never writes this one). ``promotions/<finding_id>`` holds the seed the finding proposes::

    {finding_id, text, type: "question" | "conjecture", priority: 1-10, tags: [str],
     source: "researcher:finding:<finding_id>", url, by: "user" | "auto", at: world time}

It is written by ``fanoctl research promote FINDING`` (the default) or, when ``auto_promote`` is
configured, by the researcher itself; it is written once and never changed (``if_version`` 0). The
explorer imports each record it has not imported yet as a seed and remembers that in its own namespace.

The record classes below (``TypedDict``: plain maps, as msgpack carries them) give these shapes types;
tests/unit/test_module_records.py checks them against the records a run of the module writes.
"""
# no ``from __future__ import annotations``: TypedDict reads NotRequired from evaluated annotations
# (``__required_keys__``), which tests/unit/test_module_records.py compares with real records

import hashlib
import re
import unicodedata
from collections.abc import Mapping
from typing import Any, NotRequired, TypedDict
from urllib.parse import urlsplit, urlunsplit

from shared import txn

NS = "researcher"
TERMINAL_SOURCE = ("extracted", "ignored", "excluded", "empty", "fetch_failed", "evaluation_failed",
                   "extraction_failed")

# --- records ---------------------------------------------------------------------------------------------

Duplicate = dict[str, Any]   # one entry of a record's ``duplicates`` (what was found again, with its score)


class Question(TypedDict):
    """``questions/<qid>``."""

    id: str
    question: str
    type: str                     # supporting | challenging | alternative | contextual
    concepts: list[str]
    numbers: list[Any]
    priority: int
    urls: list[str]
    batch: str                    # the generate_questions task key
    created: float
    duplicate_count: NotRequired[int]
    duplicates: NotRequired[list[Duplicate]]


class Evaluation(TypedDict, total=False):
    """One LLM evaluation of a source (``Source.evaluations["<n>"]``), or ``{"error"}`` when unusable."""

    score: float
    scholarly_tone: bool | None
    cites_primary: bool | None
    reasons: list[str]
    error: str


class Source(TypedDict):
    """``sources/<sid>``; ``status`` moves new -> fetched -> trusted -> extracted or ends in
    :data:`TERMINAL_SOURCE`."""

    id: str
    url: str
    domain: str
    origin: str                   # user | config | question:<qid>
    note: str
    added: float
    status: str
    fetch_attempts: int
    next_fetch_at: float
    fetch_count: int
    evaluations: dict[str, Evaluation]
    trust_score: float | None
    trust_tier: int
    findings: int
    error: dict[str, Any] | None  # {"reason", "message", ...}
    fetched_at: NotRequired[float]
    cache: NotRequired[str]       # hit | revalidated | miss
    content_type: NotRequired[str]
    content_hash: NotRequired[str]
    title: NotRequired[str]
    listed_score: NotRequired[float | None]
    llm_score: NotRequired[float | None]
    trust_reasons: NotRequired[list[str]]
    evaluated_at: NotRequired[float]
    duplicates: NotRequired[int]
    numbers: NotRequired[list[dict[str, Any]]]   # the page's number mentions (parse_findings)
    extracted_at: NotRequired[float]


class Content(TypedDict):
    """``content/<sid>``: the page as text."""

    url: str
    title: str
    text: str
    content_hash: str
    content_type: str
    fetched_at: float


class FetchEntry(TypedDict):
    """``queue/fetch/<sid>``."""

    url: str
    added: float
    not_before: NotRequired[float]


class Finding(TypedDict):
    """``findings/<fid>``."""

    id: str
    source_id: str
    url: str
    domain: str
    type: str
    summary: str
    quote: str
    concepts: list[str]
    numbers: list[Any]
    confidence: float
    status: str                   # kept | low_confidence
    related_questions: list[str]
    extracted_at: float
    task_id: int
    duplicate_count: NotRequired[int]
    duplicates: NotRequired[list[Duplicate]]


class CrossRef(TypedDict):
    """``crossrefs/<kind>/<value>``: a number or concept and the domains whose findings name it."""

    kind: str                     # number | concept
    value: str
    domains: list[str]
    findings: list[str]
    active: bool
    strength: float
    updated: float


class Promotion(TypedDict):
    """``promotions/<fid>``: the promotion contract above (the explorer reads it)."""

    finding_id: str
    text: str
    type: str                     # question | conjecture
    priority: int
    tags: list[str]
    source: str
    url: str | None
    by: str                       # user | auto
    at: float


class Observed(TypedDict):
    """``observed/<ns>/<id>``: an item already turned into questions."""

    version: int | None
    at: float
    task_id: NotRequired[int]


def _h(text: str, n: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def norm_text(text: str) -> str:
    """Lower case, NFKC, single spaces, no trailing punctuation: what makes two wordings 'the same'."""
    text = unicodedata.normalize("NFKC", text or "").lower()
    return re.sub(r"\s+", " ", text).strip(" .;:!?")


def canonical_url(url: str) -> str:
    """Lower-case scheme and host, no fragment, no default port, "/" for an empty path. Raises ValueError
    for anything but an absolute http(s) URL."""
    parts = urlsplit(str(url).strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an absolute http(s) URL: {url!r}")
    scheme = parts.scheme.lower()
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    netloc = host if port in (None, 80 if scheme == "http" else 443) else f"{host}:{port}"
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))


def domain_of(url: str) -> str:
    """The site a URL belongs to: host[:port] without a leading ``www.`` (rate limits, trust, crossrefs)."""
    netloc = urlsplit(canonical_url(url)).netloc
    return netloc[4:] if netloc.startswith("www.") else netloc


def source_id(url: str) -> str:
    return _h(canonical_url(url), 16)


def question_id(text: str) -> str:
    return _h(norm_text(text), 12)


def finding_id(sid: str, summary: str) -> str:
    return _h(f"{sid}\x1f{norm_text(summary)}", 12)


def number_text(n) -> str:
    if isinstance(n, float) and n.is_integer():
        n = int(n)
    return f"{n:g}" if isinstance(n, float) else str(n)


def concept_slug(concept: str) -> str:
    return "-".join(re.findall(r"[a-z0-9]+", norm_text(concept).replace("_", " ")))[:80]


def crossref_key(kind: str, value) -> str:
    return f"crossrefs/{kind}/{number_text(value) if kind == 'number' else concept_slug(str(value))}"


# --- keys -----------------------------------------------------------------------------------------------

def k_source(sid: str) -> str:
    return f"sources/{sid}"


def k_content(sid: str) -> str:
    return f"content/{sid}"


def k_fetch(sid: str) -> str:
    return f"queue/fetch/{sid}"


def k_finding(fid: str) -> str:
    return f"findings/{fid}"


def k_question(qid: str) -> str:
    return f"questions/{qid}"


def k_promotion(fid: str) -> str:
    return f"promotions/{fid}"


def k_observed(ns: str, ident: str) -> str:
    return f"observed/{ns}/{ident}"


K_QUESTION_BATCH = "state/questions"
K_QUESTION_STREAK = "state/question_streak"   # unusable batches in a row, and their pause (modules/pace.py)
DUPLICATES_KEPT = 20   # duplicate entries kept on a record (``duplicate_count`` counts them all)


# --- observation -----------------------------------------------------------------------------------------

def observed_version(ns: str, value: dict, key_version: int) -> int:
    """The version of an observed item: a section's ``rev`` (its text's revision), else the key's version."""
    rev = value.get("rev") if ns == "documenter" else None
    return rev if isinstance(rev, int) and not isinstance(rev, bool) else int(key_version)


def observation_id(ns: str, ident: str, value: dict, key_version: int) -> str:
    """What one observation is of: an insight (``<id>``) or a revision of a section (``<sid>/<rev>``)."""
    return f"{ident}/{observed_version(ns, value, key_version)}" if ns == "documenter" else ident


def legacy_observed(ns: str, value: dict, legacy) -> bool:
    """Whether an ``observed/documenter/<sid>`` record (before revisions were observed) covers the
    section's current revision: it does if the revision is not newer than the observation."""
    if ns != "documenter" or not isinstance(legacy, dict):
        return False
    at, updated = legacy.get("at"), value.get("updated") or value.get("created")
    return isinstance(at, (int, float)) and (not isinstance(updated, (int, float)) or updated <= at)


def recency(ns: str, value: dict) -> float:
    """When an observed item became what it is (newest first): a section's current revision
    (``updated``), an insight's creation (``created_at``); 0 when unknown."""
    names = ("updated", "created") if ns == "documenter" else ("created_at", "created", "updated_at")
    for name in names:
        t = value.get(name)
        if isinstance(t, (int, float)) and not isinstance(t, bool):
            return float(t)
    return 0.0


def note_duplicate(record: dict, entry: dict) -> None:
    """Record on a stored question/finding that it was found again (bounded list, full count)."""
    record["duplicates"] = (list(record.get("duplicates") or []) + [entry])[-DUPLICATES_KEPT:]
    record["duplicate_count"] = int(record.get("duplicate_count") or 0) + 1


# task keys
def key_questions(observed: list[str]) -> str:
    return "researcher:questions:" + _h("\n".join(sorted(observed)), 16)


def key_evaluate(sid: str, n: int = 0) -> str:
    return f"researcher:evaluate:{sid}" + (f":{n}" if n else "")


def key_extract(sid: str) -> str:
    return f"researcher:extract:{sid}"


# --- entities -------------------------------------------------------------------------------------------

def new_source(url: str, origin: str, now: float, note: str = "") -> Source:
    """A Source as first recorded (status ``new``); its fetch index entry is :func:`fetch_entry`."""
    url = canonical_url(url)
    return {"id": source_id(url), "url": url, "domain": domain_of(url), "origin": origin, "note": note,
            "added": now, "status": "new", "fetch_attempts": 0, "next_fetch_at": 0.0, "fetch_count": 0,
            "evaluations": {}, "trust_score": None, "trust_tier": 0, "findings": 0, "error": None}


def fetch_entry(source: Mapping[str, Any]) -> FetchEntry:
    return {"url": source["url"], "added": source["added"]}


def add_source_ops(url: str, origin: str, now: float, note: str = "") -> tuple[str, list[dict]]:
    """(sid, ops) recording a new source and its fetch index entry, both only if absent."""
    src = new_source(url, origin, now, note)
    return src["id"], [txn.put(k_source(src["id"]), src, if_version=0),
                       txn.put(k_fetch(src["id"]), fetch_entry(src), if_version=0)]


def trust_tier(score) -> int:
    """1 highly trusted (>= 85), 2 good (>= 70), 3 use with caution (>= 50), 0 not trusted."""
    if score is None:
        return 0
    return 1 if score >= 85 else 2 if score >= 70 else 3 if score >= 50 else 0


def promotion(finding: Mapping[str, Any], by: str, now: float, kind: str | None = None,
              priority: int | None = None, question: Mapping[str, Any] | None = None) -> Promotion:
    """The seed a finding proposes. Default type: a challenging or contextual finding raises a question,
    a supporting or alternative one states a conjecture. Default priority: confidence * 10 (1-10)."""
    if kind is None:
        kind = "question" if finding.get("type") in ("challenging", "contextual") else "conjecture"
    if kind not in ("question", "conjecture"):
        raise ValueError(f"promotion type must be question or conjecture, got {kind!r}")
    if priority is None:
        priority = round(float(finding.get("confidence") or 0.5) * 10)
    priority = int(min(10, max(1, priority)))
    summary = str(finding.get("summary") or "").strip()
    if kind == "question":
        text = question["question"] if question else f"What explains this finding: {summary.rstrip('.')}?"
    else:
        text = summary
    tags = list(dict.fromkeys([concept_slug(c) for c in finding.get("concepts") or [] if concept_slug(c)]
                              + [str(n) for n in finding.get("numbers") or []]))[:10]
    return {"finding_id": finding["id"], "text": text, "type": kind, "priority": priority, "tags": tags,
            "source": f"researcher:finding:{finding['id']}", "url": finding.get("url"), "by": by, "at": now}
