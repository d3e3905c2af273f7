"""How fast the explorer may spend on one seed: an hourly budget of threads and tasks per seed, and the
pause of a seed whose threads keep producing unusable answers (issue 16: one question seed whose answers
lacked the expected sections made 58 threads and 174 tasks in about 90 s before).

Pure functions of stored records and :class:`~.model.ExplorerSettings`; the service commits what they
return in the transaction that needs it. One record per seed, written only by the explorer module (and by
``fanoctl seeds resume``, which clears the pause), version-checked::

    pace/<seed_id>  {"seed_id",
                     "paused": bool, "pause_reason": str|None, "paused_at": float|None,
                     "window_start": float,   # world time the current hour of the task budget began
                     "tasks": int,            # tasks created for the seed since window_start
                     "held": {task key: world time it was held},   # proposed over budget, not created yet
                     "limit": int}            # max_tasks_per_seed_hour when last counted (for seeds ls)

Rules (settings of ``[modules.explorer]``):

* ``max_tasks_per_seed_hour`` — every explorer task belongs to a seed (through its thread or insight id);
  the submissions of one transaction are counted against the seed's current hour, and those beyond the
  budget are not created: their keys are remembered in ``held`` and the entity stays where it is. The
  repair pass re-derives every open step from stored state anyway; a held key is proposed again by it, and
  counted then, once the hour has room. Re-proposals of tasks that exist already are not counted.
* ``max_threads_per_seed_hour`` — a seed with that many threads started in the last hour gets no new one
  (counted from the threads' ``created_at``); neither does a seed whose task budget is used up.
* ``seed_pause_after`` — when a thread is paused because its answers stayed unusable after every re-ask,
  and that makes ``seed_pause_after`` threads of its seed paused that way, the seed is paused: no new
  thread starts until ``fanoctl seeds resume ID``. 0 turns the pause off.

Seed ids cannot contain ``.``; thread ids are ``<seed>.t<n>`` and insight ids ``<thread>.i<n>``, so the
seed of a task is the part of its payload's ``thread_id`` or ``insight_id`` before the first dot.
"""
from __future__ import annotations

import time

from shared import txn

HOUR = 3600.0
HELD_TTL = 86400.0   # a held key whose step moved on (its thread paused, its review decided) is forgotten


PACE_CHECK = "pace_check"


def pace_check(thread: dict) -> dict:
    """A marker among an effect's ops: this thread was just paused by unusable answers, so its seed may
    have to pause too. Not a broker op: the service resolves it into the seed's pace record (a version-
    checked put, shared/txn.py) before the transaction is sent (:func:`paced`)."""
    return {"op": PACE_CHECK, "seed_id": thread["seed_id"], "thread": thread}


def pace_key(seed_id: str) -> str:
    return f"pace/{seed_id}"


def seed_of_task(spec: dict) -> str | None:
    """The seed a task spec (or task) belongs to; None when it names no thread or insight."""
    payload = spec.get("payload")
    if not isinstance(payload, dict):
        return None
    ident = payload.get("thread_id") or payload.get("insight_id")
    return ident.split(".", 1)[0] if isinstance(ident, str) and ident else None


def current(record: dict | None, seed_id: str, now: float) -> dict:
    """The seed's pace record as of ``now``: a new hour starts the task count again."""
    rec = dict(record) if isinstance(record, dict) else {"seed_id": seed_id, "paused": False,
                                                          "pause_reason": None, "paused_at": None}
    held = rec.get("held")
    if not isinstance(held, dict):
        held = {}
    rec["held"] = {k: at for k, at in held.items() if isinstance(at, (int, float)) and now - at < HELD_TTL}
    start = rec.get("window_start")
    if not isinstance(start, (int, float)) or now - start >= HOUR or now < start:
        rec.update(window_start=now, tasks=0)
    return rec


def room(rec: dict, limit: int) -> int:
    """Tasks the seed may still get this hour (``limit`` 0: no budget)."""
    return 1 << 30 if limit <= 0 else max(0, limit - int(rec.get("tasks", 0)))


def ration(rec: dict, keys: list[str], limit: int, now: float) -> tuple[set[str], set[str]]:
    """Split the keys of one transaction's new submissions into (created now, held), updating ``rec``."""
    n = room(rec, limit)
    take, hold = set(keys[:n]), set(keys[n:])
    rec["limit"] = limit
    rec["tasks"] = int(rec.get("tasks", 0)) + len(take)
    held = {k: at for k, at in rec["held"].items() if k not in take}
    held.update({k: rec["held"].get(k, now) for k in hold})
    rec["held"] = held
    return take, hold


def budget_note(rec: dict, limit: int) -> str:
    """Why tasks of the seed wait, for ``seeds ls`` and the log."""
    until = time.strftime("%H:%M UTC", time.gmtime(rec.get("window_start", 0) + HOUR))
    return (f"{len(rec.get('held') or {})} task(s) wait for the seed's hourly budget (max_tasks_per_seed_hour = "
            f"{limit}) until {until}")


def threads_this_hour(threads: list[dict], seed_id: str, now: float) -> int:
    return sum(1 for t in threads if t.get("seed_id") == seed_id and now - (t.get("created_at") or 0) < HOUR)


def blocked_seeds(seeds: list[dict], threads: list[dict], paces: dict[str, dict], settings, now: float) -> dict:
    """{seed id: why no new thread may start on it now}: paused, or over an hourly budget."""
    out = {}
    for seed in seeds:
        sid = seed.get("id")
        if not isinstance(sid, str):
            continue   # not a seed (every stored seed has its id)
        rec = current(paces.get(sid), sid, now)
        if rec.get("paused"):
            out[sid] = rec.get("pause_reason") or "paused"
        elif settings.max_threads_per_seed_hour > 0 and \
                threads_this_hour(threads, sid, now) >= settings.max_threads_per_seed_hour:
            out[sid] = (f"{settings.max_threads_per_seed_hour} threads started in the last hour "
                        "(max_threads_per_seed_hour)")
        elif room(rec, settings.max_tasks_per_seed_hour) == 0:
            out[sid] = budget_note(rec, settings.max_tasks_per_seed_hour)
    return out


def failed_threads(threads: list[dict], seed_id: str) -> list[dict]:
    """The seed's threads that are paused because their answers stayed unusable."""
    return [t for t in threads if t.get("seed_id") == seed_id and t.get("status") == "paused"
            and t.get("paused_by") == "unusable answers"]


def pause(rec: dict, threads: list[dict], now: float) -> dict:
    """Pause the seed (``rec``) after its threads ``threads`` were paused by unusable answers."""
    last = threads[-1] if threads else {}
    reason = (f"{len(threads)} thread(s) paused by unusable answers ({', '.join(t['id'] for t in threads)}; "
              f"last: {str(last.get('pause_reason') or '')[:200]}); no new thread until "
              f"`fanoctl seeds resume {rec['seed_id']}`")
    return dict(rec, paused=True, pause_reason=reason, paused_at=now)


def paced(env, ops: list) -> list:
    """``ops`` with the submissions over their seed's hourly budget left out (held: the repair pass
    proposes them again when the hour has room), ``pace_check`` markers resolved (the seed is paused
    when enough of its threads are paused by unusable answers), and each touched seed's pace record
    written, version-checked, in the same transaction. ``env`` is a :class:`.context.Env` (its store,
    settings, world time and log)."""
    now, s = env.now, env.settings
    marks = [o for o in ops if o.get("op") == PACE_CHECK]
    ops = [o for o in ops if o.get("op") != PACE_CHECK]
    keys: dict[str, list[str]] = {}
    for o in ops:
        sid = seed_of_task(o["task"]) if o.get("op") == "submit" else None
        if sid:
            keys.setdefault(sid, []).append(o["task"]["key"])
    touched = set(keys) | {m["seed_id"] for m in marks}
    held, writes, threads = set(), [], None
    for sid in sorted(touched):
        version, stored = env.store.get(pace_key(sid))
        rec = current(stored, sid, now)
        if sid in keys:
            _, hold = ration(rec, keys[sid], s.max_tasks_per_seed_hour, now)
            if hold:
                held |= hold
                env.log.warning("seed %s: %s (%s)", sid, budget_note(rec, s.max_tasks_per_seed_hour),
                                ", ".join(sorted(hold)))
        mine = [m["thread"] for m in marks if m["seed_id"] == sid]
        if mine and s.seed_pause_after > 0 and not rec.get("paused"):
            threads = env.values("threads/") if threads is None else threads
            latest = {t["id"]: t for t in threads} | {t["id"]: t for t in mine}
            failed = failed_threads(sorted(latest.values(), key=lambda t: t.get("created_at") or 0), sid)
            if len(failed) >= s.seed_pause_after:
                rec = pause(rec, failed, now)
                env.log.warning("seed %s paused: %s", sid, rec["pause_reason"])
        if rec != stored:
            writes.append(txn.put(pace_key(sid), rec, if_version=version))
    return [o for o in ops if not (o.get("op") == "submit" and o["task"]["key"] in held)] + writes
