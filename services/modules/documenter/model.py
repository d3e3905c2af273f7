"""The documenter's domain state in the broker, and the one way the document changes: a new version.

Key layout in the ``documenter`` namespace (every value a map; ``v`` below is the broker's per-key
version used for ``if_version`` checks, not a document version)::

    doc/head                     {"version": N (0 = empty document), "manifest": [[sid, rev], ...] in document
                                  order, "revs": {sid: last revision number ever given}, "next_section": int,
                                  "updated": world time | None}
    sections/<sid>               the current text of a section (the explorer reads ``text`` for dedup):
                                  {"id", "title", "text", "establishes": [str], "requires": [str],
                                   "status": "provisional" | "stable", "source": {"kind": "insight" |
                                   "prerequisite", "ref": insight id | plan seq}, "rev", "created", "updated",
                                   "reviewed_at": world time | None, "review_count", "review_attempted_at"}
    revisions/<sid>/<rev:04d>    {"sid", "rev", "title", "text", "establishes", "requires", "at", "cause"}
                                 (immutable; every text a section ever had)
    versions/<N:06d>             {"version", "at", "description", "cause": {"kind", "ref", "task"},
                                  "manifest": [[sid, rev], ...]}   (immutable; one per change)
    concepts/<slug>              {"name", "sections": [sid, ...]}: what the current sections establish
    comments/<cid>               an author comment (cli ``comments add``), see services.modules.documenter.upkeep
    jobs/<insight id>            the incorporation pipeline of one insight, see services.modules.documenter.flow
                                 (working data once ``done`` or ``duplicate``: ``incorporated/`` and the
                                 section's revision keep what it produced; deleted after
                                 ``broker.working_retention``)
    incorporated/<insight id>    {"insight_id", "how": "section" | "duplicate", "section", "version", "at", "run"}
    plan/state                   the planning turn (planning), review/state: the section review in flight (upkeep);
                                 each keeps its streak of unusable answers and pause (services/modules/pace.py)
    pace/hour                    {"window_start", "tasks", "limit"}: tasks created this hour (services/modules/pace.py)
    stats/mix                    {"plans": n, "reviews": n}: the share of section reviews in the work
    errors/<task id:012d>        unusable answers and failed tasks (written by the module framework)

Section ids are ``s0001``, ``s0002``, ... (never reused). A version's full text is its manifest's
revisions, so every version can be shown and reverted without copying unchanged sections; a revert is a
new version whose manifest equals the old version's (the sections point at their old revisions again).

The record classes below (``TypedDict``: plain maps, as msgpack carries them) give each key's value a type;
tests/unit/test_module_records.py checks them against the records a whole run of the module writes.
"""
# no ``from __future__ import annotations``: TypedDict reads NotRequired from evaluated annotations
# (``__required_keys__``), which tests/unit/test_module_records.py compares with real records

import re
import secrets
from dataclasses import dataclass, field
from typing import Any, NotRequired, TypedDict, cast

from shared import txn

HEAD = "doc/head"
PLAN_STATE = "plan/state"
REVIEW_STATE = "review/state"
MIX = "stats/mix"
CONTENT = ("title", "text", "establishes", "requires")
HISTORY_LIMIT = 30

# --- records ---------------------------------------------------------------------------------------------

Event = dict[str, Any]   # a ``history`` entry: {"at", "event", **details} (:func:`note`)


class Head(TypedDict):
    """``doc/head``: the current version and its manifest (``[[sid, rev], ...]`` in document order)."""

    version: int
    manifest: list[list[Any]]
    revs: dict[str, int]          # sid -> the highest revision number ever given
    next_section: int
    updated: float | None


class Source(TypedDict):
    """Where a section came from: ``kind`` insight (``ref`` its id) or prerequisite (``ref`` the plan seq)."""

    kind: str
    ref: Any
    needed: NotRequired[str]      # a prerequisite: what the planner said was missing


class Section(TypedDict):
    """``sections/<sid>``: the current text of a section."""

    id: str
    title: str
    text: str
    establishes: list[str]
    requires: list[str]
    status: str                   # provisional | stable
    source: Source | None
    rev: int
    created: float
    updated: float
    reviewed_at: float | None
    review_count: int
    review_attempted_at: float | None


class Cause(TypedDict):
    """Why a version or revision was made: ``kind`` insight | prerequisite | comment | review | revert."""

    kind: str
    ref: Any
    task: int | None


class Revision(TypedDict):
    """``revisions/<sid>/<rev>``: one text a section had (immutable)."""

    sid: str
    rev: int
    title: str
    text: str
    establishes: list[str]
    requires: list[str]
    at: float
    cause: Cause


class Version(TypedDict):
    """``versions/<N>``: one document version (immutable)."""

    version: int
    at: float
    description: str
    cause: Cause
    manifest: list[list[Any]]


class Concept(TypedDict):
    """``concepts/<slug>``: a concept the current sections establish, and which."""

    name: str
    sections: list[str]


class Incorporated(TypedDict):
    """``incorporated/<insight id>``: how an insight ended up in the document (``how`` section | duplicate)."""

    insight_id: str
    how: str
    section: str
    version: int
    at: float
    run: int


class Comment(TypedDict):
    """``comments/<cid>``: an author comment (services/modules/documenter/upkeep.py)."""

    id: str
    section: str
    text: str
    status: str                   # open | addressing | resolved | needs_human
    created: float
    attempts: int
    failures: int
    quote: NotRequired[str | None]   # the passage it is about, as selected (absent in records made before)
    history: NotRequired[list[Event]]
    base_rev: NotRequired[int | None]
    task_key: NotRequired[str]
    updated: NotRequired[float]
    understood: NotRequired[str | None]
    resolution: NotRequired[str | None]
    changed: NotRequired[bool]
    version: NotRequired[int | None]
    resolved_at: NotRequired[float]
    last_error: NotRequired[str]


class Slot(TypedDict):
    """An evaluation slot of a job (services/modules/documenter/seats.py moves or drops it)."""

    name: str
    account: str | None
    replaced: NotRequired[list[str]]
    dropped: NotRequired[bool]


class Evaluation(TypedDict):
    decision: str                 # INCLUDE | EXCLUDE
    notes: Any
    reasoning: str
    task: int


class Draft(TypedDict):
    title: str
    text: str
    establishes: list[str]
    requires: list[str]
    diagram: Any
    task: int


class Job(TypedDict):
    """``jobs/<insight id>``: the incorporation pipeline of one insight (services/modules/documenter/flow.py)."""

    insight_id: str
    stage: str                    # evaluate | draft | exposition | idle | needs_human | done | duplicate
    run: int
    disputes: int
    history: list[Event]
    updated: float
    slots: NotRequired[list[Slot]]
    replaced_tasks: NotRequired[list[int]]
    evals: NotRequired[dict[str, Evaluation]]
    round: NotRequired[int]
    draft: NotRequired[Draft | None]
    notes: NotRequired[str | None]
    similar: NotRequired[list[list[Any]]]
    section: NotRequired[str | None]
    last_reason: NotRequired[str]


class PlanOutcome(TypedDict):
    """What the last planning turn decided (``plan/state``'s ``last``)."""

    seq: int
    decision: str | None
    at: float
    insight_id: NotRequired[str | None]
    reason: NotRequired[str | None]
    outcome: NotRequired[str]
    error: NotRequired[str]


class PlanState(TypedDict):
    """``plan/state``: the planning turn (one in flight at a time)."""

    seq: int
    pending: bool
    waits: int
    failures: int
    key: NotRequired[str]
    proposed_at: NotRequired[float]
    wait_until: NotRequired[float]
    wait_basis: NotRequired[str]
    last: NotRequired[PlanOutcome]


class ReviewOutcome(TypedDict):
    """What the last section review decided (``review/state``'s ``last``)."""

    seq: int
    section: str
    decision: str | None
    at: float
    notes: NotRequired[str]
    outcome: NotRequired[str]
    error: NotRequired[str]


class ReviewState(TypedDict):
    """``review/state``: the section review in flight (``section`` None: none)."""

    seq: int
    section: str | None
    base_rev: NotRequired[int | None]
    key: NotRequired[str]
    started_at: NotRequired[float]
    last: NotRequired[ReviewOutcome]


class Mix(TypedDict):
    """``stats/mix``: planning turns and section reviews so far (the reviews' share of the work)."""

    plans: int
    reviews: int



def section_key(sid: str) -> str:
    return f"sections/{sid}"


def revision_key(sid: str, rev: int) -> str:
    return f"revisions/{sid}/{rev:04d}"


def version_key(n: int) -> str:
    return f"versions/{n:06d}"


def comment_key(cid: str) -> str:
    return f"comments/{cid}"


def job_key(insight_id: str) -> str:
    return f"jobs/{insight_id}"


def incorporated_key(insight_id: str) -> str:
    return f"incorporated/{insight_id}"


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", (name or "").lower()).strip("-")[:120]


def concept_key(name: str) -> str:
    return f"concepts/{slug(name)}"


def new_comment_id(now: float) -> str:
    """Sortable by creation time; the random tail keeps two CLIs in the same millisecond apart."""
    return f"c{int(now * 1000):013d}{secrets.token_hex(2)}"


def empty_head() -> Head:
    return {"version": 0, "manifest": [], "revs": {}, "next_section": 1, "updated": None}


def note(record: dict, now: float, event: str, **detail) -> None:
    """Append to a record's bounded ``history`` (what happened, for ``fanoctl``)."""
    hist = list(record.get("history") or [])
    hist.append({"at": now, "event": event, **detail})
    record["history"] = hist[-HISTORY_LIMIT:]


@dataclass
class Doc:
    """The document as read from the broker: head and sections with their key versions."""

    head_v: int = 0
    head: Head = field(default_factory=empty_head)
    sections: dict[str, tuple[int, Section]] = field(default_factory=dict)    # sid -> (v, record)
    concepts: dict[str, tuple[int, Concept]] = field(default_factory=dict)    # key -> (v, record)

    @property
    def version(self) -> int:
        return int(self.head.get("version", 0))

    def ordered(self) -> list[Section]:
        """Current sections in document order (a manifest entry without a record is skipped)."""
        return [self.sections[sid][1] for sid, _ in self.head.get("manifest", []) if sid in self.sections]

    def established(self) -> dict[str, str]:
        """slug -> concept name, for every concept a current section establishes."""
        out: dict[Any, Any] = {}
        for sec in self.ordered():
            for name in sec.get("establishes") or []:
                out.setdefault(slug(name), name)
        out.pop("", None)
        return out

    def texts(self) -> dict[str, str]:
        return {sec["id"]: sec.get("text", "") for sec in self.ordered()}


def new_sid(doc: Doc) -> str:
    """The id the next new section gets (``s0001``, ``s0002``, ...; never reused)."""
    return f"s{int(doc.head.get('next_section', 1)):04d}"


def read_doc(reader) -> Doc:
    """``reader``: ``get(key) -> (v, value)`` and ``scan(prefix) -> (key, v, value)...`` (a Store)."""
    head_v, head = reader.get(HEAD)
    doc = Doc(head_v, cast(Head, head) if isinstance(head, dict) else empty_head())
    for key, v, value in reader.scan("sections/"):
        if isinstance(value, dict):
            doc.sections[key.split("/", 1)[1]] = (v, cast(Section, value))
    for key, v, value in reader.scan("concepts/"):
        doc.concepts[key] = (v, value)
    return doc


def commit(doc: Doc, changes: dict, cause: dict, description: str, now: float,
           order: list[str] | None = None) -> tuple[list[dict], int]:
    """Ops that make one new document version; returns (ops, the new version number).

    ``changes``: sid -> None (remove the section) or a map with the content fields (``title``, ``text``,
    ``establishes``, ``requires``) and any other section fields to set (``source``, ``status``,
    ``reviewed_at``, ...). A changed section gets a new revision and, unless ``status`` is given, status
    ``provisional``; a new sid is appended at the end (or placed by ``order``, the full new order).
    ``"restore": rev`` in a change points the section back at an existing revision instead (a revert:
    no new revision; ``revs`` keeps the highest number ever given, so later revisions never collide).
    Every write is version-checked against what ``doc`` read, so a racing writer (the CLI's revert, the
    module) makes one of the two transactions fail and recompute.
    """
    # plain maps while they are built (a section takes its fields from ``changes``); stored as Head/Section
    head: dict[str, Any] = {**doc.head, "revs": dict(doc.head.get("revs") or {}),
                            "manifest": [list(e) for e in doc.head["manifest"]]}
    number = doc.version + 1
    ops: list[dict] = []
    manifest = head["manifest"]
    sections: dict[str, Any] = {sid: rec for sid, (_, rec) in doc.sections.items()}
    for sid, change in changes.items():
        v = doc.sections[sid][0] if sid in doc.sections else 0
        if change is None:
            if sid in doc.sections:
                ops.append(txn.delete(section_key(sid), if_version=v))
            sections.pop(sid, None)
            manifest[:] = [e for e in manifest if e[0] != sid]
            continue
        change = dict(change)
        restore = change.pop("restore", None)
        rev = int(restore) if restore is not None else int(head["revs"].get(sid, 0)) + 1
        if restore is None:
            head["revs"][sid] = rev
        old = sections.get(sid)
        rec: dict[str, Any] = dict(old) if old else {"id": sid, "created": now, "reviewed_at": None, "review_count": 0,
                                     "review_attempted_at": None, "source": None}
        rec.update(change)
        rec.update(id=sid, rev=rev, updated=now)
        if "status" not in change:
            rec["status"] = "provisional"   # changed text is unconfirmed until a review confirms it
        m = re.fullmatch(r"s(\d+)", sid)
        if old is None and m:
            head["next_section"] = max(int(head.get("next_section", 1)), int(m.group(1)) + 1)
        missing = [k for k in CONTENT if k not in rec]
        if missing:
            raise ValueError(f"section {sid}: no {', '.join(missing)}")
        if restore is None:
            ops.append(txn.put(revision_key(sid, rev), {"sid": sid, "rev": rev, **{k: rec[k] for k in CONTENT},
                                                     "at": now, "cause": cause}, if_version=0))
        ops.append(txn.put(section_key(sid), rec, if_version=v))
        sections[sid] = rec
        for entry in manifest:
            if entry[0] == sid:
                entry[1] = rev
                break
        else:
            manifest.append([sid, rev])
    if order is not None:
        pos = {sid: i for i, sid in enumerate(order)}
        manifest.sort(key=lambda e: pos.get(e[0], len(pos)))
    head.update(version=number, updated=now)
    ops.append(txn.put(version_key(number), {"version": number, "at": now, "description": description,
                                         "cause": cause, "manifest": [list(e) for e in manifest]}, if_version=0))
    ops.append(txn.put(HEAD, head, if_version=doc.head_v))
    ops += concept_ops(doc, [sections[sid] for sid, _ in manifest if sid in sections])
    return ops, number


def concept_ops(doc: Doc, sections: list[Section]) -> list[dict]:
    """Bring ``concepts/*`` in line with what ``sections`` (the new document, in order) establish."""
    want: dict[str, dict] = {}
    for sec in sections:
        for name in sec.get("establishes") or []:
            s = slug(name)
            if not s:
                continue
            rec = want.setdefault(f"concepts/{s}", {"name": name, "sections": []})
            if sec["id"] not in rec["sections"]:
                rec["sections"].append(sec["id"])
    ops = []
    for key, rec in want.items():
        v, old = doc.concepts.get(key, (0, None))
        if old != rec:
            ops.append(txn.put(key, rec, if_version=v))
    for key, (v, _) in doc.concepts.items():
        if key not in want:
            ops.append(txn.delete(key, if_version=v))
    return ops


class RevertError(ValueError):
    pass


def revert_changes(doc: Doc, reader, target: int) -> tuple[dict, list[str]]:
    """(changes, order) for :func:`commit` that make the document equal to version ``target``."""
    if not 0 <= target <= doc.version:
        raise RevertError(f"no version {target} (the document is at version {doc.version})")
    if target == 0:
        manifest = []
    else:
        _, ver = reader.get(version_key(target))
        if not isinstance(ver, dict):
            raise RevertError(f"version {target} is missing from the store")
        manifest = ver["manifest"]
    current = {sid: rev for sid, rev in doc.head["manifest"]}
    changes: dict = {}
    for sid, rev in manifest:
        if current.get(sid) == rev and sid in doc.sections:
            continue   # the same text as in the target: no new revision
        _, old = reader.get(revision_key(sid, rev))
        if not isinstance(old, dict):
            raise RevertError(f"revision {rev} of section {sid} is missing from the store")
        changes[sid] = {**{k: old[k] for k in CONTENT}, "restore": rev}
    wanted = {sid for sid, _ in manifest}
    for sid in current:
        if sid not in wanted:
            changes[sid] = None
    return changes, [sid for sid, _ in manifest]


def version_text(reader, manifest) -> list[dict]:
    """The sections (title, text, ...) of a version's manifest, from the immutable revisions."""
    out = []
    for sid, rev in manifest:
        _, rec = reader.get(revision_key(sid, rev))
        if isinstance(rec, dict):
            out.append({"id": sid, **{k: rec.get(k) for k in CONTENT}, "rev": rev})
    return out
