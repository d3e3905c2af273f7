"""The accounts as the scheduler sees them: pauses and cool-downs (from the broker) and quota blocks.

:class:`Accounts` holds what the broker said (paused, cool-downs per mode or ``*``) and what the
scheduler learned from declined leases: a block on ``(account, mode, module)`` until the world time the
broker gave as ``retry_at`` (quota windows can be split per module, so a block is per module). A wrong
guess here costs a declined lease, never a broken rule: the broker's lease transaction is the quota gate.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from services.scheduler.classes import MODES


@dataclass
class AccountInfo:
    backend: str | None = None
    modes: tuple = ()
    configured: bool = False


class Accounts:
    """Pauses, cool-downs (from the broker) and quota blocks (from declined leases)."""

    def __init__(self, configured=()):
        self.info: dict[str, AccountInfo] = {}
        for acct in configured:
            self.info[acct.name] = AccountInfo(acct.backend, tuple(acct.modes), True)
        self.reset()

    def reset(self) -> None:
        """Forget what the broker said (a rebuild reloads it); configured accounts stay known."""
        self.paused: dict[str, str] = {}
        self.cooldowns: dict[tuple[str, str], tuple[float, str]] = {}       # (account, mode|*) -> until, why
        self.blocks: dict[tuple[str, str, str], tuple[float, str]] = {}     # (account, mode, module) -> ...

    def note(self, account: str, backend: str | None = None, modes=()) -> None:
        info = self.info.setdefault(account, AccountInfo())
        if backend:
            info.backend = backend
        if modes:
            info.modes = tuple(modes)

    def load(self, shown: dict) -> None:
        """From the broker's ``quota_show`` result."""
        for acct in shown.get("accounts", []):
            name = acct.get("account")
            if not isinstance(name, str):
                continue
            self.note(name)
            if acct.get("paused"):
                self.paused[name] = str(acct.get("pause_reason") or "")
            for mode, cd in (acct.get("cooldowns") or {}).items():
                if isinstance(cd, dict) and isinstance(cd.get("until"), (int, float)):
                    self.cooldowns[(name, mode)] = (float(cd["until"]), str(cd.get("reason") or ""))

    def on_event(self, ev: Mapping[str, Any]) -> bool:
        """Apply an ``account.*``/``quota.*`` event; True if admission may have changed."""
        kind, account = ev.get("type"), ev.get("account")
        if not isinstance(account, str):
            return False
        self.note(account)
        if kind == "account.paused":
            self.paused[account] = str(ev.get("reason") or "")
        elif kind == "account.resumed":
            self.paused.pop(account, None)
        elif kind == "account.cooldown" and isinstance(ev.get("until"), (int, float)):
            self.cooldowns[(account, str(ev.get("mode") or "*"))] = (float(ev["until"]), str(ev.get("reason") or ""))
        elif kind in ("quota.reset", "quota.set"):
            # usage cleared or limits changed: what we learned from declines may no longer hold
            mode = ev.get("mode") or "*"
            modes = MODES if mode == "*" else (mode,)
            if kind == "quota.reset" and ev.get("usage", True):
                for m in (*modes, "*") if mode == "*" else modes:
                    self.cooldowns.pop((account, m), None)
            for key in [k for k in self.blocks if k[0] == account and k[1] in modes]:
                del self.blocks[key]
        else:
            return False
        return True

    def block(self, account: str, mode: str, module: str, until: float, why: str) -> None:
        key = (account, mode, module)
        if until > self.blocks.get(key, (0.0, ""))[0]:
            self.blocks[key] = (until, why)

    def why_not(self, account: str, mode: str, module: str, now: float) -> tuple[str, float, str] | None:
        """Why this account cannot take a ``mode`` task of ``module`` now: (what, until, reason) or None.

        ``what`` is ``"cooling"`` or ``"blocked"``; pauses are checked separately (:attr:`paused`).
        """
        for scope in (mode, "*"):
            cd = self.cooldowns.get((account, scope))
            if cd and cd[0] > now:
                return "cooling", cd[0], cd[1]
        blk = self.blocks.get((account, mode, module))
        if blk and blk[0] > now:
            return "blocked", blk[0], blk[1]
        return None

    def next_expiry(self, now: float) -> float | None:
        """The earliest future end of a cool-down or block (a wake-up: work may become admissible)."""
        times = [u for u, _ in self.cooldowns.values() if u > now] + [u for u, _ in self.blocks.values() if u > now]
        return min(times, default=None)

    def prune(self, now: float) -> set[str]:
        """Drop expired cool-downs and blocks; returns the accounts that had one (they may run more now)."""
        freed: set[str] = set()
        for cd in [k for k, (u, _) in self.cooldowns.items() if u <= now]:
            del self.cooldowns[cd]
            freed.add(cd[0])
        for blk in [k for k, (u, _) in self.blocks.items() if u <= now]:
            del self.blocks[blk]
            freed.add(blk[0])
        return freed
