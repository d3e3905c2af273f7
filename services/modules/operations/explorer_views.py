"""What ``fanoctl seeds ls`` / ``threads ls`` / ``threads show`` and the panel's Seeds and Threads pages
show of the explorer's namespace, read through a broker client (layouts: services/modules/explorer/model.py).

* :func:`seed_rows` -> ``{"seeds": [Seed + {"paused", "pause_reason", "held", "held_reason"}],
  "threads": {seed_id: count}}``;
* :func:`thread_rows` -> ``[Thread]`` filtered by status and seed;
* :func:`thread_view` -> ``{"thread", "exchanges", "synthesis", "proposals", "insights"}``, each exchange
  with its ``sections`` (and its turn's ``prompt`` when asked).
"""
from __future__ import annotations

from services.modules.explorer import model as M
from services.modules.explorer import pacing as PC
from services.modules.explorer import threads as T
from services.modules.store import Store
from shared.errors import ErrorCode, FanoError

NS = M.MODULE


def seed_rows(client, now: float, kind: str | None = None) -> dict:
    """Seeds (of ``kind``, or all) with whether the explorer paused one (its threads kept giving unusable
    answers) or holds its tasks back (its hourly budget is used up), and each seed's thread count."""
    store = Store(client, NS)
    paces = {p.get("seed_id"): PC.current(p, p.get("seed_id") or "", now) for p in store.records("pace/")}
    rows = []
    for s in store.records("seeds/"):
        if kind is not None and s.get("type") != kind:
            continue
        pace = paces.get(s["id"]) or {}
        # held keys matter while the hour is full; with room, the repair pass creates them within a minute
        # (or their step moved on: they are forgotten after a day)
        held = len(pace.get("held") or {}) if pace and PC.room(pace, pace.get("limit", 0)) == 0 else 0
        rows.append(dict(s, paused=bool(pace.get("paused")), pause_reason=pace.get("pause_reason"), held=held,
                         held_reason=PC.budget_note(pace, pace.get("limit", 0)) if held else None))
    counts: dict[str, int] = {}
    for t in store.records("threads/"):
        counts[t["seed_id"]] = counts.get(t["seed_id"], 0) + 1
    return {"seeds": rows, "threads": counts}


def thread_rows(client, status: str | None = None, seed_id: str | None = None) -> list[dict]:
    return [t for t in Store(client, NS).records("threads/") if (status is None or t["status"] == status)
            and (seed_id is None or t["seed_id"] == seed_id)]


def thread_view(client, thread_id: str, prompts: bool = False) -> dict:
    """A thread with its whole transcript, synthesis, proposals and insights (``NOT_FOUND`` if none)."""
    store = Store(client, NS)
    _, thread = store.must(M.thread_key(thread_id), "thread", thread_id)
    stored = store.records(f"exchanges/{thread_id}/")
    exchanges = []
    for e in stored:
        shown = {k: v for k, v in e.items() if k not in ("prompt", "prompt_ref")}
        shown["sections"] = T.exchange_sections(e)
        if prompts:
            shown["prompt"] = turn_prompt(client, e, stored)
        exchanges.append(shown)
    return {"thread": thread, "exchanges": exchanges, "synthesis": store.get(M.synthesis_key(thread_id))[1],
            "proposals": store.records(f"proposals/{thread_id}/"),
            "insights": [i for iid in thread.get("insight_ids") or [] for i in [store.get(M.insight_key(iid))[1]]
                         if i]}


def turn_prompt(client, exchange: dict, exchanges: list[dict]) -> str | None:
    """The prompt of an exchange's turn: from the record (whole, or by reference to the exchanges it
    quotes), else from its task's payload; None when neither has it any more."""
    prompt = T.exchange_prompt(exchange, exchanges)
    if prompt is not None:
        return prompt
    try:
        task = client.get(int(exchange.get("task_id") or 0), history=False)
    except FanoError as exc:
        if exc.code != ErrorCode.NOT_FOUND:
            raise
        return None
    return (task.get("payload") or {}).get("prompt")
