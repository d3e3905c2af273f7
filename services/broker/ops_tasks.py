"""Task commands: submit, get, list, cancel, pause, resume, retry, set_priority.

Task fields accepted by ``submit`` (``args.task``)::

    key           str, required   idempotency key, permanent (<= 400 bytes in UTF-8, no NUL)
    module        str, required   owner module, e.g. "explorer" ([a-z0-9][a-z0-9_.-]*)
    kind          str, required   e.g. "explorer.explore", "ask"
    payload       any             ids and parameters, not objects (default {})
    priority      int             base priority, higher first (default 50, |p| <= 1e6)
    max_attempts  int             1..100 (default from config)
    not_before    float           world time before which the task is not leased
    requires      map             {"backends": [account or backend kind, ...], "mode": "standard"|"deep",
                                   "deep_fallback": bool, "account": str,
                                   "conversation": str (<= 400 bytes in UTF-8, no NUL),
                                   "share": "adhoc" (work a person waits for, e.g. an author's
                                   comment: it may also draw on the operator's adhoc reserve)}
    attrs         map             free-form scheduling hints (seed priority, comment boost, ...)

A task record as returned by ``get``/``list`` holds these plus ``id``, ``state``, ``attempts``,
``epoch``, ``created``, ``updated``, ``lease`` ({worker, account, mode, deadline_in, granted_at}),
``result``, ``error`` ({class, message, at}), ``consumed``, ``parked_at``, ``history`` (transitions), and
once task retention compacted it ``compacted``/``compacted_at`` with ``payload`` and ``result`` null
(services/broker/ops_retention.py).
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import msgpack

from services.broker import schema as S
from services.broker import states as st
from services.broker.tx import Tx
from shared.config import ADHOC, KNOWN_MODULES, BrokerConfig, Config, unknown_name
from shared.errors import ErrorCode, FanoError, bad_argument
from shared.protocol import pack_value

NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
TASK_FIELDS = {"key", "module", "kind", "payload", "priority", "max_attempts", "not_before", "requires", "attrs"}
REQUIRE_FIELDS: dict[str, type[Any]] = {"backends": list, "mode": str, "deep_fallback": bool, "account": str,
                                        "conversation": str, "share": str}
MODES = ("standard", "deep")
LIST_SCAN_LIMIT = 20_000
# task keys and conversation ids are LMDB keys (at most 511 bytes); 400 leaves room for a prefix
MAX_KEY_BYTES = 400
# a page (list, unconsumed, kv_scan) ends once its records pass this many bytes of msgpack: with the
# record that crossed it, a reply stays within PAGE_BYTES + one record (a payload and a result of at most
# protocol.MAX_BODY each), far below the 16 MiB a client accepts, whatever the limit asked for
PAGE_BYTES = 1024 * 1024
ROWS_LIMIT = 100_000   # rows per `list` page with rows=true (each a few dozen bytes; PAGE_BYTES bounds it too)
BULKY = ("payload", "result")   # left out of `list` records unless asked for (payloads=true)


def record_bytes(record: Any) -> int:
    """The size of ``record`` on the wire (what a page's byte budget counts)."""
    return len(pack_value(record))


def check_name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not NAME.match(value):
        raise bad_argument(f"{what} must match {NAME.pattern}, got {value!r}", field=what)
    return value


@dataclass(frozen=True)
class Names:
    """The names the broker's configuration has, loaded at start: an operator's command, or a task's
    requirement, naming anything else is refused (BAD_ARGUMENT with ``details``: ``field``, ``name``,
    ``known``) instead of creating a phantom account record or a task no worker can ever take."""

    accounts: frozenset[Any]
    backends: frozenset[Any]     # what requires.backends may hold: accounts and their backend kinds
    modules: frozenset[Any]
    modes: tuple[tuple[str, tuple[str, ...]], ...] = ()   # (account, (mode, ...)) pairs: each account's modes

    @classmethod
    def of(cls, config: Config) -> Names | None:
        """None for a configuration without accounts: a bare broker, whose names are not checked."""
        if not config.names_checked:
            return None
        return cls(frozenset(config.account_names), frozenset(config.backend_names()), frozenset(KNOWN_MODULES),
                   tuple((a.name, tuple(a.modes)) for a in config.accounts))

    def modes_of(self, account: str) -> tuple[str, ...]:
        return dict(self.modes).get(account, ())


def _unknown(field: str, what: str, name: Any, known: frozenset[str]) -> FanoError:
    return bad_argument(unknown_name(what, name, known), field=field, name=name, known=sorted(known))


def check_account(tx: Tx, name: Any, field: str = "account") -> str:
    """A well-formed account name the configuration has (any well-formed one when names are not checked)."""
    check_name(name, field)
    if tx.names is not None and name not in tx.names.accounts:
        raise _unknown(field, "account", name, tx.names.accounts)
    account: str = name
    return account


def check_module(tx: Tx, name: Any, field: str = "module") -> str:
    if tx.names is not None and name not in tx.names.modules:
        raise _unknown(field, "module", name, tx.names.modules)
    module: str = name
    return module


def _check_requires(tx: Tx, requires: dict[str, Any]) -> None:
    """A task may only ask for accounts and backend kinds the configuration has: no worker would ever
    serve any other, so the task would wait forever."""
    if tx.names is None:
        return
    for name in requires.get("backends") or ():
        if name not in tx.names.backends:
            raise _unknown("requires", "account or backend", name, tx.names.backends)
    if "account" in requires and requires["account"] not in tx.names.accounts:
        raise _unknown("requires", "account", requires["account"], tx.names.accounts)


def _canonical(obj: Any) -> Any:
    if isinstance(obj, dict):
        return [[_canonical(k), _canonical(v)] for k, v in sorted(obj.items(), key=lambda kv: repr(kv[0]))]
    if isinstance(obj, (list, tuple)):
        return [_canonical(x) for x in obj]
    return obj


def fingerprint(module: str, kind: str, payload: Any, requires: Any) -> str:
    """Hash of what the task asks for; key order in maps does not matter."""
    blob = msgpack.packb(_canonical([module, kind, payload, requires]), use_bin_type=True)
    return hashlib.sha256(blob).hexdigest()[:32]


def validate_task(spec: dict[str, Any], config: BrokerConfig) -> dict[str, Any]:
    unknown = set(spec) - TASK_FIELDS
    if unknown:
        raise bad_argument(f"unknown task field(s): {sorted(map(str, unknown))}")
    key = spec.get("key")
    if not isinstance(key, str) or not key or "\x00" in key or len(key.encode()) > MAX_KEY_BYTES:
        raise bad_argument(f"task key must be a non-empty string of at most {MAX_KEY_BYTES} bytes without NUL",
                           field="key")
    module = check_name(spec.get("module"), "module")
    kind = spec.get("kind")
    if not isinstance(kind, str) or not kind or len(kind) > 128:
        raise bad_argument("task kind must be a non-empty string (<= 128 chars)", field="kind")
    priority = spec.get("priority", 50)
    if not isinstance(priority, int) or isinstance(priority, bool) or not S.PRIO_MIN <= priority <= S.PRIO_MAX:
        raise bad_argument(f"priority must be an integer in [{S.PRIO_MIN}, {S.PRIO_MAX}]", field="priority")
    max_attempts = spec.get("max_attempts", config.default_max_attempts)
    if not isinstance(max_attempts, int) or isinstance(max_attempts, bool) or not 1 <= max_attempts <= 100:
        raise bad_argument("max_attempts must be an integer in [1, 100]", field="max_attempts")
    not_before = spec.get("not_before")
    if not_before is not None and (not isinstance(not_before, (int, float)) or isinstance(not_before, bool)
                                   or not abs(not_before) < 1e15):  # finite, and its ms fit the u64 index key
        raise bad_argument("not_before must be a number (world time, seconds)", field="not_before")
    requires = spec.get("requires") or {}
    if not isinstance(requires, dict):
        raise bad_argument("requires must be a map", field="requires")
    for name, value in requires.items():
        want = REQUIRE_FIELDS.get(name)
        if want is None:
            raise bad_argument(f"unknown requirement {name!r}", field="requires")
        if not isinstance(value, want) or (want is list and not all(isinstance(x, str) for x in value)):
            raise bad_argument(f"requires.{name} must be {want.__name__}", field="requires")
    conv = requires.get("conversation")
    if conv and ("\x00" in conv or len(conv.encode()) > MAX_KEY_BYTES):
        # the conversation id is a key of the conversations table (LMDB keys: at most 511 bytes)
        raise bad_argument(f"requires.conversation must be at most {MAX_KEY_BYTES} bytes without NUL",
                           field="requires")
    if requires.get("mode", "standard") not in MODES:
        raise bad_argument(f"requires.mode must be one of {MODES}", field="requires")
    if requires.get("share", ADHOC) != ADHOC:
        # the only share a module may borrow is the operator's, for work a person waits for
        raise bad_argument(f"requires.share must be {ADHOC!r}", field="requires")
    attrs = spec.get("attrs") or {}
    if not isinstance(attrs, dict):
        raise bad_argument("attrs must be a map", field="attrs")
    payload = spec.get("payload", {})
    return {"key": key, "module": module, "kind": kind, "payload": payload, "priority": priority,
            "max_attempts": max_attempts, "not_before": float(not_before or 0), "requires": requires,
            "attrs": attrs, "fp": fingerprint(module, kind, payload, requires)}


def submit_task(tx: Tx, spec: dict[str, Any], force: bool = False) -> dict[str, Any]:
    """Submit-if-absent. Returns {"task", "created", "requeued"}; shared by ``submit`` and ``txn``."""
    clean = validate_task(spec, tx.config)
    key_b = clean["key"].encode()
    existing = tx.get_raw("keys", key_b)
    if existing is None:  # an existing key returns its task as it is, even if its account was removed since
        _check_requires(tx, clean["requires"])
    else:
        task = tx.task(S.from_u64(existing))
        # a compacted task keeps its fingerprint: the conflict check outlives the payload
        if task["fp"] != clean["fp"]:
            raise FanoError(ErrorCode.KEY_CONFLICT, f"key {clean['key']!r} belongs to task {task['id']} "
                            "with a different payload", {"id": task["id"], "key": clean["key"]})
        if task["state"] == st.PARKED:
            recent = tx.now - (task.get("parked_at") or 0) < tx.config.parked_key_window
            if recent and not force:
                raise FanoError(ErrorCode.KEY_PARKED, f"key {clean['key']!r} (task {task['id']}) was parked "
                                f"{tx.now - task['parked_at']:.0f}s ago: {(task.get('error') or {}).get('message', '')}"
                                " — resubmit with force to retry", {"id": task["id"], "key": clean["key"]})
            _requeue(tx, task, "resubmitted" + (" (forced)" if recent else ""), reset_attempts=True)
            return {"task": task, "created": False, "requeued": True}
        return {"task": task, "created": False, "requeued": False}
    tid = tx.counter("task_id")
    task = dict(clean, id=tid, attempts=0, epoch=0, created=tx.now, updated=tx.now, lease=None, result=None,
                error=None, consumed=False, parked_at=None)
    tx.put_raw("keys", key_b, S.u64(tid))
    tx.insert(task, "submitted")
    return {"task": task, "created": True, "requeued": False}


def _requeue(tx: Tx, task: dict[str, Any], why: str, reset_attempts: bool) -> None:
    if reset_attempts:
        task["attempts"] = 0
    task["not_before"] = 0.0
    task["consumed"] = False
    tx.move(task, st.PENDING, why)


def public(task: dict[str, Any], mono: float, history: bool = True) -> dict[str, Any]:
    """The task as clients see it: monotonic deadlines become 'seconds left'."""
    out = dict(task)  # a plain copy and a few pops: cheaper than filtering every field (every lease reply)
    out.pop("fp", None)
    out.pop("queue", None)
    out.pop("unknown_charges", None)   # the unknown turn's charges, the broker's own (ops_lease._settle_turn)
    if not history:
        out.pop("history", None)
    lease = task.get("lease")
    if lease:
        out["lease"] = {k: v for k, v in lease.items() if k not in ("deadline", "charges")}
        out["lease"]["deadline_in"] = round(lease["deadline"] - mono, 3)
    return out


# --- handlers ------------------------------------------------------------------------------------------

def op_submit(tx: Tx, task: dict[str, Any], force: bool) -> dict[str, Any]:
    if not isinstance(task, dict):
        raise bad_argument("task must be a map")
    out = submit_task(tx, task, force)
    out["task"] = public(out["task"], tx.mono, history=False)  # replies stay small; `get` has the history
    return out


def op_get(tx: Tx, id: int, history: bool) -> dict[str, Any]:
    task = tx.task(id)
    out = public(task, tx.mono, history)
    conv = (task.get("requires") or {}).get("conversation")
    if conv:  # the conversation it belongs to: account, turns, and for a web account its page
        rec = tx.conversation(conv)
        out["conversation"] = {"id": conv, **rec} if rec else {"id": conv}
    return out


def op_list(tx: Tx, state: str | None, module: str | None, kind: str | None, after: int | None, limit: int,
            payloads: bool = False, before: int | None = None, rows: bool = False) -> dict[str, Any]:
    """Tasks by id, filtered; ``{"tasks": [record without history], "next": id|null}``.

    Ascending from the first id above ``after``; or, with ``before``, descending from the first id below
    it (newest first: ``before`` 2**63 starts at the newest task; the web panel's queue), continued with
    ``before=next``. ``after`` and ``before`` together are BAD_ARGUMENT.

    Records leave out ``payload`` and ``result`` unless ``payloads`` (the queue view and the
    scheduler's rebuild do not need them, and a page of prompts and answers can be large). A page ends
    at ``limit`` tasks, after :data:`LIST_SCAN_LIMIT` scanned, or once its records pass
    :data:`PAGE_BYTES`; ``next`` is then the id to continue after (or before).

    ``rows`` (``state`` PENDING, ascending, no other filter): the tasks' rows instead (:func:`_rows`)."""
    if rows:
        if state != st.PENDING or module is not None or kind is not None or before is not None or payloads:
            raise bad_argument("rows lists PENDING tasks by id: state PENDING, no module, kind, before or "
                               "payloads", field="rows")
        return _rows(tx, after, limit)
    if state is not None and state not in st.STATES:
        raise bad_argument(f"state must be one of {', '.join(st.STATES)}", field="state")
    if not isinstance(limit, int) or not 1 <= limit <= 1000:
        raise bad_argument("limit must be in [1, 1000]", field="limit")
    if before is not None and after is not None:
        raise bad_argument("give after (ascending) or before (descending), not both", field="before")
    tasks, last, scanned = [], None, 0
    source: Iterator[dict[str, Any]]
    if before is not None:
        source = _descending(tx, state, min(max(0, before), 2**64 - 1))
    else:
        start = max(0, after or 0) + 1
        if start >= 2**64:
            return {"tasks": [], "next": None}
        if state is not None:
            prefix = S.state_prefix(state)
            cur = tx.cursor("by_state")

            def by_state() -> Iterator[dict[str, Any]]:
                ok = cur.set_range(prefix + S.u64(start))
                while ok and cur.key().startswith(prefix):
                    tid = S.from_u64(cur.key()[len(prefix):])
                    row = cur.value() if module is not None else b""
                    # a PENDING entry carries its row: another module's task is skipped undecoded (the
                    # modules' capacity passes list their own PENDING tasks several times a second)
                    other = bool(row) and S.row_module(row) not in (None, module)
                    yield {"id": tid, "module": None, "kind": None} if other else tx.task(tid)
                    ok = cur.next()
            source = by_state()
        else:
            cur = tx.cursor("tasks")
            # iternext() on an unpositioned cursor starts from the first key: only iterate if set_range found one
            found = cur.set_range(S.u64(start))
            source = (tx.get("tasks", k) for k in cur.iternext(keys=True, values=False)) if found else iter(())
    more, size = False, 0
    for task in source:
        scanned += 1
        last = task["id"]
        if (module is None or task["module"] == module) and (kind is None or task["kind"] == kind):
            rec = public(task, tx.mono, history=False)
            if not payloads:
                for name in BULKY:
                    rec.pop(name, None)
            tasks.append(rec)
            size += record_bytes(rec)
        if len(tasks) >= limit or scanned >= LIST_SCAN_LIMIT or size >= PAGE_BYTES:
            more = True  # a filtered page stops after a bounded scan; the caller pages on with "next"
            break
    return {"tasks": tasks, "next": last if more else None}


def _rows(tx: Tx, after: int | None, limit: int) -> dict[str, Any]:
    """PENDING tasks' rows (:data:`shared.records.PENDING_ROW`) from the first id above ``after``, as the
    ``by_state`` index stores them: ``{"rows": bytes, "count": n, "next": id|null}``. Nothing is decoded
    or encoded per task, so a page is bounded by bytes (:data:`PAGE_BYTES`) and by ``limit`` (at most
    :data:`ROWS_LIMIT`), and listing a queue costs O(PENDING) whatever the history holds."""
    if not isinstance(limit, int) or not 1 <= limit <= ROWS_LIMIT:
        raise bad_argument(f"limit must be in [1, {ROWS_LIMIT}]", field="limit")
    start = max(0, after or 0) + 1
    if start >= 2**64:
        return {"rows": b"", "count": 0, "next": None}
    prefix = S.state_prefix(st.PENDING)
    cut = len(prefix)
    cur = tx.cursor("by_state")
    out: list[bytes] = []
    size, last = 0, b""
    if cur.set_range(prefix + S.u64(start)):
        for key, row in cur.iternext():
            if key[:cut] != prefix:
                break
            if len(out) >= limit or size >= PAGE_BYTES:
                return {"rows": b"".join(out), "count": len(out), "next": S.from_u64(last[cut:])}
            last = key
            # an entry without its row (never after the version-3 migration): made from the record
            row = row or S.pending_row(tx.task(S.from_u64(key[cut:])))
            out.append(row)
            size += len(row)
    return {"rows": b"".join(out), "count": len(out), "next": None}


def op_cancel(tx: Tx, id: int, reason: str) -> dict[str, Any]:
    task = tx.task(id)
    if task["state"] in st.FINAL:
        raise FanoError(ErrorCode.INVALID_STATE, f"task {id} is already {task['state']}",
                        {"id": id, "state": task["state"]})
    was_running = task["state"] == st.RUNNING
    if was_running:
        # the request may be in flight: its quota unit stays counted; the worker learns from the event
        task["error"] = {"class": "cancelled", "message": reason or "cancelled by operator", "at": tx.now}
    _release_conversation(tx, task)
    tx.move(task, st.CANCELLED, reason or "cancelled by operator", worker=(task.get("lease") or {}).get("worker"))
    return public(task, tx.mono)


def op_pause(tx: Tx, id: int) -> dict[str, Any]:
    task = tx.task(id)
    if task["state"] == st.RUNNING:
        # an in-flight request is not interrupted by a pause; the task pauses when its lease ends
        task["pause_requested"] = True
        tx.save(task)
        return public(task, tx.mono)
    if task["state"] != st.PENDING:
        raise FanoError(ErrorCode.INVALID_STATE, f"only PENDING or RUNNING tasks can be paused; task {id} is "
                        f"{task['state']}", {"id": id, "state": task["state"]})
    tx.move(task, st.PAUSED, "paused by operator")
    return public(task, tx.mono)


def op_resume(tx: Tx, id: int) -> dict[str, Any]:
    task = tx.task(id)
    if task["state"] == st.RUNNING and task.get("pause_requested"):
        task["pause_requested"] = False
        tx.save(task)
        return public(task, tx.mono)
    if task["state"] != st.PAUSED:
        raise FanoError(ErrorCode.INVALID_STATE, f"task {id} is {task['state']}, not PAUSED",
                        {"id": id, "state": task["state"]})
    task["pause_requested"] = False
    tx.move(task, st.PENDING, "resumed by operator")
    return public(task, tx.mono)


def op_retry(tx: Tx, id: int, reset_attempts: bool) -> dict[str, Any]:
    task = tx.task(id)
    if task["state"] != st.PARKED:
        raise FanoError(ErrorCode.INVALID_STATE, f"only PARKED tasks can be retried; task {id} is {task['state']}",
                        {"id": id, "state": task["state"]})
    if not reset_attempts and task["attempts"] >= task["max_attempts"]:
        task["max_attempts"] = task["attempts"] + 1
    _requeue(tx, task, "retried by operator", reset_attempts)
    return public(task, tx.mono)


def op_set_priority(tx: Tx, id: int, priority: int) -> dict[str, Any]:
    if not S.PRIO_MIN <= priority <= S.PRIO_MAX:
        raise bad_argument(f"priority must be in [{S.PRIO_MIN}, {S.PRIO_MAX}]", field="priority")
    task = tx.task(id)
    if task["state"] in st.FINAL:
        raise FanoError(ErrorCode.INVALID_STATE, f"task {id} is {task['state']}", {"id": id})
    old = task["priority"]
    tx.reindex(task, priority=priority)
    tx.emit("task.priority", id=id, module=task["module"], priority=priority, prev=old)
    return public(task, tx.mono)


def _release_conversation(tx: Tx, task: dict[str, Any]) -> None:
    conv = (task.get("requires") or {}).get("conversation")
    if not conv:
        return
    rec = tx.conversation(conv)
    if rec and (rec.get("inflight") == task["id"] or (rec.get("unknown") or {}).get("task") == task["id"]):
        if rec.get("inflight") == task["id"]:
            rec["inflight"] = None
        if (rec.get("unknown") or {}).get("task") == task["id"]:
            del rec["unknown"]   # the operator gave up on that turn: it no longer holds the conversation
        tx.put_conversation(conv, rec)


def _descending(tx: Tx, state: str | None, below: int) -> Iterator[dict[str, Any]]:
    """Tasks with an id below ``below``, newest first (of ``state``'s index, or of all tasks)."""
    prefix = S.state_prefix(state) if state is not None else b""
    cur = tx.cursor("by_state" if state is not None else "tasks")
    # the first key at or past the bound, then one back; with none past it, the table's last key
    ok = cur.prev() if cur.set_range(prefix + S.u64(below)) else cur.last()
    while ok and cur.key().startswith(prefix):
        key = bytes(cur.key())
        yield tx.task(S.from_u64(key[len(prefix):])) if state is not None else tx.get("tasks", key)
        ok = cur.prev()


# command -> handler(tx, **args) (services/broker/core.py dispatches)
HANDLERS: dict[str, Callable[..., Any]] = {
    "submit": op_submit, "get": op_get, "list": op_list, "cancel": op_cancel, "pause": op_pause,
    "resume": op_resume, "retry": op_retry, "set_priority": op_set_priority,
}
