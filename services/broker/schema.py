"""The broker's LMDB layout: every sub-database, its key encoding and value encoding, and the version.

All multi-byte integers in keys are big-endian so that LMDB's byte order is numeric order. Strings in
composite keys are UTF-8 separated by NUL (names are validated to contain no NUL). Values are msgpack
(:func:`shared.protocol.pack_value`) unless noted, written with :func:`encode_value` and read with
:func:`decode_value`: a value whose msgpack encoding is longer than :data:`COMPRESS_MIN` bytes (a task
record with its prompt and answer, a module record holding a transcript turn or a section) is stored
zlib-compressed behind a two-byte marker, ``0xC1 'z'``. ``0xC1`` is the one byte msgpack never uses, so
a stored value is either plain msgpack (every value written before schema version 2, and every small
one) or marked and compressed, and both read the same way.

=================  =====================================================  ==============================
sub-database       key                                                    value
=================  =====================================================  ==============================
meta               ascii name                                             msgpack (counters, versions)
tasks              u64 task id                                            msgpack task record
keys               utf-8 idempotency key                                  u64 task id
ready              u32 (PRIO_BIAS - priority) . u64 id                     empty: PENDING and due
delayed            u64 not_before (world ms) . u64 id                     empty: PENDING, not yet due
leases             u64 deadline (monotonic us) . u64 id                   u64 epoch: RUNNING
by_state           state . NUL . u64 id                                   PENDING: msgpack row (below);
                                                                          other states: empty
counts             state . NUL . module                                   u64 count
requests           utf-8 request id                                       msgpack {ts, fp, reply,
                                                                          payload_of?} (request_log.py)
requests_ts        u64 world ms . utf-8 request id                        empty (for pruning)
quota_specs        account . NUL . mode                                   msgpack {windows, source, ...}
quota_usage        account . NUL . mode . NUL . slot . NUL . u64 ms       msgpack {total, by_module}
quota_entries      account . NUL . mode . NUL . slot . NUL . u64 ms .     utf-8 module (rolling windows)
                   u64 id . u32 epoch
accounts           utf-8 account                                          msgpack {paused, cooldowns...}
conversations      utf-8 conversation id                                  msgpack {account, inflight, turns,
                                                                          url?, title?}
kv                 module . NUL . utf-8 key                               msgpack {v: version, value,
                                                                          exp?: world ms} (exp: working
                                                                          data, see kv_expiry)
events             u64 seq                                                msgpack event
unconsumed         module . NUL . u64 id                                  empty: settled, not yet acked
compactable        u64 updated (world ms) . u64 id                        empty: DONE/CANCELLED, acked, not
                                                                          yet compacted (task retention)
kv_expiry          u64 expires (world ms) . module . NUL . utf-8 key      empty: a module's working data,
                                                                          deleted when due (kv retention)
=================  =====================================================  ==============================

``meta`` also holds ``map_size`` (the map as last grown) and ``storage_samples`` (a bounded msgpack list
of ``[world time, live bytes]``, see ``services/broker/capacity.py``).

``SCHEMA_VERSION`` is stored in ``meta``; a broker refuses to open a database with a newer version and
migrates older ones in :func:`open_env`. Version 2 added compressed values and ``kv_expiry``; migrating
from 1 rewrites nothing (version 1 values are plain msgpack, which version 2 reads as they are, and the
new sub-database starts empty): it only records the new version, so that a version-1 broker, which
could not read a compressed value, refuses the database instead of failing on its records.

Version 3 made a PENDING task's ``by_state`` value its *row*: the fields a scheduler places it by
(:data:`shared.records.PENDING_ROW`, written by :func:`pending_row` whenever the task is saved PENDING,
services/broker/tx.py ``Tx.save``), so that a scheduler's rebuild (``list`` with ``rows``) reads one
small value per PENDING task from one contiguous key range, O(PENDING) however many tasks ended before,
without decoding a task record. Migrating from 2 records version 3 with the marker
:data:`ROWS_MISSING`, then writes the row of every PENDING task and clears the marker in one transaction
(a crash or a full map leaves the marker: the next start writes them; ``list`` makes a missing row from
the record meanwhile). A version-2 broker refuses the database (it would write PENDING entries without
rows, and leave rows stale when a priority changes).

``compactable`` was added to version 1 without a version bump: it is derived from the task records, so
:func:`open_env` fills it from them once (``meta`` key ``compactable_built``) when a database written
before it existed is opened. A broker without it (an older build) does not maintain it; tasks it acks are
then never compacted automatically, which wastes space but loses nothing.
"""
from __future__ import annotations

import logging
import os
import struct
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import lmdb
import msgpack

from services.broker import states as st
from shared.errors import ExitCode, StartupError
from shared.protocol import pack_value, unpack_value
from shared.stored import ZMARK, decode_stored

log = logging.getLogger("broker")

SCHEMA_VERSION = 3

#: values whose msgpack encoding is longer than this are stored compressed. Below it zlib saves little
#: (a few dozen bytes of headers and a short window) and every read would pay for the inflate.
COMPRESS_MIN = 1024
#: zlib level 6 (the default): 2.35x on a task record of real prose, 0.4 ms for 15 KB; zstd (the
#: ``zstandard`` package) is faster but no smaller here, not worth a new dependency (docs/storage.md)
COMPRESS_LEVEL = 6

DATABASES = (
    "meta", "tasks", "keys", "ready", "delayed", "leases", "by_state", "counts", "requests",
    "requests_ts", "quota_specs", "quota_usage", "quota_entries", "accounts", "conversations", "kv",
    "events", "unconsumed", "compactable", "kv_expiry",
)

PRIO_BIAS = 0x7FFFFFFF
PRIO_MIN, PRIO_MAX = -1_000_000, 1_000_000

_U64 = struct.Struct(">Q")
_U32 = struct.Struct(">I")
_PRIO_ID = struct.Struct(">IQ")
_U64_U64 = struct.Struct(">QQ")
SEP = b"\x00"
# LMDB's longest key (its default build): ids the broker turns into keys are checked against limits
# below this at submit (services/broker/ops_tasks.py); records stored before those checks may exceed it
MAX_KEY = 511


class SchemaError(StartupError):
    """The database on disk cannot be used by this broker (newer schema)."""

    exit_code = ExitCode.STORAGE


def encode_value(obj: Any) -> bytes:
    """A stored value: msgpack, compressed behind :data:`ZMARK` when longer than :data:`COMPRESS_MIN`
    and the compression actually saves space (random bytes do not compress)."""
    raw = pack_value(obj)
    if len(raw) <= COMPRESS_MIN:
        return raw
    packed = ZMARK + zlib.compress(raw, COMPRESS_LEVEL)
    return packed if len(packed) < len(raw) else raw


def decode_value(raw: bytes | memoryview) -> Any:
    """Read a value written by :func:`encode_value` (or plain msgpack, as every version-1 value is)."""
    return decode_stored(raw)


def u64(n: int) -> bytes:
    return _U64.pack(n)


def from_u64(b: bytes) -> int:
    n: int = _U64.unpack(b)[0]
    return n


# one packer for every row (msgpack.packb makes one per call: most of the cost of packing a row); the broker
# is single-threaded
_ROW_PACKER = msgpack.Packer(use_bin_type=True)


#: ``meta`` key present while a migrated database's PENDING rows are still to be written (see open_env)
ROWS_MISSING = b"pending_rows_missing"


def row_module(row: bytes | memoryview) -> str | None:
    """The module named by a PENDING row (:func:`pending_row`), without decoding the task: a list filtered
    by module skips the other modules' PENDING tasks for the price of their rows."""
    try:
        fields = msgpack.unpackb(row, raw=False)
    except (ValueError, msgpack.UnpackException):
        return None
    module = fields[1] if isinstance(fields, list) and len(fields) > 1 else None
    return module if isinstance(module, str) else None


def pending_row(task: dict[str, Any]) -> bytes:
    """The ``by_state`` value of a PENDING task: :data:`shared.records.PENDING_ROW`, in that order."""
    unknown = task.get("unknown_turn")
    created = task["created"]
    since = task.get("pending_since")
    row: bytes = _ROW_PACKER.pack([task["id"], task["module"], task["kind"], task["priority"], created,
                                   task.get("not_before") or 0.0, None if since in (None, created) else since,
                                   task.get("requires") or None, task.get("attrs") or None,
                                   unknown["account"] if unknown else None,
                                   unknown.get("until") if unknown else None])
    return row


def ready_key(priority: int, task_id: int) -> bytes:
    return _PRIO_ID.pack(PRIO_BIAS - priority, task_id)


def ready_key_id(key: bytes) -> int:
    task_id: int = _PRIO_ID.unpack(key)[1]
    return task_id


def time_id_key(t_units: int, task_id: int) -> bytes:
    """delayed (world ms) and leases (monotonic us): ordered by time, then id."""
    return _U64_U64.pack(max(0, t_units), task_id)


def time_id_split(key: bytes) -> tuple[int, int]:
    return _U64_U64.unpack(key)


def ms(t: float) -> int:
    return int(round(t * 1000))


def us(t: float) -> int:
    return int(round(t * 1_000_000))


def state_key(state: str, task_id: int) -> bytes:
    return state.encode() + SEP + u64(task_id)


def state_prefix(state: str) -> bytes:
    return state.encode() + SEP


def count_key(state: str, module: str) -> bytes:
    return state.encode() + SEP + module.encode()


def split_count_key(key: bytes) -> tuple[str, str]:
    state, _, module = key.partition(SEP)
    return state.decode(), module.decode()


def pair_key(a: str, b: str) -> bytes:
    return a.encode() + SEP + b.encode()


def split_pair(key: bytes) -> tuple[str, str]:
    a, _, b = key.partition(SEP)
    return a.decode(), b.decode()


def quota_slot_prefix(account: str, mode: str, slot: str) -> bytes:
    return SEP.join((account.encode(), mode.encode(), slot.encode())) + SEP


def quota_usage_key(account: str, mode: str, slot: str, bucket_ms: int) -> bytes:
    return quota_slot_prefix(account, mode, slot) + u64(bucket_ms)


def quota_entry_key(account: str, mode: str, slot: str, ts_ms: int, task_id: int, epoch: int) -> bytes:
    return quota_slot_prefix(account, mode, slot) + u64(ts_ms) + u64(task_id) + _U32.pack(epoch)


def kv_key(module: str, key: str) -> bytes:
    return module.encode() + SEP + key.encode()


def kv_prefix(module: str) -> bytes:
    return module.encode() + SEP


def unconsumed_key(module: str, task_id: int) -> bytes:
    return module.encode() + SEP + u64(task_id)


def expiry_key(expires_ms: int, kv: bytes) -> bytes:
    """``kv_expiry``: when (world ms), then the ``kv`` key (module . NUL . key) that expires."""
    return u64(max(0, expires_ms)) + kv


def expiry_split(key: bytes) -> tuple[int, bytes]:
    return from_u64(key[:8]), key[8:]


class Storage:
    """The open LMDB environment and its named databases (one per broker process)."""

    def __init__(self, env: lmdb.Environment, dbs: dict[str, lmdb._Database], path: Path):
        self.env = env
        self.dbs = dbs
        self.path = path
        # what opening it had to put off to a later start (a full map or disk), by name; logged when it
        # happens, and counted in the broker's ``errors`` (stats) by the core that serves it
        self.deferred: Counter[str] = Counter()

    def close(self) -> None:
        self.env.close()


def open_env(path: str | os.PathLike[str], map_size: int) -> Storage:
    """Open (creating if needed) the broker database with default durability.

    Never ``writemap``, ``map_async``, ``sync=False`` or ``metasync=False``: a reply is a promise that
    the effect survives a crash (docs/architecture.md § Invariants). Clears stale reader slots left by killed processes.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    data_file = path / "data.mdb"
    if data_file.exists():
        # never open with a map smaller than what is on disk (a grown map must stay grown)
        map_size = max(map_size, data_file.stat().st_size)
    env = lmdb.open(str(path), map_size=map_size, max_dbs=len(DATABASES) + 1, subdir=True,
                    sync=True, metasync=True, writemap=False, map_async=False, max_readers=126,
                    lock=True)
    env.reader_check()
    dbs = {name: env.open_db(name.encode(), create=True) for name in DATABASES}
    with env.begin(write=True) as txn:
        raw = txn.get(b"schema_version", db=dbs["meta"])
        if raw is None:
            txn.put(b"schema_version", pack_value(SCHEMA_VERSION), db=dbs["meta"])
        else:
            version = unpack_value(raw)
            if version > SCHEMA_VERSION:
                env.close()
                raise SchemaError(f"database at {path} has schema version {version}; this broker "
                                  f"understands up to {SCHEMA_VERSION}")
            if version < SCHEMA_VERSION:
                # 1 -> 2: nothing to rewrite; 2 -> 3: the PENDING rows (see the module docstring), written
                # below in a transaction of their own; until then the marker says they are missing
                if version < 3:
                    txn.put(ROWS_MISSING, pack_value(True), db=dbs["meta"])
                txn.put(b"schema_version", pack_value(SCHEMA_VERSION), db=dbs["meta"])
        stored = txn.get(b"map_size", db=dbs["meta"])
        built = txn.get(b"compactable_built", db=dbs["meta"]) is not None
        rows_missing = txn.get(ROWS_MISSING, db=dbs["meta"]) is not None
    if stored is not None and unpack_value(stored) > env.info()["map_size"]:
        env.set_mapsize(unpack_value(stored))
    storage = Storage(env, dbs, path)
    if rows_missing and not _write_pending_rows(env, dbs):
        storage.deferred["PENDING_ROWS_DEFERRED"] += 1
    if not built and not _build_compactable(env, dbs):
        storage.deferred["COMPACTABLE_INDEX_DEFERRED"] += 1
    return storage


def _write_pending_rows(env: lmdb.Environment, dbs: dict[str, Any]) -> bool:
    """Give every PENDING ``by_state`` entry its row (the 2 -> 3 migration) and clear :data:`ROWS_MISSING`,
    in one transaction; False (and a warning) when that had to be put off. A full map or disk must not keep
    the broker from starting (growing it needs a running broker): the rows are then written at a later
    start, and until then ``list`` makes a missing row from its task's record (services/broker/ops_tasks.py),
    so nothing is wrong, only slower."""
    prefix = state_prefix(st.PENDING)
    try:
        with env.begin(write=True) as txn:
            cur = txn.cursor(db=dbs["by_state"])
            ok = cur.set_range(prefix)
            while ok:
                key = bytes(cur.key())
                if not key.startswith(prefix):
                    break
                raw = txn.get(key[len(prefix):], db=dbs["tasks"])
                if raw is not None:
                    cur.put(key, pending_row(decode_value(raw)))   # overwrites the current entry in place
                ok = cur.next()
            txn.delete(ROWS_MISSING, db=dbs["meta"])
    except lmdb.Error as exc:
        log.warning("storage: the PENDING rows of the schema 3 migration could not be written (%s: %s); "
                    "they are written at a later start, list makes them from the records meanwhile",
                    type(exc).__name__, exc)
        return False
    return True


def _build_compactable(env: lmdb.Environment, dbs: dict[str, Any]) -> bool:
    """Fill the ``compactable`` index from the task records, once per database (see the module docstring);
    False (and a warning) when that had to be put off."""
    try:
        with env.begin(write=True) as txn:
            cur = txn.cursor(db=dbs["by_state"])
            for state in sorted(st.COMPACTABLE):
                prefix = state_prefix(state)
                ok = cur.set_range(prefix)
                while ok and cur.key().startswith(prefix):
                    tid = from_u64(bytes(cur.key())[len(prefix):])
                    raw = txn.get(u64(tid), db=dbs["tasks"])
                    task = decode_value(raw) if raw is not None else None
                    if task and task.get("consumed") and not task.get("compacted"):
                        txn.put(time_id_key(ms(task["updated"]), tid), b"", db=dbs["compactable"])
                    ok = cur.next()
            txn.put(b"compactable_built", pack_value(True), db=dbs["meta"])
    except lmdb.Error as exc:
        # a full map or disk (MDB_MAP_FULL, or ENOSPC reported as EIO at commit) must not stop the broker
        # from starting (growing it needs a running broker): the index is built at a later start; until
        # then old tasks are simply not compacted
        log.warning("storage: the compactable index could not be built (%s: %s); it is built at a later "
                    "start, old tasks are not compacted meanwhile", type(exc).__name__, exc)
        return False
    return True


def pages_in_use(storage: Storage, txn: lmdb.Transaction) -> int:
    """Pages held by live data in every database (free pages are reusable, so not counted)."""
    total: int = 0
    main = txn.stat()
    total += main["branch_pages"] + main["leaf_pages"] + main["overflow_pages"]
    for db in storage.dbs.values():
        st = txn.stat(db)
        total += st["branch_pages"] + st["leaf_pages"] + st["overflow_pages"]
    return total
