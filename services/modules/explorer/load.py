"""Work for every account with room: how many threads may be open, where a new one explores, who critiques.

A thread is strictly sequential (one turn in flight), so a fixed number of threads cannot keep a varying
number of accounts busy: with three accounts, three threads leave gaps whenever a thread waits on a slow
account, and an account whose only work is pinned elsewhere sits idle. The explorer therefore scales its
parallel work with the accounts that can take it, and steers new work to the accounts that lack it.

All choices are pure functions of a :class:`Load` snapshot (built by :meth:`.service.ExplorerService.load_view`
from the broker, plus, when it answers, the scheduler's read-only ``idle`` query) and of stored records;
what is chosen is written into the thread record in the transaction that submits the task, so a restarted
module re-derives everything from the broker (the scheduler is optional: without it ``idle`` is empty).

* **Thread slots** (:func:`active_cap`): ``max(max_active_threads, threads_per_account x explorer
  accounts with standard room)``, plus one for every account the scheduler reports idle while all the
  work that waits is pinned elsewhere; never more than ``max_threads``.
* **Where a new thread explores** (:func:`explore_targets`): its first turn is restricted
  (``requires.backends``, recorded as the thread's ``explore_on``) to one explorer account with room
  that explores fewer than ``threads_per_account`` open threads (an account reported idle: up to twice
  that): an idle one first, else the least loaded; no restriction when every account is at its share.
  (Should that account lose its room before the turn runs, the thread counts as waiting, not active.)
  Later turns follow the conversation (and may be handed off anywhere).
* **Who critiques** (:func:`route_critic`): "critique prefers a different backend from the one that
  explored" (docs/research.md § Explore and critique turns) is a preference. An account is *fit* for a
  critique when it has standard room and at most ``busy_backlog`` explorer tasks wait that only it can
  run. The critic stays where its conversation is while that account is fit; otherwise the next critique
  goes to the fit accounts other than the explorer's, or, when there are none, to any fit account (the
  explorer's included). Moving the critic starts a new critic conversation (``critic_conv`` + 1; the
  prompts quote the recent exchanges, so nothing is lost), since a conversation is bound to the account
  that served it.

Review seats are not moved for load (a panel keeps distinct models and never seats an account twice);
a slow account's backlog is answered by giving the fast accounts more threads.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from services.modules import capacity as CAP
from services.modules.explorer import model as M


@dataclass(frozen=True)
class Load:
    """What the accounts can take and how much explorer work each one alone can run."""
    cap: CAP.Capacity
    pinned: dict = field(default_factory=dict)   # account -> PENDING explorer tasks only it can run
    idle: tuple = ()                             # accounts idle while the waiting work is pinned elsewhere


def pinned_accounts(task: dict, threads_by_id: dict, accounts: list[str]) -> list[str]:
    """The accounts a PENDING explorer task may run on, from its requires and (for a turn in a bound
    conversation) its thread's record: the explore turn's account is ``explore_account``, the
    critique's ``critic_account`` (approximate after a hand-off; good enough to weigh load)."""
    req = task.get("requires") or {}
    conv = req.get("conversation") or ""
    thread = threads_by_id.get(M.task_thread_id(task))
    if conv and thread:
        held = thread.get("critic_account") if ":critic" in conv else thread.get("explore_account")
        if held and (":critic" not in conv or conv == M.conversation(thread["id"], True, thread.get("critic_conv", 0))):
            return [held]
    return CAP.task_accounts(task, accounts)


def pinned_counts(pending: dict, threads: list[dict], accounts: list[str]) -> dict:
    by_id = {t["id"]: t for t in threads if isinstance(t, dict) and "id" in t}
    out: dict = {}
    for task in pending.values():
        only = pinned_accounts(task, by_id, accounts)
        if len(only) == 1:
            out[only[0]] = out.get(only[0], 0) + 1
    return out


def starved(idle_rows, accounts: list[str]) -> tuple:
    """Accounts the scheduler reports idle while work waits, none of which it could take itself
    (every group is pinned elsewhere: bound, account, backends, no_mode, held)."""
    out = []
    for row in idle_rows or []:
        name = row.get("account") if isinstance(row, dict) else None
        groups = row.get("groups") or [] if isinstance(row, dict) else []
        if name in accounts and not any(g.get("reason") == "runnable" for g in groups if isinstance(g, dict)):
            out.append(name)
    return tuple(out)


def explorers(settings: M.ExplorerSettings, accounts: list[str]) -> list[str]:
    return [a for a in accounts if a in settings.explore_accounts] if settings.explore_accounts else list(accounts)


def active_cap(load: Load, settings: M.ExplorerSettings, accounts: list[str]) -> int:
    """How many open threads that can move may exist now (see the module docstring)."""
    if not load.cap.known:
        return settings.max_active_threads
    names = explorers(settings, accounts)
    with_room = load.cap.with_room(names, "standard")
    extra = sum(1 for a in load.idle if a in with_room)
    return min(settings.max_threads,
               max(settings.max_active_threads, settings.threads_per_account * len(with_room)) + extra)


def explore_counts(threads: list[dict]) -> dict:
    """Open threads per exploring account: the account holding the explore conversation, else the one
    account a thread's first turn is restricted to."""
    out: dict = {}
    for t in threads:
        if t.get("status") not in M.OPEN_THREAD:
            continue
        on = t.get("explore_on") or []
        acct = t.get("explore_account") or (on[0] if len(on) == 1 else None)
        if acct:
            out[acct] = out.get(acct, 0) + 1
    return out


def explore_targets(load: Load, threads: list[dict], settings: M.ExplorerSettings, accounts: list[str]) -> list[str]:
    """The accounts a new thread's first turn may run on; [] = no restriction (see the module docstring)."""
    if not load.cap.known or settings.threads_per_account <= 0:
        return []
    counts = explore_counts(threads)
    room = load.cap.with_room(explorers(settings, accounts), "standard")

    def share(a):
        return settings.threads_per_account * (2 if a in load.idle else 1)
    under = [a for a in room if counts.get(a, 0) < share(a)]
    if not under:
        return []
    # one account, so that successive new threads spread over the accounts (several would let the
    # fastest take them all); the idle ones first, then the least loaded, in configuration order
    return [min(under, key=lambda a: (a not in load.idle, counts.get(a, 0), room.index(a)))]


def fit(load: Load, account: str, settings: M.ExplorerSettings) -> bool:
    return load.cap.room(account, "standard") and load.pinned.get(account, 0) <= settings.busy_backlog


def route_critic(thread: dict, accounts: list[str], settings: M.ExplorerSettings, load: Load | None) -> dict:
    """The thread with its next critique routed: ``critic_on`` (the accounts it may run on, [] = any of
    the preferred ones :func:`.threads.critic_accounts` gives) and ``critic_conv`` (bumped, with
    ``critic_account`` cleared, when the critic moves off the account holding its conversation)."""
    if load is None or not load.cap.known:
        return thread
    from services.modules.explorer.threads import critic_accounts  # threads imports this module
    gen, held = int(thread.get("critic_conv") or 0), thread.get("critic_account")
    preferred = critic_accounts(dict(thread, critic_account=None), accounts, settings) or \
        [a for a in accounts if a != thread.get("explore_account")] or list(accounts)
    ok = [a for a in accounts if fit(load, a, settings)]
    if held and held in ok:
        return dict(thread, critic_on=[])   # the critic stays where its conversation is
    choice = [a for a in preferred if a in ok] or ok
    if not choice:
        return dict(thread, critic_on=[])   # nobody fit: wait where the preference says
    if held and held not in choice:
        return dict(thread, critic_on=choice, critic_conv=gen + 1, critic_account=None)
    return dict(thread, critic_on=choice)
