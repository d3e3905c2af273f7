"""``python -m services documenter`` (supervisord program ``module-documenter``).

Applies the results of its six task kinds (each exactly once, with the ack, by the framework) and, on
every planning pass, proposes in this order: author comments, a planning turn, a section review. Every
proposal is one transaction that records the step in the domain state *and* submits its task, so a
crash between the two cannot happen and a restart re-derives everything from the broker. After every
change of the document it writes the Markdown export (``<data_dir>/document.md``, or
``$FANO_DOCUMENT_PATH``) atomically; the file's first line names the version it holds, so a module
restarted between the commit and the export writes it again. Settings: ``[modules.documenter]`` in
fano.toml (:mod:`services.modules.documenter.settings`: panel size, limits, how its tasks compete with
exploration for the accounts). Every ``SEAT_INTERVAL`` real seconds (a quarter of ``member_patience`` in
world time if that is sooner, on a scaled clock) it moves evaluation slots blocked past
``member_patience`` (:mod:`.seats`).

Every transaction that creates tasks is counted against the module's hourly budget
(``max_tasks_per_hour``, :mod:`services.modules.pace`): once it is used up, no new work starts until the
hour ends (the steps of started pipelines go on); ``fanoctl document show`` says so.
"""
from __future__ import annotations

import os
from pathlib import Path

from services.modules import capacity as CAP
from services.modules import pace
from services.modules.base import Effect, ModuleService
from services.modules.documenter import context as C
from services.modules.documenter import export, flow, planning, seats, upkeep
from services.modules.documenter import model as M
from services.modules.documenter.settings import load_settings
from services.modules.parsing import ParseError
from services.modules.store import SharedScans, Store
from shared import txn
from shared.errors import BrokerUnavailable, FanoError

EXPLORER_SCAN_WORLD = 300.0  # world seconds a scan of the explorer's records is reused (see initialize)
SEAT_INTERVAL = 30.0   # real seconds between passes over blocked evaluation slots, or a quarter of
SEAT_REAL_MIN = 0.5    # member_patience in world time if sooner (a scaled clock), but not below this
HANDLERS = {C.PLAN: planning.handle_plan, C.EVALUATE: flow.handle_evaluate, C.DRAFT: flow.handle_draft,
            C.EXPOSITION: flow.handle_exposition, C.ADDRESS_COMMENT: upkeep.handle_comment,
            C.REVIEW_SECTION: upkeep.handle_review}
UNUSABLE = {C.PLAN: planning.unusable_plan, C.EVALUATE: flow.unusable, C.DRAFT: flow.unusable,
            C.EXPOSITION: flow.unusable, C.ADDRESS_COMMENT: upkeep.unusable_comment,
            C.REVIEW_SECTION: upkeep.unusable_review}


def export_path(config) -> Path:
    return Path(os.environ.get("FANO_DOCUMENT_PATH") or Path(config.data_dir) / "document.md")


def write_export(store, path, now_text: str | None = None) -> int:
    """Render the current document from ``store`` and write it atomically; returns its version."""
    doc = M.read_doc(store)
    export.write_atomic(path, export.render(doc.ordered(), doc.version, at=now_text))
    return doc.version


def other_work(env) -> bool:
    """Whether the documenter has something besides section reviews to do (then reviews keep to their
    share; otherwise they may use all of its turns)."""
    if any(c.get("status") in ("open", "addressing") for _, c in upkeep.read_comments(env)):
        return True
    jobs = flow.read_jobs(env)
    if any(j.get("stage") in flow.ACTIVE for _, j in jobs.values()):
        return True
    return bool(flow.candidates(env, jobs))


def proposals(env) -> list[list[dict]]:
    """The transactions that start work now, in order: comments first, a planning turn, a review.
    They touch disjoint keys (each comment, ``plan/state``, ``review/state``), so one snapshot serves."""
    out = upkeep.propose_comments(env)
    out.append(planning.propose_plan(env))
    out.append(upkeep.propose_review(env, other_work(env)))
    return [ops for ops in out if ops]


class DocumenterService(ModuleService):
    module = "documenter"

    def initialize(self) -> None:
        self.settings = load_settings(self.config)   # first: a bad table exits (CONFIG) before any socket
        super().initialize()
        # read only, never written by this module; its scans are reused for up to five minutes of world time
        # (two seconds of real time at most): planning runs after every applied result. Only the blessed
        # insights' planning fields are kept (C.blessed_shape): the documenter's memory stays flat.
        self.explorer: Store = SharedScans(self.client, "explorer",
                                           lambda: self.world_interval(EXPLORER_SCAN_WORLD, 0.05, 2.0),
                                           self.clock.mono, shapes={"insights/": C.blessed_shape})
        self.export_path = export_path(self.config)
        self._exported = export.exported_version(self.export_path)
        self._next_seats = 0.0

    def capacity(self) -> CAP.Capacity:
        modes = {a.name: tuple(a.modes) for a in self.config.accounts}
        return CAP.Capacity.read(self.client, self.module, modes, self.clock.world(), getattr(self, "log", None))

    def env(self) -> C.Env:
        return C.Env(self.store, self.explorer, self.clock.world(), [a.name for a in self.config.accounts],
                     self.settings, capacity=self.capacity)

    def handle(self, task: dict) -> Effect:
        handler = HANDLERS.get(task["kind"])
        if handler is None:
            raise ParseError(f"the documenter has no task kind {task['kind']!r}")
        return Effect(self.paced(handler(self.env(), task)))

    def on_unusable(self, task: dict, error: str) -> list:
        handler = UNUSABLE.get(task["kind"])
        return self.paced(handler(self.env(), task, error) if handler else [])

    # --- the hourly budget (services/modules/pace.py) -------------------------------------------------

    def paced(self, ops: list, new_work: bool = False) -> list:
        """``ops`` with the module's hourly task count updated in the same transaction (version-checked);
        for ``new_work``, [] when the hour has no room for its tasks (the next pass proposes it again)."""
        limit = self.settings.max_tasks_per_hour
        out, hour = pace.charge(self.store, ops, limit, self.clock.world(), new_work)
        if out is None:
            if not getattr(self, "_budget_logged", False):
                self.log.warning("new work waits: %s", pace.budget_note(hour or {}, limit, "max_tasks_per_hour"))
            self._budget_logged = True
            return []
        if hour is not None:
            self._budget_logged = False
        return out

    def plan(self) -> None:
        self.export_if_changed()
        for ops in proposals(self.env()):
            self._start(ops, new_work=True)
        if self.clock.mono() >= getattr(self, "_next_seats", 0.0):
            self._next_seats = self.clock.mono() + self.world_interval(self.settings.member_patience / 4,
                                                                       SEAT_REAL_MIN, SEAT_INTERVAL)
            self.follow_capacity()

    def follow_capacity(self) -> None:
        """Move or leave out evaluation slots blocked past ``member_patience`` (:mod:`.seats`)."""
        cap = self.capacity()
        if not cap.known:
            return
        pending = CAP.pending(self.client, self.module, payloads=False)
        moves, cancels = seats.follow(self.env(), cap, pending)
        for ops, abandoned in moves:
            if self._start(ops):
                cancels.append(abandoned)
        for tid in cancels:
            try:
                self.client.cancel(tid, reason="evaluation slot moved: its account was blocked past member_patience")
            except BrokerUnavailable:
                raise
            except FanoError as exc:   # it started or settled meanwhile: its answer is stale anyway
                self.log.info("task %s not cancelled: %s", tid, exc.message)

    def _start(self, ops: list, new_work: bool = False) -> bool:
        ops = self.paced(ops, new_work)
        if not ops:
            return False
        if txn.conditional(self.client, self.module, ops):
            return True
        self.log.info("proposal raced with another writer; next pass re-reads")
        return False

    def export_if_changed(self) -> None:
        _, head = self.store.get(M.HEAD)
        version = int(head.get("version", 0)) if isinstance(head, dict) else 0
        if version == self._exported:
            return
        try:
            self._exported = write_export(self.store, self.export_path)
            self.log.info("exported document version %d to %s", self._exported, self.export_path)
        except OSError as exc:   # a full disk must not stop the research; the next pass tries again
            self.log.error("cannot export the document to %s: %s", self.export_path, exc)
