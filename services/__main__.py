"""Entry point of every supervised program: ``python -m services <program> [--config PATH]``.

Exit codes (:class:`shared.errors.ExitCode`): 0 after a stop request; a start-up failure
(:class:`shared.errors.StartupError`: its table lists them) is one log line and its ``exit_code`` —
4 another instance holds the lock, 5 the configuration, 6 the database or a sim log; anything else is
a bug: a traceback and exit 1.
"""
from __future__ import annotations

import argparse
import sys

from shared.clock import Clock
from shared.config import MODULES, load_config
from shared.errors import StartupError
from shared.service import setup_logging


def _broker():
    from services.broker.server import BrokerService
    return BrokerService


def _scheduler():
    from services.scheduler.service import SchedulerService
    return SchedulerService


def _backend():
    from services.backends.worker import BackendWorker
    return BackendWorker


def _web():
    from services.web.service import WebService
    return WebService


def _module(dotted: str):
    def load():
        import importlib
        path, _, cls = dotted.rpartition(".")
        return getattr(importlib.import_module(path), cls)
    return load


PROGRAMS = {"broker": _broker, "scheduler": _scheduler, "backend": _backend,
            # research modules run as supervisord programs module-<name>
            "explorer": _module("services.modules.explorer.service.ExplorerService"),
            "documenter": _module("services.modules.documenter.service.DocumenterService"),
            "researcher": _module("services.modules.researcher.service.ResearcherService"),
            "advisor": _module("services.modules.advisor.service.AdvisorService"),
            # the web control panel (services/web/)
            "web": _web}
# MODULES (shared.config): the research modules, run as programs module-<name>


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services", description=__doc__)
    parser.add_argument("program", choices=sorted(PROGRAMS))
    parser.add_argument("--config", help="path to fano.toml (default: $FANO_CONFIG or the repository's)")
    parser.add_argument("--account", help="backend: the [accounts.NAME] this worker serves")
    args = parser.parse_args(argv)
    if args.program == "backend" and not args.account:
        parser.error("backend needs --account NAME")
    name = (f"backend-{args.account}" if args.program == "backend"
            else f"module-{args.program}" if args.program in MODULES else args.program)
    log = setup_logging(name)
    try:
        config = load_config(args.config)
        service_cls = PROGRAMS[args.program]()
        if args.program == "backend":
            service = service_cls(config, Clock.from_env(), config.account(args.account))
        else:
            service = service_cls(config, Clock.from_env())
        return int(service.run())
    except StartupError as exc:  # a process that cannot work exits non-zero, with why, so supervisord sees it
        log.error("%s cannot run: %s", name, exc)
        return int(exc.exit_code)


if __name__ == "__main__":
    sys.exit(main())
