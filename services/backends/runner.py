"""One assignment, start to end: lease, reconcile, intent, send, outcome (docs/tasks.md § Leases and epochs).

A :class:`TurnRunner` runs in the worker's request thread, one :class:`Job` at a time; the worker's main
loop keeps heartbeating the scheduler and renewing the lease meanwhile, and talks to the runner only
through the job's flags (cancel, stale, abandon) and its final :class:`Outcome`.

State machine of a job (each arrow is one broker call, each carrying the lease epoch)::

    LEASING --no task / error--------------------------------------------> declined
       | lease(task_id, rid fixed per assignment: a retried lease is applied once)
       v
    RECONCILING (only when task.unknown_turn: a previous attempt may have been sent)
       |  provider.reconcile -> Reply ----- complete ------------------------> done
       |                     -> error ----- fail(unknown | auth) ------------> failed
       |  -> None: the provider never got it, sending is safe
       v
    INTENT   turn_begin(id, epoch)  (durable before the request leaves) --STALE--> stale
       v
    SENDING  provider.send(turn, cancelled)   bounded by provider.request_timeout(mode)
       v
    REPORTING complete / fail, retried with the same rid until acknowledged --STALE--> stale

A cancel that arrives before SENDING releases the lease with ``fail(transient, sent=False)`` (nothing
left the worker, the quota unit is refunded). A stale renew (the task was cancelled, or the lease
expired) sets the cancel flag and suppresses every later report: the job ends ``stale``.

Request timeout: a request that hangs must not hold the account and its task for ever (the main loop
keeps renewing the lease while the request runs). ``job.deadline`` = now + the provider's
``request_timeout(mode)`` (monotonic); past it the ``cancelled()`` handed to the provider turns true —
the same path as a cancel from the scheduler — and whatever the provider then raises is reported as
``fail(unknown, sent=True)`` ("no reply within the request timeout"): the provider may have the request,
so the next attempt reconciles before anything is re-sent (docs/tasks.md § Unknown turns). Only a provider that says
``sent=False`` (nothing left) keeps its class; a reply that arrives anyway is completed. A provider that
ignores the cancel is the worker's business (it exits, see :mod:`services.backends.worker`).

Failure classification (what the provider says -> what the broker is told -> ``done`` outcome):

=============================  ==============================================  ===========================
provider                       broker call                                     done outcome
=============================  ==============================================  ===========================
Reply                          complete(result={text, meta})                   done
ProviderError quota            fail(quota, retry_after): account cools down,   refused
                               no attempt burned, unit refunded; scope
                               "account": every mode cools, not only this one
ProviderError transient        fail(transient, sent, retry_after): backoff     failed
ProviderError auth             fail(auth, sent): account paused                failed
ProviderError terminal         fail(terminal, sent): parked                    failed
ProviderError unknown          fail(unknown, sent=True): reconciled next time  failed (cancelled if the
                                                                               scheduler asked for it)
past the request timeout       fail(unknown, sent=True) (unless the provider   failed
                               said sent=False: its class, not sent)
any other exception            fail(unknown, sent=True): we cannot know        failed
reconcile -> Reply             complete(reconciled, mode: the mode the         done
                               provider confirmed, the reply's meta.mode, else
                               the earlier attempt's) — nothing re-sent
reconcile -> None              continue to INTENT (the log line says why:      —
                               provider.resend_note — a stateless API "may
                               have" got it, never "never got"); the
                               reconcile lease was not charged, turn_begin
                               charges it — or, without room, answers
                               turn: null and requeues the task             refused
                               provider.unspent (the earlier attempt spent
                               nothing): turn_begin(refund_unknown) gives
                               its unit back first
reconcile -> auth              fail(auth, sent=False)                          failed
reconcile -> quota             fail(quota, sent=False): the earlier attempt    refused
                               was served, but not in its mode (a downgrade
                               the page shows): that mode cools, unit refunded
reconcile -> anything else     fail(unknown, sent=False): try again later      failed
                               (a reconcile lease is charged no unit)
cancelled before sending       fail(transient, sent=False, retry_after=0)      cancelled
stale renew / STALE_EPOCH      nothing (the lease is void)                     stale
=============================  ==============================================  ===========================

Result delivery survives broker restarts: :class:`shared.errors.BrokerUnavailable` means "retry with
the same request id after a backoff", so a ``complete`` whose reply was lost is applied exactly once.
A storage refusal (``MAP_FULL``, ``DISK_FULL``) is retried the same way: it passes, and the broker keeps
room for completions, failures and turn records.
The worker keeps no durable state: if it dies, the lease expires, the broker turns the open intent into
``unknown_turn``, and the next worker of the account reconciles with the provider.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from services.backends.base import DEFAULT_REQUEST_TIMEOUTS, Provider, ProviderError, Reply, Turn
from shared import protocol
from shared.clock import Clock
from shared.errors import STORAGE_REFUSALS, BrokerUnavailable, ErrorCode, FanoError

RETRY_BASE = 0.2     # first backoff (real seconds) after the broker did not answer
RETRY_MAX = 3.0      # cap of that backoff: a restarted broker is found within a few seconds
OUTCOME_OF_CLASS = {"quota": "refused", "transient": "failed", "auth": "failed", "terminal": "failed",
                    "unknown": "failed"}


@dataclass
class Outcome:
    """How a job ended, as the ``done`` message tells the scheduler."""

    outcome: str                   # one of shared.protocol.OUTCOMES
    message: str = ""
    epoch: int | None = None
    retry_at: float | None = None  # world time when retrying may make sense (backoff, cool-down, quota)


class Job:
    """One assignment, shared between the main loop (cancel, renew) and the request thread (the rest).

    Plain attributes written by one thread and read by the other are safe under the GIL; the flags are
    Events so that they can also be waited on.
    """

    def __init__(self, task_id: int, ttl: float, lease_rid: str | None = None):
        self.task_id = task_id
        self.ttl = ttl
        self.lease_rid = lease_rid or protocol.new_request_id()   # one rid per assignment: the lease is idempotent
        self.epoch: int | None = None       # set once leased: from then on the main loop renews
        self.sending = False                # between intent and outcome (for logs and shutdown)
        self.deadline: float | None = None  # monotonic time the running request must be over by (SENDING only)
        self.timed_out = False              # the request outlived its deadline and was cancelled
        self.cancel_requested = False       # the scheduler said cancel
        self.stale = False                  # a renew said STALE_EPOCH: the lease is void
        self._cancel = threading.Event()
        self.abandon = threading.Event()    # the worker is exiting: stop retrying deliveries
        self.outcome: Outcome | None = None
        self.finished = threading.Event()
        # the provider answered and only the completion is left to deliver: the worker may say ready now
        # (docs/wire.md § Worker protocol, ``finishing``), so that the scheduler's choice of the next task
        # overlaps the completion's round trip instead of following it
        self.answered = False
        self.ready_said = False   # the worker said ready {finishing} for this job (on the current link)
        # what the lease granted, for the log: the worker writes it when the job ends, in the same line,
        # or as a line of its own once the request has run for LONG_REQUEST (one line per task, not two)
        self.lease_note: str | None = None
        self.leased_at: float | None = None   # monotonic
        self.lease_logged = False
        self.on_answered: Callable[[], None] = lambda: None   # the worker's wake-up (its main loop polls)

    def log_lease(self, log: logging.Logger | logging.LoggerAdapter, running_for: float | None = None) -> None:
        """Write the lease's line now, once (from either thread); ``running_for``: the seconds since the lease,
        when the line is written later than the lease."""
        if self.lease_note is not None and not self.lease_logged:
            self.lease_logged = True
            if running_for is None:
                log.info("task %s: leased at epoch %s, %s", self.task_id, self.epoch, self.lease_note)
            else:
                log.info("task %s: running for %.3gs, leased at epoch %s, %s", self.task_id, running_for, self.epoch,
                         self.lease_note)

    def cancelled(self) -> bool:
        """The callable handed to Provider.send."""
        return self._cancel.is_set()

    def request_cancel(self) -> None:
        self.cancel_requested = True
        self._cancel.set()

    def mark_stale(self) -> None:
        self.stale = True
        self._cancel.set()

    def time_out(self) -> None:
        """The request ran past its deadline: interrupt it like a cancel (reported unknown, not cancelled)."""
        self.timed_out = True
        self._cancel.set()

    def overdue(self, now: float) -> bool:
        """A request is running and its deadline has passed (``now``: monotonic)."""
        deadline = self.deadline
        return deadline is not None and now >= deadline

    def __repr__(self) -> str:
        return f"Job(task {self.task_id}, epoch {self.epoch})"


def build_turn(reply: dict, account: str) -> Turn:
    """The Turn a lease reply describes (the provider's view of the task)."""
    task = reply["task"]
    payload = task.get("payload")
    if not isinstance(payload, dict):
        payload = {} if payload is None else {"value": payload}
    prompt = payload.get("prompt", "")
    turn_index = payload.get("turn", 0)
    return Turn(task_id=task["id"], epoch=reply["epoch"], attempt=task.get("attempts", 1), account=account,
                mode=reply.get("mode") or "standard", module=task.get("module", ""), kind=task.get("kind", ""),
                payload=payload, prompt=prompt if isinstance(prompt, str) else str(prompt),
                conversation=(task.get("requires") or {}).get("conversation"),
                turn_index=turn_index if isinstance(turn_index, int) and not isinstance(turn_index, bool) else 0)


def _wire_safe(meta: Any) -> Any:
    """Provider metadata as something msgpack can carry (a provider's odd object must not lose a reply)."""
    try:
        protocol.pack_value(meta)
        return meta
    except Exception:  # msgpack raises TypeError/ValueError/OverflowError on odd values
        return json.loads(json.dumps(meta, default=str))


class TurnRunner:
    """Runs jobs for one account. ``client`` is a BrokerClient (or a test double with ``call``) used by
    this thread only; ``sleep`` waits between delivery retries (tests pass a fake)."""

    def __init__(self, provider: Provider, client, worker: str, account: str, backend: str, modes,
                 lease_patience: float = 10.0, sleep: Callable[[float], None] = time.sleep,
                 log: logging.Logger | None = None, clock=None):
        self.provider = provider
        # the request deadline is on the monotonic clock (a FakeClock in tests moves it by hand)
        self.clock = clock or getattr(provider, "clock", None) or Clock()
        self.client = client
        self.worker = worker
        self.account = account
        self.backend = backend
        self.modes = list(modes)
        self.lease_patience = lease_patience
        self.sleep = sleep
        self.log = log or logging.getLogger(worker)

    # --- entry point ----------------------------------------------------------------------------------

    def run(self, job: Job) -> Outcome:
        """Run the job to its end; never raises (a bug is an outcome too: the lease then expires and the
        turn is reconciled, which is the crash path we rely on anyway)."""
        try:
            outcome = self._run(job)
        except Exception as exc:
            self.log.exception("task %s: worker error", job.task_id)
            outcome = Outcome("failed", f"worker error: {type(exc).__name__}: {exc}"[:500], job.epoch)
        job.outcome = outcome
        job.finished.set()
        return outcome

    def _run(self, job: Job) -> Outcome:
        reply, declined = self._lease(job)
        if declined is not None or reply is None:
            return declined or Outcome("declined", "nothing leased")
        job.epoch = reply["epoch"]
        turn = build_turn(reply, self.account)
        job.lease_note = f"attempt {turn.attempt}, {turn.kind}, mode {turn.mode}"
        job.leased_at = self.clock.mono()
        unknown = reply["task"].get("unknown_turn")
        if unknown:   # the reconcile's lines follow: the lease's goes first
            job.log_lease(self.log)
        begin: dict = {}
        if unknown:
            done = self._reconcile(job, turn, unknown)
            if done is not None:
                return done
            if self._unspent(turn, unknown):
                begin["refund_unknown"] = True
        if job.stale:
            return Outcome("stale", "lease void before sending", turn.epoch)
        if job.cancelled():
            return self._release_unsent(job, turn)
        # the intent is durable before the request leaves: a crash after this line is reconciled
        begun, stop = self._deliver(job, "turn_begin", id=turn.task_id, epoch=turn.epoch, **begin)
        if stop is not None:
            return stop
        if isinstance(begun, dict) and "turn" in begun and begun["turn"] is None:
            # a reconcile lease is charged only now that it sends again, and the quota has no room: the
            # broker put the task back (no attempt burned); nothing was sent
            why = f"no quota to send again after reconciling: {begun.get('reason') or 'window full'}"
            self.log.info("task %s: %s", turn.task_id, why)
            return Outcome("refused", why[:500], turn.epoch, begun.get("retry_at"))
        if job.stale:
            return Outcome("stale", "lease void before sending", turn.epoch)
        if job.cancelled():
            return self._release_unsent(job, turn)
        timeout = self.request_timeout(turn.mode)
        job.deadline = self.clock.mono() + timeout
        job.sending = True
        error: ProviderError | None
        try:
            result = self.provider.send(turn, lambda: self._interrupted(job))
        except ProviderError as exc:
            error = exc
        except Exception as exc:  # a provider bug: the request may have left, so reconcile later
            self.log.exception("task %s: provider raised an unexpected error", turn.task_id)
            error = ProviderError("unknown", f"provider error {type(exc).__name__}: {exc}", sent=True)
        else:
            error = None
        finally:
            job.sending = False
            job.deadline = None
        if job.stale:
            # the task was cancelled or re-leased meanwhile: whatever happened is not ours to report
            return Outcome("stale", "lease void while the request ran", turn.epoch)
        if error is None:
            job.answered = True
            job.on_answered()
            return self._complete(job, turn, result)   # a reply is a reply, even one just past the deadline
        if job.timed_out and not job.cancel_requested:
            error = self._timed_out(turn, error, timeout)
        return self._fail(job, turn, error)

    # --- the request deadline ---------------------------------------------------------------------------

    def request_timeout(self, mode: str) -> float:
        """The provider's bound on one request (real seconds); a missing or absurd answer gets the default,
        never "no bound"."""
        fallback = DEFAULT_REQUEST_TIMEOUTS.get(mode, DEFAULT_REQUEST_TIMEOUTS["standard"])
        ask = getattr(self.provider, "request_timeout", None)
        try:
            value = ask(mode) if ask is not None else fallback
        except Exception:  # a provider bug must not unbound the request
            self.log.exception("request_timeout(%s) failed; using %gs", mode, fallback)
            return fallback
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1e9:
            return fallback
        return float(value)

    def _interrupted(self, job: Job) -> bool:
        """The ``cancelled()`` handed to the provider: a cancel, a void lease, or the deadline passed."""
        if not job.cancelled() and job.overdue(self.clock.mono()):
            self.log.warning("task %s: no reply within the request timeout; cancelling the request",
                             job.task_id)
            job.time_out()
        return job.cancelled()

    def _timed_out(self, turn: Turn, error: ProviderError, timeout: float) -> ProviderError:
        """What to report for a request cut by its deadline: unknown (sent) — the provider may have it and
        may still answer, so it is reconciled before anything is re-sent — unless the provider is sure
        nothing left (sent=False), which keeps its class."""
        why = f"no reply within the request timeout ({timeout:g}s); the request was cancelled"
        if not error.sent and error.error_class != "unknown":
            return ProviderError(error.error_class, f"{why}: {error.message}", error.retry_after, sent=False)
        return ProviderError("unknown", f"{why} and the turn will be reconciled before it is re-sent "
                             f"({error.message})", sent=True)

    # --- steps ----------------------------------------------------------------------------------------

    def _lease(self, job: Job) -> tuple[dict | None, Outcome | None]:
        """Lease the assigned task, retrying the same rid while the broker is away (bounded)."""
        deadline = time.monotonic() + self.lease_patience
        delay = RETRY_BASE
        while True:
            try:
                reply = self.client.call("lease", rid=job.lease_rid, worker=self.worker, account=self.account,
                                         backend=self.backend, modes=self.modes, ttl=job.ttl, task_id=job.task_id)
            except BrokerUnavailable as exc:
                if time.monotonic() + delay > deadline or job.abandon.is_set():
                    return None, Outcome("declined", f"broker unavailable: {exc.message}")
                self.sleep(delay)
                delay = min(RETRY_MAX, delay * 2)
                continue
            except FanoError as exc:
                return None, Outcome("declined", f"lease refused: {exc}")
            if not isinstance(reply, dict) or not reply.get("task"):
                reason = (reply or {}).get("reason") if isinstance(reply, dict) else None
                retry_at = reply.get("retry_at") if isinstance(reply, dict) else None
                return None, Outcome("declined", reason or "nothing to lease", retry_at=retry_at)
            if reply["task"].get("id") != job.task_id:
                # cannot happen with task_id set; if it did, running a task nobody assigned is wrong
                self.log.error("lease of task %s returned task %s", job.task_id, reply["task"].get("id"))
            return reply, None

    def _reconcile(self, job: Job, turn: Turn, unknown: dict) -> Outcome | None:
        """Ask the provider about the previous attempt whose outcome is unknown. None: go on and send."""
        previous = dataclasses.replace(turn, epoch=unknown.get("epoch", turn.epoch),
                                       attempt=unknown.get("attempt", turn.attempt),
                                       mode=unknown.get("mode") or turn.mode)
        self.log.info("task %s: reconciling attempt %s (epoch %s) before sending", turn.task_id,
                      previous.attempt, previous.epoch)
        try:
            found = self.provider.reconcile(previous)
        except ProviderError as exc:
            # auth pauses the account; quota is a reconcile that settled the earlier attempt as not served in
            # its mode (a web page's silent downgrade): that mode cools, and the provider sends it afresh
            # next time; anything else leaves the earlier attempt unknown
            cls = exc.error_class if exc.error_class in ("auth", "quota") else "unknown"
            error = ProviderError(cls, f"reconcile: {exc.message}", exc.retry_after, sent=False)
            return self._fail(job, turn, error)
        except Exception as exc:
            self.log.exception("task %s: reconcile raised an unexpected error", turn.task_id)
            return self._fail(job, turn, ProviderError("unknown", f"reconcile: {type(exc).__name__}: {exc}",
                                                       sent=False))
        if found is None:
            note = getattr(self.provider, "resend_note", None)
            try:
                why = note(previous) if note is not None else f"the provider never got attempt {previous.attempt}"
            except Exception:  # a provider bug in a log line must not stop the turn; it is still a bug
                self.log.exception("task %s: resend_note raised an unexpected error", turn.task_id)
                why = f"no answer to attempt {previous.attempt} was found"
            self.log.info("task %s: %s; sending", turn.task_id, why)
            return None
        served = (found.meta or {}).get("mode")
        served = served if served in ("standard", "deep") else previous.mode
        self.log.info("task %s: the provider had served attempt %s (%s); completing without sending",
                      turn.task_id, previous.attempt, served)
        return self._complete(job, turn, found, reconciled=True, mode=served)

    def _unspent(self, turn: Turn, unknown: dict) -> bool:
        """After a reconcile found nothing to recover: whether the provider says the previous attempt spent
        nothing (Provider.unspent), so that its unit is refunded. Only this account's own attempt."""
        if unknown.get("account") != self.account:
            return False
        previous = dataclasses.replace(turn, epoch=unknown.get("epoch", turn.epoch),
                                       attempt=unknown.get("attempt", turn.attempt),
                                       mode=unknown.get("mode") or turn.mode)
        check = getattr(self.provider, "unspent", None)
        try:
            return bool(check(previous)) if check is not None else False
        except Exception:  # a provider bug must not stop the turn: the unit simply stays counted
            self.log.exception("task %s: unspent raised an unexpected error", turn.task_id)
            return False

    def _release_unsent(self, job: Job, turn: Turn) -> Outcome:
        """Cancelled before anything left: give the task back, refund the unit."""
        _, stop = self._deliver(job, "fail", id=turn.task_id, epoch=turn.epoch, error_class="transient",
                                message="cancelled before sending", sent=False, retry_after=0.0)
        if stop is not None and stop.outcome != "stale":
            return stop
        return Outcome("cancelled", "cancelled before sending", turn.epoch)

    def _complete(self, job: Job, turn: Turn, reply: Reply, reconciled: bool = False,
                  mode: str | None = None) -> Outcome:
        result = {"text": reply.text, "meta": _wire_safe(dict(reply.meta or {}))}
        # a reconciled answer was served in the earlier attempt's mode, as the provider confirmed it
        # (served.mode states it), not necessarily in this lease's
        _, stop = self._deliver(job, "complete", id=turn.task_id, epoch=turn.epoch, result=result,
                                **({"reconciled": True, "mode": mode or turn.mode} if reconciled else {}))
        if stop is not None:
            return stop
        return Outcome("done", "", turn.epoch)   # the worker logs the outcome (one line per task end)

    def _fail(self, job: Job, turn: Turn, error: ProviderError) -> Outcome:
        retry_after = error.retry_after
        if retry_after is not None and not (0 <= retry_after < 1e9):
            retry_after = None  # a provider's absurd value must not be rejected and lose the report
        scope = getattr(error, "scope", "mode")
        ack, stop = self._deliver(job, "fail", id=turn.task_id, epoch=turn.epoch, error_class=error.error_class,
                                  message=error.message[:2000], sent=bool(error.sent), retry_after=retry_after,
                                  **({"scope": scope} if scope != "mode" else {}))
        if stop is not None:
            if job.cancel_requested and stop.outcome == "stale":
                return Outcome("cancelled", stop.message, turn.epoch)
            return stop
        ack = ack if isinstance(ack, dict) else {}
        outcome = "cancelled" if job.cancel_requested else OUTCOME_OF_CLASS[error.error_class]
        retry_at = ack.get("cooldown_until") if error.error_class == "quota" else ack.get("not_before")
        self.log.info("task %s: %s error reported (%s): %s -> %s", turn.task_id, error.error_class,
                      "sent" if error.sent else "not sent", error.message[:200], ack.get("state"))
        return Outcome(outcome, f"{error.error_class}: {error.message}"[:500], turn.epoch, retry_at)

    def _deliver(self, job: Job, cmd: str, **args) -> tuple[Any, Outcome | None]:
        """One mutating call about the leased task, retried with the same rid until the broker answers.

        Returns (reply, None), or (None, outcome) when the call must not go on: STALE_EPOCH (the lease is
        void: the task was cancelled, or it expired and may run elsewhere), another broker error, or the
        worker giving up because it is exiting (the lease then expires; reconciliation covers it)."""
        rid = protocol.new_request_id()
        delay = RETRY_BASE
        warned = False
        while True:
            try:
                return self.client.call(cmd, rid=rid, **args), None
            except BrokerUnavailable as exc:
                if not warned:
                    self.log.warning("task %s: %s not acknowledged (%s); retrying until the broker answers",
                                     args.get("id"), cmd, exc.message)
                    warned = True
                if not job.abandon.is_set():
                    self.sleep(delay)
                    delay = min(RETRY_MAX, delay * 2)
                if job.abandon.is_set():
                    return None, Outcome("failed", f"worker exiting before {cmd} was acknowledged", job.epoch)
            except FanoError as exc:
                if exc.code in STORAGE_REFUSALS:
                    # the broker is short of storage: it resumes by itself, and completions, failures and
                    # turn records are what it keeps room for; retry the same rid like an unanswered call
                    if not warned:
                        self.log.warning("task %s: %s refused for now (%s); retrying", args.get("id"), cmd,
                                         exc.message)
                        warned = True
                    if not job.abandon.is_set():
                        self.sleep(delay)
                        delay = min(RETRY_MAX, delay * 2)
                    if job.abandon.is_set():
                        return None, Outcome("failed", f"worker exiting before {cmd} was accepted", job.epoch)
                    continue
                if exc.code == ErrorCode.STALE_EPOCH:
                    self.log.info("task %s: %s rejected, lease void: %s", args.get("id"), cmd, exc.message)
                    return None, Outcome("stale", exc.message[:500], job.epoch)
                self.log.error("task %s: %s rejected: %s", args.get("id"), cmd, exc)
                return None, Outcome("failed", f"{cmd} rejected: {exc}"[:500], job.epoch)
