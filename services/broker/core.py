"""The broker's request engine, free of sockets: a batch of raw requests in, replies and events out.

One batch is one LMDB write transaction (group commit). A request that fails is rolled back alone
while the rest of the batch commits: the requests first run together in one nested transaction, and
if one fails, again each in its own (:meth:`BrokerCore._requests`). Replies are released only after
the outer transaction has committed.

Every request is checked against its caller's role (services/broker/roles.py) before anything else reads
it: the role comes with the message from the server when a CURVE key proves it, else from the identity.

Tests drive :meth:`BrokerCore.handle_batch` directly with a :class:`shared.clock.FakeClock`.
"""
from __future__ import annotations

import hashlib
import logging
import os
import traceback
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import lmdb

from services.broker import ops_admin, ops_handoff, ops_kv, ops_lease, ops_quota, ops_retention, ops_tasks, request_log
from services.broker import roles as R
from services.broker import schema as S
from services.broker.capacity import SAMPLES_KEY, Capacity, disk_space
from services.broker.tx import Ledger, Tx
from shared import protocol
from shared.clock import boot_id
from shared.config import MAX_MAP_CEILING, format_size
from shared.errors import ErrorCode, FanoError, bad_argument
from shared.roles import Role, of_identity

if TYPE_CHECKING:
    from shared.clock import Clock
    from shared.config import Config

log = logging.getLogger("broker")

# command -> handler(tx, **args): its result (the wire shapes are in the handlers' modules)
HANDLERS: dict[str, Callable[..., Any]] = {**ops_tasks.HANDLERS, **ops_lease.HANDLERS, **ops_quota.HANDLERS,
                                           **ops_kv.HANDLERS, **ops_admin.HANDLERS, **ops_retention.HANDLERS}
# commands that start new work or make the database grow: refused while storage is short (see
# services/broker/capacity.py). Completions, failures, cancels, acks and reads keep working so that
# running work can finish and the operator can see what happens. A module transaction is refused only
# when it submits, or puts without acking a result (:func:`grows`); a lease gets an empty answer.
GROWING = frozenset({"submit", "quota_set", "retry"})
# world seconds a lease refused for want of storage tells the scheduler to wait (it re-asks then)
STORAGE_LEASE_WAIT = 30.0
PRUNE_EVERY = 5.0  # seconds between pruning passes of the request log and event outbox, and task compactions
# largest map grow_map accepts. mmap of a huge size fails (lmdb.MemoryError), and py-lmdb then leaves the
# environment closed; far below that, a map larger than the disk only turns a clean MAP_FULL into
# write errors. 1 TiB is ~1000x the default map: raise it in shared/config.py if a deployment needs more.
MAX_MAP_SIZE = MAX_MAP_CEILING


def grows(req: protocol.Request) -> bool:
    """Whether ``req`` is new work, refused while storage is short.

    A module transaction that acks a result and submits nothing applies running work (its writes are
    bounded by results already stored), so it goes on, and so does one that only deletes or checks
    (it frees room); one that submits, or puts without an ack, is new work. Malformed ops are left to
    the handler's own BAD_ARGUMENT."""
    if req.cmd in GROWING:
        return True
    if req.cmd != "txn":
        return False
    ops = req.args.get("ops")
    if not isinstance(ops, list):
        return False
    kinds = [op.get("op") for op in ops if isinstance(op, dict)]
    return "submit" in kinds or ("put" in kinds and "ack" not in kinds)


class ReadLater:
    """A read-only request of a batch, answered after the commit, one at a time (:meth:`BrokerCore.answer_read`)."""

    __slots__ = ("req",)

    def __init__(self, req: protocol.Request):
        self.req = req


def _cid_of(frames: list[bytes]) -> str | bytes | None:
    try:
        return protocol.decode_request(frames).cid
    except FanoError as exc:
        return exc.details.get("cid")


# what a batch holds per message once decoded: a request to run, an error reply for what could not be read,
# a read-only request answered after the commit, or None for a grow_map (the server's, after the commit)
Decoded = protocol.Request | protocol.Reply | ReadLater | None
# (client identity, reply frames), or a ReadLater the server answers after the commit
ReplyOut = tuple[bytes, list[bytes] | ReadLater]
# a message of a batch: (client identity, frames), or with the role the server proved from its CURVE key
Message = tuple[bytes, list[bytes]] | tuple[bytes, list[bytes], Role]
# (replies, events, pending grow_map requests)
BatchOut = tuple[list[ReplyOut], list[dict[str, Any]], list[tuple[bytes, protocol.Request]]]


class BrokerCore:
    def __init__(self, storage: S.Storage, config: Config, clock: Clock):
        self.storage = storage
        self.env = storage.env
        self.config = config            # shared.config.Config
        self.bcfg = config.broker
        self.clock = clock
        self.errors: Counter[str] = Counter(storage.deferred)   # and what opening the storage put off
        self.requests = 0
        self.batches = 0
        self.map_full = False           # set by a real MDB_MAP_FULL; cleared when the map grows
        self.map_used = 0
        self.dropped_replies = 0        # replies the server could not send (client gone); in stats
        self.started = clock.mono()
        self._last_prune = 0.0
        self.ledger: Ledger                 # made by startup() (every batch runs after it)
        self.next_lease_deadline: float | None = None
        self.next_due: float | None = None
        self.capacity = Capacity(self)
        self._startup_pending = False   # the start-of-life sweep could not be written (full disk)
        # which accounts' workers were seen when (conversation hand-off from an offline account)
        self.activity = ops_handoff.Activity(clock.world())
        self.names = ops_tasks.Names.of(config)   # accounts and modules commands may name
        # accounts whose unknown turns are held for a time of their own (services/broker/ops_lease.py)
        self.holds = {a.name: a.unknown_turn_hold for a in config.accounts if a.unknown_turn_hold is not None}

    # --- lifecycle -------------------------------------------------------------------------------------

    def startup(self) -> list[dict[str, Any]]:
        """Start-of-life sweep, then the storage checks (services/broker/capacity.py).

        On a full disk the sweep may not be writable: the broker starts anyway, refusing new work, and
        runs the sweep once the disk accepts writes again (a broker that cannot start would leave
        running work with nobody to complete it)."""
        failed = None
        try:
            events = self._startup_sweep()
        except lmdb.Error as exc:
            failed = exc
            log.error("the start-of-life sweep could not be written (%s); retried when space appears", exc)
            self._check_env()
            with self.env.begin() as txn:
                self.ledger = Ledger(txn, self.storage.dbs)
            self._startup_pending = True
            events = []
        with self.env.begin() as txn:
            raw = txn.get(SAMPLES_KEY, db=self.storage.dbs["meta"])
        self._measure_map()
        self.capacity.at_start(bytes(raw) if raw is not None else None)
        if isinstance(failed, lmdb.MapFullError):
            self.map_full = True
            self.capacity.after_batch(force=True)  # grows the map when it can
        elif failed is not None:
            self.capacity.commit_failed(failed)
        return events

    def _startup_sweep(self) -> list[dict[str, Any]]:
        """Void leases from before a reboot, expire overdue ones, load config quotas."""
        with self.env.begin(write=True) as txn:
            self.ledger = Ledger(txn, self.storage.dbs)
            tx = self._tx(txn)
            current = boot_id()
            previous = tx.get("meta", b"boot_id")
            if previous is not None and previous != current:
                # CLOCK_MONOTONIC restarted with the machine, so stored deadlines mean nothing, and every
                # worker that held a lease died with the old boot: expire them all
                n = ops_lease.expire_leases(tx, everything=True)
                log.warning("machine rebooted since last run: expired %d lease(s)", n)
            tx.put("meta", b"boot_id", current)
            n = ops_lease.expire_leases(tx)
            if n:
                log.info("expired %d overdue lease(s) at start", n)
            ops_lease.promote_due(tx)
            ops_quota.apply_config_quotas(tx, self.config.quotas)
            events = tx.events
            self.ledger.flush(txn)
            self._note_wakeups(tx)
        self._startup_pending = False
        return events

    def _tx(self, txn: lmdb.Transaction, now: float | None = None, mono: float | None = None) -> Tx:
        return Tx(self.storage, txn, self.bcfg, self.clock.world() if now is None else now,
                  self.clock.mono() if mono is None else mono, self.ledger, activity=self.activity,
                  handoff_after=self.config.scheduler.conversation_handoff, names=self.names, holds=self.holds)

    def _note_wakeups(self, tx: Tx) -> None:
        # read inside the batch's own transaction: no extra read transaction per batch
        self.next_lease_deadline, self.next_due = ops_lease.next_wakeup(tx)

    def _measure_map(self) -> None:
        with self.env.begin() as txn:
            self.map_used = S.pages_in_use(self.storage, txn) * self.env.stat()["psize"]

    @property
    def map_size(self) -> int:
        return self.env.info()["map_size"]

    def nearly_full(self) -> bool:
        """New work is refused (a real MDB_MAP_FULL, or the storage limits of services/broker/capacity.py)."""
        return self.map_full or self.capacity.refusing is not None

    def refusal(self) -> FanoError:
        """The error new work gets while storage is short."""
        code = ErrorCode.DISK_FULL if self.capacity.refusing == "DISK_FULL" else ErrorCode.MAP_FULL
        return FanoError(code, self.capacity.message())

    def next_wakeup(self) -> tuple[float | None, float | None]:
        """(first lease deadline, monotonic; first not_before, world) as of the last batch."""
        return self.next_lease_deadline, self.next_due

    # --- the batch ----------------------------------------------------------------------------------------

    def handle_batch(self, messages: list[Message], defer_reads: bool = False) -> BatchOut:
        """Process ``[(identity, frames), ...]``; returns ``(replies, events, grow)``.

        The caller's role (services/broker/roles.py) is the third item of a message when the server
        knows it from the connection's CURVE key (tcp://), else the one its identity's program name
        implies (:func:`shared.roles.of_identity`: ipc://); a command outside it is answered ``FORBIDDEN``.

        ``replies`` is ``[(identity, reply_frames), ...]``, to be sent only now that the batch committed.
        With ``defer_reads``, a read-only request's entry holds a :class:`ReadLater` instead of frames:
        the server answers it after the commit with :meth:`answer_read` and sends it at once, so a batch
        of large reads (pages of tasks) never holds all its replies in memory together.
        ``grow`` lists pending ``grow_map`` requests: the server applies them with no transaction open
        (:meth:`grow_map`) and then replies.

        A batch whose commit runs out of room (MDB_MAP_FULL, or a write error: a full disk) is rolled
        back, the storage limits re-checked (the map may grow), and run once more: then new work is
        refused and the rest commits into the room kept for it. Only if that fails too does everyone in
        the batch get the refusal; the broker itself never stops for it.
        """
        self.batches += 1
        self.requests += len(messages)
        for attempt in range(2):
            errors_before = Counter(self.errors)
            try:
                out = self._batch(messages, defer_reads)
            except lmdb.MapFullError:
                self.errors = errors_before  # nothing of the attempt happened: its error replies neither
                self.map_full = True
                log.error("database map full at commit; batch of %d rolled back%s", len(messages),
                          "" if attempt else ", run again refusing new work")
                self.capacity.after_batch(force=True)  # grows the map when it can
            except lmdb.Error as exc:  # a write error at commit: ENOSPC shows up as EIO
                self.errors = errors_before
                log.error("commit failed (%s); batch of %d rolled back%s", exc, len(messages),
                          "" if attempt else ", run again refusing new work")
                self._check_env()
                self.capacity.commit_failed(exc)
            else:
                self._maybe_measure_map()
                self.capacity.after_batch()
                if self._startup_pending and not self.nearly_full():
                    out[1].extend(self._retry_startup())
                return out
        err = self.refusal()
        self.errors[err.name] += len(messages)
        # keep each reply's cid: clients drop replies that do not carry theirs (and would time out)
        return ([(m[0], protocol.encode_reply(protocol.error_reply(_cid_of(m[1]), err))) for m in messages], [], [])

    def _batch(self, messages: list[Message], defer_reads: bool = False) -> BatchOut:
        """One attempt at a batch in one write transaction; the ledger is restored if it fails."""
        now, mono = self.clock.world(), self.clock.mono()
        events: list[dict[str, Any]] = []
        grow: list[tuple[bytes, protocol.Request]] = []
        decoded: list[tuple[bytes, Role, Decoded]] = []
        for m in messages:
            role = m[2] if len(m) == 3 else of_identity(m[0])
            decoded.append((m[0], role, self._decode(m[0], role, m[1], grow, defer_reads)))
        nearly_full = self.nearly_full()
        at_start = self.ledger.checkpoint()
        stored_at_start = dict(self.ledger.stored)
        try:
            with self.env.begin(write=True) as outer:
                events.extend(self._housekeeping(outer, now, mono))
                replies, evs = self._requests(outer, decoded, now, mono, nearly_full)
                events.extend(evs)
                self.ledger.flush(outer)
                self._note_wakeups(self._tx(outer, now, mono))
        except BaseException:
            self.ledger.restore(at_start)
            self.ledger.forget_flush(stored_at_start)
            raise
        return replies, events, grow

    def _retry_startup(self) -> list[dict[str, Any]]:
        try:
            events = self._startup_sweep()
        except lmdb.Error as exc:
            log.error("the start-of-life sweep still cannot be written (%s)", exc)
            self._check_env()
            return []
        log.info("the start-of-life sweep was written now that storage has room")
        return events

    def _check_env(self) -> None:
        """After a failed commit: reopen the environment if LMDB flagged it unusable (MDB_PANIC)."""
        try:
            self.env.begin(write=True).abort()
        except lmdb.PanicError:
            log.error("the database environment needs reopening after the failed commit; reopening it")
            self._reopen(self.map_size)

    def _decode(self, ident: bytes, role: Role, frames: list[bytes], grow: list[tuple[bytes, protocol.Request]],
                defer_reads: bool = False) -> Decoded:
        """The request in ``frames``; an error reply for what cannot be read or what ``role`` may not run at
        all; None for a grow_map; a :class:`ReadLater` for a read-only request when reads are deferred."""
        try:
            req = protocol.decode_request(frames)
        except FanoError as exc:
            self.errors[exc.name] += 1
            return protocol.error_reply(exc.details.get("cid"), exc)
        refused = R.check_command(role, req.cmd)
        if refused is not None:
            self.errors[refused.name] += 1
            return protocol.error_reply(req.cid, refused)
        if req.cmd == "grow_map":
            grow.append((ident, req))
            return None
        if defer_reads and not protocol.is_mutating(req.cmd):
            return ReadLater(req)
        return req

    def answer_read(self, item: ReadLater) -> list[bytes]:
        """Run a deferred read-only request in its own read transaction; its reply frames.

        It runs after the batch committed, so it sees that batch's writes (never uncommitted ones)."""
        req = item.req
        try:
            with self.env.begin() as txn:
                result = self._dispatch(self._tx(txn), req)
            return protocol.encode_reply(protocol.Reply(cid=req.cid, ok=True, result=result))
        except FanoError as exc:
            self.errors[exc.name] += 1
            return protocol.encode_reply(protocol.error_reply(req.cid, exc))
        except Exception as exc:  # a bug: answered, counted and logged; the broker keeps serving
            log.error("internal error in %s: %s\n%s", req.cmd, exc, traceback.format_exc())
            err = FanoError(ErrorCode.INTERNAL, f"{req.cmd} failed inside the broker: {type(exc).__name__}: {exc}")
            self.errors[err.name] += 1
            return protocol.encode_reply(protocol.error_reply(req.cid, err))

    def _requests(self, outer: lmdb.Transaction, decoded: list[tuple[bytes, Role, Decoded]], now: float, mono: float,
                  nearly_full: bool) -> tuple[list[ReplyOut], list[dict[str, Any]]]:
        """Run the batch's requests; returns ``(replies, events)``.

        A request that fails must roll back alone. A nested transaction per request does that, but it
        copies every page the batch has already dirtied (~6 µs a request). Requests rarely fail, so
        they first run together, in one nested transaction; if any of them fails, that attempt is
        rolled back whole (nothing of it leaves: its replies and events are dropped, the ledger
        restored) and the requests run again, each in its own nested transaction. A nearly full map
        refuses growing requests, so then they run one by one at once.
        """
        if not nearly_full:
            checkpoint = self.ledger.checkpoint()
            try:
                with self.env.begin(write=True, parent=outer) as txn:
                    return self._run(txn, decoded, now, mono, nearly_full, isolated=False)
            except Exception:  # answered by the second run, request by request (MapFullError included)
                self.ledger.restore(checkpoint)
        return self._run(outer, decoded, now, mono, nearly_full, isolated=True)

    def _run(self, txn: lmdb.Transaction, decoded: list[tuple[bytes, Role, Decoded]], now: float, mono: float,
             nearly_full: bool, isolated: bool) -> tuple[list[ReplyOut], list[dict[str, Any]]]:
        replies: list[ReplyOut] = []
        events: list[dict[str, Any]] = []
        for ident, role, item in decoded:
            if item is None:  # grow_map: answered by the server after the commit
                continue
            if isinstance(item, ReadLater):  # answered by the server after the commit, one at a time
                replies.append((ident, item))
                continue
            if isinstance(item, protocol.Reply):  # unreadable: answered with the decoding error
                replies.append((ident, protocol.encode_reply(item)))
                continue
            if isolated:
                reply, evs = self._isolated(txn, item, role, now, mono, nearly_full)
            else:
                reply, evs = self._apply(txn, item, role, now, mono, nearly_full)
            replies.append((ident, protocol.encode_reply(reply)))
            events.extend(evs)
        return replies, events

    def _maybe_measure_map(self) -> None:
        # the file's high-water mark is one cheap call; count live pages only once it is past half the
        # map, so the soft limit engages before LMDB runs out of pages for completions
        info = self.env.info()
        if (info["last_pgno"] + 1) * self.env.stat()["psize"] > info["map_size"] // 2 or self.map_full:
            self._measure_map()
        else:
            self.map_used = (info["last_pgno"] + 1) * self.env.stat()["psize"]

    def _housekeeping(self, outer: lmdb.Transaction, now: float, mono: float) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        sweeps: list[Callable[[Tx], object]] = []
        if self.next_lease_deadline is not None and mono >= self.next_lease_deadline:
            sweeps.append(ops_lease.expire_leases)
        if self.next_due is not None and now >= self.next_due:
            sweeps.append(ops_lease.promote_due)
        if mono - self._last_prune >= PRUNE_EVERY:
            self._last_prune = mono
            sweeps.append(lambda tx: ops_admin.prune(tx, self.bcfg.request_log_ttl, self.bcfg.event_retention))
            if self.bcfg.task_retention > 0:
                sweeps.append(self._compact)
            sweeps.append(ops_retention.expire_kv)  # modules' working data (empty index: one cursor read)
            if self.capacity.sample_due(now):
                sweeps.append(self.capacity.sample)
        for sweep in sweeps:
            # each sweep in its own nested transaction: a bug in one must not fail the requests of the
            # batch (or crash-loop the broker at start); it is logged and retried next batch
            checkpoint = self.ledger.checkpoint()
            try:
                with self.env.begin(write=True, parent=outer) as txn:
                    tx = self._tx(txn, now, mono)
                    sweep(tx)
                    events.extend(tx.events)
            except lmdb.MapFullError:
                self.ledger.restore(checkpoint)
                self.map_full = True
            except FanoError as exc:  # a sweep that would grow the database while new work is refused
                self.ledger.restore(checkpoint)
                self.errors[exc.name] += 1
            except Exception:
                self.ledger.restore(checkpoint)
                self.errors["SWEEP_FAILED"] += 1
                log.error("housekeeping sweep failed:\n%s", traceback.format_exc())
        return events

    def _compact(self, tx: Tx) -> None:
        """Housekeeping: compact acked DONE/CANCELLED tasks older than the retention (bounded per pass)."""
        n, more = ops_retention.compact(tx, tx.now - self.bcfg.task_retention)
        if n:
            self.map_full = False  # as after the compact command
            log.info("compacted %d task(s) settled over %.0fs ago%s", n, self.bcfg.task_retention,
                     " (more next pass)" if more else "")

    def _isolated(self, outer: lmdb.Transaction, req: protocol.Request, role: Role, now: float, mono: float,
                  nearly_full: bool) -> tuple[protocol.Reply, list[dict[str, Any]]]:
        """One request in its own nested transaction: a failure rolls back this request only."""
        checkpoint = self.ledger.checkpoint()
        try:
            with self.env.begin(write=True, parent=outer) as txn:
                return self._apply(txn, req, role, now, mono, nearly_full)
        except FanoError as exc:
            self.ledger.restore(checkpoint)
            self.errors[exc.name] += 1
            return protocol.error_reply(req.cid, exc), []
        except lmdb.MapFullError:
            self.ledger.restore(checkpoint)
            self.map_full = True
            refusal = self.refusal()
            self.errors[refusal.name] += 1
            return protocol.error_reply(req.cid, refusal), []
        except Exception as exc:  # a bug: roll back this request, keep serving the others
            self.ledger.restore(checkpoint)
            log.error("internal error in %s: %s\n%s", req.cmd, exc, traceback.format_exc())
            err = FanoError(ErrorCode.INTERNAL, f"{req.cmd} failed inside the broker: {type(exc).__name__}: {exc}")
            self.errors[err.name] += 1
            return protocol.error_reply(req.cid, err), []

    def _apply(self, txn: lmdb.Transaction, req: protocol.Request, role: Role, now: float, mono: float,
               nearly_full: bool) -> tuple[protocol.Reply, list[dict[str, Any]]]:
        """Run ``req`` in ``txn``: the role check, the request log, the handler; ``(reply, events)``. Raises on
        failure."""
        tx = self._tx(txn, now, mono)
        R.authorize(tx, role, req)   # first: a refused caller learns nothing from the request log either
        fp = b""    # the request's fingerprint, when it has a request id
        if req.rid is not None:
            fp = hashlib.blake2b(req.body, digest_size=16).digest()
            seen = tx.get("requests", req.rid.encode())
            if seen is not None:
                if seen["fp"] != fp:
                    raise FanoError(ErrorCode.REQUEST_ID_REUSED,
                                    f"request id {req.rid} was used for a different request")
                return protocol.Reply(cid=req.cid, ok=True, packed_result=request_log.replay(tx, seen)), []
        if nearly_full and grows(req):
            raise self.refusal()
        if nearly_full and req.cmd == "lease":
            # no new work while storage is short; the scheduler waits until retry_at and asks again
            return protocol.Reply(cid=req.cid, ok=True, result={
                "task": None, "reason": f"storage: {self.refusal().message}",
                "retry_at": now + STORAGE_LEASE_WAIT}), []
        result = self._dispatch(tx, req)
        # a lease that granted nothing changed nothing: not logging it keeps idle workers'
        # polls free of fsyncs, and a retry simply asks again
        if req.rid is not None and not (req.cmd == "lease" and result.get("task") is None):
            packed = protocol.pack_value(result)  # encoded once: for the log and for the wire
            tx.put("requests", req.rid.encode(), request_log.entry(result, packed, now, fp))  # no prompt copy
            tx.put_raw("requests_ts", S.u64(S.ms(now)) + req.rid.encode(), b"")
            return protocol.Reply(cid=req.cid, ok=True, packed_result=packed), tx.events
        return protocol.Reply(cid=req.cid, ok=True, result=result), tx.events

    def _dispatch(self, tx: Tx, req: protocol.Request) -> Any:
        if req.cmd == "ping":
            return {"version": protocol.VERSION, "pid": os.getpid(), "uptime": self.clock.mono() - self.started,
                    "now": tx.now}
        if req.cmd == "stats":
            out = ops_admin.collect_stats(tx)
            out["broker"] = self.runtime_stats(tx)
            return out
        result = HANDLERS[req.cmd](tx, **req.args)
        if req.cmd == "compact" and result["compacted"]:
            self.map_full = False  # pages were freed: the next growing request finds out whether enough
        return result

    def runtime_stats(self, tx: Tx) -> dict[str, Any]:
        return {"pid": os.getpid(), "uptime": self.clock.mono() - self.started, "requests": self.requests,
                "batches": self.batches, "mean_batch": round(self.requests / max(1, self.batches), 2),
                "errors": dict(self.errors), "map_size": self.map_size, "map_used": self.map_used,
                "map_full": self.nearly_full(), "last_event_seq": tx.peek_counter("event_seq"),
                "dropped_replies": self.dropped_replies, "storage": self.capacity.figures(tx)}

    # --- map growth ---------------------------------------------------------------------------------------

    def grow_map(self, req: protocol.Request) -> protocol.Reply:
        """Grow the LMDB map. Must be called with no transaction open in this process.

        A size below the current map, above :data:`MAX_MAP_SIZE`, beyond what the data directory's
        filesystem can hold, or that LMDB cannot map is refused with BAD_ARGUMENT; the broker keeps
        serving with the map it had.
        """
        size = req.args["size"]
        current = self.map_size
        if size == current:  # a retry of a growth that already happened (grow_map is not request-logged)
            return protocol.Reply(cid=req.cid, ok=True, result={"map_size": current, "previous": current,
                                                                 "map_used": self.map_used})
        try:
            self._check_growth(size, current)
            self.set_map_size(size)
        except FanoError as err:
            self.errors[err.name] += 1
            return protocol.error_reply(req.cid, err)
        log.info("map grown from %d to %d bytes", current, size)
        self.capacity.after_batch(force=True)  # resumes new work if this made room
        return protocol.Reply(cid=req.cid, ok=True, result={"map_size": self.map_size, "previous": current,
                                                             "map_used": self.map_used})

    def _check_growth(self, size: int, current: int) -> None:
        """Refuse (BAD_ARGUMENT) a new map size that is smaller, over the cap, or more than the disk holds."""
        if size < current:
            raise bad_argument(f"new map size {size} must not be below the current {current}", field="size")
        if size > MAX_MAP_SIZE:
            raise bad_argument(f"new map size {format_size(size)} exceeds the broker's limit of "
                               f"{format_size(MAX_MAP_SIZE)}", field="size", limit=MAX_MAP_SIZE)
        free, _ = disk_space(self.storage.path)
        on_disk = (self.storage.path / "data.mdb").stat().st_size
        if size > on_disk + free:
            raise bad_argument(f"new map size {format_size(size)} cannot fit on disk: data.mdb holds "
                               f"{format_size(on_disk)} and {format_size(free)} are free in "
                               f"{self.storage.path}",
                               field="size", free=free)

    def set_map_size(self, size: int) -> None:
        """Grow the map to ``size`` and remember it in ``meta`` (a restart keeps the grown map). No
        transaction may be open; raises BAD_ARGUMENT (environment reopened at the old size) on failure."""
        self._set_mapsize(size, self.map_size)
        try:
            with self.env.begin(write=True) as txn:
                txn.put(b"map_size", protocol.pack_value(size), db=self.storage.dbs["meta"])
        except lmdb.Error as exc:
            # a full disk: open_env still maps at least the data file's size, and the growth is redone
            # after a restart if it is needed
            log.warning("the new map size could not be recorded (%s)", exc)
        self.map_full = False
        self._measure_map()

    def _set_mapsize(self, size: int, current: int) -> None:
        try:
            self.env.set_mapsize(size)
        except lmdb.Error as exc:
            # py-lmdb considers the environment closed after a failed set_mapsize: open it again at the
            # size it had, or every later request would fail (or the broker die)
            log.error("cannot grow the map to %d bytes: %s; reopening it at %d", size, exc, current)
            self._reopen(current)
            raise bad_argument(f"cannot map {format_size(size)}: {type(exc).__name__}: {exc}; the map stays "
                               f"at {format_size(self.map_size)}", field="size") from None

    def _reopen(self, map_size: int) -> None:
        """Close and reopen the environment (no transaction may be open), with a ledger on the new handles."""
        path = self.storage.path
        self.storage.close()  # before the new open: one process must not hold the same env twice
        self.storage = S.open_env(path, map_size)
        self.env = self.storage.env
        self.errors.update(self.storage.deferred)
        with self.env.begin() as txn:
            # every batch flushed the ledger, so the database holds exactly what it held in memory
            self.ledger = Ledger(txn, self.storage.dbs)


