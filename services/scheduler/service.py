"""The scheduler program: sockets and the rebuild around :class:`services.scheduler.core.SchedulerCore`.

It owns no state (docs/architecture.md § Processes): at start, and whenever the event log cannot be followed, it
rebuilds its view from the broker:

1. subscribe to the broker's PUB (``evt.``) — events that arrive meanwhile are buffered by the socket;
2. note the broker's last event seq *before* reading anything;
3. read the accounts (``quota_show``), the RUNNING tasks (paged ``list``) and the PENDING tasks (the
   broker's rows, :mod:`services.scheduler.rebuild`), each page applied as it arrives, and the module
   weights set at run time (kv ``scheduler``/``weights``); a fresh process also relearns service times
   from the outbox's recent events (:meth:`services.scheduler.placement.Placement.learn_history`);
4. catch up with ``events(after=noted seq)``: every change made while we were reading is applied on top
   of the snapshot, in order (applying an event is idempotent per task, so overlaps do no harm).

Afterwards it follows the PUB socket; a sequence gap is filled from the broker's outbox (``events``), an
outbox that no longer reaches back (``truncated``) or a broker whose seq went backwards (a new database)
means a full rebuild. Because PUB drops what is published while the subscriber reconnects (a broker
restart), a quiet scheduler also asks for new events every ``EVENT_CHECK`` seconds.

Each tick: one poll over the ROUTER (workers, queries) and the SUB socket, with a timeout up to the next
timer of the core (heartbeat, due task, quota reset, assignment timeout) and at most ``TICK``; then
events, messages, timers, dispatch, and the messages to send. A broker that does not answer never
blocks the loop for long: calls made inside the loop have a short timeout and are retried next tick.
"""
from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import zmq

from services.scheduler import placement as P
from services.scheduler import rebuild
from services.scheduler.core import SchedulerCore
from shared import events, protocol, sockets, txn
from shared.client import BrokerClient
from shared.errors import BrokerUnavailable, ErrorCode, FanoError
from shared.roles import NOBODY, Role
from shared.service import Service
from shared.zap import Gate

TICK = 0.5                # longest wait between looks at the stop flag
EVENT_CHECK = 5.0         # seconds without events before asking the outbox whether we missed some
STATS_EVERY = 60.0
PAGE = 1000               # tasks per `list` page and events per `events` page
DRAIN = 1000              # messages read per socket per tick (the rest next tick: timers keep running)
REFRESH_PER_TICK = 50     # `get`s per tick for tasks whose state we must re-read
REBUILD_RETRY = 1.0
KEYS_CHECK = 1.0          # seconds between looks at whether the authorized list changed (tcp:// only)
WEIGHTS_NAMESPACE, WEIGHTS_KEY = "scheduler", "weights"   # broker kv: module weights set at run time


class Resync(Exception):
    """The event log cannot be followed from where we are: rebuild from scratch."""


class SchedulerService(Service):
    name = "scheduler"

    def initialize(self) -> None:
        cfg = self.config
        # CURVE keys for tcp:// endpoints (docs/security.md): refused at start when missing or not private
        server_keys, keys = cfg.server_keys(), cfg.client_keys(self.name)
        self.core = SchedulerCore(cfg, self.clock)
        self.ctx = zmq.Context()
        self.gate: Gate | None = None
        if server_keys is not None:
            self.gate = Gate(server_keys)
            self.gate.start(self.ctx)
        self.router = self.ctx.socket(zmq.ROUTER)
        sockets.configure_socket(self.router, "router")
        self.curve = sockets.bind(self.router, cfg.scheduler_endpoint, server_keys)
        self._next_keys_check = self.clock.mono() + KEYS_CHECK
        self.sub = events.subscribe(self.ctx, cfg.events_endpoint, keys=keys)
        self.poller = zmq.Poller()
        self.poller.register(self.router, zmq.POLLIN)
        self.poller.register(self.sub, zmq.POLLIN)
        # in-loop calls: short, one attempt (the next tick retries); the rebuild may wait longer
        self.client = BrokerClient(cfg.broker_endpoint, name=self.name, timeout=1.0, retries=1, context=self.ctx,
                                   keys=keys)
        self.rebuild_client = BrokerClient(cfg.broker_endpoint, name=self.name, timeout=5.0, retries=2,
                                           context=self.ctx, keys=keys)
        self.core.weights_store = self._store_weights
        self._revoke_rids: dict[tuple[int, int], str] = {}   # one request id per revoke, kept across retries
        self.synced = False
        self.last_seq = 0
        self.rebuilds = 0
        self.dropped = 0
        now = self.clock.mono()
        self._next_rebuild = now
        self._last_event = now
        self._next_stats = now + STATS_EVERY
        self.log.info("listening on %s; events from %s; broker at %s", cfg.scheduler_endpoint,
                      cfg.events_endpoint, cfg.broker_endpoint)

    # --- the tick -------------------------------------------------------------------------------------

    def loop(self) -> None:
        now = self.clock.mono()
        if not self.synced and now >= self._next_rebuild:
            self._rebuild()
        timeout = min(TICK, self.core.next_wake())
        ready = dict(self.poller.poll(int(timeout * 1000) + 1))
        if self.sub in ready:
            self._drain_events()
        if self.gate is not None and self.clock.mono() >= self._next_keys_check:
            self._next_keys_check = self.clock.mono() + KEYS_CHECK
            self.gate.refresh()   # a revoked key's next message is refused (services/scheduler/roles.py)
        if self.router in ready:
            for i in range(DRAIN):
                if i and not sockets.readable(self.router):   # the poll said the first one is there
                    break
                try:
                    frames, total, user = sockets.recv_from(self.router, curve=self.curve)
                except zmq.Again:
                    break
                if total > protocol.MAX_MESSAGE:   # discarded unread: all frames past the limit together
                    self.core.on_too_large(frames[0], total)
                    continue
                if len(frames) < 2:
                    continue   # no identity: cannot happen on a ROUTER, but never trust the wire
                self.core.on_message(frames[0], frames[1:], self._role(user) if self.curve else None)
        if self.synced and self.clock.mono() - self._last_event > EVENT_CHECK:
            self._follow(self._catch_up)
        if self.synced:
            self._refresh()
        self.core.status.update(synced=self.synced, last_seq=self.last_seq, rebuilds=self.rebuilds,
                                dropped_sends=self.dropped)
        self.core.tick(dispatch=self.synced)
        self._send_revokes()
        self._answer_lookups()
        self._flush()
        if self.clock.mono() >= self._next_stats:
            self._next_stats = self.clock.mono() + STATS_EVERY
            st = self.core.stats()
            self.log.info("queued %d (ready %d, delayed %d, held %d), assigned %d, running %d, workers %d "
                          "(idle %d), assigned since start %d, last seq %d, errors %s",
                          st["ready"] + st["delayed"] + st["held"], st["ready"], st["delayed"], st["held"],
                          st["assigned"], st["running"], st["workers"], st["idle"], st["assigned_total"],
                          self.last_seq, st["errors"] or "none")

    def _role(self, user: str | None) -> Role:
        """A CURVE client's role: its key's in the authorized list now, else ``nobody`` (revoked)."""
        entry = self.gate.caller(user) if self.gate is not None else None
        return entry.role if entry is not None else NOBODY

    def _flush(self) -> None:
        for ident, msg_type, fields in self.core.take_output():
            try:
                sockets.send_nowait(self.router, [ident, *protocol.encode_worker(msg_type, **fields)])
            except zmq.ZMQError:
                # gone (ROUTER_MANDATORY) or not reading: a worker is forgotten, a query client dropped
                self.dropped += 1
                self.core.on_unreachable(ident)

    # --- events ---------------------------------------------------------------------------------------

    def _drain_events(self) -> None:
        for ev in events.drain(self.sub, limit=DRAIN, bad=self._bad_event):
            if not self.synced:
                continue   # the rebuild's catch-up covers it
            seq = ev["seq"]
            if seq <= self.last_seq:
                continue
            if seq == self.last_seq + 1:
                self._apply(ev)
            else:
                self.log.info("event gap: expected seq %d, got %d; catching up from the outbox",
                              self.last_seq + 1, seq)
                if not self._follow(self._catch_up):
                    return

    def _bad_event(self) -> None:
        self.core.errors["BAD_EVENT"] += 1

    def _apply(self, ev: Mapping[str, Any]) -> None:
        self.core.on_event(ev)
        self.last_seq = ev["seq"]
        self._last_event = self.clock.mono()

    def _catch_up(self, client: BrokerClient | None = None) -> None:
        """Apply every event after ``last_seq`` from the broker's outbox. Raises Resync, BrokerUnavailable."""
        client = client or self.client
        while True:
            page = client.events(after=self.last_seq, limit=PAGE)
            if page["truncated"]:
                raise Resync(f"the outbox no longer holds event {self.last_seq + 1}")
            if page["last_seq"] < self.last_seq:
                raise Resync(f"the broker's last event is {page['last_seq']}, before ours ({self.last_seq}): "
                             "a new database")
            for ev in page["events"]:
                if ev["seq"] > self.last_seq:
                    self._apply(ev)
            self._last_event = self.clock.mono()
            if len(page["events"]) < PAGE:
                return

    def _follow(self, step) -> bool:
        """Run a broker step; on Resync schedule a rebuild, on silence try again later. True if done."""
        try:
            step()
            return True
        except Resync as exc:
            self.log.warning("resynchronising: %s", exc)
            self.synced = False
            self._next_rebuild = self.clock.mono()
        except BrokerUnavailable:
            self._last_event = self.clock.mono()   # do not ask again at once; the next event or check will
        except FanoError as exc:
            self.log.warning("broker refused a read: %s", exc)
        return False

    # --- rebuild --------------------------------------------------------------------------------------

    def _rebuild(self) -> None:
        started = time.monotonic()
        client = self.rebuild_client
        try:
            seq0 = client.events(after=2**62, limit=1)["last_seq"]   # noted before reading anything
            self.core.reset()
            self.core.accounts.load(client.quota_show())
            self._load_weights(client)
            # applied page by page: a 10^6-task queue never exists twice (records and tasks) in memory
            for page in self._pages(client, "RUNNING"):
                for rec in page:
                    self.core.on_task_record(rec)
            with rebuild.no_cycle_collection():   # 10^6 new objects, none in a cycle: no collector passes
                for tasks in rebuild.pending_pages(client):   # PENDING: the broker's rows, not its records
                    self.core.on_pending_page(tasks)
            if not self.core.placement.latencies.counts:   # nothing learned yet: from the recent outbox
                learned = self.core.placement.learn_history(self._history(client, seq0))
                self.log.info("learned %d service times from the last %d events", learned, P.WARM_EVENTS)
            self.last_seq = seq0
            self._catch_up(client)
        except (BrokerUnavailable, Resync) as exc:
            self.log.warning("rebuild failed (%s); retrying in %.0fs", exc, REBUILD_RETRY)
            self._next_rebuild = self.clock.mono() + REBUILD_RETRY
            return
        except FanoError as exc:
            self.log.error("rebuild refused by the broker: %s; retrying in %.0fs", exc, REBUILD_RETRY)
            self._next_rebuild = self.clock.mono() + REBUILD_RETRY
            return
        self.core.finish_rebuild()
        self.synced = True
        self.rebuilds += 1
        st = self.core.stats()
        self.log.info("rebuilt from the broker in %.2fs: %d pending (%d ready, %d delayed), %d running; "
                      "following events after seq %d", time.monotonic() - started,
                      st["ready"] + st["delayed"] + st["held"] + st["assigned"], st["ready"], st["delayed"],
                      st["running"], self.last_seq)

    # --- module weights changed at run time --------------------------------------------------------------

    def _store_weights(self, weights: dict | None) -> None:
        """Keep the weights in force (None: none beyond the configured ones) in the broker; raises
        BrokerUnavailable, and the query is refused with nothing changed."""
        op = txn.delete(WEIGHTS_KEY) if weights is None else txn.put(WEIGHTS_KEY, weights)
        self.client.txn(WEIGHTS_NAMESPACE, [op])

    def _load_weights(self, client: BrokerClient) -> None:
        """The configured weights, then the stored ones over them."""
        model = self.core.model
        model.reset_weights()
        rec = client.kv_get(WEIGHTS_NAMESPACE, WEIGHTS_KEY)
        if rec is None:
            return
        try:
            model.set_weights(rec["value"])
        except ValueError as exc:   # written by us, so only a hand-edited database gets here
            self.log.error("stored module weights ignored (%s): %s", exc, rec["value"])
            return
        self.log.info("module weights set at run time: %s", model.weights)

    @staticmethod
    def _pages(client: BrokerClient, state: str):
        """The tasks in ``state``, one ``list`` page at a time."""
        after = None
        while True:
            page = client.list(state=state, after=after, limit=PAGE)
            yield page["tasks"]
            if page.get("next") is None:
                return
            after = page["next"]

    @staticmethod
    def _history(client: BrokerClient, seq0: int):
        """The outbox's last ``WARM_EVENTS`` events up to ``seq0`` (what it still holds of them)."""
        after = max(0, seq0 - P.WARM_EVENTS)
        while after < seq0:
            page = client.events(after=after, limit=PAGE)
            events = [ev for ev in page["events"] if ev["seq"] <= seq0]
            yield from events
            if not events or len(page["events"]) < PAGE:
                return
            after = events[-1]["seq"]

    # --- refreshes and lookups ------------------------------------------------------------------------

    def _refresh(self) -> None:
        """Re-read tasks whose state the core is unsure of (SchedulerCore.refresh_wanted)."""
        for tid in self.core.refresh_wanted(REFRESH_PER_TICK):
            try:
                rec = self.client.get(tid, history=False)
            except BrokerUnavailable:
                return
            except FanoError as exc:
                self.core.on_refresh(tid, None, missing=exc.code == ErrorCode.NOT_FOUND)
                continue
            self.core.on_refresh(tid, rec)

    def _send_revokes(self) -> None:
        """Void the leases of workers the core dropped as silent (broker ``revoke``; its events bring the
        task back). A broker that does not answer is asked again next tick, with the same request id."""
        pending = self.core.revocations.pending
        for tid, (worker, epoch, why) in list(pending.items()):
            rid = self._revoke_rids.setdefault((tid, epoch), protocol.new_request_id())
            try:
                out = self.client.call("revoke", rid=rid, id=tid, epoch=epoch, worker=worker, reason=why)
            except BrokerUnavailable:
                return
            except FanoError as exc:
                self.log.warning("task %d: revoke of %s's lease refused: %s", tid, worker, exc)
                out = None
            else:
                self.log.info("task %d: lease of %s (epoch %d) %s", tid, worker, epoch,
                              f"revoked: now {out['state']}, " + ("its turn's outcome is unknown" if out["sent"]
                                                                  else "nothing was sent")
                              if out.get("revoked") else f"already ended ({out.get('state')})")
            del pending[tid]
            self._revoke_rids.pop((tid, epoch), None)
            if out is not None and not out.get("revoked"):
                self.core.reread(tid)   # the lease ended some other way: re-read the task

    def _answer_lookups(self) -> None:
        for ident, cid, tid in self.core.take_why_lookups():
            try:
                rec = self.client.get(tid, history=False)
            except FanoError:
                rec = None
            self.core.answer_why_untracked(ident, cid, tid, rec)

    def shutdown(self) -> None:
        for name in ("client", "rebuild_client"):
            c = getattr(self, name, None)
            if c is not None:
                c.close()
        for name in ("router", "sub"):
            sock = getattr(self, name, None)
            if sock is not None:
                sock.close(linger=0)
        gate = getattr(self, "gate", None)
        if gate is not None:
            gate.stop()
        if getattr(self, "ctx", None) is not None:
            self.ctx.term()
