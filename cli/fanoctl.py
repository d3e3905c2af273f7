"""``fanoctl``: the operator's command line, a thin click layer over :class:`shared.client.BrokerClient`.

This module only assembles it: the root group and the helpers are in cli/app.py, each command group
in a module of its own that imports cli/app.py and no other command module, and :data:`COMMANDS`
below is the one list of what ``fanoctl`` offers. Nothing imports this module back, so running it as
a script (``python -m cli.fanoctl``) or as ``python -m cli`` registers every command exactly once.
The console script ``fanoctl`` (pyproject.toml) is :data:`main`.
"""
from __future__ import annotations

from cli import (
    admin,
    backends,
    health,
    keys,
    modules,
    queue,
    quota,
    research_documenter,
    research_explorer,
    research_researcher,
    work,
)
from cli.app import main

# every top-level command and group, registered here and nowhere else (`--help` lists them by name)
COMMANDS = (
    work.status, work.ask, work.top,
    queue.queue, queue.submit,
    quota.quota,
    backends.backends,
    modules.modules,
    admin.admin, admin.events,
    health.health,
    keys.keys,
    research_researcher.research,
    research_explorer.seeds, research_explorer.threads, research_explorer.insights,
    research_documenter.comments, research_documenter.document,
)

for _command in COMMANDS:
    main.add_command(_command)

__all__ = ["COMMANDS", "main"]

if __name__ == "__main__":
    main(prog_name="fanoctl")
