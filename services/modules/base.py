"""The module contract (docs/modules.md § Module contract) as a base class: propose tasks, apply results exactly once.

A module process keeps no state: its domain data lives in the broker under its namespace (``kv``), and
it re-derives what to do from there after any restart. It does two things:

* **apply** every settled task (DONE, PARKED, CANCELLED) of its own in ONE broker transaction that
  holds the domain writes (version-checked where two writers could race), the follow-up submissions
  and the ack of the result. A replayed result is a no-op (the broker answers "already consumed"). It
  finds them through the broker's ``unconsumed`` index at start and every ``sweep_interval``, and
  through task events in between, so a lost PUB message only delays work;
* **plan**: propose new work with submit-if-absent keys (deterministic keys: proposing twice is
  harmless), after each apply, on a ``module.notify`` event for this module (a human changed its data),
  and every ``plan_interval``.

Subclasses set ``module`` and implement :meth:`handle` (kind -> :class:`Effect`) and :meth:`plan`.
A result that cannot be parsed is not swallowed: :meth:`handle` raises ``ParseError`` and the base
class records a visible error in the same transaction as the ack: on the task itself (its ``error``, class
``unusable``, shown by ``fanoctl queue show``), as ``errors/<task id>`` in the module's namespace (with
the answer; working data, deleted after ``broker.working_retention``), and :meth:`on_unusable` lets the module mark its
entity.

Storage refusals (``MAP_FULL``, ``DISK_FULL``: the broker is short of room and refuses new work) pass:
the broker grows its map, space is freed, it resumes by itself. The module then backs off for
``storage_backoff`` seconds (ignoring events: what it missed is in the ``unconsumed`` index, swept when the
back-off ends) and tries again, instead of exiting: under supervisord an exit at once, again and again,
would end FATAL and stay down after the condition passed.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, cast

import zmq

from services.modules import capacity as CAP
from services.modules.parsing import ParseError
from services.modules.store import Store
from shared import events, protocol, txn
from shared.client import BrokerClient
from shared.errors import STORAGE_REFUSALS, BrokerUnavailable, ErrorCode, FanoError
from shared.records import TaskRecord
from shared.service import Service

# what a module follows, each only for its own name (shared.protocol.event_topic): its tasks settling, and a
# human changing its data (``notify`` op of a txn, shared/txn.py: plan now)
FOLLOWED_EVENTS = ("task.done", "task.parked", "task.cancelled", "module.notify")
REFUSED_EFFECT = frozenset({ErrorCode.KEY_CONFLICT, ErrorCode.KEY_PARKED, ErrorCode.BAD_ARGUMENT,
                            ErrorCode.NOT_FOUND, ErrorCode.INVALID_STATE})


@dataclass
class Effect:
    """What applying one result does: domain ops (puts/deletes/checks) and follow-up submissions."""

    ops: list = field(default_factory=list)



def _plain(task: TaskRecord) -> dict[str, Any]:
    """The record as the module hooks (``handle``, ``on_unusable``) take it: a plain dict (no copy; the
    hooks are typed ``dict`` until the modules adopt :class:`shared.records.TaskRecord`)."""
    return cast(dict[str, Any], task)

class ModuleService(Service):
    module = "module"
    keys = None   # this program's CURVE keys when an endpoint is tcp:// (initialize; docs/security.md)
    plan_interval = 5.0     # seconds between planning passes when nothing happens
    sweep_interval = 30.0   # seconds between catch-up sweeps of the unconsumed index
    max_conflict_retries = txn.RETRIES   # recomputations of an effect whose reads changed (shared/txn.py update)
    storage_backoff = 15.0  # seconds to wait after a storage refusal (MAP_FULL, DISK_FULL) before retrying

    def __init__(self, config, clock):
        self.name = f"module-{self.module}"
        super().__init__(config, clock)
        self.applied = 0
        self.unusable = 0

    def world_interval(self, world_s: float, real_min: float, real_max: float) -> float:
        """Real seconds between two passes of a check meant to run every ``world_s`` world seconds, kept
        within [``real_min``, ``real_max``]. A deadline stated in world time (``member_patience``) is only
        as good as the pass that notices it: on a scaled clock (``ops/soak`` runs 336 world seconds per real
        one) a pass every 30 real seconds is one every 2.8 world hours; ``real_min`` bounds the CPU it costs."""
        scale = getattr(self.clock, "scale", 1.0) or 1.0
        return min(real_max, max(real_min, world_s / scale))

    # --- to implement ------------------------------------------------------------------------------------

    def handle(self, task: dict) -> Effect:
        """The effect of a settled task of this module (read domain state through ``self.store``)."""
        raise NotImplementedError

    def plan(self) -> None:
        """Propose new work (``self.submit_if_absent``)."""

    def on_unusable(self, task: dict, error: str) -> list:
        """Extra ops when a result cannot be used (e.g. mark the entity); default none."""
        return []

    # --- machinery ----------------------------------------------------------------------------------------

    def initialize(self) -> None:
        self.keys = self.config.client_keys(self.name)   # CURVE, when an endpoint is tcp:// (docs/security.md)
        self.client = BrokerClient(self.config.broker_endpoint, name=self.name, timeout=2.0, retries=3, keys=self.keys)
        self.store = Store(self.client, self.module)
        self.ctx = zmq.Context()
        self.sub = events.subscribe(self.ctx, self.config.events_endpoint,
                                    [protocol.event_topic(t, self.module) for t in FOLLOWED_EVENTS], keys=self.keys)
        self._next_plan = 0.0
        self._next_sweep = 0.0
        self._backoff_until = 0.0
        self._refused: str | None = None   # the storage refusal being waited out, for one log line each way

    def loop(self) -> None:
        now = self.clock.mono()
        if now < self._backoff_until:
            self._wait_out(min(0.5, self._backoff_until - now))
            return
        try:
            if now >= self._next_sweep:
                self._next_sweep = now + self.sweep_interval
                self.sweep()
            if self.sub.poll(int(max(0.0, min(0.5, self._next_plan - now)) * 1000)):
                for event in events.drain(self.sub):
                    if event.get("module") != self.module:
                        continue
                    if event.get("type") != "module.notify":
                        self.apply(_plain(self.client.get(event["id"], history=False)))
                    self._next_plan = 0.0
            if self.clock.mono() >= self._next_plan:
                self._next_plan = self.clock.mono() + self.plan_interval
                self.plan()
        except BrokerUnavailable as exc:
            self.log.warning("broker unavailable (%s); retrying", exc)
        except FanoError as exc:
            # both pass without a restart: storage is freed, and a key listed with the wrong role is put
            # right in the authorized list (docs/security.md § Roles)
            if exc.code not in STORAGE_REFUSALS and exc.code != ErrorCode.FORBIDDEN:
                raise
            self.storage_refused(exc)
            return
        if self._refused is not None:
            self.log.info("the broker accepts this module's work again (after %s)", self._refused)
            self._refused = None

    def storage_refused(self, exc: FanoError) -> None:
        """Back off after a storage refusal (or a FORBIDDEN one: this module's key has another role), then
        sweep and plan again (what was refused is redone then)."""
        if self._refused is None:
            self.log.warning("broker refuses new work (%s: %s); backing off %gs at a time until it accepts "
                             "again", exc.name, exc.message, self.storage_backoff)
        self._refused = exc.name
        self._backoff_until = self.clock.mono() + self.storage_backoff
        self._next_sweep = self._next_plan = self._backoff_until

    def _wait_out(self, seconds: float) -> None:
        """Sleep through a back-off on the event socket, dropping events (the sweep catches up)."""
        if self.sub.poll(int(seconds * 1000)):
            while True:
                try:
                    self.sub.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break

    def sweep(self) -> None:
        after = None
        while True:
            page = self.client.unconsumed(self.module, after=after, limit=200)
            for task in page["tasks"]:
                self.apply(_plain(task))
            if not page["next"]:
                return
            after = page["next"]

    def apply(self, task: dict) -> bool:
        """Apply one settled task's effect with its ack in one transaction; False if already applied.

        A version conflict (another writer changed what the effect was computed from) recomputes it from
        fresh reads (:func:`shared.txn.update`), at most ``max_conflict_retries`` times."""
        if task.get("consumed") or task["state"] not in ("DONE", "PARKED", "CANCELLED"):
            return False
        refused = None
        while True:
            try:
                done = txn.update(self.client, self.module, functools.partial(self._effect, task, refused),
                                  what=f"what task {task['id']} applies to", retries=self.max_conflict_retries)
            except txn.Conflict:
                self.log.error("task %s: gave up after %d version conflicts", task["id"], self.max_conflict_retries)
                return False
            except FanoError as exc:
                if exc.code in REFUSED_EFFECT and refused is None:
                    # the effect itself is impossible (e.g. a follow-up key conflicts): retrying it would
                    # crash-loop the module on this task forever; record it visibly and move on
                    refused = f"effect refused by the broker: {exc.name}: {exc.message}"
                    continue
                raise
            if done.applied:
                self.applied += 1
            return done.applied

    def _effect(self, task: dict, refused: str | None) -> tuple[list, None]:
        """The ops of one attempt at applying ``task``, ending with its ack (``refused``: the broker refused
        the effect itself, which is recorded as unusable instead)."""
        ops, unusable = self._ops_for(task) if refused is None else self._unusable(task, refused)
        # unusable: shown on the task itself (queue show), not only here
        return ops + [txn.ack(task["id"], unusable)], None

    def _ops_for(self, task: dict) -> tuple[list, str | None]:
        """The ops applying ``task``'s result, and the error when it cannot be used (else None)."""
        if task["state"] != "DONE":
            error = (task.get("error") or {}).get("message") or task["state"].lower()
            return self._unusable(task, f"task {task['state']}: {error}")
        try:
            return list(self.handle(task).ops), None
        except ParseError as exc:
            self.log.warning("task %s (%s): unusable answer: %s", task["id"], task["kind"], exc)
            return self._unusable(task, f"unusable answer: {exc}")

    def _unusable(self, task: dict, error: str) -> tuple[list, str]:
        self.unusable += 1
        record = {"task_id": task["id"], "kind": task["kind"], "key": task["key"], "error": error,
                  "at": self.clock.world(), "answer": ((task.get("result") or {}).get("text") or "")[:4000]}
        # working data: the task keeps the error itself; the answer kept here is for a look within weeks
        ops = [txn.put(f"errors/{task['id']:012d}", record, working=True)] + list(self.on_unusable(task, error))
        return ops, error

    def submit_if_absent(self, tasks: list[dict]) -> None:
        """Propose tasks (deterministic keys make re-proposing harmless); KEY_PARKED keys are skipped, and
        so are the keys of live (PENDING or RUNNING) tasks: a step re-derived from stored state may carry a
        newer payload (an extraction prompt lists the insights blessed since), which the broker refuses as
        KEY_CONFLICT — counted in every operator's `fanoctl status` as an error although nothing is wrong."""
        if not tasks:
            return
        live = CAP.live_keys(self.client, self.module)
        for task in tasks:
            if task["key"] in live:
                continue
            try:
                self.client.submit(task.pop("key"), self.module, task.pop("kind"), task.pop("payload", {}), **task)
            except FanoError as exc:
                if exc.code not in (ErrorCode.KEY_PARKED, ErrorCode.KEY_CONFLICT):
                    raise
                self.log.info("not proposing %s: %s", exc.details.get("key"), exc.message)

    def shutdown(self) -> None:
        if getattr(self, "sub", None) is not None:
            self.sub.close(linger=0)
        if getattr(self, "client", None) is not None:
            self.client.close()
        if getattr(self, "ctx", None) is not None:
            self.ctx.term()

