"""The research modules' unit-test rig: a module service over the in-process broker core (corehelp.py).

A :class:`ModuleRig` holds a real :class:`services.broker.core.BrokerCore` on a temporary LMDB (no
sockets, no processes), a :class:`shared.clock.FakeClock`, a fano.toml with sim accounts and the
module's own ``[modules.NAME]`` table, and the module's service class with its client answered by that
core. The test plays the scheduler and the workers: :meth:`ModuleRig.settle_id` leases one task and
completes, fails or cancels it through the core, and :meth:`ModuleRig.apply` lets the module apply it the
way its process does (:meth:`services.modules.base.ModuleService.apply`: effect and ack in one
transaction). So every rule the modules rely on is the broker's own: all-or-nothing transactions,
``if_version`` checks, submit-if-absent and key conflicts, acks that make a replay a no-op, working data.

:class:`RecordingClient` also keeps every task spec as the module submitted it (``submitted``: key ->
spec, for the tasks the broker created, in creation order), so a test can check what a module asked
for (its ``requires``, ``priority``, ``attrs``) rather than the broker's record of it.

Rigs made without a directory get a temporary one; the ``_close_rigs`` fixture in tests/unit/conftest.py
closes every rig a test made (:func:`close_all`).
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Generic, TypeVar

from services.broker import schema as S
from services.modules.base import ModuleService
from services.modules.store import Store
from shared.clock import FakeClock
from shared.records import TaskRecord
from tests.support import toml_value, write_config
from tests.unit.corehelp import CoreClient, CoreHarness

NOW = 1_700_000_000.0   # the world time a rig starts at
SETTLED = ("DONE", "PARKED", "CANCELLED")
_OPEN: list[ModuleRig[Any]] = []
Svc = TypeVar("Svc", bound=ModuleService)


def table_text(settings: dict[str, Any]) -> str:
    """The body of a ``[modules.NAME]`` table with ``settings`` (keys quoted in inline tables: domains
    contain dots)."""
    def toml(value: Any) -> str:
        if isinstance(value, dict):
            return "{ " + ", ".join(f"{json.dumps(k)} = {toml(v)}" for k, v in value.items()) + " }"
        return toml_value(value)
    return "\n".join(f"{k} = {toml(v)}" for k, v in settings.items())


class Namespace(Store):
    """One module's namespace in the core: the reads of :class:`Store`, a strict ``txn`` (a failed
    condition raises ``CONDITION_FAILED``, nothing applied) and which keys are working data."""

    def __init__(self, client: CoreClient, module: str):
        super().__init__(client, module)
        self.h = client.h

    def txn(self, ops: list[dict]) -> dict:
        return self.client.txn(self.module, ops)

    def _storage(self) -> S.Storage:
        assert self.h.storage is not None, "the rig is closed"
        return self.h.storage

    def expiry(self, key: str) -> int | None:
        """When the broker deletes ``key`` (world ms), if its last put was working data; else None."""
        storage = self._storage()
        with storage.env.begin() as tx:
            raw = tx.get(S.kv_key(self.module, key), db=storage.dbs["kv"])
        return None if raw is None else S.decode_value(raw).get("exp")

    @property
    def working(self) -> set[str]:
        """The keys whose last put was working data (the broker's ``kv_expiry`` holds them)."""
        base = S.kv_prefix(self.module)
        out = set()
        storage = self._storage()
        with storage.env.begin() as tx:
            cur = tx.cursor(db=storage.dbs["kv"])
            ok = cur.set_range(base)
            while ok and bytes(cur.key()).startswith(base):
                if S.decode_value(cur.value()).get("exp") is not None:
                    out.add(bytes(cur.key())[len(base):].decode())
                ok = cur.next()
        return out


class RecordingClient(CoreClient):
    """A :class:`CoreClient` that keeps the spec of every task a ``submit`` or ``txn`` created."""

    def __init__(self, harness: CoreHarness):
        super().__init__(harness)
        self.submitted: dict[str, dict] = {}   # key -> spec as submitted (created ones, in order)
        self.ids: dict[str, int] = {}          # key -> task id

    def call(self, cmd, rid=None, timeout=None, retries=None, **args):
        res = super().call(cmd, rid=rid, **args)
        if cmd == "submit" and res.get("created"):
            self._created(dict(args["task"]), res["task"]["id"])
        elif cmd == "txn" and res.get("applied"):
            for op, out in zip(args["ops"], res["results"], strict=True):
                if op["op"] == "submit" and out.get("created"):
                    self._created(dict(op["task"]), out["id"])
        return res

    def _created(self, spec: dict, task_id: int) -> None:
        self.submitted[spec["key"]] = spec
        self.ids[spec["key"]] = task_id


class ModuleRig(Generic[Svc]):
    """``service_cls`` over an in-process core (see the module docstring). ``table``: the text of its
    ``[modules.NAME]`` table; ``accounts``: sim accounts offering standard and deep modes."""

    def __init__(self, service_cls: type[Svc], root: Path | None = None, accounts=("a", "b", "c"),
                 table: str = "", broker: dict | None = None, now: float = NOW):
        self.own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="fano-rig-")) if root is None else root
        self.root.mkdir(parents=True, exist_ok=True)
        self.module = service_cls.module
        self.accounts = list(accounts)
        path = write_config(self.root, broker={"backoff_base": 0.0, "backoff_max": 0.0, **(broker or {})},
                            accounts={a: ["standard", "deep"] for a in self.accounts})
        if table:
            path.write_text(path.read_text() + f"[modules.{self.module}]\n{table}\n")
        self.clock = FakeClock(world=now)
        self.h = CoreHarness(self.root, path, self.clock)
        _OPEN.append(self)
        self.client = RecordingClient(self.h)
        self.service_cls = service_cls
        self.svc = self.new_service()

    def new_service(self) -> Svc:
        """The module's service as its process starts it (``initialize`` without the sockets): a second one
        is a restarted module, with nothing but what the broker holds."""
        svc = self.service_cls(self.h.cfg, self.clock)
        svc.client = self.client
        svc.store = self.ns(self.module)
        return svc

    @property
    def now(self) -> float:
        return self.clock.world()

    @now.setter
    def now(self, value: float) -> None:
        self.clock.advance(value - self.clock.world())

    def ns(self, module: str) -> Namespace:
        return Namespace(self.client, module)

    def task(self, task_id: int) -> TaskRecord:
        return self.client.get(task_id, history=False)

    def tasks(self, **filters: Any) -> list[TaskRecord]:
        """Every task of this module matching ``filters`` (the ``list`` command's), with payloads."""
        out, after = [], None
        while True:
            page = self.client.list(module=self.module, after=after, limit=1000, payloads=True, **filters)
            out += page["tasks"]
            after = page["next"]
            if not after:
                return out

    def settle_id(self, task_id: int, state: str = "DONE", text: str | None = None,
                  account: str | None = None) -> TaskRecord:
        """Settle one task as a worker (DONE with ``text``, PARKED by a terminal failure) or the operator
        (CANCELLED) would; a task already settled is left as it is (its result replays). Returns the task."""
        rec = self.task(task_id)
        if rec["state"] in SETTLED:
            return rec
        if state == "CANCELLED":
            self.client.cancel(task_id, reason="cancelled by the test")
            return self.task(task_id)
        acct = account or ((rec.get("requires") or {}).get("backends") or self.accounts or ["sim"])[0]
        lease = self.client.lease(f"backend-{acct}", acct, backend="sim", modes=["standard", "deep"], ttl=60.0,
                                  task_id=task_id)
        assert lease.get("task"), f"task {task_id} ({rec['key']}) cannot be leased: {lease.get('reason')}"
        if state == "DONE":
            self.client.complete(task_id, lease["epoch"], {"text": text or "", "meta": {}})
        elif state == "PARKED":
            self.client.fail(task_id, lease["epoch"], "terminal", "400 bad request")
        else:
            raise ValueError(f"cannot settle a task as {state}")
        return self.task(task_id)

    def apply(self, task_id: int) -> bool:
        """The module applies the task as its process does; False when it was applied before."""
        return self.svc.apply(dict(self.task(task_id)))

    def close(self) -> None:
        self.h.close()
        if self.own_root:
            shutil.rmtree(self.root, ignore_errors=True)


def close_all() -> None:
    """Close every rig still open (the ``_close_rigs`` fixture calls this after each unit test)."""
    while _OPEN:
        _OPEN.pop().close()


class RefusingScheduler:
    """A real ROUTER at ``ipc://<dir>/s.sock`` that answers every scheduler query with an error (the
    answer a scheduler gives a query it refuses), in a thread of its own: what a module does when an
    optional question to the scheduler fails. ``endpoint`` is where it listens; use it as a context
    manager (the thread and socket end on exit)."""

    def __init__(self) -> None:
        import threading

        import zmq
        self.dir = tempfile.mkdtemp(dir="/tmp", prefix="f")   # ipc paths must stay short
        self.endpoint = f"ipc://{self.dir}/s.sock"
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.bind(self.endpoint)
        self.asked: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="refusing-scheduler", daemon=True)

    def _serve(self) -> None:
        from shared import protocol
        from shared.errors import ErrorCode, FanoError
        while not self._stop.is_set():
            if not self.sock.poll(50):
                continue
            ident, *frames = self.sock.recv_multipart()
            msg = protocol.decode_worker(frames)
            self.asked.append(msg.get("what", ""))
            refused = FanoError(ErrorCode.INVALID_STATE, "refused by the test's scheduler")
            self.sock.send_multipart([ident, *protocol.encode_worker("answer", cid=msg["cid"], ok=False,
                                                                      error=refused.to_wire())])

    def __enter__(self) -> RefusingScheduler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close(linger=0)
        self.ctx.term()
        shutil.rmtree(self.dir, ignore_errors=True)
