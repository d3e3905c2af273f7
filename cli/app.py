"""The root of ``fanoctl``: the click group, the per-invocation state and the helpers every command uses.

This module is the bottom of the CLI's import graph: the command modules (cli/queue.py, cli/work.py,
cli/research_*.py, ...) import it and never each other, and cli/fanoctl.py imports them all and
registers their commands on :data:`main` in one list. Nothing imports cli/fanoctl.py back
(``tests/unit/test_cli_structure.py`` checks that the graph stays acyclic).

Every command takes ``--json`` (print the broker's result as JSON; see docs/cli.md for the stable
shapes) and otherwise prints tables. Exit codes come from :class:`shared.errors.ExitCode`: 1 for a
request the broker refused, 3 when the broker does not answer, 5 for a configuration error, 2 for a
bad command line.
"""
from __future__ import annotations

import sys

import click

from cli import render as R
from shared.errors import BrokerUnavailable, ExitCode, FanoError

DEFAULT_TIMEOUT = 2.0   # seconds per attempt; a down broker fails after RETRIES * DEFAULT_TIMEOUT
RETRIES = 2
HINT_DOWN = "is it running? (ops/up starts it)"


class Ctl:
    """Per-invocation state: where the broker and the scheduler are, the output mode, one lazily made
    client and the configuration once loaded."""

    def __init__(self, config_path, endpoint, timeout: float, as_json: bool, scheduler: str | None = None):
        self.config_path = config_path
        self.endpoint = endpoint
        self.scheduler = scheduler
        self.timeout = timeout
        self.json = as_json
        self._client = None
        self._endpoints = None
        self.warned: set[str] = set()   # warnings said in this invocation (top repeats its frames)

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

    def scheduler_endpoint(self) -> str:
        """``--scheduler``, else the configuration's (``$FANO_SCHEDULER``, else ``scheduler.sock`` in the
        run directory): found the same way as the broker's, by :meth:`endpoints`."""
        if not self.scheduler:
            self.scheduler = self.endpoints().scheduler_endpoint
        return self.scheduler

    def client(self):
        if self._client is None:
            from shared.client import BrokerClient
            if not self.endpoint:
                self.endpoint = self.endpoints().broker_endpoint
            self._client = BrokerClient(self.endpoint, name="fanoctl", timeout=self.timeout, retries=RETRIES,
                                        keys=self.keys(self.endpoint))
            self._client.notify_writes = True   # a human's change of module data: the module acts at once
        return self._client

    def keys(self, endpoint: str):
        """fanoctl's CURVE keys (``keys_dir/fanoctl.key_secret``: the operator's) when ``endpoint`` is
        ``tcp://``; None for an ``ipc://`` one, which needs no configuration (docs/security.md)."""
        from shared.keys import needs_curve
        if not needs_curve(endpoint):
            return None
        return self.endpoints().client_keys("fanoctl", endpoint)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def ctl() -> Ctl:
    """The current invocation's :class:`Ctl` (inside a command)."""
    obj = click.get_current_context().find_object(Ctl)
    if obj is None:   # a command always runs below the root group, which makes it
        raise RuntimeError("fanoctl: no invocation state outside a command")
    return obj


def client():
    """The current invocation's broker client (:class:`shared.client.BrokerClient`), made on first use."""
    return ctl().client()


def fail(message: str, code: int) -> None:
    """One line on stderr and exit ``code`` (a :class:`shared.errors.ExitCode`)."""
    click.echo(f"fanoctl: {message}", err=True)
    raise click.exceptions.Exit(int(code))


def warn(message: str) -> None:
    """A problem the command works around: one line on stderr (stdout stays the result), once per
    invocation (``top`` meets the same problem every frame)."""
    c = click.get_current_context(silent=True)
    obj = c.find_object(Ctl) if c is not None else None
    seen = obj.warned if obj is not None else set()
    if message not in seen:
        seen.add(message)
        click.echo(f"fanoctl: warning: {message}", err=True)


class _Main(click.Group):
    """The root group: turns expected errors into one line on stderr and a named exit code."""

    def invoke(self, ctx):
        from shared.config import ConfigError
        from shared.keys import KeysError
        try:
            return super().invoke(ctx)
        except BrokerUnavailable:
            c = ctx.find_object(Ctl)
            fail(f"broker unavailable at {c.endpoint if c else '?'}: {HINT_DOWN}", ExitCode.UNAVAILABLE)
        except FanoError as exc:
            fail(f"{exc.name}: {exc.message}", ExitCode.FAILURE)
        except ConfigError as exc:
            fail(f"config error: {exc}", ExitCode.CONFIG)
        except KeysError as exc:
            fail(f"keys: {exc}", ExitCode.KEYS)
        except Exception as exc:
            zmq = sys.modules.get("zmq")  # loaded once a client was made
            if zmq is not None and isinstance(exc, zmq.ZMQError):
                c = ctx.find_object(Ctl)
                fail(f"cannot connect to {c.endpoint if c else '?'}: {exc}", ExitCode.CONFIG)
            raise


def _set_json(ctx, _param, value):
    if value:
        ctx.find_object(Ctl).json = True


json_option = click.option("--json", "as_json", is_flag=True, expose_value=False, callback=_set_json,
                           help="Print machine-readable JSON (see docs/cli.md).")


def out(data, text) -> None:
    """Print ``data`` as JSON under --json, else ``text(data)`` (a callable) or the string ``text``."""
    if ctl().json:
        click.echo(R.to_json(data))
    else:
        click.echo(text(data) if callable(text) else text)


_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def duration(ctx, param, value):
    """A click callback: ``90s``, ``30m``, ``12h``, ``7d``, ``2w`` or plain seconds -> seconds (None when
    not given)."""
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


def ask_scheduler(what: str, **fields):
    """The scheduler's answer, or None when it does not answer (it is stateless: it may be restarting)."""
    from shared.config import ConfigError
    from shared.scheduler_client import ask
    try:
        endpoint = ctl().scheduler_endpoint()
    except ConfigError as exc:   # --broker without a config: where the scheduler is is not known
        warn(f"cannot find the scheduler ({exc}); give --scheduler ENDPOINT")
        return None
    return ask(endpoint, what, timeout=min(ctl().timeout, 2.0), keys=ctl().keys(endpoint), **fields)


@click.group(cls=_Main)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Config file (default: $FANO_CONFIG, else fano.toml at the repository root).")
@click.option("--broker", "endpoint", metavar="ENDPOINT", default=None,
              help="Broker endpoint, e.g. ipc:///path/broker.sock (overrides the config).")
@click.option("--scheduler", "scheduler", metavar="ENDPOINT", default=None,
              help="Scheduler endpoint, e.g. ipc:///path/scheduler.sock (overrides the config).")
@click.option("--timeout", type=click.FloatRange(min=0.05), default=DEFAULT_TIMEOUT, show_default=True,
              metavar="SECONDS", help=f"Wait per attempt for the broker ({RETRIES} attempts).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for every command.")
@click.pass_context
def main(ctx, config_path, endpoint, scheduler, timeout, as_json):
    """Operate a running Fano broker: queue, quotas, status, events."""
    ctx.obj = Ctl(config_path, endpoint, timeout, as_json, scheduler)
    ctx.call_on_close(ctx.obj.close)
