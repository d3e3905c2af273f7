"""``fanoctl queue ...`` (list and operate on tasks, and why one waits) and ``fanoctl submit`` (a raw task)."""
from __future__ import annotations

import json
import time

import click

from cli import render as R
from cli.app import ask_scheduler, client, json_option, out, warn
from shared.config import KNOWN_MODULES, unknown_name


def _flag_module(module: str | None) -> None:
    """Warn of a module name the tree does not have (a typo lists nothing, or submits a task nothing acks).
    Not refused: a raw task may carry any module name (scripts and tests submit under their own)."""
    if module is not None and module not in KNOWN_MODULES:
        warn(unknown_name("module", module, KNOWN_MODULES))


@click.group()
def queue():
    """List and operate on tasks."""


@queue.command("ls")
@click.option("--state", type=click.Choice(["PENDING", "RUNNING", "DONE", "PARKED", "PAUSED", "CANCELLED"],
                                           case_sensitive=False), help="Only tasks in this state.")
@click.option("--module", help="Only tasks of this module.")
@click.option("--kind", help="Only tasks of this kind.")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True,
              help="Tasks per page.")
@click.option("--after", type=int, default=None, metavar="ID", help="Start after this task id.")
@click.option("--newest", is_flag=True, help="Newest first (with --after ID: start below that id).")
@click.option("--all", "all_pages", is_flag=True, help="Page through every matching task.")
@click.option("--payloads", is_flag=True, help="Include each task's payload and result (--json).")
@json_option
def queue_ls(state, module, kind, limit, after, newest, all_pages, payloads):
    """Tasks in id order (or newest first), with state, attempts, age and lease or backoff info."""
    _flag_module(module)
    c = client()
    tasks = []
    # newest first: the broker's list descends from below ``before`` (the panel's queue pages the same way)
    cursor, nxt = ("before", after if after is not None else 2**63) if newest else ("after", after)
    while True:
        page = c.list(state=state.upper() if state else None, module=module, kind=kind, limit=limit,
                      payloads=payloads, **{cursor: nxt})
        tasks += page["tasks"]
        nxt = page["next"]
        if not all_pages or nxt is None:
            break
    out({"tasks": tasks, "next": nxt}, lambda d: R.ls_text(d, time.time()))


@queue.command("show")
@click.argument("task_id", type=int)
@json_option
def queue_show(task_id):
    """Everything about one task: fields, lease, error, history and result."""
    out(client().get(task_id, history=True), lambda t: R.show_text(t, time.time()))


@queue.command("cancel")
@click.argument("task_id", type=int)
@click.option("--reason", default="", help="Recorded in the task's history.")
@json_option
def queue_cancel(task_id, reason):
    """Cancel a task (a RUNNING request is not interrupted; its result is discarded)."""
    out(client().cancel(task_id, reason), R.changed)


@queue.command("pause")
@click.argument("task_id", type=int)
@json_option
def queue_pause(task_id):
    """Pause a PENDING task (a RUNNING one pauses when its lease ends)."""
    out(client().pause(task_id), R.changed)


@queue.command("resume")
@click.argument("task_id", type=int)
@json_option
def queue_resume(task_id):
    """Resume a PAUSED task (or withdraw a pause requested on a RUNNING one)."""
    out(client().resume(task_id), R.changed)


@queue.command("retry")
@click.argument("task_id", type=int)
@click.option("--keep-attempts", is_flag=True, help="Keep the attempt count (allows one more attempt).")
@json_option
def queue_retry(task_id, keep_attempts):
    """Requeue a PARKED task, by default with its attempts reset."""
    out(client().retry(task_id, reset_attempts=not keep_attempts), R.changed)


@queue.command("priority")
@click.argument("task_id", type=int)
@click.argument("priority", type=int)
@json_option
def queue_priority(task_id, priority):
    """Set a live task's base priority (higher runs first)."""
    out(client().set_priority(task_id, priority), R.changed)


@queue.command("why")
@click.argument("task_id", type=int)
@json_option
def queue_why(task_id):
    """Why a task waits (or what it is doing): the scheduler's explanation plus the broker's facts."""
    from services.modules.operations.tasks import why
    out(why(client(), task_id, ask_scheduler), _why_text)


def _why_text(d: dict) -> str:
    state = d["state"]
    if state == "PENDING":
        ans = d["scheduler"]
        line = (f"task {d['id']}: pending; the scheduler is not answering (is it running?)" if ans is None else
                f"task {d['id']}: " + (ans.get("line", "") if isinstance(ans, dict) else str(ans)))
        err = d.get("error") or {}
        # what the last attempt met (a site's notice, a refusal): the scheduler's line says only when it
        # may run again, the operator needs to know why it did not run already
        if err.get("message"):
            line += f"\n  last attempt: {err.get('class')}: {str(err['message'])[:300]}"
        return line
    if state == "RUNNING":
        return f"task {d['id']}: running — " + R.running_detail({**d, "attempts": "?", "max_attempts": "?"})
    err = d.get("error") or {}
    tail = f": {err.get('class')}: {err.get('message')}" if err else ""
    return f"task {d['id']}: {state.lower()}{tail}"



# --- submit --------------------------------------------------------------------------------------------

def _payload(ctx, param, value):
    if value is None:
        return None
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", ctx, param) from None


@click.command()
@click.option("--key", required=True, help="Idempotency key (permanent).")
@click.option("--module", required=True, help="Owner module, e.g. explorer.")
@click.option("--kind", required=True, help="Task kind, e.g. explorer.explore.")
@click.option("--payload", callback=_payload, metavar="JSON", help="Task payload as JSON (default {}).")
@click.option("--priority", type=int, default=None, help="Base priority (default 50).")
@click.option("--max-attempts", type=int, default=None, help="Attempts before parking (default from config).")
@click.option("--mode", default=None, metavar="standard|deep", help="Required mode.")
@click.option("--backend", "backends", multiple=True, metavar="NAME", help="Allowed backend or account (repeatable).")
@click.option("--force", is_flag=True, help="Requeue the key even if its task was parked recently.")
@json_option
def submit(key, module, kind, payload, priority, max_attempts, mode, backends, force):
    """Submit a raw task (for scripts and tests); prints its id and whether it was created."""
    _flag_module(module)
    fields, requires = {}, {}
    if priority is not None:
        fields["priority"] = priority
    if max_attempts is not None:
        fields["max_attempts"] = max_attempts
    if mode:
        requires["mode"] = mode
    if backends:
        requires["backends"] = list(backends)
    if requires:
        fields["requires"] = requires
    d = client().submit(key, module, kind, payload, force=force, **fields)
    t = d["task"]
    verb = "created" if d["created"] else ("requeued existing" if d.get("requeued") else "existing")
    out(d, f"{t['id']} {verb} ({t['state']}, key {t['key']})")

