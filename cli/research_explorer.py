"""fanoctl commands of the explorer: ``seeds``, ``threads``, ``insights``.

``seeds add|ls|edit|priority|rm|import FILE``; ``threads ls|show|pause|resume|archive``;
``insights ls|show|bless|reject|interesting|priority``; every command takes ``--json``. They read the
``explorer`` namespace in the broker directly and write it through the operations layer
(``services/modules/operations/explorer.py``: read-modify-write with ``if_version``, retried on a race
with the running module); a command here parses, calls the operation and renders. Entity shapes and keys:
``services/modules/explorer/model.py``.

``--json`` shapes: ``seeds ls`` -> ``{"seeds": [Seed], "threads": {seed_id: count}}``; ``seeds add|edit`` ->
Seed; ``seeds priority`` -> ``{"seed", "threads": [thread ids that followed]}``; ``seeds rm`` ->
``{"removed": id}``; ``seeds import`` -> ``{"added", "updated", "unchanged": [ids]}``; ``threads ls`` ->
``{"threads": [Thread]}``; ``threads show`` -> ``{"thread", "exchanges", "synthesis", "proposals",
"insights"}`` (with ``--prompts`` each exchange has its turn's ``prompt``: kept by the exchange record,
which refers to the exchanges it quotes; null for none); ``threads pause|resume|archive`` -> Thread; ``insights ls`` ->
``{"insights": [Insight], "stages": {insight_id: review stage}}``; ``insights show`` -> ``{"insight", "review"}``;
``insights bless|reject|interesting|priority`` -> Insight.
"""
from __future__ import annotations

import click

from cli import research_explorer_render as V
from cli.app import client, fail, json_option, out
from shared.errors import ErrorCode, ExitCode, FanoError

NS = "explorer"


def _now() -> float:
    from shared.clock import Clock
    return Clock.from_env().world()   # the modules' clock (scaled in simulations)


def _store():
    from services.modules.store import Store
    return Store(client(), NS)


def _get(key: str) -> tuple[int, object]:
    return _store().get(key)


def _scan(prefix: str) -> list:
    return _store().records(prefix)


def _must(key: str, what: str, ident: str) -> tuple[int, dict]:
    return _store().must(key, what, ident)


# --- seeds ---------------------------------------------------------------------------------------------

@click.group()
def seeds():
    """Research seeds: axioms (facts in every prompt), questions and conjectures (one thread each)."""


@seeds.command("add")
@click.argument("text")
@click.option("--type", "kind", type=click.Choice(["axiom", "conjecture", "question"]), default="conjecture",
              show_default=True)
@click.option("--priority", default="5", show_default=True, help="1-10 or high/medium/low.")
@click.option("--tag", "tags", multiple=True, help="A tag (repeatable).")
@click.option("--id", "sid", default=None, help="Seed id (default: derived from the text).")
@click.option("--notes", default="", help="Your own notes on the seed (shown with it, never sent to a model).")
@json_option
def seeds_add(text, kind, priority, tags, sid, notes):
    """Add a seed."""
    from services.modules.operations import explorer as O
    try:
        seed = O.add_seed(client(), text, kind=kind, priority=_priority_arg(priority), tags=tags, seed_id=sid,
                          now=_now(), notes=notes)
    except FanoError as exc:
        if exc.code == ErrorCode.CONDITION_FAILED:
            fail(f"CONDITION_FAILED: {exc.message} (use `fanoctl seeds edit`)", ExitCode.FAILURE)
        raise
    out(seed, f"seed {seed['id']} added ({seed['type']}, priority {seed['priority']})")


def _priority_arg(priority: str) -> int | str:
    """A command line's priority: digits are a number, anything else a word (high/medium/low)."""
    return int(priority) if priority.isdigit() else priority


@seeds.command("ls")
@click.option("--type", "kind", type=click.Choice(["axiom", "conjecture", "question"]), default=None)
@json_option
def seeds_ls(kind):
    """List seeds with their thread counts, and whether the explorer paused one (its threads kept giving
    unusable answers) or holds its tasks back (its hourly budget is used up)."""
    from services.modules.operations.explorer_views import seed_rows
    out(seed_rows(client(), _now(), kind), lambda d: V.seeds_text(d["seeds"], d["threads"]))


@seeds.command("resume")
@click.argument("seed_id")
@json_option
def seeds_resume(seed_id):
    """Let the explorer start threads on a seed it paused (its threads kept giving unusable answers)."""
    from services.modules.operations import explorer as O
    O.resume_seed(client(), seed_id, now=_now())
    out({"seed": seed_id, "paused": False}, f"seed {seed_id} resumed: the explorer may start threads on it again")


@seeds.command("edit")
@click.argument("seed_id")
@click.option("--text", default=None)
@click.option("--type", "kind", type=click.Choice(["axiom", "conjecture", "question"]), default=None)
@click.option("--priority", default=None, help="1-10 or high/medium/low.")
@click.option("--tag", "tags", multiple=True, help="Replace the tags (repeatable).")
@click.option("--notes", default=None, help="Replace your notes on the seed (\"\" removes them).")
@json_option
def seeds_edit(seed_id, text, kind, priority, tags, notes):
    """Change a seed's text, type, priority, tags or notes (open threads keep the text they started with; a
    new priority reaches them as with ``seeds priority``)."""
    from services.modules.operations import explorer as O
    seed = O.edit_seed(client(), seed_id, text=text, kind=kind, tags=tags or None, now=_now(), notes=notes,
                       priority=None if priority is None else _priority_arg(priority))
    out(seed, f"seed {seed_id} updated")


@seeds.command("priority")
@click.argument("seed_id")
@click.argument("priority")
@json_option
def seeds_priority(seed_id, priority):
    """Set a seed's priority (1-10 or high/medium/low); its open threads follow, and the running explorer
    re-ranks their queued tasks on its next planning pass (within seconds)."""
    from services.modules.operations import explorer as O
    d = O.set_seed_priority(client(), seed_id, _priority_arg(priority), now=_now())
    follow = f"; threads {', '.join(d['threads'])} follow (their queued tasks are re-ranked by the explorer)"
    out(d, f"seed {seed_id}: priority {d['seed']['priority']}" + (follow if d["threads"] else ""))


@seeds.command("rm")
@click.argument("seed_id")
@json_option
def seeds_rm(seed_id):
    """Remove a seed (its threads and insights stay)."""
    from services.modules.operations import explorer as O
    out(O.remove_seed(client(), seed_id), f"seed {seed_id} removed")


@seeds.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@json_option
def seeds_import(path):
    """Import a TOML seed file (idempotent by seed id: unchanged seeds are left alone)."""
    from services.modules.operations import explorer as O
    now = _now()
    d = O.import_seeds(client(), O.seed_file(path, now), now=now)
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
    from services.modules.operations.explorer_views import thread_rows
    out({"threads": thread_rows(client(), status, seed_id)}, lambda d: V.threads_text(d["threads"]))


@threads.command("show")
@click.argument("thread_id")
@click.option("--prompts", is_flag=True, help="also show the prompt of each turn (read from its task)")
@json_option
def threads_show(thread_id, prompts):
    """A thread with its whole transcript, synthesis, proposals and insights."""
    from services.modules.operations.explorer_views import thread_view
    out(thread_view(client(), thread_id, prompts), V.thread_text)


def _thread_status(op, thread_id: str, verb: str) -> None:
    thread = op(client(), thread_id, now=_now())
    out(thread, f"thread {thread_id} {verb} (status {thread['status']})")


@threads.command("pause")
@click.argument("thread_id")
@json_option
def threads_pause(thread_id):
    """Stop proposing turns for a thread; answers in flight are still recorded."""
    from services.modules.operations import explorer as O
    _thread_status(O.pause_thread, thread_id, "paused")


@threads.command("resume")
@click.argument("thread_id")
@json_option
def threads_resume(thread_id):
    """Resume a paused or archived thread where it stopped (its next step is proposed within a minute)."""
    from services.modules.operations import explorer as O
    _thread_status(O.resume_thread, thread_id, "resumed")


@threads.command("archive")
@click.argument("thread_id")
@json_option
def threads_archive(thread_id):
    """Archive a thread: it proposes nothing more (resume undoes it)."""
    from services.modules.operations import explorer as O
    _thread_status(O.archive_thread, thread_id, "archived")


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
    from services.modules.operations import research_views as RV
    out({"insights": rows, "stages": RV.review_stages(client())}, lambda d: V.insights_text(d["insights"], d["stages"]))


@insights.command("show")
@click.argument("insight_id")
@json_option
def insights_show(insight_id):
    """An insight with its versions, dedup verdict and every review round."""
    from services.modules.operations import research_views as RV
    view = RV.insight_view(client(), insight_id)   # the web panel's insight page reads the same
    out({"insight": view["insight"], "review": view["review"]}, V.insight_text)


def _override(insight_id: str, status: str, note: str | None) -> None:
    """A human decision: the insight's status, recorded in ``overrides``; an open review stops."""
    from services.modules.operations import explorer as O
    new = O.override_insight(client(), insight_id, status, note=note, now=_now())
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
    from services.modules.operations import explorer as O
    new = O.set_insight_priority(client(), insight_id, priority, now=_now())
    out(new, f"insight {insight_id}: priority {priority}")

