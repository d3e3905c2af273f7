"""An in-memory stand-in for the broker's module namespaces and task queue, to drive the documenter's
steps without processes (the other documenter unit tests import it), and tests that it keeps the
broker's rules that matter here: all-or-nothing transactions, ``if_version`` checks, submit-if-absent."""
from __future__ import annotations

import copy
import random

import pytest

from services.backends import sim_answers
from services.modules.documenter import context as C
from services.modules.documenter import service as S
from services.modules.documenter.model import HEAD, read_doc
from services.modules.parsing import ParseError

NOW = 1_700_000_000.0


class Conflict(Exception):
    pass


class MemStore:
    """``get``/``scan`` like :class:`services.modules.base.Store`, ``txn`` like the broker's."""

    def __init__(self):
        self.data: dict[str, tuple[int, object]] = {}
        self.tasks: dict[str, dict] = {}      # key -> task spec, in submission order
        self.txns = 0
        self.working: set[str] = set()        # keys last put as working data (the broker expires them)

    def get(self, key):
        v, value = self.data.get(key, (0, None))
        return v, copy.deepcopy(value)

    def scan(self, prefix):
        for key in sorted(k for k in self.data if k.startswith(prefix)):
            v, value = self.data[key]
            yield key, v, copy.deepcopy(value)

    def txn(self, ops):
        staged = dict(self.data)
        new_tasks = {}
        for i, op in enumerate(ops):
            if op["op"] in ("put", "delete", "check"):
                have = staged.get(op["key"], (0, None))[0]
                if "if_version" in op and op["if_version"] != have:
                    raise Conflict(f"ops[{i}] {op['op']} {op['key']}: version {have}, expected {op['if_version']}")
                if op["op"] == "put":
                    staged[op["key"]] = (have + 1, copy.deepcopy(op["value"]))
                elif op["op"] == "delete":
                    staged.pop(op["key"], None)
            elif op["op"] == "submit":
                spec = op["task"]
                old = self.tasks.get(spec["key"]) or new_tasks.get(spec["key"])
                if old is not None and old["payload"] != spec["payload"]:
                    raise Conflict(f"key conflict {spec['key']}")
                if old is None:
                    new_tasks[spec["key"]] = copy.deepcopy(spec)
        self.data = staged
        for op in ops:
            if op["op"] == "put" and op.get("working"):
                self.working.add(op["key"])
            elif op["op"] in ("put", "delete"):
                self.working.discard(op["key"])
        self.tasks.update(new_tasks)
        self.txns += 1


class Run:
    """The documenter over a MemStore, answered by the simulated provider's generators."""

    def __init__(self, accounts=("a", "b", "c"), seed=3, now=NOW, sloppy=0.3, garbage=0.0, settings=None):
        self.store, self.explorer = MemStore(), MemStore()
        self.accounts = list(accounts)
        self.settings = settings
        self.seed, self.now, self.sloppy, self.garbage = seed, now, sloppy, garbage
        self.done: set[str] = set()        # task keys already answered and applied
        self.errors: list[tuple[str, str]] = []
        self.next_id = 1
        self.answers: dict[str, str] = {}  # key -> a forced answer text

    def env(self):
        if self.settings is not None:
            return C.Env(self.store, self.explorer, self.now, self.accounts, self.settings)
        return C.Env(self.store, self.explorer, self.now, self.accounts)

    def bless(self, ident, text, priority=5, status="blessed", **extra):
        self.explorer.txn([{"op": "put", "key": f"insights/{ident}",
                            "value": {"id": ident, "text": text, "status": status, "tags": [], "priority": priority,
                                      **extra}}])

    def propose(self):
        for ops in S.proposals(self.env()):
            self.store.txn(ops)

    def pending(self):
        return [spec for key, spec in self.store.tasks.items() if key not in self.done]

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
        """Apply one task's result the way ModuleService.apply does (minus the broker)."""
        task = {"id": self.next_id, "key": spec["key"], "kind": spec["kind"], "payload": spec["payload"],
                "state": state, "result": {"text": self.answer(spec) if text is None else text} if state == "DONE"
                else None}
        self.next_id += 1
        env, error = self.env(), None
        if state != "DONE":
            error = f"task {state}"
        else:
            try:
                ops = S.HANDLERS[spec["kind"]](env, task)
            except ParseError as exc:
                error = f"unusable answer: {exc}"
        if error is not None:   # what the framework does: a visible error record, then the module's marks
            self.errors.append((spec["key"], error))
            ops = [{"op": "put", "key": f"errors/{task['id']:012d}", "value": {"key": spec["key"], "error": error}}]
            ops += S.UNUSABLE[spec["kind"]](env, task, error)
        self.store.txn(ops)
        self.done.add(spec["key"])
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


def test_txn_is_all_or_nothing_and_checks_versions():
    s = MemStore()
    s.txn([{"op": "put", "key": "a", "value": 1}])
    with pytest.raises(Conflict):
        s.txn([{"op": "put", "key": "b", "value": 2}, {"op": "put", "key": "a", "value": 3, "if_version": 0}])
    assert s.get("b") == (0, None) and s.get("a") == (1, 1)
    s.txn([{"op": "put", "key": "a", "value": 3, "if_version": 1}])
    assert s.get("a") == (2, 3)


def test_submit_is_if_absent_and_conflicts_on_another_payload():
    s = MemStore()
    spec = {"key": "k", "kind": "x", "payload": {"a": 1}}
    s.txn([{"op": "submit", "task": spec}])
    s.txn([{"op": "submit", "task": spec}])
    assert list(s.tasks) == ["k"]
    with pytest.raises(Conflict):
        s.txn([{"op": "submit", "task": {**spec, "payload": {"a": 2}}}])


def test_the_run_driver_grows_a_document():
    r = Run()
    for n in range(4):
        r.bless(f"ins-{n}", f"Claim number {n}: the Fano plane has {7 * (n + 1)} flags of kind {n}.")
    r.run(400, random.Random(1))
    assert r.doc().version >= 1
    assert r.store.get(HEAD)[1]["version"] == r.doc().version
