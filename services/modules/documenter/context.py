"""What the documenter's steps read (:class:`Env`) and the text they show a model (prompt context).

:class:`Env` bundles the reads one step needs: the module's own namespace (a
:class:`services.modules.base.Store`, or any object with ``get``/``scan``), the explorer's insights
(read only: the documenter never writes into another module's namespace), the world time and the LLM
accounts (for evaluation panels). The service builds one per step (tests/unit/dochelp.py drives it over an
in-process broker core).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from services.modules import prompts
from services.modules.documenter.model import Doc, Section
from services.modules.documenter.settings import Settings
from services.modules.store import Store

MODULE = "documenter"
PREVIEW = 200         # characters of each section shown in an outline
MAX_CANDIDATES = 20   # insights offered to one planning turn (highest priority first)


@dataclass
class Env:
    store: Store                      # get(key) -> (v, value); scan(prefix) -> (key, v, value)...
    explorer: Store                   # the same interface over the explorer's namespace (read only)
    now: float
    accounts: list = field(default_factory=list)   # account names, for evaluation panels
    settings: Settings = field(default_factory=Settings)
    capacity: object = None           # a zero-argument callable giving a capacity.Capacity, or None
    _waiting: int | None = field(default=None, init=False, repr=False, compare=False)
    _cap: object = field(default=None, init=False, repr=False, compare=False)
    _once: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def once(self, name: str, read):
        """``read()``, called at most once per Env: a planning pass asks for the same prefixes from
        several places (jobs, comments, insights), and one snapshot serves them all (the proposals of one
        pass touch disjoint keys, each conditional on the version it read)."""
        if name not in self._once:
            self._once[name] = read()
        return self._once[name]

    def cap(self):
        """The accounts' headroom for the documenter (read at most once per Env), or None when unknown."""
        if self._cap is None and self.capacity is not None:
            self._cap = self.capacity()
        return self._cap

    def insights(self) -> dict[str, dict]:
        """Every well-formed insight the explorer has, by id (read defensively: it is another
        engineer's record; anything without text is skipped). Read once per Env; the records are
        shared, never changed in place."""
        return dict(self.once("insights", self._read_insights))

    def _read_insights(self) -> dict[str, dict]:
        out = {}
        for key, _, value in self.explorer.scan("insights/"):
            if not isinstance(value, dict) or not isinstance(value.get("text"), str) or not value["text"].strip():
                continue
            ident = key.split("/", 1)[1]
            if ident and "/" not in ident:
                out[ident] = value
        return out

    def insight(self, ident: str) -> dict | None:
        _, value = self.explorer.get(f"insights/{ident}")
        ok = isinstance(value, dict) and isinstance(value.get("text"), str) and value["text"].strip()
        return value if ok else None

    def blessed(self) -> dict[str, dict]:
        return {i: v for i, v in self.insights().items() if v.get("status") == "blessed"}

    def incorporated(self) -> set[str]:
        """The ids of the insights already in the document, read once per Env."""
        return set(self.once("incorporated", lambda: {key.split("/", 1)[1]
                                                      for key, _, _ in self.store.scan("incorporated/")}))

    def waiting(self) -> int:
        """Blessed insights not yet incorporated (planned or not): the documenter's backlog. Read once
        per Env (one step), since every task a step proposes carries it."""
        if self._waiting is None:
            done = self.incorporated()
            self._waiting = sum(1 for i in self.blessed() if i not in done)
        return self._waiting

    def hints(self, seed_priority: float, **attrs) -> dict:
        """The scheduling fields of a task (see :mod:`.settings`): ``attrs.seed_priority`` on the
        explorer's scale, ``attrs.backlog`` and the backlog boost as the task's own priority offset."""
        waiting = self.waiting()
        return {"priority": 50 + self.settings.backlog_boost(waiting),
                "attrs": {"seed_priority": seed_priority, "backlog": waiting, **attrs}}


INSIGHT_FIELDS = ("text", "status", "priority", "depends_on", "tags")   # what planning reads of an insight


def blessed_shape(key: str, value) -> dict | None:
    """What the documenter keeps of one of the explorer's ``insights/`` records between scans (a
    :class:`services.modules.store.SharedScans` shape): the planning fields of a blessed insight, nothing
    of the others (their versions, dedup records and reviews are the explorer's; a week's worth of them
    held in memory would make the documenter grow with the research's history)."""
    if not isinstance(value, dict) or value.get("status") != "blessed":
        return None
    return {f: value[f] for f in INSIGHT_FIELDS if f in value}


def priority_of(insight: dict) -> float:
    p = insight.get("priority")
    return float(p) if isinstance(p, (int, float)) and not isinstance(p, bool) else 5.0


def when(ts) -> str:
    if not isinstance(ts, (int, float)):
        return "an unknown date"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d")


def outline(doc: Doc) -> str:
    rows = []
    for sec in doc.ordered():
        preview = " ".join((sec.get("text") or "").split())[:PREVIEW]
        est = ", ".join(sec.get("establishes") or []) or "-"
        rows.append(f"[{sec['id']}] {sec.get('title') or '(untitled)'} — establishes: {est}\n    {preview}")
    return "\n".join(rows) or "(the document is empty)"


def concepts(doc: Doc) -> str:
    names = sorted(doc.established().values(), key=str.lower)
    return ", ".join(names) or "(none yet)"


def insight_text(ident: str, insight: dict) -> str:
    text = " ".join(insight.get("text", "").split())
    extra = []
    deps = insight.get("depends_on")
    if isinstance(deps, list) and deps:
        extra.append("depends on: " + ", ".join(map(str, deps)))
    tags = insight.get("tags")
    if isinstance(tags, list) and tags:
        extra.append("tags: " + ", ".join(map(str, tags)))
    return f"{text}" + (f" ({'; '.join(extra)})" if extra else "")


def candidate_list(items: list[tuple[str, dict]]) -> str:
    return "\n".join(f"{n}. [{ident}] {insight_text(ident, ins)}" for n, (ident, ins) in enumerate(items, 1))


def section_block(sec: Section | None) -> str:
    if not sec:
        return "(none: this is the first section)"
    return f"## {sec.get('title') or sec['id']}\n\n{sec.get('text', '')}"


def render(name: str, **values) -> str:
    return prompts.render(MODULE, name, **values)


# --- task kinds (the strings of services.backends.sim_answers; a module may not import the backends) ---

PLAN = "documenter.plan"
EVALUATE = "documenter.evaluate"
DRAFT = "documenter.draft"
EXPOSITION = "documenter.exposition"
ADDRESS_COMMENT = "documenter.address_comment"
REVIEW_SECTION = "documenter.review_section"
KINDS = (PLAN, EVALUATE, DRAFT, EXPOSITION, ADDRESS_COMMENT, REVIEW_SECTION)


def task_key(kind: str, *parts) -> str:
    """``documenter.evaluate/<insight>/<run>/<slot>``: deterministic, so proposing twice is harmless,
    and never reused for a different question (every part that changes the question is in it)."""
    return "/".join([kind, *map(str, parts)])


def task(kind: str, key: str, payload: dict, requires: dict | None = None, hints: dict | None = None) -> dict:
    """A task spec; ``hints`` is :meth:`Env.hints` (``priority`` and ``attrs``)."""
    spec = {"key": key, "module": MODULE, "kind": kind, "payload": payload}
    if requires:
        spec["requires"] = requires
    if hints:
        spec.update(hints)
    return spec


def answer_text(task_rec: dict) -> str:
    result = task_rec.get("result")
    return result.get("text", "") if isinstance(result, dict) else (result if isinstance(result, str) else "")
