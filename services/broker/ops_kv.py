"""Module transactions: domain writes, follow-up submissions and result acks, atomically
(docs/modules.md § Module transactions).

The ``txn`` wire format — each op, its fields, the reply and the errors — is written once, in
shared/txn.py (with the builders every writer uses); the bounds (``MAX_OPS``, ``MAX_KEY_BYTES``, ...)
and the op names come from there too. This module applies it: acks first (a replayed result applies
nothing), then every op in order, all in the request's one LMDB transaction.

**Notify** is how a writer other than the module itself (``fanoctl seeds add``, ``comments add``: a
human) tells the module that its data changed, so that it plans at once instead of at its next planning
pass (a few real seconds, which on a scaled clock are many world minutes).

**Working data**: a put with ``working`` files the key in ``kv_expiry`` under ``now +
broker.working_retention``; a later put or delete of the key removes that entry first, so a put without
the flag keeps the record for good. Deletion is a housekeeping pass (services/broker/ops_retention.py),
bounded per pass, in the broker's own transaction: crash-safe like every other write. No event is
published for it (a module that had to know would not have marked the key working).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from services.broker import schema as S
from services.broker import states as st
from services.broker.ops_tasks import PAGE_BYTES, check_name, public, record_bytes, submit_task
from services.broker.tx import Tx
from shared.errors import ErrorCode, FanoError, bad_argument
from shared.stored import kv_item, stored_version
from shared.txn import MAX_KEY_BYTES, MAX_OPS, MAX_REASON_CHARS, MAX_UNUSABLE_CHARS, OPS


def _key(module: str, key: Any) -> bytes:
    if not isinstance(key, str) or not key or "\x00" in key or len(key.encode()) > MAX_KEY_BYTES:
        raise bad_argument(f"kv key must be a non-empty string of at most {MAX_KEY_BYTES} bytes without NUL")
    return S.kv_key(module, key)


def _version_ok(tx: Tx, module: str, op: dict[str, Any], index: int) -> dict[str, Any] | None:
    current: dict[str, Any] | None = tx.get("kv", _key(module, op["key"]))
    want = op.get("if_version")
    if want is None:
        return current
    if not isinstance(want, int) or isinstance(want, bool) or want < 0:
        raise bad_argument(f"ops[{index}].if_version must be a non-negative integer")
    have = current["v"] if current else 0
    if have != want:
        raise FanoError(ErrorCode.CONDITION_FAILED, f"ops[{index}] {op['op']} {op['key']!r}: version is {have}, "
                        f"expected {want}", {"index": index, "key": op["key"], "version": have})
    return current


def op_txn(tx: Tx, module: str, ops: list[Any]) -> dict[str, Any]:
    check_name(module, "module")
    if not ops or len(ops) > MAX_OPS:
        raise bad_argument(f"ops must hold 1..{MAX_OPS} operations")
    # acks first: a replayed result must not apply anything at all
    for i, op in enumerate(ops):
        if not isinstance(op, dict) or op.get("op") not in OPS:
            raise bad_argument(f"ops[{i}] must be a map with op in {'/'.join(OPS)}")
        if op["op"] == "ack":
            tid = op.get("task_id")
            if not isinstance(tid, int) or isinstance(tid, bool):
                raise bad_argument(f"ops[{i}].task_id must be an integer")
            if not isinstance(op.get("unusable", ""), str):
                raise bad_argument(f"ops[{i}].unusable must be a string")
            task = tx.task(tid)
            if task.get("consumed"):
                return {"applied": False, "reason": "already consumed", "task_id": tid}
            if task["state"] not in st.SETTLED:
                raise FanoError(ErrorCode.INVALID_STATE, f"ops[{i}]: task {tid} is {task['state']}; only DONE, "
                                "PARKED or CANCELLED tasks can be acked", {"index": i, "id": tid})
    results = []
    for i, op in enumerate(ops):
        kind = op["op"]
        if kind in ("put", "delete", "check"):
            unknown = set(op) - {"op", "key", "value", "if_version", "working"}
            if kind != "put" and "working" in op:
                unknown.add("working")
            if unknown:
                raise bad_argument(f"ops[{i}]: unknown field(s) {sorted(map(str, unknown))}")
            if not isinstance(op.get("working", False), bool):
                raise bad_argument(f"ops[{i}].working must be a boolean")
            current = _version_ok(tx, module, op, i)
            key = _key(module, op["key"])
            if current and current.get("exp") is not None and kind != "check":
                tx.delete("kv_expiry", S.expiry_key(current["exp"], key))  # replaced or deleted: not due any more
            if kind == "put":
                version = (current["v"] if current else 0) + 1
                record = {"v": version, "value": op.get("value")}
                if op.get("working") and tx.config.working_retention > 0:
                    record["exp"] = S.ms(tx.now + tx.config.working_retention)
                    tx.put_raw("kv_expiry", S.expiry_key(record["exp"], key), b"")
                tx.put("kv", key, record)
                results.append({"key": op["key"], "version": version})
            elif kind == "delete":
                results.append({"key": op["key"], "deleted": tx.delete("kv", key)})
            else:
                results.append({"key": op["key"], "version": current["v"] if current else 0})
        elif kind == "notify":
            reason = op.get("reason", "")
            if set(op) - {"op", "reason"} or not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS:
                raise bad_argument(f"ops[{i}]: notify takes only a reason (a string of at most "
                                   f"{MAX_REASON_CHARS} characters)")
            tx.emit("module.notify", module=module, reason=reason)
            results.append({"notified": True})
        elif kind == "submit":
            spec = op.get("task")
            if not isinstance(spec, dict):
                raise bad_argument(f"ops[{i}].task must be a map")
            out = submit_task(tx, spec, bool(op.get("force", False)))
            results.append({"id": out["task"]["id"], "created": out["created"], "requeued": out["requeued"],
                            "state": out["task"]["state"]})
        else:
            task = tx.task(op["task_id"])
            task["consumed"] = True
            if op.get("unusable") and task["state"] == st.DONE and not task.get("error"):
                # the provider answered but the module could not use the answer: say so on the task itself
                # (it stays DONE: nothing will re-run it; the module decides what to propose instead)
                task["error"] = {"class": "unusable", "message": op["unusable"][:MAX_UNUSABLE_CHARS],
                                 "at": tx.now, "module": module}
            tx.save(task)
            tx.file_compactable(task)  # its module now keeps what it needs: the body may go after retention
            tx.delete("unconsumed", S.unconsumed_key(task["module"], task["id"]))
            tx.emit("task.consumed", id=task["id"], module=task["module"], by=module)
            results.append({"acked": task["id"]})
    return {"applied": True, "results": results}


def op_kv_get(tx: Tx, module: str, key: str) -> dict[str, Any] | None:
    check_name(module, "module")
    rec = tx.get("kv", _key(module, key))
    return None if rec is None else {"key": key, "version": rec["v"], "value": rec["value"]}


def op_kv_scan(tx: Tx, module: str, prefix: str, after: str | None, limit: int,
               versions: bool = False) -> dict[str, Any]:
    """A page of the records under ``prefix`` in key order; ``next`` continues it. ``versions``: the items
    are ``[key, version]`` pairs, no values (a reader that keeps the records learns which changed, for a
    few bytes each: services/modules/store.py, KeptPrefix)."""
    check_name(module, "module")
    if not 1 <= limit <= 1000:
        raise bad_argument("limit must be in [1, 1000]", field="limit")
    base = S.kv_prefix(module)
    full_prefix = base + prefix.encode()
    cur = tx.cursor("kv")
    start = max(base + after.encode() + b"\x00", full_prefix) if after else full_prefix
    ok = cur.set_range(start)
    items, last, size, full = [], None, 0, False
    while ok and cur.key().startswith(full_prefix):
        key = bytes(cur.key())[len(base):].decode()
        stored = cur.value()
        if versions:
            items.append([key, stored_version(stored)])
            size += len(key) + 12
        else:
            # passed through as stored, never decoded here (shared/stored.py: kv_item; the reader inflates it)
            items.append(kv_item(key, stored))
            size += len(stored) + len(key) + 8
        last = key
        full = len(items) >= limit or size >= PAGE_BYTES   # a page of large values ends early (``next``)
        if full:
            break
        ok = cur.next()
    return {"items": items, "next": last if full else None}


def op_unconsumed(tx: Tx, module: str, after: int | None, limit: int) -> dict[str, Any]:
    """Settled tasks (DONE, PARKED, CANCELLED) of ``module`` whose result it has not acked yet, by id:
    what a restarted module still has to apply. ``{"tasks": [task without history], "next": id|null}``."""
    check_name(module, "module")
    if not 1 <= limit <= 1000:
        raise bad_argument("limit must be in [1, 1000]", field="limit")
    start = max(0, after or 0) + 1
    if start >= 2**64:
        return {"tasks": [], "next": None}
    prefix = S.kv_prefix(module)
    cur = tx.cursor("unconsumed")
    ok = cur.set_range(prefix + S.u64(start))
    tasks, size, full = [], 0, False
    while ok and cur.key().startswith(prefix) and not full:
        tasks.append(public(tx.task(S.from_u64(bytes(cur.key())[len(prefix):])), tx.mono, history=False))
        size += record_bytes(tasks[-1])
        full = len(tasks) >= limit or size >= PAGE_BYTES   # a page of long answers ends early (``next``)
        ok = cur.next()
    return {"tasks": tasks, "next": tasks[-1]["id"] if full else None}


# command -> handler(tx, **args) (services/broker/core.py dispatches)
HANDLERS: dict[str, Callable[..., Any]] = {"txn": op_txn, "kv_get": op_kv_get, "kv_scan": op_kv_scan,
                                           "unconsumed": op_unconsumed}
