"""``fanoctl quota ...``: show, set and reset quota windows per (account, mode)."""
from __future__ import annotations

import time

import click

from cli import render as R
from cli.app import client, json_option, out


@click.group()
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

