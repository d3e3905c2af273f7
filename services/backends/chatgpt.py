"""``chatgpt``: ChatGPT's consumer web UI through Playwright and a real Chromium (docs/architecture.md § Backends).

Everything site-specific is data (``web/sites/chatgpt.toml``: selectors, the model picker steps that
select and read back Pro, limit/capacity/error wording); the behaviour is :class:`WebProvider`'s. Settings
are listed in :mod:`services.backends.web.settings`; ``modes = ["standard", "deep"]`` where deep is Pro.
"""
from __future__ import annotations

from services.backends.web.provider import WebProvider


class ChatGPTProvider(WebProvider):
    backend = "chatgpt"
    site_name = "chatgpt"
