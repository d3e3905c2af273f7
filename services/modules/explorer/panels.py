"""Following capacity: thread slots, and panel members blocked past patience.

Pure functions over an :class:`~.context.Env` and one :class:`Pass` (the accounts' headroom, the
explorer's PENDING tasks, the backlogged accounts): each step yields :class:`Move` records, and the service
commits each (a paced transaction), then cancels the tasks it abandons, before the step reads on.

What the accounts can take is read from the broker on each pass (:mod:`services.modules.capacity`);
what the module decides is written into its own records in one transaction with the tasks it submits,
so a restarted module re-derives everything from the broker:

* **Thread slots** (:func:`waiting_threads`): an open thread whose every PENDING task can only run on
  accounts without room for it (an explore turn's conversation bound to an account out of quota, say)
  is *waiting*, and so is one whose tasks can only run on *backlogged* accounts (more than
  ``busy_backlog`` explorer tasks wait that only they can run: a thread behind the slowest account's
  queue must not keep the fast ones without work); the active-thread cap (:func:`.load.active_cap`:
  ``threads_per_account`` per account with room, at least ``max_active_threads``, at most
  ``max_threads``) counts the others, so new seeds get threads on the accounts with room;
  ``max_waiting_threads`` bounds how many waiting ones are held beside them.
* **Review seats** (:func:`replace_reviewers`): a reviewer's task (any round, a round-3 speaker or voter)
  PENDING for ``member_patience`` world seconds while its account has no room for the mode the step
  needs goes to an account with room that no other seat counted in the step uses (a seat left out
  earlier frees its account; a seat on an account that is *backlogged* while another account with room
  is not counts as blocked too, but is only moved, never left out; :func:`.review.replace_member`: the seat keeps
  its name, its earlier answers and its place; its account and task key change, recorded in the seat's
  ``replaced`` and the review's ``replacements``); without such an account the seat is left out of the
  step if two reviewers stay, else the step waits.
* **Extraction members** (:func:`skip_extractors`): an extractor blocked (or backlogged) the same way is settled as
  ``"skipped"`` (noted in ``extraction_note``) while another member is done or still in play; the panel
  consolidates what the others proposed.

The abandoned task is then cancelled (and again on a later pass if the module died first: its id is in
the record). Should it have run anyway, its answer no longer matches what the entity waits for (a new key)
and is acked as stale: applied once or ignored, never counted twice.
"""
from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field

from services.modules import capacity as CAP
from services.modules.explorer import context as C
from services.modules.explorer import load as L
from services.modules.explorer import model as M
from services.modules.explorer import review as R
from services.modules.explorer import threads as T
from services.modules.explorer.flow import OPEN_REVIEW

STEP_DEEP = {"round1": None, "round2": "review2", "round3_minority": "review3", "round3_majority": "review3",
             "round3_vote": "review3"}


@dataclass(frozen=True)
class Pass:
    """What one capacity-following pass looks at, read once by the service."""
    cap: CAP.Capacity
    pending: dict                     # task key -> the explorer's PENDING task
    busy: frozenset = frozenset()     # backlogged accounts that count as blocking this pass (:func:`blocked`)
    patient: list | None = None       # the PENDING tasks waited out and not yet looked at; None: a full pass


@dataclass(frozen=True)
class Move:
    """One step's decision: the ops of one transaction (None: nothing to commit), the task ids to cancel
    once it committed (at once when ``ops`` is None) and why, and the log line for it."""
    ops: list | None
    what: str = ""
    cancel: list = field(default_factory=list)
    why: str = ""
    done: str = ""


# --- thread slots -----------------------------------------------------------------------------------------

def waiting_threads(threads: list[dict], cap: CAP.Capacity, pending: dict, busy=frozenset()) -> set[str]:
    """Ids of the open threads that wait only on accounts without room for their tasks, or backlogged
    (``busy``: more than ``busy_backlog`` explorer tasks wait that only they can run, :mod:`.load`)."""
    by_thread: dict[str, list] = {}
    for task in pending.values():
        tid = M.task_thread_id(task)
        if tid is not None:
            by_thread.setdefault(tid, []).append(task)
    names = list(cap.modes)
    by_id = {t["id"]: t for t in threads}
    out = set()
    for thread in threads:
        tasks = by_thread.get(thread["id"])
        if thread.get("status") not in M.OPEN_THREAD or not tasks:
            continue   # running or between steps: it moves
        # a bound turn's account from the thread's record (it follows a hand-off): no read per task
        if not any(cap.serves(t, [a for a in L.pinned_accounts(t, by_id, names) if a not in busy])
                   for t in tasks):
            out.add(thread["id"])
    return out


def thread_room(settings: M.ExplorerSettings, open_: list[dict], active: int, room_now: bool,
                waiting_ids: set[str]) -> int:
    """How many new threads may start beside the ``open_`` ones when ``active`` may move at once and
    ``max_waiting_threads`` more may wait (``room_now``: some explorer account has room; ``waiting_ids``:
    :func:`waiting_threads`)."""
    if not room_now:
        return 0   # no explorer account has room: a new thread would only wait too
    waiting = len(waiting_ids & {t["id"] for t in open_})
    return max(0, min(active - (len(open_) - waiting), active + settings.max_waiting_threads - len(open_)))


# --- panel members blocked past patience ------------------------------------------------------------------

def followed(env: C.Env, p: Pass, owner, key, full) -> Iterator[tuple[str, int, object]]:
    """(key, version, record) of the records this pass looks at: those whose id ``owner(task)`` gives
    for a waited-out PENDING task (the tasks are listed without payloads: their keys name their thread
    or insight), or on a full pass what ``full(env, p)`` gives."""
    if p.patient is None:
        yield from full(env, p)
        return
    yield from by_key(env, key, {i for t in p.patient if isinstance(i := owner(t), str)})


def by_key(env: C.Env, key, idents) -> Iterator[tuple[str, int, object]]:
    for ident in sorted(idents):
        version, record = env.store.get(key(ident))
        yield key(ident), version, record


def every_thread(env: C.Env, _p: Pass) -> Iterator[tuple[str, int, object]]:
    return iter(env.items("threads/"))


def reviews_that_matter(env: C.Env, p: Pass) -> Iterator[tuple[str, int, object]]:
    """The reviews a full pass looks at: of a pending insight (only those can be open) or named by a
    PENDING task (a seat replaced before a crash, whose old task is still to be cancelled). Reading every
    review ever held made each full pass cost the research's whole history."""
    idents = {i for t in p.pending.values() if isinstance(i := M.task_insight_id(t), str)}
    idents.update(env.pending_insight_ids())
    return by_key(env, M.review_key, idents)


def blocked(env: C.Env, p: Pass, task: dict | None, account: str) -> bool:
    """``task`` has waited ``member_patience`` for ``account``, which has no room for it or is
    *backlogged* (``p.busy``: the task would wait behind that account's queue while others idle)."""
    return (task is not None and CAP.waited(task, env.now) >= env.settings.member_patience
            and (not p.cap.serves(task, [account]) or account in p.busy))


def why_blocked(env: C.Env, p: Pass, account: str, mode: str) -> str:
    if account in p.busy and p.cap.serves({"requires": {"mode": mode}}, [account]):
        return (f"{account} backlogged past member_patience: more than {env.settings.busy_backlog} "
                "explorer tasks wait that only it can run")
    return f"{account} blocked past member_patience: {p.cap.reason(account, mode)}"


def skip_extractors(env: C.Env, p: Pass) -> Iterator[Move]:
    for _key, version, thread in followed(env, p, M.task_thread_id, M.thread_key, every_thread):
        if not isinstance(thread, dict):
            continue
        yield Move(None, cancel=list((thread.get("panel_skipped") or {}).values()), why="extraction member skipped")
        if C.effective_status(thread) != "synthesised" or thread.get("panel_closed"):
            continue
        waiting = [a for a in thread["panel"] if a not in thread["panel_settled"]]
        for acct in waiting:
            task = p.pending.get(M.thread_task_key(thread["id"], f"extract:{acct}",
                                                   thread.get("panel_retries", {}).get(acct, 0)))
            others = [a for a in waiting if a != acct] + [a for a, v in thread["panel_settled"].items()
                                                          if v == "done"]
            if task is None or not blocked(env, p, task, acct) or not others:
                continue
            why = why_blocked(env, p, acct, "standard")
            now, ops = env.now, C.Ops()
            new = copy.deepcopy(thread)
            new["panel_settled"][acct] = "skipped"
            new.setdefault("panel_skipped", {})[acct] = task["id"]
            earlier = thread.get("extraction_note")
            new["extraction_note"] = (f"{earlier}; " if earlier else "") + why
            new["updated_at"] = now
            if all(a in new["panel_settled"] for a in new["panel"]):
                new = C.close_panel(env, new, ops, now)
            C.put_thread(thread, new, version, ops)
            yield Move(ops.ops, f"skip extractor {acct} of {thread['id']}", [task["id"]], why,
                       f"thread {thread['id']}: extraction by {acct} skipped ({why})")
            break   # the thread changed: the next pass looks at its other members


def step_candidates(env: C.Env, cap: CAP.Capacity, step: str, ctx: R.Ctx) -> list[str]:
    """Accounts with room for a review step's mode (deep where the step asks for it and the account has it)."""
    deep_step = STEP_DEEP.get(step)
    out = []
    for acct in env.configured_accounts():
        requires = R._deep(ctx, acct, deep_step) if deep_step else {}
        if cap.serves({"requires": requires}, [acct]):
            out.append(acct)
    return out


def replace_reviewers(env: C.Env, p: Pass) -> Iterator[Move]:
    ctx, cap = env.review_ctx(), p.cap
    for _key, vr, review in followed(env, p, M.task_insight_id, M.review_key, reviews_that_matter):
        if not isinstance(review, dict):
            continue
        yield Move(None, cancel=[r["task_id"] for r in review.get("replacements") or [] if r.get("task_id")],
                   why="review seat replaced")
        if review.get("stage") not in OPEN_REVIEW:
            continue
        vi, insight = env.store.get(M.insight_key(review["insight_id"]))
        if not insight or insight.get("status") != "pending":
            continue
        for spec in R.open_tasks(review, insight, ctx):
            task = p.pending.get(spec["key"])
            backends = (spec.get("requires") or {}).get("backends") or []
            if len(backends) != 1 or task is None or not blocked(env, p, task, backends[0]):
                continue
            task = CAP.with_payload(env.store.client, task)   # its payload names the seat
            if task is None:
                continue   # settled meanwhile
            step, _ = R.seat_of(review, task)
            why = why_blocked(env, p, backends[0], CAP.task_modes(task)[0])
            candidates = [a for a in step_candidates(env, cap, step, ctx) if a not in p.busy]
            new_review, new_insight = copy.deepcopy(review), copy.deepcopy(insight)
            tasks = R.replace_member(new_review, new_insight, task, candidates, why, ctx)
            if tasks is None or (new_review["replacements"][-1]["to"] is None and cap.serves(task, backends)):
                continue   # a merely backlogged seat moves but is never left out (that is for no room)
            ops = C.review_ops(review["insight_id"], new_review, vr, new_insight, insight, vi, tasks)
            last = new_review["replacements"][-1]
            yield Move(ops, f"replace a reviewer of {review['insight_id']}", [task["id"]], why,
                       f"insight {review['insight_id']}: {step} seat {last['reviewer']}: {last['from']} -> "
                       f"{last['to'] or 'left out'} ({why})")
            break   # the review changed: the next pass looks at its other seats


def retarget_first_turns(env: C.Env, p: Pass) -> Iterator[Move]:
    """A new thread's first turn is restricted to one account (``explore_on``, :mod:`.load`); should
    that account lose its room (its window used up, say, for hours) before the turn runs, the turn
    moves once it has waited ``member_patience``: to another account with a free share, or to any
    account (``explore_on`` cleared), under a new key (``first_turn_moves``); the old task is cancelled."""
    for _key, version, thread in followed(env, p, M.task_thread_id, M.thread_key, every_thread):
        if not isinstance(thread, dict) or C.effective_status(thread) != "active" or thread.get("exchanges"):
            continue
        on = thread.get("explore_on") or []
        task = p.pending.get(M.thread_turn_key(thread, 1))
        if len(on) != 1 or task is None or not blocked(env, p, task, on[0]):
            continue
        threads = [t for t in env.values("threads/") if t.get("id") != thread["id"]]
        targets = [a for a in L.explore_targets(env.load(threads), threads, env.settings,
                                                env.configured_accounts()) if a != on[0]]
        new = dict(thread, explore_on=targets, first_turn_moves=int(thread.get("first_turn_moves") or 0) + 1,
                   updated_at=env.now)
        ops = C.Ops()
        ops.submit(T.turn_task(new, 1, env.values("seeds/"), [], env.configured_accounts(), env.settings))
        C.put_thread(thread, new, version, ops)
        why = why_blocked(env, p, on[0], "standard")
        yield Move(ops.ops, f"move the first turn of {thread['id']}", [task["id"]], why,
                   f"thread {thread['id']}: first turn moved off {on[0]} ({why})")
