"""``fanoctl backends ...``: the LLM accounts' state (``ls``), ``pause`` and ``resume``; ``check`` and
``login`` (which run an account's provider in this process) come from cli/backends_setup.py."""
from __future__ import annotations

import click

from cli import backends_setup, views
from cli import render as R
from cli.app import client, json_option, out


@click.group()
def backends():
    """LLM accounts: state, current task, last error, cool-downs; pause and resume."""


@backends.command("ls")
@json_option
def backends_ls():
    """Every account: worker state, current task, last outcome, paused, cooling down until."""
    out(views.backends_view(), R.backends_text)


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


backends.add_command(backends_setup.backends_check)
backends.add_command(backends_setup.backends_login)
