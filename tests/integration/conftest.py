"""Fixtures shared by the integration tests; pytest finds them here, so test modules never import a fixture."""
from __future__ import annotations

import pytest

from tests.browser_support import require_browser


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """The Chromium the web backends drive (a skip without one; a failure under FANO_REQUIRE_BROWSER=1)."""
    return require_browser()


@pytest.fixture(scope="module")
def browser(chromium_path):
    """A headless Chromium through Playwright, one per test module (each page gets its own context)."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium_path, headless=True)
        yield b
        b.close()
