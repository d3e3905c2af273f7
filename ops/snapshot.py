"""A decoded, consistent snapshot of the broker's LMDB database, and the report the checkers fill.

Opened ``readonly=True`` **with** LMDB's lock file (``lock=True``): the reader takes a slot in the lock
table like any reader, so one read transaction is a consistent snapshot even while the broker commits.
``lock=False`` would let the broker recycle pages still being read (torn results): not offered. The
lock file must be writable by the reader (its slot lives there).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import lmdb

from services.broker import schema as S

MAX_PER_CHECK = 25  # violations reported per check before summarising (keeps reports readable)


def resolve_db_dir(path) -> Path:
    """The directory holding ``data.mdb`` for a broker dir, a config data_dir or a test root."""
    path = Path(path)
    for cand in (path, path / "broker", path / "data" / "broker"):
        if (cand / "data.mdb").exists():
            return cand
    raise FileNotFoundError(f"no broker database (data.mdb) in {path}, {path}/broker or {path}/data/broker")


@dataclass
class Snapshot:
    """Every sub-database decoded, read in one read transaction."""

    path: Path
    meta: dict = field(default_factory=dict)            # name -> raw bytes
    tasks: dict = field(default_factory=dict)           # id -> record
    task_keys: list = field(default_factory=list)       # (stored id, record id) mismatches
    keys: dict = field(default_factory=dict)            # idempotency key -> id
    ready: list = field(default_factory=list)           # (priority, id)
    delayed: list = field(default_factory=list)         # (not_before ms, id)
    leases: list = field(default_factory=list)          # (deadline us, id, epoch)
    by_state: list = field(default_factory=list)        # (state, id)
    rows: dict = field(default_factory=dict)            # id -> its by_state value (a PENDING task's row)
    counts: dict = field(default_factory=dict)          # (state, module) -> n
    requests: dict = field(default_factory=dict)        # rid -> {ts, fp, reply}
    requests_ts: list = field(default_factory=list)     # (ms, rid)
    quota_specs: dict = field(default_factory=dict)     # (account, mode) -> spec
    quota_usage: dict = field(default_factory=dict)     # (account, mode, slot, bucket ms) -> {total, by_module}
    quota_entries: list = field(default_factory=list)   # (account, mode, slot, ts ms, id, epoch, module, raw key)
    accounts: dict = field(default_factory=dict)
    conversations: dict = field(default_factory=dict)
    kv: dict = field(default_factory=dict)              # (module, key) -> {v, value, exp?}
    kv_expiry: list = field(default_factory=list)       # (expires ms, module, key) working data
    unconsumed: set = field(default_factory=set)        # (module, task id) settled and not yet acked
    events: dict = field(default_factory=dict)          # seq -> event
    event_keys: list = field(default_factory=list)      # seq keys in order
    missing_dbs: list = field(default_factory=list)
    undecodable: list = field(default_factory=list)

    def counter(self, name: str) -> int:
        raw = self.meta.get(name)
        return 0 if raw is None else S.from_u64(raw)

    @property
    def outbox_complete(self) -> bool:
        """True when the outbox still holds every event ever emitted (nothing pruned)."""
        last = self.counter("event_seq")
        return last == 0 or (bool(self.event_keys) and self.event_keys[0] == 1)


def split_prefix3(prefix: bytes) -> tuple[str, str, str]:
    if not prefix.endswith(S.SEP):
        raise ValueError("quota key prefix does not end with NUL")
    acct, mode, slot = prefix[:-1].split(S.SEP, 2)
    return acct.decode(), mode.decode(), slot.decode()


def load_snapshot(data_dir=None, env: lmdb.Environment | None = None) -> Snapshot:
    """Open the broker database read-only (with the lock table: safe while the broker runs) and decode it.

    ``env``: an environment this process already has open (LMDB forbids opening one twice in a process),
    e.g. ``BrokerCore.env`` in unit tests; it is read, not closed.
    """
    own = env is None
    if env is None:
        path = resolve_db_dir(data_dir)
        # map well beyond the file: a broker growing it between this stat and our read transaction must not
        # make LMDB refuse the snapshot (MDB_MAP_RESIZED); mapping past EOF costs nothing
        size = 2 * (path / "data.mdb").stat().st_size + (64 << 20)
        env = lmdb.open(str(path), readonly=True, lock=True, subdir=True, max_dbs=len(S.DATABASES) + 1,
                        map_size=size, max_readers=126)
    else:
        path = Path(env.path())
    snap = Snapshot(path=path)
    try:
        with env.begin() as txn:
            dbs = {}
            for name in S.DATABASES:
                try:
                    dbs[name] = env.open_db(name.encode(), txn=txn, create=False)
                except lmdb.NotFoundError:
                    snap.missing_dbs.append(name)

            def items(name):
                if name not in dbs:
                    return []
                return ((bytes(k), bytes(v)) for k, v in txn.cursor(db=dbs[name]))

            def decode(name, key, raw):
                try:
                    return S.decode_value(raw)
                except Exception as exc:  # corrupt value: report, keep going
                    snap.undecodable.append(f"{name}[{key!r}]: {type(exc).__name__}")
                    return None

            snap.meta = {k.decode(errors="replace"): v for k, v in items("meta")}
            for k, v in items("tasks"):
                rec = decode("tasks", k, v)
                if rec is None:
                    continue
                tid = S.from_u64(k)
                if rec.get("id") != tid:
                    snap.task_keys.append((tid, rec.get("id")))
                snap.tasks[tid] = rec
            snap.keys = {k.decode(): S.from_u64(v) for k, v in items("keys")}
            snap.ready = [(S.PRIO_BIAS - S._PRIO_ID.unpack(k)[0], S.ready_key_id(k)) for k, _ in items("ready")]
            snap.delayed = [S.time_id_split(k) for k, _ in items("delayed")]
            snap.leases = [(*S.time_id_split(k), S.from_u64(v)) for k, v in items("leases")]
            for k, v in items("by_state"):
                state, _, tid = k.partition(S.SEP)
                snap.by_state.append((state.decode(), S.from_u64(tid)))
                snap.rows[S.from_u64(tid)] = bytes(v)
            snap.counts = {S.split_count_key(k): S.from_u64(v) for k, v in items("counts")}
            snap.requests = {k.decode(): decode("requests", k, v) for k, v in items("requests")}
            snap.requests_ts = [(S.from_u64(k[:8]), k[8:].decode()) for k, _ in items("requests_ts")]
            snap.quota_specs = {S.split_pair(k): decode("quota_specs", k, v) for k, v in items("quota_specs")}
            for k, v in items("quota_usage"):
                acct, mode, slot = split_prefix3(k[:-8])
                snap.quota_usage[(acct, mode, slot, S.from_u64(k[-8:]))] = decode("quota_usage", k, v)
            for k, v in items("quota_entries"):
                acct, mode, slot = split_prefix3(k[:-20])
                ts, tid = S.time_id_split(k[-20:-4])
                epoch = S._U32.unpack(k[-4:])[0]
                snap.quota_entries.append((acct, mode, slot, ts, tid, epoch, v.decode(), k))
            snap.accounts = {k.decode(): decode("accounts", k, v) for k, v in items("accounts")}
            snap.conversations = {k.decode(): decode("conversations", k, v) for k, v in items("conversations")}
            for k, _ in items("unconsumed"):
                module, _, raw_id = k.partition(b"\x00")
                snap.unconsumed.add((module.decode(), S.from_u64(raw_id)))
            for k, v in items("kv"):
                module, _, key = k.partition(S.SEP)
                snap.kv[(module.decode(), key.decode())] = decode("kv", k, v)
            for k, _ in items("kv_expiry"):
                exp, kv_key = S.expiry_split(k)
                module, _, key = kv_key.partition(S.SEP)
                snap.kv_expiry.append((exp, module.decode(), key.decode()))
            for k, v in items("events"):
                seq = S.from_u64(k)
                snap.event_keys.append(seq)
                snap.events[seq] = decode("events", k, v)
    finally:
        if own:
            env.close()
    return snap


# --- the report ------------------------------------------------------------------------------------------

@dataclass
class Report:
    violations: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    stats: dict = field(default_factory=dict)
    _per_check: Counter = field(default_factory=Counter)

    def bad(self, check: str, message: str) -> None:
        self._per_check[check] += 1
        n = self._per_check[check]
        if n <= MAX_PER_CHECK:
            self.violations.append(f"[{check}] {message}")

    def note(self, message: str) -> None:
        self.notes.append(message)

    def finish(self) -> Report:
        for check, n in self._per_check.items():
            if n > MAX_PER_CHECK:
                self.violations.append(f"[{check}] ... and {n - MAX_PER_CHECK} more violation(s) of this check")
        return self

    def as_dict(self) -> dict:
        return {"violations": self.violations, "notes": self.notes, **self.stats}


def usage_totals(snap: Snapshot) -> dict:
    """{(account, mode, slot): (total over all periods, {module: n})} for calendar windows,
    {(account, mode, slot): (number of entries, {module: n})} for rolling ones."""
    out: dict = {}
    for (acct, mode, slot, _), rec in snap.quota_usage.items():
        total, by = out.get((acct, mode, slot), (0, Counter()))
        by = Counter(by)
        by.update((rec or {}).get("by_module", {}))
        out[(acct, mode, slot)] = (total + (rec or {}).get("total", 0), by)
    for acct, mode, slot, _, _, _, module, _ in snap.quota_entries:
        total, by = out.get((acct, mode, slot), (0, Counter()))
        by = Counter(by)
        by[module] += 1
        out[(acct, mode, slot)] = (total + 1, by)
    return out
