"""Quotas and accounts: the ledger of requests per (account, mode) window, cool-downs, pauses.

The ledger is the single source of truth for "may this account send one more request in this mode".
A lease *reserves* one unit in every window of the (account, mode) quota inside the lease
transaction. Completion commits it (nothing to do: it is already counted). A failure that happened
before the request left the worker, and a provider's quota refusal, *refund* it. An unknown outcome
(crash, expired lease) keeps it counted: the provider may have served it.

Calendar windows keep one counter record per period; rolling windows keep one entry per request
(so the count over any trailing interval is exact) and prune entries older than the window.

A window is identified by its *slot* (kind and period parameters, not the limit): changing a limit
from 20/day to 25/day keeps today's usage.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from services.broker import schema as S
from services.broker.ops_tasks import MODES, check_account, check_module
from services.broker.tx import Tx
from shared import quota as Q
from shared.config import QuotaConfig
from shared.errors import ErrorCode, FanoError

DEFAULT_COOLDOWN = 3600.0  # when a provider refuses without saying until when


def slot_of(window: dict[str, Any]) -> str:
    if window["kind"] == "rolling":
        return f"rolling:{window['seconds']:g}"
    if window["kind"] == "daily":
        return f"daily@{window['reset']} {window['tz']}"
    return f"weekly@{window['weekday']} {window['reset']} {window['tz']}"


def get_spec(tx: Tx, account: str, mode: str) -> dict[str, Any] | None:
    spec: dict[str, Any] | None = tx.get("quota_specs", S.pair_key(account, mode))
    return spec


def get_account(tx: Tx, account: str) -> dict[str, Any]:
    return tx.get("accounts", account.encode()) or {"paused": False, "pause_reason": "", "cooldowns": {}}


def put_account(tx: Tx, account: str, rec: dict[str, Any]) -> None:
    tx.put("accounts", account.encode(), rec)


def _usage(tx: Tx, account: str, mode: str, window: dict[str, Any], prune: bool = True) -> tuple[int, dict[str, Any],
                                                                                                 float | None]:
    """(used_total, used_by_module, oldest counted entry time for rolling windows).

    ``prune`` deletes the expired entries of a rolling window on the way; a read-only command (quota_show,
    stats: answered in a read transaction after the batch's commit) skips them instead."""
    slot = slot_of(window)
    if window["kind"] != "rolling":
        bucket = S.ms(Q.period_start(window, tx.now))
        rec = tx.get("quota_usage", S.quota_usage_key(account, mode, slot, bucket)) or {}
        return rec.get("total", 0), dict(rec.get("by_module", {})), None
    prefix = S.quota_slot_prefix(account, mode, slot)
    horizon = S.ms(tx.now - window["seconds"])
    cur = tx.cursor("quota_entries")
    total, oldest = 0, None
    by_module: dict[str, int] = {}
    ok = cur.set_range(prefix)
    while ok and cur.key().startswith(prefix):
        ts = S.from_u64(cur.key()[len(prefix): len(prefix) + 8])
        if ts <= horizon:
            if prune:
                ok = cur.delete() and bool(cur.key())  # expired: prune (delete moves to the next item)
            else:
                ok = cur.next()
            continue
        module = bytes(cur.value()).decode()
        total += 1
        by_module[module] = by_module.get(module, 0) + 1
        oldest = ts / 1000 if oldest is None else oldest
        ok = cur.next()
    return total, by_module, oldest


def cooldown_until(tx: Tx, account: str, mode: str, rec: dict[str, Any] | None = None) -> tuple[float, str]:
    rec = rec if rec is not None else get_account(tx, account)
    best, reason = 0.0, ""
    for scope in (mode, "*"):
        cd = rec.get("cooldowns", {}).get(scope)
        if cd and cd["until"] > tx.now and cd["until"] > best:
            best, reason = cd["until"], cd.get("reason", "")
    return best, reason


def admission(tx: Tx, account: str, mode: str, module: str) -> tuple[bool, str, float | None]:
    """May ``module`` send one more ``mode`` request on ``account`` now? (ok, why-not, earliest time)."""
    until, reason = cooldown_until(tx, account, mode)
    if until:
        return False, f"account {account} {mode} cooling down until {until:.0f} ({reason})", until
    spec = get_spec(tx, account, mode)
    if not spec:
        return True, "", None
    for window in spec["windows"]:
        used, by_module, oldest = _usage(tx, account, mode, window)
        if not Q.admits(window, used, by_module, module):
            if window["kind"] == "rolling":
                when = (oldest or tx.now) + window["seconds"]
            else:
                when = Q.next_reset(window, tx.now)
            return (False, f"account {account} {mode} quota {used}/{window['limit']} ({Q.describe(window)}) "
                    f"for module {module}", when)
    return True, "", None


def reserve(tx: Tx, account: str, mode: str, module: str, task_id: int, epoch: int) -> list[Any]:
    """Charge one unit in every window; returns the charges to refund later. Call after admission()."""
    spec = get_spec(tx, account, mode)
    charges: list[Any] = []
    if not spec:
        return charges
    for window in spec["windows"]:
        slot = slot_of(window)
        if window["kind"] == "rolling":
            key = S.quota_entry_key(account, mode, slot, S.ms(tx.now), task_id, epoch)
            tx.put_raw("quota_entries", key, module.encode())
            charges.append(["e", key, module])
        else:
            key = S.quota_usage_key(account, mode, slot, S.ms(Q.period_start(window, tx.now)))
            rec = tx.get("quota_usage", key) or {"total": 0, "by_module": {}}
            rec["total"] += 1
            rec["by_module"][module] = rec["by_module"].get(module, 0) + 1
            tx.put("quota_usage", key, rec)
            charges.append(["c", key, module])
    return charges


def refund(tx: Tx, charges: list[Any]) -> None:
    for kind, key, module in charges:
        if kind == "e":
            tx.delete("quota_entries", key)
            continue
        rec = tx.get("quota_usage", key)
        if not rec:
            continue
        rec["total"] = max(0, rec["total"] - 1)
        left = rec["by_module"].get(module, 0) - 1
        if left > 0:
            rec["by_module"][module] = left
        else:
            rec["by_module"].pop(module, None)
        tx.put("quota_usage", key, rec)


def set_cooldown(tx: Tx, account: str, mode: str | None, until: float, reason: str) -> dict[str, Any]:
    rec = get_account(tx, account)
    rec.setdefault("cooldowns", {})[mode or "*"] = {"until": float(until), "reason": reason, "set_at": tx.now}
    put_account(tx, account, rec)
    tx.emit("account.cooldown", account=account, mode=mode or "*", until=float(until), reason=reason)
    return rec


def pause_account(tx: Tx, account: str, reason: str) -> dict[str, Any]:
    rec = get_account(tx, account)
    rec["paused"], rec["pause_reason"] = True, reason
    put_account(tx, account, rec)
    tx.emit("account.paused", account=account, reason=reason)
    return rec


def apply_config_quotas(tx: Tx, quotas: Iterable[QuotaConfig]) -> None:
    """Install quotas from the config file; an operator's own ``quota set`` is never overwritten."""
    wanted = {}
    for q in quotas:
        windows = Q.normalize_windows(list(q.windows))
        wanted[(q.account, q.mode)] = windows
        stored = get_spec(tx, q.account, q.mode)
        if stored is None or (stored.get("source") == "config" and stored["windows"] != windows):
            tx.put("quota_specs", S.pair_key(q.account, q.mode),
                   {"windows": windows, "source": "config", "updated": tx.now})
    # a quota deleted from the config file is no longer enforced (an operator's own stays)
    stale = [bytes(key) for key, raw in tx.cursor("quota_specs")
             if S.split_pair(bytes(key)) not in wanted and tx.get("quota_specs", bytes(key)).get("source") == "config"]
    for key in stale:
        tx.delete("quota_specs", key)


# --- handlers ------------------------------------------------------------------------------------------

def _check_mode(mode: str | None) -> None:
    if mode is not None and mode not in MODES:
        raise FanoError(ErrorCode.BAD_ARGUMENT, f"mode must be one of {', '.join(MODES)}, got {mode!r}")


def _describe_quota(tx: Tx, account: str, mode: str, spec: dict[str, Any] | None) -> dict[str, Any]:
    windows = []
    for window in (spec or {}).get("windows", []):
        used, by_module, oldest = _usage(tx, account, mode, window, prune=False)
        if window["kind"] == "rolling":
            start, resets = tx.now - window["seconds"], ((oldest + window["seconds"]) if oldest else None)
        else:
            start, resets = Q.period_start(window, tx.now), Q.next_reset(window, tx.now)
        windows.append({"spec": Q.describe(window), "kind": window["kind"], "limit": window["limit"],
                        "used": used, "remaining": max(0, window["limit"] - used), "by_module": by_module,
                        "reserves": window.get("reserves", {}), "period_start": start, "resets_at": resets})
    until, reason = cooldown_until(tx, account, mode)
    return {"account": account, "mode": mode, "source": (spec or {}).get("source"), "windows": windows,
            "cooldown": {"until": until, "reason": reason} if until else None}


def _shown(tx: Tx, account: str) -> bool:
    """Whether quota_show lists ``account`` (it lists every configured account, with or without a record;
    none other when names are checked): an account removed from the configuration leaves the listing
    (``fanoctl backends ls``, ``quota show``, the scheduler's view); its records stay, and come back with
    it if it is configured again. Its history stays in the task records."""
    return tx.names is None or account in tx.names.accounts


def op_quota_show(tx: Tx, account: str | None) -> dict[str, Any]:
    if account is not None:
        check_account(tx, account)
    quotas, seen = [], set()
    cur = tx.cursor("quota_specs")
    prefix = (account.encode() + S.SEP) if account else b""
    ok = cur.set_range(prefix)
    while ok and cur.key().startswith(prefix):
        acct, mode = S.split_pair(bytes(cur.key()))
        if not _shown(tx, acct):
            ok = cur.next()
            continue
        quotas.append(_describe_quota(tx, acct, mode, tx.get("quota_specs", bytes(cur.key()))))
        seen.add((acct, mode))
        ok = cur.next()
    accounts = []
    for key, _raw in tx.cursor("accounts"):
        name = bytes(key).decode()
        if (account and name != account) or not _shown(tx, name):
            continue
        rec = tx.get("accounts", bytes(key))
        cooldowns = {m: c for m, c in rec.get("cooldowns", {}).items() if c["until"] > tx.now}
        for mode in cooldowns:
            if mode != "*" and (name, mode) not in seen:
                quotas.append(_describe_quota(tx, name, mode, None))
        accounts.append({"account": name, "paused": rec.get("paused", False),
                         "pause_reason": rec.get("pause_reason", ""), "cooldowns": cooldowns})
    if tx.names is not None:
        # every configured account, also one never paused nor cooled down (no record yet): the broker's
        # listing is the tree's list of accounts, whatever configuration the reader has at hand
        listed = {a["account"] for a in accounts}
        accounts += [{"account": name, "paused": False, "pause_reason": "", "cooldowns": {}}
                     for name in tx.names.accounts if name not in listed and (not account or name == account)]
        accounts.sort(key=lambda a: a["account"])
    return {"now": tx.now, "quotas": quotas, "accounts": accounts}


def op_quota_set(tx: Tx, account: str, mode: str, windows: Any) -> dict[str, Any]:
    check_account(tx, account)
    _check_mode(mode)
    if tx.names is not None and mode not in tx.names.modes_of(account):
        # never charged: the account's worker never leases in a mode it does not offer
        raise FanoError(ErrorCode.BAD_ARGUMENT, f"account {account} does not offer mode {mode} (its modes: "
                        f"{', '.join(tx.names.modes_of(account))})", {"field": "mode"})
    canonical = Q.normalize_windows(windows)
    for window in canonical:
        for module in window.get("reserves", {}):
            check_module(tx, module, "windows")
    tx.put("quota_specs", S.pair_key(account, mode), {"windows": canonical, "source": "operator", "updated": tx.now})
    tx.emit("quota.set", account=account, mode=mode, windows=[Q.describe(w) for w in canonical])
    return _describe_quota(tx, account, mode, get_spec(tx, account, mode))


def op_quota_reset(tx: Tx, account: str, mode: str | None, usage: bool, spec: bool) -> dict[str, Any]:
    check_account(tx, account)
    _check_mode(mode)
    modes = [mode] if mode else list(MODES)
    cleared = 0
    if usage:
        for m in modes:
            prefix = account.encode() + S.SEP + m.encode() + S.SEP
            for db in ("quota_usage", "quota_entries"):
                cur = tx.cursor(db)
                ok = cur.set_range(prefix)
                while ok and cur.key().startswith(prefix):
                    ok = cur.delete() and bool(cur.key())
                    cleared += 1
        rec = tx.get("accounts", account.encode())
        if rec is not None:  # never create a record for an account nobody has seen (typos)
            for m in modes + ([] if mode else ["*"]):
                rec.get("cooldowns", {}).pop(m, None)
            put_account(tx, account, rec)
    if spec:
        for m in modes:
            tx.delete("quota_specs", S.pair_key(account, m))
    tx.emit("quota.reset", account=account, mode=mode or "*", usage=usage, spec=spec)
    return {"account": account, "modes": modes, "cleared_records": cleared, "spec_removed": spec}


def check_until(until: Any, field: str = "until") -> None:
    if not abs(until) < 1e15:  # inf/nan would block forever or silently not at all
        raise FanoError(ErrorCode.BAD_ARGUMENT, f"{field} must be a finite world time (seconds)", {"field": field})


def op_cooldown(tx: Tx, account: str, mode: str | None, until: float, reason: str) -> dict[str, Any]:
    check_account(tx, account)
    _check_mode(mode)
    check_until(until)
    set_cooldown(tx, account, mode, until, reason)
    return {"account": account, "mode": mode or "*", "until": float(until)}


def op_account_pause(tx: Tx, account: str, reason: str) -> dict[str, Any]:
    check_account(tx, account)
    return {"account": account, **pause_account(tx, account, reason or "paused by operator")}


def op_account_resume(tx: Tx, account: str) -> dict[str, Any]:
    check_account(tx, account)
    rec = get_account(tx, account)
    rec["paused"], rec["pause_reason"] = False, ""
    put_account(tx, account, rec)
    tx.emit("account.resumed", account=account)
    return {"account": account, **rec}


# command -> handler(tx, **args) (services/broker/core.py dispatches)
HANDLERS: dict[str, Callable[..., Any]] = {
    "quota_show": op_quota_show, "quota_set": op_quota_set, "quota_reset": op_quota_reset,
    "cooldown": op_cooldown, "account_pause": op_account_pause, "account_resume": op_account_resume,
}
