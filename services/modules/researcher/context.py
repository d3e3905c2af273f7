"""What the researcher's steps read (:class:`Env`), its task kinds, and the helpers its steps share.

Every step (:mod:`.questions`, :mod:`.sources`, :mod:`.evaluate`, :mod:`.findings`) is a pure function
of an :class:`Env` and its input (a settled task, a fetch outcome) that returns the ops of one module
transaction (:mod:`shared.txn`); it reads through the Env and writes nothing. The service
(:mod:`.service`) builds one Env per step and runs the ops: the transaction of a result also acks it
(:class:`services.modules.base.ModuleService`), so applying a result twice is a no-op.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from services.modules.researcher import model as M
from services.modules.researcher.settings import Settings
from services.modules.researcher.trust import DEFAULT_TRUSTED, TrustPolicy
from services.modules.store import KeptPrefix, Store
from shared import txn

MODULE = M.NS

# --- task kinds (the strings of services.backends.sim_answers; a module may not import the backends) ---

GENERATE_QUESTIONS = "researcher.generate_questions"
EVALUATE_SOURCE = "researcher.evaluate_source"
EXTRACT_FINDINGS = "researcher.extract_findings"
KINDS = (GENERATE_QUESTIONS, EVALUATE_SOURCE, EXTRACT_FINDINGS)

# what is observed for research questions: (namespace, key prefix), read only
OBSERVED = (("explorer", "insights/"), ("documenter", "sections/"))
# what of an observed record the steps read (services/modules/researcher/questions.py, crossref.py,
# model.recency and friends); the service keeps the observed prefixes cut to these between passes
OBSERVED_FIELDS = ("text", "title", "status", "tags", "rev", "updated", "created", "created_at", "updated_at")


def observed_view(_key: str, value: object) -> dict | None:
    """An observed record as the service keeps it (services/modules/store.py, KeptPrefix): the fields
    a step reads, the rest (an insight's versions and review outcome) left in the broker."""
    if not isinstance(value, dict):
        return None
    return {name: value[name] for name in OBSERVED_FIELDS if name in value}

Task = dict[str, Any]   # a settled task as the handlers take it (shared.records.TaskRecord's fields)


@dataclass
class Env:
    """The reads one step needs: the researcher's namespace, the namespaces it observes (read only: it
    never writes another module's), the world time, the settings and the trust rule."""

    store: Store
    others: Mapping[str, Store]       # "explorer", "documenter": read only
    now: float
    settings: Settings = field(default_factory=Settings)
    policy: TrustPolicy = field(default_factory=lambda: policy_of(Settings()))
    # sources stored, as counted at the last observation: proposed URLs stop being added at max_sources
    source_count: int = 0
    # the OBSERVED prefixes as the service keeps them, cut by observed_view: (namespace, prefix) -> kept
    kept: Mapping[tuple[str, str], KeptPrefix] = field(default_factory=dict)

    def scan_ns(self, namespace: str, prefix: str) -> Iterable[tuple[str, int, Any]]:
        """(key, version, value) under ``prefix`` in another module's namespace: the kept records brought
        up to date when the service keeps the prefix (every insight and section ever written, observed
        every ``observe_interval``: read whole each time, the pass cost the research's history)."""
        kept = self.kept.get((namespace, prefix))
        return kept.items() if kept is not None else self.others[namespace].scan(prefix)

    def records(self, prefix: str) -> list[Any]:
        """Every value under ``prefix`` in the researcher's namespace, in key order."""
        return [value for _, _, value in self.store.scan(prefix)]

    def touch(self, touched: dict[str, list[Any]], key: str) -> dict[str, Any] | None:
        """The stored record at ``key`` for an update in this transaction (read once, version-checked when
        written: ``touched`` maps key -> [version, record])."""
        if key not in touched:
            v, rec = self.store.get(key)
            if not isinstance(rec, dict):
                return None
            touched[key] = [v, dict(rec)]
        return touched[key][1]


def policy_of(settings: Settings) -> TrustPolicy:
    """The trust rule of the settings: the default allow-list extended (or replaced) by ``trusted_domains``."""
    trusted = (dict(settings.trusted_domains) if settings.replace_trusted
               else {**DEFAULT_TRUSTED, **settings.trusted_domains})
    return TrustPolicy(trusted, settings.excluded_domains, settings.trust_min)


def clip(text: Any, n: int) -> str:
    """``text`` cut to ``n`` characters at a word boundary, marked ``[...]`` when cut."""
    text = str(text or "")
    return text if len(text) <= n else text[:n].rsplit(" ", 1)[0] + " [...]"


def answer_text(task: Task) -> Any:
    """The answer's text (None when the result has none)."""
    return (task.get("result") or {}).get("text")


def partial(env: Env, task: Task, dropped: int, what: str) -> list[txn.Op]:
    """A visible record of the items an otherwise usable answer lost (``dropped`` malformed ``what``)."""
    if not dropped:
        return []
    return [txn.put(f"errors/{task['id']:012d}", {
        "task_id": task["id"], "kind": task["kind"], "key": task["key"], "partial": True, "at": env.now,
        "error": f"{dropped} malformed {what} dropped", "answer": (task["result"].get("text") or "")[:4000]},
        working=True)]  # working data, as every errors/ record (docs/storage.md)


def task(kind: str, key: str, payload: dict[str, Any]) -> dict[str, Any]:
    """A task spec of the researcher (submit-if-absent: ``key`` is deterministic)."""
    return {"key": key, "module": MODULE, "kind": kind, "payload": payload}
