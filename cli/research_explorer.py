"""fanoctl commands of the explorer: ``seeds``, ``threads``, ``insights``.

``seeds add|ls|edit|priority|rm|import FILE``; ``threads ls|show|pause|resume|archive``;
``insights ls|show|bless|reject|interesting|priority``; every command takes ``--json``. They read and
write the ``explorer`` namespace in the broker directly; every write is a read-modify-write with
``if_version``, retried on a race with the running module (which writes the same records with version
checks too). Entity shapes and keys: ``services/modules/explorer/model.py``.

``--json`` shapes: ``seeds ls`` -> ``{"seeds": [Seed], "threads": {seed_id: count}}``; ``seeds add|edit`` ->
Seed; ``seeds priority`` -> ``{"seed", "threads": [thread ids that followed]}``; ``seeds rm`` ->
``{"removed": id}``; ``seeds import`` -> ``{"added", "updated", "unchanged": [ids]}``; ``threads ls`` ->
``{"threads": [Thread]}``; ``threads show`` -> ``{"thread", "exchanges", "synthesis", "proposals",
"insights"}`` (with ``--prompts`` each exchange has its turn's ``prompt``: kept by the exchange record,
which refers to the exchanges it quotes; null for none); ``threads pause|resume|archive`` -> Thread; ``insights ls`` -> ``{"insights": [Insight],
"stages": {insight_id: review stage}}``; ``insights show`` -> ``{"insight", "review"}``; ``insights
bless|reject|interesting|priority`` -> Insight.
"""
from __future__ import annotations

import click

from cli import research_explorer_render as V
from cli.app import client, fail, json_option, out
from shared.errors import ErrorCode, ExitCode, FanoError

NS = "explorer"
RACE_RETRIES = 5
MAX_OPS = 400            # per transaction (the broker takes at most 500)


def _now() -> float:
    from shared.clock import Clock
    return Clock.from_env().world()   # the modules' clock (scaled in simulations)


def _get(key: str) -> tuple[int, object]:
    rec = client().kv_get(NS, key)
    return (0, None) if rec is None else (rec["version"], rec["value"])


def _scan(prefix: str) -> list:
    return [value for _, _, value in client().kv_items(NS, prefix) if isinstance(value, dict)]


def _put(key: str, value, version: int) -> dict:
    return {"op": "put", "key": key, "value": value, "if_version": version}


def _change(what: str, read, write) -> object:
    """``read() -> state`` (with versions), ``write(state) -> (ops, result)``; retried on a version race.
    More than ``MAX_OPS`` ops (a big seed file) go in several transactions, each checked."""
    for _ in range(RACE_RETRIES):
        state = read()
        ops, result = write(state)
        try:
            for start in range(0, len(ops), MAX_OPS):
                client().txn(NS, ops[start:start + MAX_OPS])
            return result
        except FanoError as exc:
            if exc.code != ErrorCode.CONDITION_FAILED:
                raise
    fail(f"CONDITION_FAILED: {what} kept changing under us; try again", ExitCode.FAILURE)


def _must(key: str, what: str, ident: str) -> tuple[int, dict]:
    version, value = _get(key)
    if value is None:
        fail(f"NOT_FOUND: no {what} {ident!r}", ExitCode.FAILURE)
    return version, value


# --- seeds ---------------------------------------------------------------------------------------------

@click.group()
def seeds():
    """Research seeds: axioms (facts in every prompt), questions and conjectures (one thread each)."""


def _seed_error(exc) -> None:
    fail(f"BAD_ARGUMENT: {exc}", ExitCode.FAILURE)


@seeds.command("add")
@click.argument("text")
@click.option("--type", "kind", type=click.Choice(["axiom", "conjecture", "question"]), default="conjecture", show_default=True)
@click.option("--priority", default="5", show_default=True, help="1-10 or high/medium/low.")
@click.option("--tag", "tags", multiple=True, help="A tag (repeatable).")
@click.option("--id", "sid", default=None, help="Seed id (default: derived from the text).")
@json_option
def seeds_add(text, kind, priority, tags, sid):
    """Add a seed."""
    from services.modules.explorer import model as M
    from services.modules.explorer.seeds import SeedError, validate
    try:
        seed = validate({"id": sid, "type": kind, "text": text, "priority": int(priority) if priority.isdigit() else priority,
                         "tags": list(tags)}, _now())
    except SeedError as exc:
        _seed_error(exc)
    try:
        client().txn(NS, [_put(M.seed_key(seed["id"]), seed, 0)])
    except FanoError as exc:
        if exc.code == ErrorCode.CONDITION_FAILED:
            fail(f"CONDITION_FAILED: seed {seed['id']} exists (use `fanoctl seeds edit`)", ExitCode.FAILURE)
        raise
    out(seed, f"seed {seed['id']} added ({seed['type']}, priority {seed['priority']})")


@seeds.command("ls")
@click.option("--type", "kind", type=click.Choice(["axiom", "conjecture", "question"]), default=None)
@json_option
def seeds_ls(kind):
    """List seeds with their thread counts, and whether the explorer paused one (its threads kept giving
    unusable answers) or holds its tasks back (its hourly budget is used up)."""
    from services.modules.explorer import pacing as PC
    paces = {p.get("seed_id"): PC.current(p, p.get("seed_id"), _now()) for p in _scan("pace/")}
    rows = []
    for s in _scan("seeds/"):
        if kind is not None and s.get("type") != kind:
            continue
        pace = paces.get(s["id"]) or {}
        # held keys matter while the hour is full; with room, the repair pass creates them within a minute
        # (or their step moved on: they are forgotten after a day)
        held = len(pace.get("held") or {}) if pace and PC.room(pace, pace.get("limit", 0)) == 0 else 0
        rows.append(dict(s, paused=bool(pace.get("paused")), pause_reason=pace.get("pause_reason"), held=held,
                         held_reason=PC.budget_note(pace, pace.get("limit", 0)) if held else None))
    counts = {}
    for t in _scan("threads/"):
        counts[t["seed_id"]] = counts.get(t["seed_id"], 0) + 1
    out({"seeds": rows, "threads": counts}, lambda d: V.seeds_text(d["seeds"], d["threads"]))


@seeds.command("resume")
@click.argument("seed_id")
@json_option
def seeds_resume(seed_id):
    """Let the explorer start threads on a seed it paused (its threads kept giving unusable answers)."""
    from services.modules.explorer import model as M
    from services.modules.explorer import pacing as PC
    _must(M.seed_key(seed_id), "seed", seed_id)

    def write(state):
        version, pace = state
        if not (pace or {}).get("paused"):
            return [], pace
        new = dict(pace, paused=False, pause_reason=None, paused_at=None, resumed_at=_now())
        return [_put(PC.pace_key(seed_id), new, version)], new
    _change(f"seed {seed_id}", lambda: _get(PC.pace_key(seed_id)), write)
    out({"seed": seed_id, "paused": False}, f"seed {seed_id} resumed: the explorer may start threads on it again")


@seeds.command("edit")
@click.argument("seed_id")
@click.option("--text", default=None)
@click.option("--type", "kind", type=click.Choice(["axiom", "conjecture", "question"]), default=None)
@click.option("--priority", default=None, help="1-10 or high/medium/low.")
@click.option("--tag", "tags", multiple=True, help="Replace the tags (repeatable).")
@json_option
def seeds_edit(seed_id, text, kind, priority, tags):
    """Change a seed's text, type, priority or tags (open threads keep the text they started with; a new
    priority reaches them as with ``seeds priority``)."""
    from services.modules.explorer import model as M
    from services.modules.explorer.seeds import CONTENT, SeedError, validate
    prio = _parse_seed_priority(priority) if priority is not None else None

    def write(state):
        version, seed = state
        raw = {k: seed[k] for k in CONTENT if k in seed}
        raw.update({k: v for k, v in (("text", text), ("type", kind), ("tags", list(tags) or None)) if v is not None})
        try:
            new = validate(dict(raw, id=seed_id), _now(), seed)
        except SeedError as exc:
            _seed_error(exc)
        return [_put(M.seed_key(seed_id), new, version)], new
    seed = _change(f"seed {seed_id}", lambda: _must(M.seed_key(seed_id), "seed", seed_id), write)
    if prio is not None:   # the same path as `seeds priority`, so that the seed's open threads follow
        seed = _set_seed_priority(seed_id, prio)["seed"]
    out(seed, f"seed {seed_id} updated")


def _parse_seed_priority(priority: str) -> int:
    from services.modules.explorer.seeds import SeedError
    from services.modules.explorer.seeds import priority as parse_priority
    try:
        return parse_priority(int(priority) if priority.isdigit() else priority)
    except SeedError as exc:
        _seed_error(exc)


@seeds.command("priority")
@click.argument("seed_id")
@click.argument("priority")
@json_option
def seeds_priority(seed_id, priority):
    """Set a seed's priority (1-10 or high/medium/low); its open threads follow, and the running explorer
    re-ranks their queued tasks on its next planning pass (within seconds)."""
    prio = _parse_seed_priority(priority)
    d = _set_seed_priority(seed_id, prio)
    out(d, f"seed {seed_id}: priority {prio}" + (f"; threads {', '.join(d['threads'])} follow (their queued tasks "
                                                  "are re-ranked by the explorer)" if d["threads"] else ""))


def _set_seed_priority(seed_id: str, prio: int) -> dict:
    """The seed and its open threads get ``prio`` in one transaction: ``{"seed", "threads": [ids]}``."""
    from services.modules.explorer import model as M

    def read():
        threads = [(v, t) for t in _scan("threads/") if t["seed_id"] == seed_id and t["status"] not in ("extracted", "archived")
                   for v in [_get(M.thread_key(t["id"]))[0]]]
        return _must(M.seed_key(seed_id), "seed", seed_id), threads

    def write(state):
        (version, seed), threads = state
        now = _now()
        ops = [_put(M.seed_key(seed_id), dict(seed, priority=prio, updated_at=now), version)]
        ops += [_put(M.thread_key(t["id"]), dict(t, priority=prio, updated_at=now), v) for v, t in threads]
        return ops, {"seed": dict(seed, priority=prio, updated_at=now), "threads": [t["id"] for _, t in threads]}
    return _change(f"seed {seed_id}", read, write)


@seeds.command("rm")
@click.argument("seed_id")
@json_option
def seeds_rm(seed_id):
    """Remove a seed (its threads and insights stay)."""
    from services.modules.explorer import model as M
    _change(f"seed {seed_id}", lambda: _must(M.seed_key(seed_id), "seed", seed_id),
            lambda st: ([{"op": "delete", "key": M.seed_key(seed_id), "if_version": st[0]}], None))
    out({"removed": seed_id}, f"seed {seed_id} removed")


@seeds.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@json_option
def seeds_import(path):
    """Import a TOML seed file (idempotent by seed id: unchanged seeds are left alone)."""
    from services.modules.explorer import model as M
    from services.modules.explorer.seeds import SeedError, load_file, same_content, validate
    try:
        wanted = load_file(path, _now())
    except SeedError as exc:
        _seed_error(exc)

    def read():
        return [(s, *_get(M.seed_key(s["id"]))) for s in wanted]

    def write(state):
        ops, result = [], {"added": [], "updated": [], "unchanged": []}
        for seed, version, current in state:
            if same_content(current, seed):
                result["unchanged"].append(seed["id"])
                continue
            ops.append(_put(M.seed_key(seed["id"]), validate(seed, _now(), current) if current else seed, version))
            result["updated" if current else "added"].append(seed["id"])
        return ops, result
    d = _change("the seeds", read, write)
    out(d, f"{len(d['added'])} added, {len(d['updated'])} updated, {len(d['unchanged'])} unchanged")


# --- threads -------------------------------------------------------------------------------------------

@click.group()
def threads():
    """Exploration threads: one per explored question or conjecture."""


@threads.command("ls")
@click.option("--status", default=None, help="Only threads in this status.")
@click.option("--seed", "seed_id", default=None, help="Only threads of this seed.")
@json_option
def threads_ls(status, seed_id):
    """List threads: status, turns, priority, where they explore, errors."""
    rows = [t for t in _scan("threads/") if (status is None or t["status"] == status) and (seed_id is None or t["seed_id"] == seed_id)]
    out({"threads": rows}, lambda d: V.threads_text(d["threads"]))


@threads.command("show")
@click.argument("thread_id")
@click.option("--prompts", is_flag=True, help="also show the prompt of each turn (read from its task)")
@json_option
def threads_show(thread_id, prompts):
    """A thread with its whole transcript, synthesis, proposals and insights."""
    from services.modules.explorer import model as M
    _, thread = _must(M.thread_key(thread_id), "thread", thread_id)
    from services.modules.explorer import threads as T
    stored = _scan(f"exchanges/{thread_id}/")
    exchanges = []
    for e in stored:
        shown = {k: v for k, v in e.items() if k not in ("prompt", "prompt_ref")}
        shown["sections"] = T.exchange_sections(e)
        if prompts:
            shown["prompt"] = _turn_prompt(e, stored)
        exchanges.append(shown)
    d = {"thread": thread, "exchanges": exchanges, "synthesis": _get(M.synthesis_key(thread_id))[1],
         "proposals": _scan(f"proposals/{thread_id}/"),
         "insights": [i for iid in thread.get("insight_ids") or [] for i in [_get(M.insight_key(iid))[1]] if i]}
    out(d, V.thread_text)


def _turn_prompt(exchange: dict, exchanges: list[dict]) -> str | None:
    """The prompt of an exchange's turn: from the record (whole, or by reference to the exchanges it
    quotes), else from its task's payload; None when neither has it any more."""
    from services.modules.explorer import threads as T
    prompt = T.exchange_prompt(exchange, exchanges)
    if prompt is not None:
        return prompt
    try:
        task = client().get(int(exchange.get("task_id") or 0), history=False)
    except FanoError as exc:
        if exc.code != ErrorCode.NOT_FOUND:
            raise
        return None
    return (task.get("payload") or {}).get("prompt")


def _thread_status(thread_id: str, verb: str, change) -> None:
    from services.modules.explorer import model as M

    def write(state):
        version, thread = state
        new = change(thread)
        return ([_put(M.thread_key(thread_id), new, version)] if new != thread else []), new
    thread = _change(f"thread {thread_id}", lambda: _must(M.thread_key(thread_id), "thread", thread_id), write)
    out(thread, f"thread {thread_id} {verb} (status {thread['status']})")


@threads.command("pause")
@click.argument("thread_id")
@json_option
def threads_pause(thread_id):
    """Stop proposing turns for a thread; answers in flight are still recorded."""
    def change(t):
        if t["status"] not in ("active", "ready", "synthesised"):
            fail(f"INVALID_STATE: thread {thread_id} is {t['status']}; only open threads can be paused", ExitCode.FAILURE)
        return dict(t, status="paused", paused_from=t["status"], pause_reason="paused by the operator", updated_at=_now())
    _thread_status(thread_id, "paused", change)


@threads.command("resume")
@click.argument("thread_id")
@json_option
def threads_resume(thread_id):
    """Resume a paused or archived thread where it stopped (its next step is proposed within a minute)."""
    def change(t):
        if t["status"] not in ("paused", "archived"):
            fail(f"INVALID_STATE: thread {thread_id} is {t['status']}, not paused or archived", ExitCode.FAILURE)
        return dict(t, status=t.get("paused_from") or "active", paused_from=None, pause_reason=None, paused_by=None,
                    updated_at=_now())
    _thread_status(thread_id, "resumed", change)


@threads.command("archive")
@click.argument("thread_id")
@json_option
def threads_archive(thread_id):
    """Archive a thread: it proposes nothing more (resume undoes it)."""
    def change(t):
        if t["status"] == "archived":
            return t
        held = t.get("paused_from") if t["status"] == "paused" else t["status"]
        return dict(t, status="archived", paused_from=held, updated_at=_now())
    _thread_status(thread_id, "archived", change)


# --- insights ------------------------------------------------------------------------------------------

@click.group()
def insights():
    """Insights extracted from threads, their reviews, and human overrides."""


@insights.command("ls")
@click.option("--status", default=None, help="pending, blessed, interesting, rejected or duplicate.")
@click.option("--thread", "thread_id", default=None, help="Only insights of this thread.")
@click.option("--disputed", is_flag=True, help="Only disputed ones.")
@json_option
def insights_ls(status, thread_id, disputed):
    """List insights with status, rating, priority and version."""
    rows = [i for i in _scan("insights/") if (status is None or i["status"] == status)
            and (thread_id is None or i.get("thread_id") == thread_id) and (not disputed or i.get("disputed"))]
    reviews = {r["insight_id"]: r.get("stage") for r in _scan("reviews/")}
    out({"insights": rows, "stages": reviews}, lambda d: V.insights_text(d["insights"], d["stages"]))


@insights.command("show")
@click.argument("insight_id")
@json_option
def insights_show(insight_id):
    """An insight with its versions, dedup verdict and every review round."""
    from services.modules.explorer import model as M
    _, insight = _must(M.insight_key(insight_id), "insight", insight_id)
    out({"insight": insight, "review": _get(M.review_key(insight_id))[1]}, V.insight_text)


def _override(insight_id: str, status: str, note: str | None) -> None:
    """A human decision: the insight's status, recorded in ``overrides``; an open review stops."""
    from services.modules.explorer import model as M

    def read():
        return _must(M.insight_key(insight_id), "insight", insight_id), _get(M.review_key(insight_id))

    def write(state):
        (vi, ins), (vr, review) = state
        now = _now()
        new = dict(ins, status=status, decided_by="human", updated_at=now, last_error=None,
                   overrides=list(ins.get("overrides") or []) + [{"from": ins["status"], "to": status, "at": now, "note": note}])
        if status == "blessed" and not ins.get("blessed_at"):
            new["blessed_at"] = now
        ops = [_put(M.insight_key(insight_id), new, vi)]
        if review and review.get("stage") not in ("done", "stopped"):
            ops.append(_put(M.review_key(insight_id), dict(review, stage="stopped", updated_at=now), vr))
        return ops, new
    new = _change(f"insight {insight_id}", read, write)
    out(new, f"insight {insight_id}: {new['overrides'][-1]['from']} -> {status} (human override)")


def _override_command(name: str, status: str, doc: str):
    @insights.command(name, help=doc)
    @click.argument("insight_id")
    @click.option("--note", default=None, help="Why (kept with the override).")
    @json_option
    def command(insight_id, note):
        _override(insight_id, status, note)
    return command


_override_command("bless", "blessed", "Bless an insight (the documenter picks it up).")
_override_command("reject", "rejected", "Reject an insight.")
_override_command("interesting", "interesting", "Mark an insight interesting (neither blessed nor rejected).")


@insights.command("priority")
@click.argument("insight_id")
@click.argument("priority", type=click.IntRange(1, 10))
@json_option
def insights_priority(insight_id, priority):
    """Set an insight's priority (1-10): its queued review steps are re-ranked by the running explorer
    (on its next repair pass) and its next ones are scheduled by it."""
    from services.modules.explorer import model as M

    def write(state):
        version, ins = state
        new = dict(ins, priority=priority, updated_at=_now())
        return [_put(M.insight_key(insight_id), new, version)], new
    new = _change(f"insight {insight_id}", lambda: _must(M.insight_key(insight_id), "insight", insight_id), write)
    out(new, f"insight {insight_id}: priority {priority}")

