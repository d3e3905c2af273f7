"""Entry point of every supervised program: ``python -m services <program> [--config PATH]``."""
from __future__ import annotations

import argparse
import sys

from shared.clock import Clock
from shared.config import ConfigError, load_config
from shared.errors import ExitCode
from shared.service import setup_logging


def _broker():
    from services.broker.server import BrokerService
    return BrokerService


PROGRAMS = {"broker": _broker}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services", description=__doc__)
    parser.add_argument("program", choices=sorted(PROGRAMS))
    parser.add_argument("--config", help="path to fano.toml (default: $FANO_CONFIG or the repository's)")
    args = parser.parse_args(argv)
    log = setup_logging(args.program)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        log.error("cannot load configuration: %s", exc)
        return ExitCode.CONFIG
    service_cls = PROGRAMS[args.program]()
    try:
        return int(service_cls(config, Clock.from_env()).run())
    except Exception as exc:  # a process that cannot work exits non-zero so supervisord sees it
        from services.broker.schema import SchemaError
        from shared.quota import QuotaSpecError
        if isinstance(exc, SchemaError):
            log.error("%s", exc)
            return ExitCode.STORAGE
        if isinstance(exc, QuotaSpecError):
            log.error("invalid quota in configuration: %s", exc.message)
            return ExitCode.CONFIG
        raise


if __name__ == "__main__":
    sys.exit(main())
