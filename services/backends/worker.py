"""The backend worker program, ``python -m services backend --account NAME`` (docs/architecture.md § Backends).

One process per LLM account, one request at a time. The main loop (this module) owns the DEALER to the
scheduler and a broker client for lease renewals; the request thread
(:mod:`services.backends.request_thread`, running :mod:`services.backends.runner`, kept from job to job)
owns the provider and a broker client of its own (clients are not thread-safe). They share only the
current :class:`~services.backends.runner.Job`.

Main loop, each tick (at most ~0.5 s, so SIGTERM is noticed promptly):

* read the scheduler's messages: ``assign`` starts a job (or is declined: busy / stopping), ``cancel``
  sets the running job's cancel flag, ``disconnect`` makes us recreate the socket and re-announce,
  ``heartbeat`` only proves the scheduler alive. Garbage is counted and ignored.
* a finished job is reported with ``done`` and followed by ``ready`` (pull: no prefetch). Once the
  provider has answered, though, only the completion's round trip to the broker is left: the worker says
  ``ready {finishing: task}`` at once, and an ``assign`` that arrives before the completion is acknowledged
  is kept and started the moment it is (one assignment at most; the task is leased only then, so nothing
  is held that a crash could strand). The scheduler's choice of the next task then overlaps the
  completion instead of following it: between two tasks an account waits for one broker round trip
  (the lease), not for three hops and two round trips. A completion announced that way sends no ``done``
  (the broker's ``task.done`` event tells the scheduler); every other ending does.
* the running job's lease is renewed every ttl/3; STALE_EPOCH marks the job stale (its cancel flag
  interrupts the provider and no outcome is reported).
* a request past its deadline (``job.deadline``, the provider's ``request_timeout``) is cancelled — the
  runner notices it too, whenever the provider looks at ``cancelled()``. A provider that ignores the
  cancel for CANCEL_GRACE more seconds is hung beyond our reach: the worker stops renewing and exits
  non-zero (crash-only), so the lease expires, the account gets a fresh process from supervisord and the
  turn is reconciled by it. A hung request never holds the account and its task for ever.
* the log: one line per task, when it ends (outcome, epoch, the lease's attempt, kind and mode, and the
  time since the lease); a request still running LONG_REQUEST after its lease gets the lease's line
  then, so that what is in flight shows in the log without two lines for every quick task.
* ``heartbeat {worker, task_id}`` every HEARTBEAT_INTERVAL, idle or busy.
* nothing heard from the scheduler for LIVENESS intervals: close the socket, open a new one (a new
  identity) and re-announce: ``ready`` when idle, ``heartbeat`` naming the running task when busy — a
  request in flight is never dropped because the scheduler restarted.

Crash-only: nothing durable lives here. SIGTERM stops taking work and waits up to STOP_GRACE seconds
for a running request; if it is still running then, the worker exits anyway: the lease expires and the
next worker of the account reconciles the turn with the provider.
"""
from __future__ import annotations

import os

import zmq

from services.backends.registry import make_provider
from services.backends.request_thread import RequestThread
from services.backends.runner import Job, TurnRunner
from services.backends.secrets import install_log_redaction
from shared import protocol, sockets
from shared.client import BrokerClient
from shared.errors import BrokerUnavailable, ErrorCode, ExitCode, FanoError
from shared.service import Service

TICK = 0.5             # longest wait for the scheduler when idle (seconds)
RENEW_TIMEOUT = 0.5    # one renew attempt; the main loop must not stall heartbeats on a dead broker
RENEW_RETRY = 0.5      # after a renew the broker did not answer
STOP_GRACE = 3.0       # SIGTERM: how long a running request may take to finish before we exit anyway
DRAIN = 100            # scheduler messages handled per tick
RUNNER_TIMEOUT = 1.0   # the request thread's broker calls: one try each, the runner retries itself
CANCEL_GRACE = 30.0    # a request past its deadline that is still running this much later is hung: exit
LONG_REQUEST = 1.0     # a task still running this long gets its lease logged before it ends (seconds)


class BackendWorker(Service):
    """The worker of one account (``backend-<account>``)."""

    def __init__(self, config, clock, account_config):
        self.account = account_config
        # before Service.__init__: the lock file and logger are named after the program
        self.name = f"backend-{account_config.name}"
        super().__init__(config, clock)
        self.provider = None
        self.ctx: zmq.Context | None = None
        self.sock: zmq.Socket | None = None
        self.poller: zmq.Poller | None = None
        self.broker: BrokerClient | None = None
        self.keys = None   # this program's CURVE keys when an endpoint is tcp:// (initialize)
        self._refused: str | None = None   # the scheduler's last refusal of our role, said once
        self.job: Job | None = None
        self.requests: RequestThread | None = None   # started with the first job
        self.queued: tuple[int, float] | None = None   # (task, ttl) assigned while the job was finishing
        # the request thread's runner and its broker client, made once and used for job after job (never two
        # at once: the thread runs its jobs in order): a connection per job cost a socket, a handshake and
        # the broker's bookkeeping of a new peer on every task
        self._runner: TurnRunner | None = None
        self.heartbeat_interval = protocol.HEARTBEAT_INTERVAL
        self.liveness = protocol.LIVENESS
        self.last_heard = 0.0
        self.next_heartbeat = 0.0
        self.renew_at: float | None = None
        self.link_up = False              # heard from the scheduler since the last (re)connect
        self.counters = {"garbage": 0, "reconnects": 0, "dropped_sends": 0, "jobs": 0}
        self.exit_code: ExitCode | None = None   # set when the worker must exit non-zero (a hung provider)
        # the request thread writes one byte here when its job ends, so the main loop's poll wakes at
        # once and reports the outcome and readiness without waiting for a tick (every ms is idle time)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)

    # --- life cycle ----------------------------------------------------------------------------------

    def initialize(self) -> None:
        install_log_redaction()   # before the provider loads its key: no record can carry it
        # CURVE keys when an endpoint is tcp:// (docs/security.md): missing ones stop us before the provider starts
        self.keys = self.config.client_keys(self.name)
        self.provider = make_provider(self.account, self.clock, self.config.data_dir)
        self.provider.start()
        self.ctx = zmq.Context()
        self.broker = BrokerClient(self.config.broker_endpoint, name=self.name, timeout=RENEW_TIMEOUT, retries=1,
                                   context=self.ctx, keys=self.keys)
        self._connect()
        self._announce()
        self.log.info("serving account %s (%s, modes %s); scheduler at %s", self.account.name,
                      self.account.backend, ", ".join(self.account.modes), self.config.scheduler_endpoint)

    def run(self) -> int:
        code = super().run()
        return self.exit_code if code == ExitCode.OK and self.exit_code is not None else code

    def loop(self) -> None:
        self.tick()

    def shutdown(self) -> None:
        if self.job is not None and self.sock is not None:
            deadline = self.clock.mono() + STOP_GRACE
            while self.job is not None and self.clock.mono() < deadline:
                self.tick()       # keeps renewing and heartbeating, reports the end; assigns are declined
            if self.job is not None:
                self.job.abandon.set()
                self.log.warning("exiting with task %s in flight: its lease will expire and the turn will be "
                                 "reconciled by the next worker of %s", self.job.task_id, self.account.name)
        if self.sock is not None:
            self._send("disconnect", worker=self.name)
            self.sock.close(linger=0)
            self.sock = None
        if self.requests is not None and self.requests.busy:
            return  # the provider and context are still in use; the process exit reclaims them
        if self.provider is not None:
            self.provider.close()
        if self._runner is not None:
            self._runner.client.close()
        if self.broker is not None:
            self.broker.close()
        if self.ctx is not None:
            self.ctx.term()

    # --- one tick ------------------------------------------------------------------------------------

    def tick(self) -> None:
        now = self.clock.mono()
        wake = min(self.next_heartbeat, self.renew_at if self.renew_at is not None else now + TICK)
        timeout = max(0.0, min(TICK, wake - now))
        assert self.poller is not None, "setup() connects before the first tick"
        events = dict(self.poller.poll(int(timeout * 1000)))
        if self._wake_r in events:
            try:
                os.read(self._wake_r, 64)
            except BlockingIOError:
                pass
        sock = self.sock
        if sock is not None and sock in events:
            for i in range(DRAIN):
                if i and not sockets.readable(sock):   # the poll said the first one is there
                    break
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                self._on_frames(frames)
                if self.sock is not sock:
                    break   # it reconnected (a disconnect): the old socket is closed
        self._reap()
        self._say_finishing()
        self._watch()
        self._log_long_request()
        self._renew()
        now = self.clock.mono()
        if now >= self.next_heartbeat:
            if self._refused is None:   # refused for our role: quiet until the liveness check asks again
                # a job we said ready for is not named: to the scheduler we are idle (or on the next task)
                job = self.job
                self._send("heartbeat", worker=self.name,
                           task_id=job.task_id if job is not None and not job.ready_said else None)
            self.next_heartbeat = now + self.heartbeat_interval
        if now - self.last_heard > self.liveness * self.heartbeat_interval:
            self._reconnect(f"scheduler silent for {self.liveness} heartbeats")

    # --- scheduler link ------------------------------------------------------------------------------

    def _connect(self) -> None:
        assert self.ctx is not None, "setup() makes the context first"
        sock = self.ctx.socket(zmq.DEALER)
        sockets.configure_socket(sock, "dealer", identity=self.name)
        sockets.connect(sock, self.config.scheduler_endpoint, self.keys)
        self.sock = sock
        self.poller = zmq.Poller()
        self.poller.register(sock, zmq.POLLIN)
        self.poller.register(self._wake_r, zmq.POLLIN)
        now = self.clock.mono()
        self.last_heard = now          # give the (new) peer a full liveness period to show up
        self.next_heartbeat = now + self.heartbeat_interval

    def _reconnect(self, why: str) -> None:
        self.counters["reconnects"] += 1
        # losing a live link is worth a warning; a scheduler that stays down must not flood the log
        (self.log.warning if self.link_up else self.log.debug)("%s: reconnecting to the scheduler", why)
        self.link_up = False
        if self.sock is not None:
            self.sock.close(linger=0)
        if self.job is not None:
            # what we said and were given on the old link is void: the scheduler forgets that identity
            # (and takes its assignments back); the job says ready again on the new one
            self.job.ready_said = False
        self.queued = None
        self._connect()
        self._announce()

    def _announce(self) -> None:
        if self.job is None:
            if not self.stopping:
                self._ready()
        else:
            self._send("heartbeat", worker=self.name, task_id=self.job.task_id)

    def _ready(self, finishing: int | None = None) -> None:
        fields = {"finishing": finishing} if finishing is not None else {}
        self._send("ready", worker=self.name, account=self.account.name, backend=self.account.backend,
                   modes=list(self.account.modes), **fields)

    def _say_finishing(self) -> None:
        """Say ready while the job delivers its answer (see the module docstring): once per job, and only
        on a live link to a scheduler that does not refuse us, and not while stopping."""
        job = self.job
        if (job is None or not job.answered or job.ready_said or self.stopping or job.finished.is_set()
                or not self.link_up or self._refused is not None):
            return
        job.ready_said = True
        self._ready(finishing=job.task_id)

    def _send(self, msg_type: str, **fields) -> None:
        if self.sock is None:
            return   # the link is closed (the worker is exiting): nothing to tell
        try:
            sockets.send_nowait(self.sock, protocol.encode_worker(msg_type, **fields))
        except zmq.Again:
            # no scheduler connected and the queue is full: the liveness check will re-announce us
            self.counters["dropped_sends"] += 1

    def _on_frames(self, frames: list[bytes]) -> None:
        try:
            msg = protocol.decode_worker(frames)
        except FanoError as exc:
            self._garbage(exc.message)
            return
        kind = msg["type"]
        if kind not in ("heartbeat", "assign", "cancel", "disconnect"):
            self._garbage(f"unexpected message type {kind!r}")
            return
        self.last_heard = self.clock.mono()
        if kind == "disconnect" and str(msg.get("reason", "")).startswith(protocol.REFUSED):
            self._on_refused(str(msg["reason"]))
            return
        self._refused = None
        if not self.link_up:
            self.link_up = True
            self.log.info("scheduler link up")
        if kind == "assign":
            self._on_assign(msg)
        elif kind == "cancel":
            self._on_cancel(msg["task_id"])
        elif kind == "disconnect":
            self.link_up = True   # a deliberate request, worth a line in the log
            self._reconnect(f"scheduler asked us to reconnect ({str(msg.get('reason', ''))[:100]})")

    def _on_refused(self, reason: str) -> None:
        """The scheduler refused us for our role (our CURVE key is listed for another account): only the
        operator can put that right, without a restart (``fanoctl keys add``); we ask again when the liveness
        check next reconnects (every few seconds), and say so once per reason, not once per attempt."""
        if reason != self._refused:
            self.log.error("the scheduler refuses this worker: %s; this worker's key needs the role "
                           "worker:%s in the server's authorized list (fanoctl keys ls)", reason[:300],
                           self.account.name)
        self._refused = reason
        self.link_up = False

    def _garbage(self, why: str) -> None:
        self.counters["garbage"] += 1
        log = self.log.warning if self.counters["garbage"] <= 10 else self.log.debug
        log("ignored a bad message from the scheduler (%d so far): %s", self.counters["garbage"], why)

    def _on_assign(self, msg: dict) -> None:
        task_id = msg["task_id"]
        if self.stopping:
            self._done(task_id, None, "declined", "worker stopping")
            return
        ttl = msg.get("ttl")
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0:
            ttl = self.config.scheduler.lease_ttl
        if self.job is not None:
            if self.job.ready_said and self.queued is None:
                # we said ready while finishing: next, once the answer is delivered (also the task we
                # finish, given again: its lease was revoked meanwhile and it is to be run afresh)
                self.queued = (task_id, float(ttl))
            elif self.queued is not None and self.queued[0] == task_id:
                pass   # repeated: it is already next
            elif self.job.task_id == task_id and not self.job.ready_said:
                # a repeated assignment of what we run: remind the scheduler instead of declining it
                self._send("heartbeat", worker=self.name, task_id=task_id)
            else:
                self._done(task_id, None, "declined", "busy")
            return
        self._start(task_id, float(ttl))

    def _start(self, task_id: int, ttl: float) -> None:
        self.job = Job(task_id, ttl)
        self.job.on_answered = self._poke
        self.renew_at = None
        self.counters["jobs"] += 1
        if self._runner is None:
            client = BrokerClient(self.config.broker_endpoint, name=self.name, timeout=RUNNER_TIMEOUT, retries=1,
                                  context=self.ctx, keys=self.keys)
            self._runner = TurnRunner(self.provider, client, self.name, self.account.name, self.account.backend,
                                      self.account.modes, lease_patience=self.config.scheduler.assign_timeout,
                                      log=self.log, clock=self.clock)
        if self.requests is None:
            self.requests = RequestThread(f"{self.name}-requests", self._poke)
        self.requests.start(self.job, self._runner)

    def _on_cancel(self, task_id: int) -> None:
        if self.job is not None and self.job.task_id == task_id and not self.job.finished.is_set():
            self.log.info("task %s: cancel requested by the scheduler", task_id)
            self.job.request_cancel()
        else:
            self.log.debug("cancel of task %s, which is not running here: ignored", task_id)

    def _done(self, task_id: int, epoch, outcome: str, message: str, retry_at=None) -> None:
        self._send("done", worker=self.name, task_id=task_id, epoch=epoch, outcome=outcome, message=message,
                   retry_at=retry_at)

    # --- the job ---------------------------------------------------------------------------------------

    def _poke(self) -> None:
        """Wake the main loop's poll (from the request thread)."""
        os.write(self._wake_w, b"!")

    def _reap(self) -> None:
        job = self.job
        if job is None or not job.finished.is_set():
            return
        out = job.outcome
        assert out is not None   # a finished job set its outcome
        lease = f", {job.lease_note}" if job.lease_note is not None and not job.lease_logged else ""
        took = f", after {self.clock.mono() - job.leased_at:.3g}s" if job.leased_at is not None else ""
        self.log.info("task %s: %s%s%s%s%s", job.task_id, out.outcome,
                      f" at epoch {out.epoch}" if out.epoch is not None else "", lease, took,
                      f" ({out.message})" if out.message else "")
        if not (out.outcome == "done" and job.ready_said):
            # a completion announced with ready {finishing} on this link needs no done: the broker's
            # task.done event tells the scheduler (docs/wire.md § Worker protocol)
            self._done(job.task_id, out.epoch, out.outcome, out.message, out.retry_at)
        self.job = None
        self.renew_at = None
        queued, self.queued = self.queued, None
        if queued is not None and self.stopping:
            self._done(queued[0], None, "declined", "worker stopping")
        elif queued is not None:
            self._start(*queued)
        elif not job.ready_said:
            self._announce()
        # else: the scheduler heard ready {finishing} and has nothing for us yet; saying it again would
        # make it take back an assignment that may be on its way

    def _watch(self) -> None:
        """Bound the running request: cancel it at its deadline; exit if it ignores the cancel."""
        job = self.job
        if job is None or job.finished.is_set():
            return
        now, deadline = self.clock.mono(), job.deadline   # read once: the request thread clears it
        if deadline is None or now < deadline:
            return
        if not job.timed_out:
            self.log.warning("task %s: no reply within the request timeout; cancelling the request", job.task_id)
            job.time_out()
        elif now >= deadline + CANCEL_GRACE and self.exit_code is None:
            self.log.error("task %s: the provider ignored the cancel for %.0fs past the request timeout; exiting "
                           "so that the lease expires and a fresh worker of %s reconciles the turn", job.task_id,
                           now - deadline, self.account.name)
            job.abandon.set()
            self.exit_code = ExitCode.FAILURE
            self.stopping = True

    def _log_long_request(self) -> None:
        """A request running for LONG_REQUEST gets its lease's line now; a shorter one only its end's."""
        job = self.job
        if job is None or job.lease_logged or job.leased_at is None or job.finished.is_set():
            return
        running_for = self.clock.mono() - job.leased_at
        if running_for >= LONG_REQUEST:
            job.log_lease(self.log, running_for)

    def _renew(self) -> None:
        job = self.job
        if job is None or job.epoch is None or job.finished.is_set() or job.stale or job.abandon.is_set():
            return
        now = self.clock.mono()
        if self.renew_at is None:
            self.renew_at = now + job.ttl / 3
            return
        if now < self.renew_at:
            return
        assert self.broker is not None, "setup() connects to the broker before a job can run"
        try:
            self.broker.call("renew", id=job.task_id, epoch=job.epoch, ttl=job.ttl)
        except BrokerUnavailable:
            self.renew_at = self.clock.mono() + RENEW_RETRY
            return
        except FanoError as exc:
            if exc.code == ErrorCode.STALE_EPOCH:
                if not job.finished.is_set():   # a renew racing the job's own completion is not news
                    self.log.info("task %s: lease void (%s); interrupting the request", job.task_id, exc.message)
                    job.mark_stale()
                return
            self.log.warning("task %s: renew refused: %s", job.task_id, exc)
        self.renew_at = self.clock.mono() + job.ttl / 3
