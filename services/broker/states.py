"""Task states and the allowed transitions (docs/tasks.md § Task states). Pure data, checked by every state change.

=========  =========  ===========================================================================
from       to         when
=========  =========  ===========================================================================
(new)      PENDING    submitted
PENDING    RUNNING    leased to a worker (attempt +1, quota reserved, same transaction)
RUNNING    DONE       result committed with the current epoch
RUNNING    PENDING    retryable failure or lease expiry (backoff via not_before); quota refusal
                      (no attempt burned); auth failure (account paused, no attempt burned)
RUNNING    PARKED     attempts exhausted or terminal error
PENDING    PARKED     attempts exhausted (e.g. by operator retry limits)
PENDING    PAUSED     operator pause (RUNNING is paused when its lease ends: pause_requested)
RUNNING    PAUSED     lease ended (failure/expiry) while a pause was requested
PAUSED     PENDING    operator resume
PENDING    CANCELLED  operator cancel
RUNNING    CANCELLED  operator cancel (the lease is void; the worker's late result is rejected)
PAUSED     CANCELLED  operator cancel
PARKED     PENDING    operator retry, or a forced / late resubmission of the same key
PARKED     CANCELLED  operator cancel of a dead letter
=========  =========  ===========================================================================

DONE and CANCELLED are final.
"""
from __future__ import annotations

PENDING = "PENDING"
RUNNING = "RUNNING"
DONE = "DONE"
PARKED = "PARKED"
PAUSED = "PAUSED"
CANCELLED = "CANCELLED"

STATES = (PENDING, RUNNING, DONE, PARKED, PAUSED, CANCELLED)
LIVE = frozenset({PENDING, RUNNING})
FINAL = frozenset({DONE, CANCELLED})
SETTLED = frozenset({DONE, PARKED, CANCELLED})  # a module may consume (ack) a task in these
# task retention compacts these once acked; never PARKED: an operator may still retry a dead letter
COMPACTABLE = frozenset({DONE, CANCELLED})

TRANSITIONS: dict[str | None, frozenset[str]] = {
    None: frozenset({PENDING}),
    PENDING: frozenset({RUNNING, PARKED, PAUSED, CANCELLED}),
    RUNNING: frozenset({DONE, PENDING, PARKED, PAUSED, CANCELLED}),
    PAUSED: frozenset({PENDING, CANCELLED}),
    PARKED: frozenset({PENDING, CANCELLED}),
    DONE: frozenset(),
    CANCELLED: frozenset(),
}

ERROR_CLASSES = ("transient", "quota", "auth", "terminal", "unknown")


def allowed(src: str | None, dst: str) -> bool:
    return dst in TRANSITIONS.get(src, frozenset())
