"""The documenter on the modules' rig (tests/unit/modhelp.py), answered by the simulated provider's
generators or by the test: what the documenter's unit tests drive.

``run = Run()``; ``run.bless(id, text)`` writes an insight into the explorer's namespace; ``run.propose()``
runs the documenter's proposals (each one transaction, which must apply); ``run.pending()`` lists the
specs of its PENDING tasks as it submitted them; ``run.settle(spec, text=...)`` has a worker answer one
(or park it, or the operator cancel it) and the module apply the result, as its process does.
``run.errors`` collects (task key, error) for every result the module could not use.
"""
from __future__ import annotations

from services.backends import sim_answers
from services.modules.documenter import service as S
from services.modules.documenter.model import read_doc
from services.modules.documenter.settings import Settings, load_settings
from shared import txn
from tests.unit.modhelp import NOW, ModuleRig

__all__ = ["NOW", "Run"]


class Run(ModuleRig[S.DocumenterService]):
    """The documenter service over an in-process broker core."""

    def __init__(self, accounts=("a", "b", "c"), seed=3, now=NOW, sloppy=0.3, garbage=0.0,
                 settings: Settings | None = None, table: str = ""):
        """``settings``: the documenter's settings as an object, or ``table``: its ``[modules.documenter]``
        table in fano.toml (read by the service's own loader)."""
        super().__init__(S.DocumenterService, accounts=accounts, now=now, table=table)
        svc = self.svc
        svc.settings = settings if settings is not None else load_settings(self.h.cfg)
        svc.explorer = self.ns("explorer")
        svc.export_path, svc._exported, svc._next_seats = self.root / "document.md", 0, 0.0
        self.store, self.explorer = svc.store, svc.explorer
        self.submitted = self.client.submitted   # key -> spec, as the documenter submitted it
        self.seed, self.sloppy, self.garbage = seed, sloppy, garbage
        self.errors: list[tuple[str, str]] = []
        self.answers: dict[str, str] = {}  # key -> a forced answer text

    @property
    def settings(self) -> Settings:
        return self.svc.settings

    def env(self):
        return self.svc.env()

    def bless(self, ident, text, priority=5, status="blessed", **extra):
        self.explorer.txn([txn.put(f"insights/{ident}", {"id": ident, "text": text, "status": status, "tags": [],
                                                         "priority": priority, **extra})])

    def propose(self):
        for ops in S.proposals(self.env()):
            self.store.txn(ops)

    def pending(self) -> list[dict]:
        """The specs of the documenter's PENDING tasks, in submission order."""
        live = {t["key"] for t in self.tasks(state="PENDING")}
        return [spec for key, spec in self.submitted.items() if key in live]

    def answer(self, spec):
        if spec["key"] in self.answers:
            return self.answers[spec["key"]]
        account = (spec.get("requires") or {}).get("backends", [self.accounts[0] if self.accounts else "sim"])[0]
        rng = sim_answers.derive_rng(self.seed, spec["key"])
        text = sim_answers.answer(spec["kind"], spec["payload"], spec["payload"]["prompt"], "standard", rng,
                                  seed=self.seed + sorted(self.accounts or ["sim"]).index(account)
                                  if account in self.accounts else self.seed, account=account)
        return sim_answers.decorate(text, spec["kind"], rng, self.sloppy, self.garbage)

    def settle(self, spec, state="DONE", text=None):
        """Settle the task of ``spec`` and let the documenter apply it (a settled one is applied again:
        a replay, which the broker's ack makes a no-op). Returns the task record."""
        tid = self.client.ids[spec["key"]]
        if state == "DONE" and text is None:
            text = self.answer(spec)
        task = self.settle_id(tid, state, text)
        if self.apply(tid):
            _, err = self.store.get(f"errors/{tid:012d}")
            if err is not None:
                self.errors.append((spec["key"], err["error"]))
        return task

    def step(self, rng=None):
        """Propose, then settle one pending task (the oldest, or a random one); False when idle."""
        self.propose()
        pending = self.pending()
        if not pending:
            return False
        spec = rng.choice(pending) if rng else pending[0]
        self.settle(spec)
        self.now += 60
        return True

    def run(self, steps=500, rng=None):
        for _ in range(steps):
            if not self.step(rng):
                return True
        return False

    def doc(self):
        return read_doc(self.store)

    def values(self, prefix):
        return {k: v for k, _, v in self.store.scan(prefix)}
