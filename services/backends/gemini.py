"""``gemini``: Gemini's consumer web UI through Playwright and a real Chromium (docs/architecture.md § Backends).

Everything site-specific is data (``web/sites/gemini.toml``: selectors, the Tools drawer steps that
enable and read back Deep Think — new chat first, then the mode, then verify, then type —, limit and
soft-failure wording); the behaviour is :class:`WebProvider`'s. ``modes = ["standard", "deep"]`` where
deep is Deep Think.
"""
from __future__ import annotations

from services.backends.web.provider import WebProvider


class GeminiProvider(WebProvider):
    backend = "gemini"
    site_name = "gemini"
