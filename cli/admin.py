"""``fanoctl admin ...`` (broker maintenance) and ``fanoctl events`` (the durable event outbox)."""
from __future__ import annotations

import click

from cli import render as R
from cli.app import client, duration, json_option, out

COMPACT_PASSES = 200  # broker passes per command (500 tasks each): a huge backlog is drained in a few runs


@click.group()
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



@admin.command("compact")
@click.option("--older-than", "older_than", callback=duration, metavar="DURATION", default=None,
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


@click.command()
@click.option("--after", type=click.IntRange(min=0), default=0, show_default=True, metavar="SEQ",
              help="Print events after this sequence number.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@json_option
def events(after, limit):
    """Dump events from the broker's durable outbox."""
    out(client().events(after=after, limit=limit), R.events_text)

