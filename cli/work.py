"""fanoctl commands about work in flight: ``status``, ``ask`` and ``top``.

They combine the broker (durable state, through the client library) with the scheduler's view
(live workers, why a task waits), asked with :func:`cli.app.ask_scheduler`. When the scheduler is
down the broker's part is still shown, and the scheduler's part says so.
"""
from __future__ import annotations

import sys
import time
import uuid

import click

from cli import render as R
from cli import views
from cli.app import ask_scheduler, client, ctl, fail, json_option, out
from shared.errors import ExitCode

TERMINAL = {"DONE", "PARKED", "CANCELLED"}


@click.command()
@json_option
def status():
    """Task counts, queue depth per module, leases, quota headroom, accounts, broker health, and the
    accounts idle while work waits (asked of the scheduler)."""
    stats = client().stats()
    stats["idle"] = views.idle_accounts()
    out(stats, R.status_text)



# --- ask -----------------------------------------------------------------------------------------------

@click.command()
@click.argument("prompt")
@click.option("--backend", "backends", multiple=True, metavar="NAME",
              help="Account (or backend kind) that may answer; repeatable. Default: any.")
@click.option("--deep", is_flag=True, help="Ask for the scarce deep mode (waits for deep quota).")
@click.option("--wait", "wait", is_flag=True, help="Wait for the answer and print it.")
@click.option("--max-wait", type=float, default=None, metavar="SECONDS",
              help="With --wait: give up after this long (exit 1; the task stays queued).")
@click.option("--key", default=None, help="Idempotency key (default: a fresh one per invocation).")
@json_option
def ask(prompt, backends, deep, wait, max_wait, key):
    """Ask one question of an LLM account; print the task id, or with --wait the answer."""
    requires = {}
    if backends:
        requires["backends"] = list(backends)
    if deep:
        requires["mode"] = "deep"
    c = client()
    # no priority: the scheduler gives kind "ask" its base from [scheduler] base_priorities
    res = c.submit(key or f"ask:{uuid.uuid4().hex}", "adhoc", "ask", {"prompt": prompt}, requires=requires)
    task = res["task"]
    if not wait:
        out(res, f"task {task['id']} submitted" + ("" if res["created"] else " (already existed)"))
        return
    task = _wait_for(c, task["id"], max_wait)
    if ctl().json:
        out(task, None)
    elif task["state"] == "DONE":
        result = task.get("result")
        click.echo(result.get("text", R.to_json(result)) if isinstance(result, dict) else result)
    if task["state"] != "DONE":
        err = task.get("error") or {}
        fail(f"task {task['id']} ended {task['state']}: {err.get('message', '')}", ExitCode.FAILURE)


def _wait_for(c, task_id: int, max_wait: float | None) -> dict:
    """Poll the task until it settles, with one progress line on stderr refreshed in place."""
    start = time.monotonic()
    tty = sys.stderr.isatty()
    last_line = ""
    why_at = 0.0
    why = ""
    while True:
        task = c.get(task_id, history=False)
        if task["state"] in TERMINAL:
            if tty and last_line:
                click.echo("\r" + " " * len(last_line) + "\r", err=True, nl=False)
            return task
        waited = time.monotonic() - start
        if max_wait is not None and waited > max_wait:
            fail(f"task {task_id} still {task['state']} after {max_wait:g}s (it stays queued)", ExitCode.FAILURE)
        if task["state"] == "PENDING" and time.monotonic() - why_at > 2.0:
            answer = ask_scheduler("why", task_id=task_id)
            why = answer.get("line", "") if isinstance(answer, dict) else "scheduler not answering"
            why_at = time.monotonic()
        detail = why if task["state"] == "PENDING" else R.running_detail(task)
        line = f"task {task_id}: {task['state'].lower()} {R.duration(waited)}" + (f" — {detail}" if detail else "")
        if tty:
            click.echo("\r" + line[:150].ljust(len(last_line)), err=True, nl=False)
        elif line != last_line:
            click.echo(line, err=True)
        last_line = line[:150]
        time.sleep(0.25 if waited < 5 else 1.0)


# --- top -----------------------------------------------------------------------------------------------

@click.command()
@click.option("--interval", type=click.FloatRange(min=0.2), default=1.0, show_default=True, metavar="SECONDS")
@click.option("--once", is_flag=True, help="Print one frame and exit (scripts, tests).")
@json_option
def top(interval, once):
    """A live view: accounts, the accounts idle while work waits, queue depth per module, quota headroom,
    recent completions, and the research so far (threads, insights, document, researcher; counted at most
    every 10 s)."""
    from services.modules.operations.summary import REFRESH, research_summary
    as_json = ctl().json
    research, research_due = None, 0.0
    while True:
        stats = client().stats()
        if time.monotonic() >= research_due:   # a bounded scan of the research namespaces: not every frame
            research = research_summary(client(), now=stats.get("now"))
            research_due = time.monotonic() + REFRESH
        frame = {"stats": stats, "scheduler": ask_scheduler("top"), "backends": views.backends_view(),
                 "research": research, "idle": views.idle_accounts()}
        if as_json:
            click.echo(R.to_json(frame))
        else:
            text = R.top_text(frame)
            if once or not sys.stdout.isatty():
                click.echo(text)
            else:
                click.echo("\x1b[H\x1b[2J" + text, nl=False)  # home + clear: refresh in place
        if once:
            return
        try:
            time.sleep(interval)
        except KeyboardInterrupt:
            return


