"""What the accounts can take now, as one research module sees it: read only, from the broker.

A module never asks the scheduler and keeps no memory of its own between passes: it reads the broker's
``quota_show`` (the same reply ``fanoctl quota show`` prints) and derives, for every (account, mode),
whether a task of *this* module could be leased there now, and if not, until when and why:

* a paused account (``fanoctl backends pause``, or an auth failure) is blocked until someone resumes it
  (``until = inf``);
* a cool-down in force (a provider's 429, "limit reached until 2:56 PM"; the mode's own or the
  account-wide ``"*"``) blocks until it ends;
* a quota window in which the module has no headroom left (:func:`shared.quota.headroom`: the window's
  limit minus what was used minus the other modules' unused reserves) blocks until that window's
  ``resets_at`` (a calendar reset, or for a rolling window when its oldest counted request leaves it);
* an account that does not offer the mode (``modes`` in its ``[accounts]`` table) never serves it.

Everything else has room. The view is a snapshot; modules use it for *choices* (which accounts sit on a
new panel, whether a waiting thread holds a slot, whether a panel member has waited too long), record
what they chose in their own entities, and read it again on the next pass, so a restarted module makes
the same kind of choice from the broker's state alone. When ``quota_show`` is refused the view is
:meth:`Capacity.unknown` (every account has room): the module then behaves as it did without it.

:func:`pending` lists a module's PENDING tasks (a pass reads them without payloads, and
:func:`with_payload` only for a task it moves). :func:`task_accounts` names the accounts a PENDING task
could run on (its conversation's account, else ``requires.backends``, else any) and
:meth:`Capacity.serves` whether any of them has room for the mode it asks for (a deep task with
``deep_fallback`` also in standard mode).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from shared import quota as Q
from shared.errors import BrokerUnavailable, ErrorCode, FanoError

INF = math.inf
PAGE = 500


@dataclass(frozen=True)
class Capacity:
    module: str
    now: float
    modes: dict                                   # account -> modes it offers (configuration order kept)
    blocked: dict = field(default_factory=dict)   # (account, mode) -> (until, reason); absent = room now
    known: bool = True                            # False: the broker did not say (everything has room)

    # --- building -----------------------------------------------------------------------------------

    @classmethod
    def from_quota(cls, shown: dict, module: str, modes: dict, now: float) -> Capacity:
        """The view of ``module`` from a ``quota_show`` reply (shape in README "quota show --json")."""
        blocked: dict = {}

        def block(account, mode, until, reason):
            old = blocked.get((account, mode))
            if old is None or until > old[0]:   # the longest reason wins: that is how long it lasts
                blocked[(account, mode)] = (until, reason)

        for acct in shown.get("accounts") or []:
            name = acct.get("account")
            if name not in modes:
                continue
            if acct.get("paused"):
                for mode in modes[name]:
                    block(name, mode, INF, f"paused: {acct.get('pause_reason') or 'by the operator'}")
            for scope, cd in (acct.get("cooldowns") or {}).items():
                until = float(cd.get("until") or 0.0)
                if until > now:
                    for mode in (modes[name] if scope == "*" else [scope]):
                        block(name, mode, until, f"cooling down: {cd.get('reason') or 'provider limit'}")
        for q in shown.get("quotas") or []:
            name, mode = q.get("account"), q.get("mode")
            if name not in modes:
                continue
            for w in q.get("windows") or []:
                window = {"limit": int(w.get("limit") or 0), "reserves": w.get("reserves") or {}}
                if Q.headroom(window, int(w.get("used") or 0), w.get("by_module") or {}, module) >= 1:
                    continue
                until = w.get("resets_at")
                block(name, mode, float(until) if until is not None else INF,
                      f"{module} has no {mode} quota left in {w.get('spec') or 'a window'}")
        return cls(module, now, dict(modes), blocked)

    @classmethod
    def unknown(cls, module: str, modes: dict, now: float) -> Capacity:
        return cls(module, now, dict(modes), {}, known=False)

    @classmethod
    def read(cls, client, module: str, modes: dict, now: float, log=None) -> Capacity:
        """Ask the broker; an unavailable broker propagates (the module's loop retries), any other refusal
        gives :meth:`unknown`."""
        try:
            return cls.from_quota(client.quota_show(), module, modes, now)
        except BrokerUnavailable:
            raise
        except FanoError as exc:
            if log is not None:
                log.warning("quota_show refused (%s): choosing accounts without knowing their headroom", exc)
            return cls.unknown(module, modes, now)

    # --- asking -------------------------------------------------------------------------------------

    def offers(self, account: str, mode: str) -> bool:
        return mode in self.modes.get(account, ())

    def room(self, account: str, mode: str = "standard") -> bool:
        """Whether a ``mode`` task of this module could be leased on ``account`` now."""
        return self.offers(account, mode) and (account, mode) not in self.blocked

    def until(self, account: str, mode: str = "standard") -> float:
        """When ``account`` has room for ``mode`` again: ``now`` if it has room, ``inf`` if never known."""
        if not self.offers(account, mode):
            return INF
        return self.blocked.get((account, mode), (self.now, ""))[0]

    def reason(self, account: str, mode: str = "standard") -> str:
        if not self.offers(account, mode):
            return f"{account} offers no {mode} mode"
        return self.blocked.get((account, mode), (0.0, "has room"))[1]

    def with_room(self, accounts, mode: str = "standard") -> list[str]:
        return [a for a in accounts if self.room(a, mode)]

    def usable(self, accounts, mode: str = "standard", patience: float = 0.0) -> list[str]:
        """``accounts`` that have room now or get it within ``patience`` seconds (order kept)."""
        return [a for a in accounts if self.until(a, mode) <= self.now + patience]

    def serves(self, task: dict, accounts: list[str]) -> bool:
        """Whether one of ``accounts`` (see :func:`task_accounts`) has room for what ``task`` asks."""
        for mode in task_modes(task):
            if any(self.room(a, mode) for a in accounts):
                return True
        return False


def task_modes(task: dict) -> list[str]:
    """The modes a task may run in: ``requires.mode`` (default standard), plus standard with a fallback."""
    req = task.get("requires") or {}
    mode = req.get("mode") or "standard"
    return [mode, "standard"] if mode != "standard" and req.get("deep_fallback") else [mode]


def task_accounts(task: dict, all_accounts: list[str], conversation_account: str | None = None) -> list[str]:
    """The accounts a PENDING task may run on: its conversation's account (affinity) when the
    conversation is bound, else ``requires.account`` / ``requires.backends``, else every account."""
    if conversation_account:
        return [conversation_account]
    req = task.get("requires") or {}
    if req.get("account"):
        return [req["account"]]
    if req.get("backends"):
        return [a for a in req["backends"] if a in all_accounts] or list(req["backends"])
    return list(all_accounts)


def pending(client, module: str, payloads: bool = True) -> dict[str, dict]:
    """The module's PENDING tasks by key, with their payloads unless ``payloads`` is false (one paged scan
    of the broker's state index; prompts make the payloads most of the bytes)."""
    out, after = {}, None
    while True:
        page = client.list(state="PENDING", module=module, after=after, limit=PAGE, payloads=payloads)
        for task in page["tasks"]:
            out[task["key"]] = task
        after = page.get("next")
        if not after:
            return out


def with_payload(client, task: dict) -> dict | None:
    """``task`` (a record of a list page without payloads, :func:`pending`) with its payload read from
    the broker; None when the task is gone. A capacity-following pass reads its module's PENDING tasks
    without payloads and this only for a task it moves (whose prompt a moved seat re-submits, whose
    payload names its seat): reading the prompts of every task that had waited, on every pass, made the
    pass cost the backlog's bytes (records of a long transcript reach a megabyte) several times a second
    at a scaled clock, and the module's resident size grow with the backlog."""
    if task.get("payload") is not None:
        return task
    try:
        record = client.get(task["id"], history=False)
    except FanoError as exc:
        if exc.code == ErrorCode.NOT_FOUND:
            return None
        raise
    return dict(task, payload=record.get("payload"))


def live_keys(client, module: str) -> set[str]:
    """The keys of the module's PENDING and RUNNING tasks (paged, without payloads)."""
    out: set[str] = set()
    for state in ("PENDING", "RUNNING"):
        after = None
        while True:
            page = client.list(state=state, module=module, after=after, limit=PAGE)
            out.update(task["key"] for task in page["tasks"])
            after = page.get("next")
            if not after:
                break
    return out


def waited(task: dict, now: float) -> float:
    """World seconds since the task was submitted."""
    return max(0.0, now - float(task.get("created") or now))
