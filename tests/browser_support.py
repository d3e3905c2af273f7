"""Helpers for tests that drive a real Chromium through Playwright (web backends).

``require_browser()`` (the ``chromium_path`` fixture of tests/integration/conftest.py) is the browser to use
(``FANO_CHROMIUM`` or ``chromium`` on PATH), or a skip when the machine has none — unless
``FANO_REQUIRE_BROWSER=1`` (set in CI), where a missing browser is a failure, not a silent skip.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from services.backends.web.settings import find_chromium


def require_browser() -> str:
    """The Chromium path; pytest.skip (or pytest.fail under FANO_REQUIRE_BROWSER=1) when there is none."""
    wanted = os.environ.get("FANO_CHROMIUM") or None
    path = find_chromium(wanted)
    problem = None
    if path is None:
        problem = f"FANO_CHROMIUM={wanted} is not executable" if wanted else \
            "no chromium on PATH (apt-get install chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            problem = "playwright is not installed"
    if problem:
        if os.environ.get("FANO_REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser tests required (FANO_REQUIRE_BROWSER=1) but {problem}")
        pytest.skip(problem)
    assert path is not None   # else a problem was found above
    return path


def profile_alive(profile: Path) -> list[int]:
    """Pids of processes still running on a browser profile."""
    from services.backends.web.browser import profile_processes
    return profile_processes(Path(profile))
