"""The researcher module: research questions, sources fetched over HTTP, trust, findings, cross-references
and promotions to seeds. Entry point: :class:`services.modules.researcher.service.ResearcherService` (the
process, and the table of steps: :mod:`.questions`, :mod:`.sources`, :mod:`.evaluate`, :mod:`.findings`,
pure functions over :class:`.context.Env`); key layout and entity shapes: :mod:`services.modules.researcher.model`."""
