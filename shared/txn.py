"""Module transactions: the one place that builds the ops of the broker's ``txn`` command, and the two
ways to run them (a conditional transaction, an update retried on a version race).

Every writer of module data — the modules, the scheduler (its stored weights), ``fanoctl`` and the
operations layer under it (services/modules/operations/) — builds its ops with the functions here and
runs them with :func:`conditional` or :func:`update`; nothing else spells an ``{"op": ...}`` map.

Wire reference
--------------

``txn`` (shared/protocol.py's command table) takes ``module`` (the namespace written) and ``ops``, a
list of 1..:data:`MAX_OPS` maps applied in order, all or nothing, in one broker transaction
(services/broker/ops_kv.py applies them)::

    {"op": "put",    "key": str, "value": any, "if_version": int,   # if_version optional; 0 = must not exist
                     "working": bool}                               # optional, only when true: working data
    {"op": "delete", "key": str, "if_version": int}                 # if_version optional
    {"op": "check",  "key": str, "if_version": int}                 # assert only (0 = absent)
    {"op": "submit", "task": {...}, "force": bool}                  # submit-if-absent, as the ``submit`` command
    {"op": "ack",    "task_id": int, "unusable": str}               # unusable optional (below)
    {"op": "notify", "reason": str}                                 # reason: at most MAX_REASON_CHARS

* **Keys** are non-empty strings of at most :data:`MAX_KEY_BYTES` bytes without NUL. Every key holds
  ``{"v": version, "value": ...}``; versions start at 1 and grow by one per put. ``if_version`` is a
  non-negative integer: the op applies only if the key's version is that (0: the key is absent).
* **Working data** (``working`` on a put): the broker deletes the key ``broker.working_retention`` world
  seconds after that put (0 = never), unless a later put without the flag, or a delete, comes first.
  The research record is written without it and kept forever (docs/storage.md lists which is which).
* **ack** marks a settled task's (DONE, PARKED, CANCELLED) result consumed by the module. ``unusable``
  (at most :data:`MAX_UNUSABLE_CHARS` characters are kept) says why the module could not use a DONE
  task's answer; the broker keeps it as the task's error (class ``unusable``). Acks are checked before
  anything else: if one names a task already consumed the whole transaction is a no-op and the reply is
  ``{"applied": false, "reason": "already consumed", "task_id": id}`` — what makes replaying a result
  harmless. Acking a task that is not settled is ``INVALID_STATE``.
* **notify** changes no data; if the transaction commits the broker publishes ``module.notify {module,
  reason}``, which wakes the module to plan at once. Writers other than the module itself (a human
  through fanoctl) add it: :class:`shared.client.BrokerClient` does when ``notify_writes`` is set.

Reply: ``{"applied": true, "results": [...]}``, one result per op: put ``{"key", "version"}`` (the new
version), delete ``{"key", "deleted": bool}``, check ``{"key", "version"}``, submit ``{"id", "created",
"requeued", "state"}``, ack ``{"acked": id}``, notify ``{"notified": true}``. A condition that does not
hold raises ``CONDITION_FAILED`` (nothing applied) with details ``{"index", "key", "version"}`` (the
op's index and the key's current version); a malformed op is ``BAD_ARGUMENT``.

Running them
------------

* :func:`conditional` — one transaction; True when it applied, False when a condition failed (or an ack
  was already consumed); every other error raises.
* :func:`update` — read, compute, conditional write, and again on a version race, at most ``retries``
  times; then :class:`Conflict` (a ``CONDITION_FAILED`` error) says what kept changing.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

from shared.errors import ErrorCode, FanoError

# the broker's bounds (services/broker/ops_kv.py checks them; the builders leave checking to it)
MAX_OPS = 500
MAX_KEY_BYTES = 400
MAX_UNUSABLE_CHARS = 2000
MAX_REASON_CHARS = 200
OPS = ("put", "delete", "check", "submit", "ack", "notify")
RETRIES = 5   # attempts of an update before it gives up (a race is rare: two writers on one record)

Op = dict[str, Any]   # one op, as the wire reference above spells it


class TxnClient(Protocol):
    """What running a transaction needs of a client (:class:`shared.client.BrokerClient` is one)."""

    def txn(self, module: str, ops: list[Op], rid: str | None = None) -> dict[str, Any]: ...


# --- builders ----------------------------------------------------------------------------------------------

def put(key: str, value: Any, if_version: int | None = None, working: bool = False) -> Op:
    """Write ``value`` under ``key`` (``if_version``: only if the key is at that version, 0 = absent;
    ``working``: working data the broker deletes ``broker.working_retention`` after this put)."""
    op: Op = {"op": "put", "key": key, "value": value}
    if if_version is not None:
        op["if_version"] = if_version
    if working:
        op["working"] = True
    return op


def delete(key: str, if_version: int | None = None) -> Op:
    """Delete ``key`` (a missing key is no error: its result says ``deleted: false``)."""
    op: Op = {"op": "delete", "key": key}
    if if_version is not None:
        op["if_version"] = if_version
    return op


def check(key: str, if_version: int) -> Op:
    """Assert that ``key`` is at ``if_version`` (0 = absent) without writing it: a record the write was
    computed from, which must not have changed meanwhile."""
    return {"op": "check", "key": key, "if_version": if_version}


def submit(task: dict[str, Any], force: bool = False) -> Op:
    """Submit-if-absent ``task`` (``{"key", "module", "kind", "payload", ...}`` as the ``submit`` command
    takes it); ``force`` resubmits a key parked recently."""
    return {"op": "submit", "task": task, "force": force}


def ack(task_id: int, unusable: str | None = None) -> Op:
    """Mark settled task ``task_id``'s result consumed; ``unusable``: why its answer could not be used."""
    op: Op = {"op": "ack", "task_id": task_id}
    if unusable:
        op["unusable"] = unusable
    return op


def notify(reason: str = "") -> Op:
    """Wake the module whose namespace the transaction writes (published only if it commits)."""
    return {"op": "notify", "reason": reason}


# --- running -------------------------------------------------------------------------------------------------

class Conflict(FanoError):
    """An update gave up: what it read kept changing under it (``CONDITION_FAILED``)."""

    def __init__(self, message: str, details: dict[str, Any] | None = None):
        super().__init__(ErrorCode.CONDITION_FAILED, message, details)


class Updated(NamedTuple):
    """What :func:`update` did: the value ``compute`` returned with the ops that were written, and whether
    they applied (False only when an ack in them was already consumed: a replayed result)."""

    value: Any
    applied: bool


def conditional(client: TxnClient, module: str, ops: list[Op]) -> bool:
    """Run ``ops`` in one transaction of ``module``: True when it applied, False when a condition did not
    hold or an ack was already consumed (nothing applied either way). Other errors raise."""
    try:
        return bool(client.txn(module, ops).get("applied"))
    except FanoError as exc:
        if exc.code != ErrorCode.CONDITION_FAILED:
            raise
        return False


def update(client: TxnClient, module: str, compute: Callable[[], tuple[list[Op], Any]], *,
           what: str = "the data", retries: int = RETRIES, max_ops: int | None = None) -> Updated:
    """Read-compute-write with version checks, retried on a race.

    ``compute()`` reads what it needs (with versions) and returns ``(ops, value)``; the ops carry the
    ``if_version`` conditions. When one fails (another writer changed a record meanwhile) ``compute`` runs
    again on fresh reads, at most ``retries`` times in all; then :class:`Conflict` ("``what`` kept
    changing under us; try again"). No ops: nothing is written (``applied`` is True: nothing was needed).
    Errors other than a failed condition raise at once (``compute`` may raise too, e.g. ``NOT_FOUND``).

    ``max_ops``: a longer list is written as several transactions of at most that many ops, in order,
    each checked; the whole is then not atomic, so only for writes whose parts stand alone (a seed file
    import: each part re-read and recomputed on a race, and what was written is then unchanged).
    """
    if retries < 1:
        raise ValueError("retries must be >= 1")
    last: FanoError | None = None
    for _ in range(retries):
        ops, value = compute()
        if not ops:
            return Updated(value, True)
        step = max_ops or len(ops)
        try:
            applied = True
            for start in range(0, len(ops), step):
                applied = bool(client.txn(module, ops[start:start + step]).get("applied")) and applied
        except FanoError as exc:
            if exc.code != ErrorCode.CONDITION_FAILED:
                raise
            last = exc
            continue
        return Updated(value, applied)
    raise Conflict(f"{what} kept changing under us; try again", last.details if last else None)
