"""``fanoctl``: the operator's command line, a thin click layer over :class:`shared.client.BrokerClient`.

Every command takes ``--json`` (print the broker's result as JSON; see docs/cli.md for the stable
shapes) and otherwise prints tables. Exit codes come from :class:`shared.errors.ExitCode`: 1 for a
request the broker refused, 3 when the broker does not answer, 5 for a configuration error, 2 for a
bad command line.
"""
from __future__ import annotations

import json
import sys
import time

import click

from cli import render as R
from shared.errors import BrokerUnavailable, ExitCode, FanoError

DEFAULT_TIMEOUT = 2.0   # seconds per attempt; a down broker fails after RETRIES * DEFAULT_TIMEOUT
RETRIES = 2
HINT_DOWN = "is it running? (ops/up starts it)"


class Ctl:
    """Per-invocation state: where the broker is, the output mode, and one lazily made client."""

    def __init__(self, config_path, endpoint, timeout: float, as_json: bool):
        self.config_path = config_path
        self.endpoint = endpoint
        self.timeout = timeout
        self.json = as_json
        self._client = None
        self._endpoints = None

    def endpoints(self):
        """Where the tree's sockets are (:func:`shared.config.find_endpoints`): commands that only talk to
        the running tree keep working when fano.toml is broken; that is said once, on stderr."""
        if self._endpoints is None:
            from shared.config import find_endpoints
            self._endpoints = find_endpoints(self.config_path)
            if self._endpoints.problem:
                click.echo(f"fanoctl: warning: the configuration does not load ({self._endpoints.problem}); "
                           f"using the running tree in {self._endpoints.run_dir}", err=True)
        return self._endpoints

    def client(self):
        if self._client is None:
            from shared.client import BrokerClient
            if not self.endpoint:
                self.endpoint = self.endpoints().broker_endpoint
            self._client = BrokerClient(self.endpoint, name="fanoctl", timeout=self.timeout, retries=RETRIES)
            self._client.notify_writes = True   # a human's change of module data: the module acts at once
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def fail(message: str, code: int) -> None:
    click.echo(f"fanoctl: {message}", err=True)
    raise click.exceptions.Exit(int(code))


class _Main(click.Group):
    """The root group: turns expected errors into one line on stderr and a named exit code."""

    def invoke(self, ctx):
        from shared.config import ConfigError
        try:
            return super().invoke(ctx)
        except BrokerUnavailable:
            ctl = ctx.find_object(Ctl)
            fail(f"broker unavailable at {ctl.endpoint if ctl else '?'}: {HINT_DOWN}", ExitCode.UNAVAILABLE)
        except FanoError as exc:
            fail(f"{exc.name}: {exc.message}", ExitCode.FAILURE)
        except ConfigError as exc:
            fail(f"config error: {exc}", ExitCode.CONFIG)
        except Exception as exc:
            zmq = sys.modules.get("zmq")  # loaded once a client was made
            if zmq is not None and isinstance(exc, zmq.ZMQError):
                ctl = ctx.find_object(Ctl)
                fail(f"cannot connect to {ctl.endpoint if ctl else '?'}: {exc}", ExitCode.CONFIG)
            raise


def _set_json(ctx, _param, value):
    if value:
        ctx.find_object(Ctl).json = True


json_option = click.option("--json", "as_json", is_flag=True, expose_value=False, callback=_set_json,
                           help="Print machine-readable JSON (see docs/cli.md).")


def out(data, text) -> None:
    """Print ``data`` as JSON under --json, else ``text(data)`` (a callable) or the string ``text``."""
    ctl = click.get_current_context().find_object(Ctl)
    if ctl.json:
        click.echo(R.to_json(data))
    else:
        click.echo(text(data) if callable(text) else text)


def client():
    return click.get_current_context().find_object(Ctl).client()


@click.group(cls=_Main)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Config file (default: $FANO_CONFIG, else fano.toml at the repository root).")
@click.option("--broker", "endpoint", metavar="ENDPOINT", default=None,
              help="Broker endpoint, e.g. ipc:///path/broker.sock (overrides the config).")
@click.option("--timeout", type=click.FloatRange(min=0.05), default=DEFAULT_TIMEOUT, show_default=True,
              metavar="SECONDS", help=f"Wait per attempt for the broker ({RETRIES} attempts).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for every command.")
@click.pass_context
def main(ctx, config_path, endpoint, timeout, as_json):
    """Operate a running Fano broker: queue, quotas, status, events."""
    ctx.obj = Ctl(config_path, endpoint, timeout, as_json)
    ctx.call_on_close(ctx.obj.close)


# --- status --------------------------------------------------------------------------------------------

@main.command()
@json_option
def status():
    """Task counts, queue depth per module, leases, quota headroom, accounts, broker health, and the
    accounts idle while work waits (asked of the scheduler)."""
    from cli.work import idle_accounts  # registered at the bottom of this file (issue 12: import cycle)
    stats = client().stats()
    stats["idle"] = idle_accounts()
    out(stats, R.status_text)


# --- queue ---------------------------------------------------------------------------------------------

@main.group()
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
@click.option("--all", "all_pages", is_flag=True, help="Page through every matching task.")
@click.option("--payloads", is_flag=True, help="Include each task's payload and result (--json).")
@json_option
def queue_ls(state, module, kind, limit, after, all_pages, payloads):
    """Tasks in id order, with state, attempts, age and lease or backoff info."""
    c = client()
    tasks, nxt = [], after
    while True:
        page = c.list(state=state.upper() if state else None, module=module, kind=kind, after=nxt, limit=limit,
                      payloads=payloads)
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


# --- quota ---------------------------------------------------------------------------------------------

@main.group()
def quota():
    """Show, set and reset quota windows per (account, mode)."""


@quota.command("show")
@click.argument("account", required=False)
@json_option
def quota_show(account):
    """Each window's usage, reserves and next reset; cool-downs and paused accounts."""
    out(client().quota_show(account), R.quota_text)


def _reserve(ctx, param, values):
    parts = []
    for v in values:
        name, sep, count = v.partition("=")
        if not sep or not name or not count.isdigit():
            raise click.BadParameter(f"{v!r}: use module=N, e.g. explorer=10", ctx, param)
        parts.append(f"{name}={int(count)}")
    return parts


@quota.command("set")
@click.argument("account")
@click.argument("mode")
@click.argument("windows", nargs=-1, required=True, metavar="WINDOW...")
@click.option("--reserve", multiple=True, callback=_reserve, metavar="MODULE=N",
              help="A module's reserve, added to every window (repeatable).")
@json_option
def quota_set(account, mode, windows, reserve):
    """Replace the windows of ACCOUNT's MODE quota.

    Each WINDOW is a compact spec: 50/3h, 20/day@04:00 Europe/Berlin, 100/week@mon 09:00 UTC,
    optionally followed by "reserve explorer=10,documenter=5".
    """
    if reserve:
        if any(" reserve" in w for w in windows):
            raise click.UsageError("give reserves either inside the WINDOW strings or with --reserve, not both")
        windows = [f"{w} reserve {','.join(reserve)}" for w in windows]
    out(client().quota_set(account, mode, list(windows)), lambda q: R.quota_text({"now": time.time(), "quotas": [q]}))


@quota.command("reset")
@click.argument("account")
@click.argument("mode", required=False)
@click.option("--spec", is_flag=True, help="Also remove the stored windows (config quotas return at restart).")
@json_option
def quota_reset(account, mode, spec):
    """Clear usage and cool-downs of ACCOUNT (all modes, or MODE)."""
    d = client().quota_reset(account, mode, usage=True, spec=spec)
    out(d, f"{d['account']} {'/'.join(d['modes'])}: usage and cool-downs cleared ({d['cleared_records']} record(s))"
        + ("; windows removed" if d.get("spec_removed") else ""))


# --- submit --------------------------------------------------------------------------------------------

def _payload(ctx, param, value):
    if value is None:
        return None
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", ctx, param) from None


@main.command()
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


# --- admin, events -------------------------------------------------------------------------------------

@main.group()
def admin():
    """Broker maintenance."""


def _size(ctx, param, value):
    from shared.config import ConfigError, parse_size
    try:
        return parse_size(value)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


@admin.command("grow-map")
@click.argument("size", callback=_size)
@json_option
def grow_map(size):
    """Grow the broker's database map to SIZE (e.g. 2GiB) while it runs."""
    d = client().call("grow_map", size=size)
    out(d, f"map grown from {R.size(d['previous'])} to {R.size(d['map_size'])} ({R.size(d['map_used'])} used)")


_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
COMPACT_PASSES = 200  # broker passes per command (500 tasks each): a huge backlog is drained in a few runs


def _duration(ctx, param, value):
    """``90s``, ``30m``, ``12h``, ``7d``, ``2w`` or plain seconds -> seconds (None when not given)."""
    if value is None:
        return None
    text = value.strip().lower()
    unit = text[-1:] if text[-1:] in _DURATION_UNITS else ""
    try:
        seconds = float(text[: len(text) - len(unit)]) * _DURATION_UNITS[unit]
    except ValueError:
        raise click.BadParameter(f"not a duration: {value!r} (use e.g. 0s, 12h, 14d)", ctx, param) from None
    if not 0 <= seconds <= 1e10:  # also refuses nan and inf
        raise click.BadParameter(f"duration out of range: {value!r}", ctx, param)
    return seconds


@admin.command("compact")
@click.option("--older-than", "older_than", callback=_duration, metavar="DURATION", default=None,
              help="Compact tasks settled longer ago than this (e.g. 0s, 12h, 7d). "
                   "Default: broker.task_retention.")
@json_option
def compact(older_than):
    """Compact old settled tasks now: drop payload, result and history of acked DONE/CANCELLED tasks."""
    c = client()
    # the broker compacts a bounded batch per request (one short write transaction each): ask until done
    first = last = c.call("compact", older_than=older_than)
    total, passes = first["compacted"], 1
    while last["more"] and passes < COMPACT_PASSES:
        last = c.call("compact", older_than=older_than)
        total, passes = total + last["compacted"], passes + 1
    d = {"compacted": total, "more": last["more"], "passes": passes, "older_than": last["older_than"],
         "map_used_before": first["map_used_before"], "map_used_after": last["map_used_after"]}
    out(d, _compact_text)


def _compact_text(d: dict) -> str:
    if d["older_than"] is None:
        return "task retention is off (broker.task_retention = 0): nothing compacted; give --older-than DURATION"
    return (f"compacted {d['compacted']} task(s) settled over {R.duration(d['older_than'])} ago; live data "
            f"{R.size(d['map_used_before'])} -> {R.size(d['map_used_after'])}"
            + (" (more remain: run it again)" if d["more"] else ""))


@main.command()
@click.option("--after", type=click.IntRange(min=0), default=0, show_default=True, metavar="SEQ",
              help="Print events after this sequence number.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@json_option
def events(after, limit):
    """Dump events from the broker's durable outbox."""
    out(client().events(after=after, limit=limit), R.events_text)


# imported last: these modules import this one for the group they register their commands on
from cli import (  # noqa: E402
    health,  # noqa: F401  (registers health)
    research_documenter,  # noqa: F401  (registers comments, document)
    research_explorer,  # noqa: F401  (registers seeds, threads, insights)
    research_researcher,  # noqa: F401  (registers research)
    work,  # noqa: F401  (registers ask, queue why, backends, top)
)

if __name__ == "__main__":
    # run as a script, this file is __main__; the commands in cli.work registered on cli.fanoctl's group
    from cli.fanoctl import main as _registered_main
    sys.exit(_registered_main())
