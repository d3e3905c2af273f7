"""Consumer web chat UIs (ChatGPT, Gemini) driven through Playwright and a real Chromium (docs/architecture.md § Backends).

Layers, each with one job (docs/providers.md § Web backend layers):

* :mod:`.site`     — the per-site data file (``sites/<name>.toml``): selectors, mode steps, message patterns;
* :mod:`.gate`     — pure "is the reply finished?" classifier fed one sample per poll, and the watch that
  tells a layout change after sending (no sign of progress) from a slow answer;
* :mod:`.warnings` — pure notice classification (banners, error containers; a reply only by the site's
  anchored ``[reply_notices]``) and reset-time parsing;
* :mod:`.browser`  — the persistent profile: lock, killing a previous incarnation's browser, the one
  thread that owns Playwright;
* :mod:`.page`     — the page object: drives a site from its data file, no raw selector inside;
* :mod:`.recover`  — finding a new chat again in the site's history list when its URL was never recorded;
* :mod:`.provider` — :class:`WebProvider`, the :class:`~services.backends.base.Provider` both sites share;
* :mod:`.operator` — its ``check`` and ``login`` (the operator looking at the site through the profile).
"""
