"""What each role may ask of the broker (docs/security.md § Roles); :func:`authorize` is checked on every
request before the request log or the handler sees it.

=========  ===================================================================================================
operator   everything but ``revoke`` (fanoctl, the operator's scripts: quotas, cool-downs, account pause,
           map size, compaction, any module's data, any task)
scheduler  the reads below; ``revoke``; ``txn`` in its own namespace ``scheduler`` (the weights it keeps)
module:M   the reads below; ``submit`` and ``txn`` for module M only (every task a txn submits is M's, every
           result it acks is of an M task); ``cancel``/``pause``/``resume``/``retry``/``set_priority`` of
           M's own tasks
worker:A   ``ping``; ``lease`` for account A only; ``renew``/``turn_begin``/``complete``/``fail``/``refuse``
           of a task whose current lease is A's (quoting the live epoch of a lease another account holds is
           FORBIDDEN; quoting an older epoch is ``STALE_EPOCH``: a cut-off worker whose task moved on)
=========  ===================================================================================================

Reads (``ping``, ``get``, ``list``, ``stats``, ``events``, ``quota_show``, ``kv_get``, ``kv_scan``,
``unconsumed``) are open to operator, scheduler and modules: modules read each other's data (the documenter
reads the explorer's insights). A worker reads nothing: what it needs arrives in its lease.
A key revoked while its connection is open has the role ``nobody`` and is refused everything. A refusal
is ``FORBIDDEN`` with ``details`` ``{role, cmd}``.
"""
from __future__ import annotations

from typing import Any

from services.broker import schema as S
from services.broker.tx import Tx
from shared import protocol
from shared.errors import ErrorCode, FanoError
from shared.roles import MODULE, NOBODY, OPERATOR, SCHEDULER, WORKER, Role

READS = frozenset({"ping", "get", "list", "stats", "events", "quota_show", "kv_get", "kv_scan", "unconsumed"})
WORKER_TASK = frozenset({"renew", "turn_begin", "complete", "fail", "refuse"})
MODULE_TASK = frozenset({"cancel", "pause", "resume", "retry", "set_priority"})
SCHEDULER_NAMESPACE = "scheduler"


def forbidden(role: Role, cmd: str, why: str) -> FanoError:
    return FanoError(ErrorCode.FORBIDDEN, f"{role} may not {cmd}: {why}", {"role": str(role), "cmd": cmd})


def check_command(role: Role, cmd: str) -> FanoError | None:
    """The refusal of ``cmd`` for ``role`` that needs no stored state (None: allowed so far). Reads are
    decided here alone, so they can be answered after the batch without a second look."""
    if role == NOBODY:
        return forbidden(role, cmd, "its CURVE key is not in the authorized list (revoked)")
    if cmd == "revoke":
        return None if role.kind == SCHEDULER else forbidden(role, cmd, "only the scheduler revokes a lease")
    if role.kind == OPERATOR:
        return None
    if role.kind == WORKER:
        if cmd == "ping" or cmd == "lease" or cmd in WORKER_TASK:
            return None
        return forbidden(role, cmd, "a worker only leases, renews and reports its own account's tasks")
    if cmd in READS:
        return None
    if role.kind == SCHEDULER:
        return None if cmd == "txn" else forbidden(role, cmd, "the scheduler only reads and revokes")
    if role.kind == MODULE and (cmd in ("submit", "txn") or cmd in MODULE_TASK):
        return None
    return forbidden(role, cmd, "only the operator runs it")


def _task(tx: Tx, task_id: Any, ahead: bool = False) -> dict[str, Any] | None:
    """The task a command names, for its check; ``ahead``: the command's handler reads it next (one
    decode for both, :meth:`Tx.read_ahead`)."""
    if not isinstance(task_id, int) or not 0 < task_id < 2**64:
        return None   # the handler answers NOT_FOUND
    if ahead:
        return tx.read_ahead(task_id)
    task: dict[str, Any] | None = tx.get("tasks", S.u64(task_id))
    return task


def authorize(tx: Tx, role: Role, req: protocol.Request) -> None:
    """Raise FORBIDDEN unless ``role`` may run ``req`` (module doc); reads the tasks it names if needed."""
    err = check_command(role, req.cmd)
    if err is not None:
        raise err
    if role.kind == OPERATOR or req.cmd in READS or req.cmd == "revoke":
        return
    args = req.args
    if role.kind == WORKER:
        if req.cmd == "lease":
            if args.get("account") != role.scope:
                raise forbidden(role, "lease", f"it serves account {role.scope}, not {args.get('account')!r}")
            return
        task = _task(tx, args.get("id"), ahead=True)
        lease = (task or {}).get("lease") or {}
        if lease and lease.get("account") != role.scope:
            epoch = args.get("epoch")
            if isinstance(epoch, int) and not isinstance(epoch, bool) and epoch != (task or {}).get("epoch"):
                # a lease older than the live one: its worker was cut off (revoked, expired) and the task moved
                # to another account meanwhile. That is fencing, not a trespass: STALE_EPOCH is what makes the
                # worker drop its job quietly (docs/tasks.md § Leases and epochs); it says nothing of the lease
                # the other account holds, and the live epoch stays FORBIDDEN to this role
                raise FanoError(ErrorCode.STALE_EPOCH, f"lease {args.get('id')}@{epoch} is void: the task was "
                                                       "leased again", {"id": args.get("id")})
            raise forbidden(role, req.cmd, f"task {args.get('id')} is leased to account {lease.get('account')!r}")
        return
    if role.kind == SCHEDULER:   # txn (check_command allowed nothing else that writes)
        if args.get("module") != SCHEDULER_NAMESPACE:
            raise forbidden(role, "txn", f"the scheduler writes only its own namespace {SCHEDULER_NAMESPACE!r}")
        _check_ops(tx, role, args.get("ops"))
        return
    # a module
    if req.cmd == "submit":
        task_spec = args.get("task")
        module = task_spec.get("module") if isinstance(task_spec, dict) else None
        if not role.is_module(module):
            raise forbidden(role, "submit", f"a task of module {module!r}")
    elif req.cmd == "txn":
        if not role.is_module(args.get("module")):
            raise forbidden(role, "txn", f"a write into the namespace of {args.get('module')!r}")
        _check_ops(tx, role, args.get("ops"))
    else:
        task = _task(tx, args.get("id"), ahead=True)
        if task is not None and not role.is_module(task.get("module")):
            raise forbidden(role, req.cmd, f"task {task['id']} belongs to module {task.get('module')!r}")


def _check_ops(tx: Tx, role: Role, ops: Any) -> None:
    """A txn's submits and acks must concern the caller's own tasks (malformed ops: the handler's BAD_ARGUMENT)."""
    if not isinstance(ops, list):
        return
    own = role.scope if role.kind == MODULE else SCHEDULER_NAMESPACE
    for op in ops:
        if not isinstance(op, dict):
            continue
        if op.get("op") == "submit":
            spec = op.get("task")
            module = spec.get("module") if isinstance(spec, dict) else None
            if module != own:
                raise forbidden(role, "txn", f"it submits a task of module {module!r}")
        elif op.get("op") == "ack":
            task = _task(tx, op.get("task_id"))
            if task is not None and task.get("module") != own:
                raise forbidden(role, "txn", f"it acks task {task['id']} of module {task.get('module')!r}")
