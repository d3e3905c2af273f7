"""What the soak driver (ops/soak.py) reads from the running tree at each sample of the accounts, at the
least cost to the programs it measures."""
from __future__ import annotations

from shared.errors import FanoError
from shared.protocol import unpack_rows
from shared.records import PENDING_ROW
from shared.scheduler_client import query


def pending_rows(client) -> list[dict]:
    """The broker's PENDING tasks as the maps the busy measure reads, from their rows (``list`` with
    ``rows``: the by-state index alone, no task record decoded), so that sampling several times a second
    loads the broker it measures as little as the scheduler's rebuild does."""
    out, after = [], None
    while True:
        page = client.list(state="PENDING", rows=True, after=after, limit=5000)
        for row in unpack_rows(page["rows"], page["count"]):
            task = dict(zip(PENDING_ROW, row, strict=True))
            task["unknown_turn"] = {"account": task["unknown_account"]} if task["unknown_account"] else None
            out.append(task)
        after = page["next"]
        if after is None:
            return out


def scheduler_idle(endpoint: str) -> dict[str, str]:
    """account -> the scheduler's own reason it is idle while work waits (its ``idle`` query: the largest
    group, e.g. ``runnable`` = left for a faster account, ``bound claude-sim``); an account the scheduler
    does not call idle is one whose next task is on its way (assigned, leasing), or not runnable by the
    scheduler's view. {} when the scheduler does not answer (a kill)."""
    try:
        answer = query(endpoint, "idle", timeout=0.5)
    except FanoError:
        return {}
    out = {}
    for row in (answer or {}).get("accounts") or []:
        group = max(row.get("groups") or [], key=lambda g: g.get("n", 0), default=None)
        out[row["account"]] = (f"{group['reason']}" + (f" {group['account']}" if group.get("account") else "")
                               if group else "?")
    return out
