"""fanoctl commands about work in flight: ``ask``, ``queue why``, ``backends``, ``top``.

They combine the broker (durable state, through the client library) with the scheduler's view
(live workers, why a task waits), asked with :func:`shared.scheduler_client.query`. When the
scheduler is down the broker's part is still shown, and the scheduler's part says so.
"""
from __future__ import annotations

import os
import sys
import time
import uuid

import click

from cli import render as R
from cli.fanoctl import Ctl, client, fail, json_option, main, out, queue
from shared.errors import ExitCode

TERMINAL = {"DONE", "PARKED", "CANCELLED"}


def _ctl() -> Ctl:
    return click.get_current_context().find_object(Ctl)


def scheduler_endpoint() -> str:
    ctl = _ctl()
    if ctl.endpoint and ctl.endpoint.startswith("ipc://") and ctl.endpoint.endswith("/broker.sock"):
        return ctl.endpoint[: -len("broker.sock")] + "scheduler.sock"  # --broker given: same run dir
    return ctl.endpoints().scheduler_endpoint


def ask_scheduler(what: str, **fields):
    """The scheduler's answer, or None when it does not answer (it is stateless: it may be restarting)."""
    from shared.errors import BrokerUnavailable
    from shared.scheduler_client import query
    endpoint = scheduler_endpoint()
    if endpoint.startswith("ipc://") and not os.path.exists(endpoint[len("ipc://"):]):
        return None   # no socket file: nobody listens (a connect would wait the whole timeout)
    try:
        return query(endpoint, what, timeout=min(_ctl().timeout, 2.0), **fields)
    except BrokerUnavailable:
        return None


def idle_accounts() -> list | None:
    """The scheduler's ``idle`` rows (accounts idle while work waits, services/scheduler/idle.py), or None
    when it does not answer, is rebuilding, or cannot be found (an older scheduler, no config)."""
    from shared.config import ConfigError
    from shared.errors import FanoError
    try:
        answer = ask_scheduler("idle")
    except (ConfigError, FanoError):
        return None
    if not isinstance(answer, dict) or answer.get("synced") is False:
        return None
    return answer.get("accounts")


# --- ask -----------------------------------------------------------------------------------------------

@main.command()
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
    if _ctl().json:
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
        detail = why if task["state"] == "PENDING" else _running_detail(task)
        line = f"task {task_id}: {task['state'].lower()} {R.duration(waited)}" + (f" — {detail}" if detail else "")
        if tty:
            click.echo("\r" + line[:150].ljust(len(last_line)), err=True, nl=False)
        elif line != last_line:
            click.echo(line, err=True)
        last_line = line[:150]
        time.sleep(0.25 if waited < 5 else 1.0)


def _running_detail(task: dict) -> str:
    lease = task.get("lease") or {}
    if not lease:
        return ""
    return f"on {lease.get('account')} ({lease.get('mode')}), attempt {task['attempts']}/{task['max_attempts']}"


# --- queue why -----------------------------------------------------------------------------------------

@queue.command("why")
@click.argument("task_id", type=int)
@json_option
def queue_why(task_id):
    """Why a task waits (or what it is doing): the scheduler's explanation plus the broker's facts."""
    task = client().get(task_id, history=False)
    answer = ask_scheduler("why", task_id=task_id) if task["state"] == "PENDING" else None
    data = {"id": task_id, "state": task["state"], "scheduler": answer, "not_before": task.get("not_before"),
            "error": task.get("error"), "lease": task.get("lease")}
    out(data, _why_text)


def _why_text(d: dict) -> str:
    state = d["state"]
    if state == "PENDING":
        ans = d["scheduler"]
        if ans is None:
            return f"task {d['id']}: pending; the scheduler is not answering (is it running?)"
        return f"task {d['id']}: " + (ans.get("line") if isinstance(ans, dict) else str(ans))
    if state == "RUNNING":
        return f"task {d['id']}: running — " + _running_detail({**d, "attempts": "?", "max_attempts": "?"})
    err = d.get("error") or {}
    tail = f": {err.get('class')}: {err.get('message')}" if err else ""
    return f"task {d['id']}: {state.lower()}{tail}"


# --- backends ------------------------------------------------------------------------------------------

@main.group()
def backends():
    """LLM accounts: state, current task, last error, cool-downs; pause and resume."""


@backends.command("ls")
@json_option
def backends_ls():
    """Every account: worker state, current task, last outcome, paused, cooling down until."""
    out(backends_view(), R.backends_text)


def backends_view() -> dict:
    shown = client().quota_show()
    broker_accounts = {a["account"]: a for a in shown["accounts"]}
    sched = ask_scheduler("backends")
    live = {}
    if isinstance(sched, dict):
        live = {b["account"]: b for b in sched.get("accounts", [])}
    names = set(broker_accounts) | set(live) | set(_configured_accounts())
    rows = []
    for name in sorted(names):
        b = dict(live.get(name) or {"account": name, "state": "offline" if sched is not None else "unknown"})
        acct = broker_accounts.get(name) or {}
        b["paused"] = acct.get("paused", b.get("paused", False))
        b["pause_reason"] = acct.get("pause_reason", "")
        b["cooldowns"] = acct.get("cooldowns", {})
        rows.append(b)
    return {"now": shown["now"], "backends": rows, "scheduler": "up" if sched is not None else "not answering"}


def _configured_accounts() -> list[str]:
    try:
        from shared.config import load_config
        return [a.name for a in load_config(_ctl().config_path).accounts]
    except Exception:
        return []


@backends.command("pause")
@click.argument("name")
@click.option("--reason", default="", help="Shown in backends ls.")
@json_option
def backends_pause(name, reason):
    """Stop giving work to an account (durable; a running request finishes)."""
    res = client().call("account_pause", account=name, reason=reason or "paused by operator")
    out(res, f"{name}: paused")


@backends.command("resume")
@click.argument("name")
@json_option
def backends_resume(name):
    """Give work to a paused account again (also after an auth failure was fixed)."""
    res = client().call("account_resume", account=name)
    out(res, f"{name}: resumed")


# --- top -----------------------------------------------------------------------------------------------

@main.command()
@click.option("--interval", type=click.FloatRange(min=0.2), default=1.0, show_default=True, metavar="SECONDS")
@click.option("--once", is_flag=True, help="Print one frame and exit (scripts, tests).")
@json_option
def top(interval, once):
    """A live view: accounts, queue depth per module, quota headroom, recent completions, and the research
    so far (threads, insights, document, researcher; counted at most every 10 s)."""
    from cli.research_summary import REFRESH, research_summary
    ctl = _ctl()
    research, research_due = None, 0.0
    while True:
        stats = client().stats()
        if time.monotonic() >= research_due:   # a bounded scan of the research namespaces: not every frame
            research = research_summary(client(), now=stats.get("now"))
            research_due = time.monotonic() + REFRESH
        frame = {"stats": stats, "scheduler": ask_scheduler("top"), "backends": backends_view(),
                 "research": research}
        if ctl.json:
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




# --- modules weights -----------------------------------------------------------------------------------

@main.group()
def modules():
    """Research modules: scheduling weights and the advisor's proposals."""


def _weights(ctx, param, values):
    out_map = {}
    for item in values:
        name, sep, value = item.partition("=")
        try:
            out_map[name] = float(value)
        except ValueError:
            raise click.BadParameter(f"{item!r}: use MODULE=WEIGHT, e.g. explorer=5") from None
        if not sep or not name:
            raise click.BadParameter(f"{item!r}: use MODULE=WEIGHT, e.g. explorer=5")
    return out_map


@modules.command("weights")
@click.option("--set", "set_", multiple=True, callback=_weights, metavar="MODULE=WEIGHT",
              help="Change a module's additive priority weight (kept in the broker: it survives restarts).")
@click.option("--reset", is_flag=True, help="Back to fano.toml's [scheduler] module_weights.")
@json_option
def modules_weights(set_, reset):
    """Show (or change) the module weights the scheduler adds to every task's priority."""
    from shared.errors import BrokerUnavailable
    from shared.scheduler_client import query
    if set_ and reset:
        raise click.UsageError("--set and --reset exclude each other")
    change = {"set": set_} if set_ else {"reset": True} if reset else {}
    try:
        res = query(scheduler_endpoint(), "weights", timeout=min(_ctl().timeout, 2.0), **change)
    except BrokerUnavailable:
        fail("scheduler not answering: is it running? (ops/up starts it)", ExitCode.UNAVAILABLE)
    from cli import research_advisor
    research_advisor.show_weights(res)   # with the advisor's last proposal (`modules advice` lists them all)


@modules.command("advice")
@click.option("--limit", type=click.IntRange(min=1), default=10, show_default=True, help="The newest N.")
@json_option
def modules_advice(limit):
    """The advisor's proposals (newest last): weights, whether applied, why."""
    from cli import research_advisor
    research_advisor.show_advice(limit)


from cli import backends_setup  # noqa: E402,F401  (registers backends login, backends check on the group above)
