"""Validate the whole configuration the way the programs will read it, before anything runs on it.

``python -m ops.config_check [--config PATH]``: exit 0 and one summary line, or exit 5 (the programs'
configuration exit code) and every problem, one per line. ``ops/up`` runs it first, so a bad file fails
there with its reason instead of after supervisord restarted half the tree, or with a program FATAL.

What it checks, beyond :func:`shared.config.load_config` (structure, quota windows with their time zones,
account and module names):

- every account's own settings, with the validator its worker runs at start
  (:func:`services.backends.registry.check_settings`: e.g. a sim's ``rate_limits`` time zone, a web
  account's ``timezone``);
- every module's ``[modules.NAME]`` table, with the module's own ``load_settings`` (e.g. the documenter's
  ``evaluators``);
- the accounts and modules those settings name (a panel account that does not exist would leave its
  tasks refused by the broker);
- with a ``tcp://`` endpoint, the CURVE keys every program will load at start (docs/security.md § Keys):
  the server's and each client program's, present and private (a program without them would end FATAL);
  with ``--workers`` (a host that runs only backend workers, docs/remote.md), only its workers' keys.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Collection, Mapping

from shared.config import KNOWN_MODULES, MODULES, ConfigError, load_config, unknown_name
from shared.errors import ExitCode

# module -> where its ``load_settings(config)`` is (each module's one settings validator)
SETTINGS = {
    "explorer": "services.modules.explorer.model",
    "documenter": "services.modules.documenter.settings",
    "researcher": "services.modules.researcher.settings",
    "advisor": "services.modules.advisor.settings",
}
# settings that name accounts (or, for the advisor's backends, accounts and backend kinds) and modules
ACCOUNT_LISTS = {"explorer": ("explore_accounts", "panel_accounts"), "documenter": ("panel_accounts",)}
BACKEND_LISTS = {"advisor": ("backends",)}
MODULE_LISTS = {"advisor": ("modules",)}


def problems(config, workers: bool = False) -> list[str]:
    """Every problem of an already loaded configuration (empty: the tree can start on it); ``workers``: a host
    that runs only backend workers (docs/remote.md), whose keys are its workers' own."""
    from services.backends.registry import check_settings
    where = f"{config.path}: " if config.path else ""
    out = []
    for account in config.local_accounts:   # a remote account's settings are checked on its own host
        try:
            check_settings(account)
        except ConfigError as exc:
            out.append(f"{where}{exc}")
    for module in MODULES:
        try:
            settings = importlib.import_module(SETTINGS[module]).load_settings(config)
        except ConfigError as exc:
            text = str(exc)
            out.append(text if text.startswith(where) else f"{where}{text}")
            continue
        out += [f"{where}[modules.{module}] {p}" for p in _names(config, module, settings)]
    return out + _endpoints(config, workers) + _keys(config, workers)


def _endpoints(config, workers: bool) -> list[str]:
    """A worker host serves a server elsewhere: its workers must be pointed there, or they would wait for ever
    on sockets of this host that nothing binds."""
    from shared.keys import needs_curve
    if not workers:
        return []
    return [f"endpoints: {var} is {endpoint}, not the server's tcp:// endpoint; set it on this worker host "
            "(docs/remote.md § Endpoints and the firewall)"
            for var, endpoint in (("FANO_BROKER", config.broker_endpoint),
                                  ("FANO_SCHEDULER", config.scheduler_endpoint)) if not needs_curve(endpoint)]


def _keys(config, workers: bool = False) -> list[str]:
    from shared.keys import KeysError
    if not config.networked:
        return []
    out = []
    # a worker host holds no server key pair, only the server's public key and its workers' own keys
    servers = () if workers else (config.server_keys,)
    clients = [a.program for a in config.local_accounts] if workers else config.clients
    for load in (*servers, *(lambda n=name: config.client_keys(n) for name in clients)):
        try:
            load()
        except KeysError as exc:
            out.append(f"keys: {exc}")
    return out


def _names(config, module: str, settings) -> list[str]:
    if not config.names_checked:
        return []
    out = []
    checks: list[tuple[Mapping[str, tuple[str, ...]], str, Collection[str]]] = [
        (ACCOUNT_LISTS, "account", config.account_names),
        (BACKEND_LISTS, "account or backend", config.backend_names()),
        (MODULE_LISTS, "module", KNOWN_MODULES)]
    for table, what, known in checks:
        for key in table.get(module, ()):
            for name in getattr(settings, key):
                if name not in known:
                    out.append(f"{key}: " + unknown_name(what, name, known))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="default: $FANO_CONFIG, else fano.toml at the repository root")
    parser.add_argument("--workers", action="store_true",
                        help="a host that runs only backend workers (ops/up --workers, docs/remote.md)")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return ExitCode.CONFIG
    found = problems(config, args.workers)
    for problem in found:
        print(f"configuration error: {problem}", file=sys.stderr)
    if found:
        return ExitCode.CONFIG
    print(f"configuration OK ({config.path}): {len(config.accounts)} account(s), "
          f"{len(config.quotas)} quota(s)")
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
