"""Keeping accounts responsive: never every account in a deep turn at once while short work waits.

A deep turn takes minutes (ChatGPT Pro and Gemini Deep Think answer in 5-30 minutes; the soak models
2-20 world minutes), a standard one well under a minute. If every account is in a deep turn, an author's
comment, an operator's standard ``ask`` or any short research step waits for the first deep turn to end:
comments were addressed in 2-4 minutes at the 95th percentile of a soak where one standard turn takes
under two (issue 11's target is one turn's latency plus a minute).

So ``[scheduler] responsive_accounts`` (default 1) accounts are kept out of deep turns whenever they have
other work: an idle worker does not take a deep task (a task it would lease in deep mode) of a research
module while

* of the accounts that could answer quickly (a worker, not paused, and as far as the scheduler has
  learned from declined leases room for some waiting standard work), at least ``max(1, quick -
  responsive_accounts)`` *others* are in a deep turn (assigned or running one), and
* it could take a task in standard mode instead (a bin it admits in standard mode).

It never idles a worker: with nothing but deep work admitted, it takes the deep work. The operator's own
asks (module ``adhoc``) are never held back. Deep budgets are daily and small, so they are still spent:
the deep work waits for one of the other accounts' deep slots or for a moment without standard work.
0 turns the rule off.
"""
from __future__ import annotations

from services.scheduler.classes import candidate_modes, charge_modules
from services.scheduler.priority import DEEP, STANDARD
from services.scheduler.view import SchedulerView
from shared.config import ADHOC


def deep_accounts(assigned: dict, running: dict) -> set:
    """Accounts with a deep turn assigned (the mode the scheduler expects) or running (the leased mode)."""
    return ({a.account for a in assigned.values() if a.mode == DEEP}
            | {r.account for r in running.values() if r.mode == DEEP and r.account})


def hold_back(admits: dict, modes: dict, account: str, quick: set, in_deep: set, responsive: int) -> dict:
    """``admits`` (bin key -> module term) without the research bins ``account`` would run in deep mode,
    when the rule above says so; ``modes``: bin key -> the mode ``account`` would run it in; ``quick``: the
    accounts that could answer quickly; ``in_deep``: the accounts in a deep turn."""
    if responsive <= 0:
        return admits
    deep = [k for k in admits if modes.get(k) == DEEP and k[1] != ADHOC]
    if not deep or len(deep) == len(admits):
        return admits   # nothing deep to hold back, or nothing else to do: never idle a worker
    if not any(modes.get(k) != DEEP for k in admits):
        return admits
    if len((in_deep & quick) - {account}) < max(1, len(quick) - responsive):
        return admits
    return {k: v for k, v in admits.items() if k not in deep}


def admitted(view: SchedulerView, w, admits: dict, world: float) -> dict:
    """What idle worker ``w`` may take (``view``: the scheduler's state, services/scheduler/view.py):
    ``admits`` without deep research work while enough other accounts that could answer quickly are in
    deep turns (the rule above)."""
    keep = view.scfg.responsive_accounts
    if keep <= 0:
        return admits
    modes = {key: view.mode_for(w.account, w.modes, key[0], key[1], world) for key in admits}
    if not any(mode == DEEP and key[1] != ADHOC for key, mode in modes.items()):
        return admits   # nothing deep to hold back (hold_back's first test, before the costly part)
    # the accounts that could answer quickly: a worker, not paused, and room for some module's waiting
    # standard work (an account whose standard windows are used up cannot be the responsive one)
    shares = {m for key in view.table.queue.bins() for m in charge_modules(key[0], key[1])
              if STANDARD in candidate_modes(key[0])}
    quick = {x.account for x in view.workers if x.account and x.account not in view.accounts.paused
             and any(view.accounts.why_not(x.account, STANDARD, m, world) is None for m in shares)}
    return hold_back(admits, modes, w.account, quick, deep_accounts(view.table.assigned, view.table.running), keep)
