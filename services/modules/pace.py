"""How fast the documenter and the researcher may spend (issue 16: a module must bound its own reaction
to unusable answers): an hourly budget of the tasks a module creates, and the pause of a kind of work
whose answers keep being unusable.

Pure functions over two small records that the module writes, version-checked, in the transaction that
needs them (shared/txn.py); the explorer has its per-seed equivalent (services/modules/explorer/pacing.py).

**The hourly budget** — one record per module, ``pace/hour``::

    {"window_start": float,   # world time the current hour began
     "tasks": int,            # tasks the module created since then (every submission it made)
     "limit": int}            # the budget when last counted (for the status views)

Every transaction of the module that submits tasks counts them (:func:`count`); *new* work — a planning
turn, a section review, a comment, a batch of questions, a fetch whose page is evaluated — starts only
while the hour has room (:func:`room`). The steps of work already started (a pipeline's evaluation, draft
and exposition; a fetched source's evaluations and extraction) are counted, never held: holding them
would strand the work half done, and they are bounded by what started them (``max_active`` pipelines,
``evaluations`` + 1 per source).

**A pause after unusable answers** — a streak record kept in the state of that kind of work::

    {"failures": int,              # unusable answers in a row
     "paused": bool, "pause_reason": str|None, "paused_at": float|None}

:func:`failed` counts one more and pauses at ``pause_after`` with a reason naming the command that
resumes it; :func:`succeeded` ends the streak; :func:`resume` (the operator) clears the pause.
"""
from __future__ import annotations

import time

from shared import txn

HOUR = 3600.0
HOUR_KEY = "pace/hour"
STREAK = ("failures", "paused", "pause_reason", "paused_at")   # the streak's fields in a state record


# --- the hourly budget -------------------------------------------------------------------------------

def current(record: dict | None, now: float) -> dict:
    """The budget record as of ``now``: a new hour starts the count again."""
    rec = dict(record) if isinstance(record, dict) else {}
    start = rec.get("window_start")
    if not isinstance(start, (int, float)) or now - start >= HOUR or now < start:
        rec.update(window_start=now, tasks=0)
    rec["tasks"] = int(rec.get("tasks") or 0)
    return rec


def room(rec: dict, limit: int) -> int:
    """Tasks the module may still create this hour (``limit`` 0: no budget)."""
    return 1 << 30 if limit <= 0 else max(0, limit - int(rec.get("tasks", 0)))


def count(rec: dict, n: int, limit: int) -> dict:
    """``rec`` with ``n`` more tasks created."""
    return dict(rec, tasks=int(rec.get("tasks", 0)) + n, limit=limit)


def submissions(ops: list) -> int:
    """How many tasks a transaction's ops create."""
    return sum(1 for o in ops if isinstance(o, dict) and o.get("op") == "submit")


def charge(store, ops: list, limit: int, now: float, new_work: bool) -> tuple[list | None, dict | None]:
    """``(ops, hour)``: ``ops`` with the hour's task count (``HOUR_KEY`` in ``store``, the module's own
    namespace) updated in the same transaction, version-checked; ``(None, hour)`` when ``new_work`` has no
    room for its tasks this hour (the next pass proposes it again). ``hour`` is None when ``ops`` submit
    nothing (then they are returned as they are)."""
    n = submissions(ops)
    if not n:
        return ops, None
    version, stored = store.get(HOUR_KEY)
    rec = current(stored, now)
    if new_work and room(rec, limit) < n:
        return None, rec
    return ops + [txn.put(HOUR_KEY, count(rec, n, limit), if_version=version)], rec


def budget_note(rec: dict, limit: int, setting: str) -> str | None:
    """Why new work waits (for the status views and the log), or None when the hour has room."""
    if room(rec, limit) > 0:
        return None
    until = time.strftime("%H:%M UTC", time.gmtime(float(rec.get("window_start", 0)) + HOUR))
    return f"{rec.get('tasks', 0)} tasks created this hour ({setting} = {limit}); new work waits until {until}"


# --- a pause after unusable answers ------------------------------------------------------------------

def failed(streak: dict | None, error: str, pause_after: int, what: str, resume: str, now: float) -> dict:
    """The streak after one more unusable answer to ``what``; paused (with the reason, naming the
    ``resume`` command) once ``pause_after`` are in a row (0: never)."""
    s = dict(streak) if isinstance(streak, dict) else {}
    failures = int(s.get("failures") or 0) + 1
    s["failures"] = failures
    s.setdefault("paused", False)
    if pause_after > 0 and failures >= pause_after and not s.get("paused"):
        last = " ".join(error.split())[:200]
        s.update(paused=True, paused_at=now, pause_reason=f"{failures} unusable answers in a row to {what} "
                                                          f"(last: {last}); paused until `{resume}`")
    return s


def succeeded(streak: dict | None) -> dict:
    """The streak after a usable answer: no failures in a row (a pause stays until resumed)."""
    s = dict(streak) if isinstance(streak, dict) else {}
    s["failures"] = 0
    return s


def resume(streak: dict | None) -> dict:
    """The streak after the operator resumed the work: a new start."""
    s = dict(streak) if isinstance(streak, dict) else {}
    s.update(failures=0, paused=False, pause_reason=None, paused_at=None)
    return s


def paused(streak: dict | None) -> str | None:
    """The pause reason, or None when the work is not paused."""
    if isinstance(streak, dict) and streak.get("paused"):
        return str(streak.get("pause_reason") or "paused")
    return None
