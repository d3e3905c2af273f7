"""Wait until every program of a supervisord reaches RUNNING and stays there, or say which did not and why.

``python -m ops.wait_running [-c supervisord.conf] [--timeout 60] [--settle 2]``: exit 0 when every
program is RUNNING and still RUNNING with the same pid ``--settle`` seconds later; exit 1 as soon as a
program is FATAL (supervisord gave up on it: it kept exiting within ``startsecs``, e.g. a time zone its
settings name does not exist), or when ``--timeout`` passes first, printing each such program's state,
supervisord's description and the tail of its log. ``ops/up`` runs it after applying the configuration,
so it never reports "Fano is up" while a program is down.

A program in BACKOFF is waited for, not failed: supervisord retries it, and a short BACKOFF is normal
(a restarted program waiting for its predecessor's lock). Only FATAL, or the timeout, is final.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from shared.config import REPO_ROOT
from shared.errors import ExitCode

LOG_TAIL = 20   # lines of a failed program's log shown


def server(conf: Path):
    """supervisorctl's own client (XML-RPC on the socket ``conf`` names)."""
    from supervisor.options import ClientOptions
    options = ClientOptions()
    options.realize(args=["-c", str(conf)])
    return options.getServerProxy()


def log_tail(info: dict, lines: int = LOG_TAIL) -> str:
    path = info.get("stdout_logfile") or ""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode(errors="replace")
    except OSError:
        return f"    (no log at {path or '?'})"
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


def report(infos: list[dict], why: str) -> str:
    out = [why]
    for info in infos:
        out.append(f"{info['name']}: {info['statename']} ({info.get('description') or info.get('spawnerr') or ''}); "
                   f"last lines of {info.get('stdout_logfile') or 'its log'}:")
        out.append(log_tail(info))
    return "\n".join(out)


def wait(proxy, timeout: float, settle: float, poll: float = 0.5, clock=time.monotonic, sleep=time.sleep) -> str | None:
    """None when every program is RUNNING and stays so for ``settle`` seconds; else the report."""
    deadline = clock() + timeout
    stable_since, pids = None, None
    while True:
        infos = proxy.supervisor.getAllProcessInfo()
        fatal = [i for i in infos if i["statename"] in ("FATAL", "UNKNOWN")]
        if fatal:
            return report(fatal, "these programs did not start (supervisord gave up on them):")
        down = [i for i in infos if i["statename"] != "RUNNING"]
        now_pids = {i["name"]: i["pid"] for i in infos}
        if down or now_pids != pids:
            stable_since, pids = (None, None) if down else (clock(), now_pids)
        elif clock() - stable_since >= settle:
            return None
        if clock() >= deadline:
            return report(down or infos, f"not every program was RUNNING after {timeout:g} s:")
        sleep(poll)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--conf", default=str(REPO_ROOT / "supervisord.conf"))
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--settle", type=float, default=2.0)
    args = parser.parse_args(argv)
    problem = wait(server(Path(args.conf)), args.timeout, args.settle)
    if problem:
        print(problem, file=sys.stderr)
        return ExitCode.FAILURE
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
