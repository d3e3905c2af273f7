"""The supervised program ``web`` itself (``python -m services web``): it serves without a broker (pages
say the broker is unavailable), waits out a port something else holds instead of exiting (supervisord
must not end it FATAL for a condition that passes), and stops promptly on SIGTERM with exit code 0."""
from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request

import pytest

from shared.errors import ExitCode
from tests.support import ServiceProcess, free_port, short_tmpdir, wait_for

pytestmark = pytest.mark.integration


def _status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return None


def test_the_panel_waits_out_a_taken_port_then_serves_and_stops_on_sigterm():
    root = short_tmpdir("fwp")
    port = free_port()
    cfg = root / "fano.toml"
    cfg.write_text(f'[paths]\nrun_dir = "{root}/run"\ndata_dir = "{root}/data"\nlog_dir = "{root}/log"\n'
                   f"[web]\nport = {port}\n")
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind(("127.0.0.1", port))
    squatter.listen(1)
    web = ServiceProcess(root, cfg, ["web"], "web.log")
    web.spawn()
    try:
        wait_for(lambda: "cannot listen on 127.0.0.1" in web.log(), 30, interval=0.2,
                 what="the panel to say the port is taken")
        time.sleep(2.5)                        # past supervisord's startsecs and more: still running
        assert web.alive(), web.log()
        squatter.close()
        wait_for(lambda: _status(f"http://127.0.0.1:{port}/login") == 200, 30, interval=0.2,
                 what="the panel to serve once the port is free")
        # no broker: a page says so (503), and the program keeps running
        assert _status(f"http://127.0.0.1:{port}/queue") == 503 and web.alive()
        start = time.monotonic()
        assert web.stop(timeout=10) == ExitCode.OK, web.log()
        assert time.monotonic() - start < 8
    finally:
        squatter.close()
        web.stop()
