"""``fanoctl health``: one verdict on the whole tree for cron or a monitoring system.

Exit code ``OK`` (0), ``DEGRADED`` (1) or ``DOWN`` (2), the worst of the checks; ``--json`` prints the report.
The checks, the verdicts and the report's shape: :mod:`services.health` (the web panel's overview shows the
same report).
"""
from __future__ import annotations

from pathlib import Path

import click

from cli.app import ask_scheduler, client, ctl, duration, json_option, out
from services.health import health_report, supervisor_conf

# --- the command -------------------------------------------------------------------------------------------

def _days(ctx, param, value):
    if value < 0:
        raise click.BadParameter("must be >= 0", ctx, param)
    return value


@click.command()
@click.option("--idle-after", "idle_after", callback=duration, default="10m", show_default=True,
              metavar="DURATION", help="An account idle while work waits this long (world time) is degraded.")
@click.option("--min-days", "min_days", type=float, callback=_days, default=7.0, show_default=True,
              metavar="DAYS", help="Storage full in fewer days than this (at the current rate) is degraded.")
@click.option("--supervisor-conf", "supervisor_conf_path", type=click.Path(dir_okay=False), default=None,
              help="supervisord.conf of the tree (default: beside the config file, else the repository's).")
@json_option
def health(idle_after, min_days, supervisor_conf_path):
    """Is the tree healthy? Exit 0 ok, 1 degraded, 2 down (see docs/cli.md); for cron and monitoring."""
    c = ctl()
    conf = Path(supervisor_conf_path) if supervisor_conf_path else supervisor_conf(c.config_path)
    report = health_report(client(), ask_scheduler, conf, idle_after, min_days, c.endpoint, c.scheduler_endpoint)
    out(report, _text)
    raise click.exceptions.Exit(report["exit"])


def _text(report: dict) -> str:
    lines = [f"health: {report['status'].upper()} (exit {report['exit']})"]
    lines += [f"  {c['status'].upper() if c['status'] != 'ok' else 'ok':<9} {c['check']:<10} {c['line']}"
              for c in report["checks"]]
    return "\n".join(lines)
