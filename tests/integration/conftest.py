"""Fixtures shared by the integration tests; pytest finds them here, so test modules never import a fixture."""
from __future__ import annotations

import pytest

from tests.browser_support import require_browser


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """The Chromium the web backends drive (a skip without one; a failure under FANO_REQUIRE_BROWSER=1)."""
    return require_browser()
