"""A BrokerCore on a temporary LMDB with a FakeClock, driven request by request (no sockets).

``h = CoreHarness.make(tmp_path, broker={...}, quotas={(account, mode): [windows]})`` then
``h.call("submit", task={...})`` returns the result or raises :class:`FanoError`; ``h.raw(frames)``
sends arbitrary frames and returns the decoded reply. Mutating commands get a fresh request id unless
one is given with ``rid=``. ``h.events`` collects every event the core emitted, in order.

:class:`CoreClient` is the client library (:class:`shared.client.BrokerClient`) answered by such a core: the
way module services, the operations layer and the CLI are tested without sockets (tests/unit/modhelp.py
builds the research modules' rig on it).
"""
from __future__ import annotations

from pathlib import Path

from services.broker.core import BrokerCore, ReadLater
from services.broker.schema import Storage, open_env
from shared import protocol
from shared.client import BrokerClient
from shared.clock import FakeClock
from shared.config import load_config
from shared.errors import FanoError
from tests.support import write_config  # noqa: F401  (re-exported for the unit tests)

IDENT = b"test-client"


class CoreHarness:
    def __init__(self, root: Path, config_path: Path, clock: FakeClock | None = None):
        self.root = root
        self.config_path = config_path
        self.clock = clock or FakeClock()
        self.events: list[dict] = []
        self.ident = IDENT   # the socket identity requests come from (a test may play the scheduler)
        self.storage: Storage | None = None   # None once closed
        self.core: BrokerCore | None = None
        self.open()

    @classmethod
    def make(cls, root: Path, broker: dict | None = None, quotas: dict | None = None,
             clock: FakeClock | None = None, scheduler: dict | None = None) -> CoreHarness:
        return cls(root, write_config(root, broker, quotas, scheduler), clock)

    # --- lifecycle ---------------------------------------------------------------------------------------

    def open(self, config_path: Path | None = None) -> list[dict]:
        """Open storage and start a core (as a broker process start does); returns startup events."""
        if config_path is not None:
            self.config_path = config_path
        self.cfg = load_config(self.config_path)
        self.storage = storage = open_env(self.cfg.data_dir / "broker", self.cfg.broker.map_size)
        self.core = core = BrokerCore(storage, self.cfg, self.clock)
        evs = core.startup()
        self.events.extend(evs)
        return evs

    def restart(self, config_path: Path | None = None) -> list[dict]:
        self.close()
        return self.open(config_path)

    def close(self) -> None:
        if self.storage is not None:
            self.storage.close()
            self.storage = None

    # --- requests ----------------------------------------------------------------------------------------

    def request(self, cmd: str, args: dict, rid: str | None = None) -> protocol.Request:
        if rid is None and cmd in protocol.COMMANDS and protocol.is_mutating(cmd):
            rid = protocol.new_id()
        # a retry resends the same body, so an explicit rid gets the same cid every time
        cid = rid if rid is not None else protocol.new_id()
        return protocol.Request(cmd, cid, args, rid)

    def batch(self, frames_list: list[list[bytes]]) -> list[protocol.Reply]:
        """Run several raw requests as one batch; replies in order (grow_map requests are applied)."""
        core = self.core
        assert core is not None, "the harness is closed"
        replies, events, grow = core.handle_batch([(self.ident, f) for f in frames_list])
        self.events.extend(events)
        out = []
        for _, frames in replies:
            assert not isinstance(frames, ReadLater), "without defer_reads every reply is frames"
            out.append(protocol.decode_reply(frames))
        for _, req in grow:
            out.append(core.grow_map(req))
        return out

    def raw(self, frames: list[bytes]) -> protocol.Reply:
        replies = self.batch([frames])
        assert len(replies) == 1, replies
        return replies[0]

    def reply(self, cmd: str, rid: str | None = None, **args) -> protocol.Reply:
        req = self.request(cmd, args, rid)
        rep = self.raw(protocol.encode_request(req))
        assert rep.cid == req.cid
        return rep

    def call(self, cmd: str, rid: str | None = None, **args):
        """Run one command in its own batch; return its result or raise FanoError."""
        return self.reply(cmd, rid, **args).raise_for_error()

    def tick(self) -> None:
        """An empty batch: runs the sweeps (lease expiry, due tasks, pruning)."""
        self.batch([])

    # --- conveniences ------------------------------------------------------------------------------------

    def submit(self, key: str, module: str = "explorer", kind: str = "ask", payload=None, force=False, **fields):
        task = {"key": key, "module": module, "kind": kind, "payload": {} if payload is None else payload, **fields}
        return self.call("submit", task=task, force=force)

    def lease(self, worker: str = "w1", account: str = "acct", **kw):
        return self.call("lease", worker=worker, account=account, **kw)

    def get(self, task_id: int, history: bool = True) -> dict:
        return self.call("get", id=task_id, history=history)

    def error_counts(self) -> dict:
        return self.call("stats")["broker"]["errors"]


class CoreClient(BrokerClient):
    """The client library's typed helpers, answered by an in-process broker core."""

    def __init__(self, harness: CoreHarness, name: str = "test-client"):
        self.h = harness
        self.name = name   # what BrokerClient.txn names in a notify op (``notify_writes``)

    def call(self, cmd, rid=None, timeout=None, retries=None, **args):
        return self.h.call(cmd, rid=rid, **args)

    def close(self):
        pass


def expect_error(name: str, fn, *args, **kwargs) -> FanoError:
    try:
        fn(*args, **kwargs)
    except FanoError as exc:
        assert exc.name == name, f"expected {name}, got {exc.name}: {exc.message}"
        return exc
    raise AssertionError(f"expected {name}, got no error")


def check_indices(h: CoreHarness) -> dict[str, int]:
    """Assert that every index agrees with the task records; returns the count of tasks per state."""
    from services.broker import schema as S

    storage = h.storage
    assert storage is not None, "the harness is closed"
    dbs = storage.dbs
    with storage.env.begin() as txn:
        def keys(db):
            return [bytes(k) for k in txn.cursor(db=dbs[db]).iternext(keys=True, values=False)]

        tasks = {S.from_u64(bytes(k)): S.decode_value(v) for k, v in txn.cursor(db=dbs["tasks"])}
        by_state: dict[str, int] = {}
        for tid, t in tasks.items():
            by_state[t["state"]] = by_state.get(t["state"], 0) + 1
            entry = txn.get(S.state_key(t["state"], tid), db=dbs["by_state"])
            # a PENDING task's entry is its row, as its record says now (schema version 3); others are empty
            assert entry == (S.pending_row(t) if t["state"] == "PENDING" else b""), (t, entry)
            by_key = txn.get(t["key"].encode(), db=dbs["keys"])
            assert by_key is not None and S.from_u64(by_key) == tid, t
        assert len(keys("by_state")) == len(tasks)
        ready = {S.ready_key_id(k): k for k in keys("ready")}
        delayed = {S.time_id_split(k)[1]: k for k in keys("delayed")}
        leases = {S.time_id_split(k)[1]: k for k in keys("leases")}
        for tid, t in tasks.items():
            if t["state"] == "PENDING":
                assert (tid in ready) != (tid in delayed), t
                if tid in ready:
                    assert ready[tid] == S.ready_key(t["priority"], tid)
                else:
                    assert delayed[tid] == S.time_id_key(S.ms(t["not_before"]), tid)
            else:
                assert tid not in ready and tid not in delayed, t
            if t["state"] == "RUNNING":
                assert leases.get(tid) == S.time_id_key(S.us(t["lease"]["deadline"]), tid), t
            else:
                assert tid not in leases, t
        assert len(ready) + len(delayed) == by_state.get("PENDING", 0)
        assert len(leases) == by_state.get("RUNNING", 0)
        counts: dict[str, int] = {}
        for k, v in txn.cursor(db=dbs["counts"]):
            state, _ = S.split_count_key(bytes(k))
            counts[state] = counts.get(state, 0) + S.from_u64(bytes(v))
        assert counts == by_state
    return by_state


def reopen_on_a_full_map(h: CoreHarness, monkeypatch, caplog, target, attr: str, code: str, words: str) -> None:
    """Reopen ``h`` with ``target.attr`` failing MDB_MAP_FULL, as a full map fails a step the broker's start
    puts off: the start goes on, logs a warning naming ``words`` and counts ``code`` in the broker's
    ``errors`` (stats); the next start does the step and the count is gone."""
    import lmdb

    def full(*args):
        raise lmdb.MapFullError("mdb_put: MDB_MAP_FULL")
    monkeypatch.setattr(target, attr, full)
    with caplog.at_level("WARNING", logger="broker"):
        h.open()
    monkeypatch.undo()
    assert h.call("stats")["broker"]["errors"].get(code) == 1
    assert [r for r in caplog.records if words in r.getMessage() and "MDB_MAP_FULL" in r.getMessage()], caplog.text
    h.restart()   # done now: nothing to count
    assert code not in h.call("stats")["broker"]["errors"]
