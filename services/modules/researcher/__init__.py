"""The researcher module: research questions, sources fetched over HTTP, trust, findings, cross-references
and promotions to seeds. Entry point: :class:`services.modules.researcher.service.ResearcherService`;
key layout and entity shapes: :mod:`services.modules.researcher.model`."""
