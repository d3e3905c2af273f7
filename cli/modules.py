"""``fanoctl modules ...``: the scheduler's module weights and the advisor's proposals."""
from __future__ import annotations

import click

from cli import research_advisor
from cli.app import ctl, fail, json_option
from shared.errors import BrokerUnavailable, ExitCode


@click.group()
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
    from services.modules.operations.weights import module_weights
    if set_ and reset:
        raise click.UsageError("--set and --reset exclude each other")
    try:
        endpoint = ctl().scheduler_endpoint()
        res = module_weights(endpoint, set_=set_ or None, reset=reset, timeout=min(ctl().timeout, 2.0),
                             keys=ctl().keys(endpoint))
    except BrokerUnavailable:
        fail("scheduler not answering: is it running? (ops/up starts it)", ExitCode.UNAVAILABLE)
    research_advisor.show_weights(res)   # with the advisor's last proposal (`modules advice` lists them all)


@modules.command("advice")
@click.option("--limit", type=click.IntRange(min=1), default=10, show_default=True, help="The newest N.")
@json_option
def modules_advice(limit):
    """The advisor's proposals (newest last): weights, whether applied, why."""
    research_advisor.show_advice(limit)

