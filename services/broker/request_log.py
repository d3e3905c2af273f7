"""What the request log keeps of a reply, so that a task's prompt is not stored once more per request.

The broker answers a retried request (same request id) from its request log (``requests``, pruned after
``broker.request_log_ttl``). ``submit`` and ``lease`` replies carry the task, and with it its payload:
the rendered prompt, several KB, already stored in the task record. Logged whole, every prompt would sit
in the database two more times for a day. So the log keeps such a reply with the payload cut out and a
reference to the task; a replay puts the task's payload back. A payload never changes after submission,
so the replayed reply is the reply that was sent; only a task compacted by task retention in between
(retention far longer than the request log's TTL) would come back without it, as ``get`` shows it.

Record in ``requests`` (schema.py): ``{"ts", "fp", "reply": packed reply, "payload_of": task id}``,
``payload_of`` only when the payload was cut.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from services.broker import schema as S
from shared import protocol

if TYPE_CHECKING:
    from services.broker.tx import Tx


def entry(result: Any, packed: bytes, now: float, fp: bytes) -> dict[str, Any]:
    """The ``requests`` record for a reply (``packed`` is ``result`` encoded, as sent)."""
    task = result.get("task") if isinstance(result, dict) else None
    if isinstance(task, dict) and task.get("payload") and isinstance(task.get("id"), int):
        slim = dict(result, task=dict(task, payload=None))
        return {"ts": now, "fp": fp, "reply": protocol.pack_value(slim), "payload_of": task["id"]}
    return {"ts": now, "fp": fp, "reply": packed}


def replay(tx: Tx, record: dict[str, Any]) -> bytes:
    """The packed reply to send again for a logged request."""
    tid = record.get("payload_of")
    if tid is None:
        reply: bytes = record["reply"]
        return reply
    result = protocol.unpack_value(record["reply"])
    task = tx.get("tasks", S.u64(tid)) or {}
    result["task"]["payload"] = task.get("payload")
    return protocol.pack_value(result)
