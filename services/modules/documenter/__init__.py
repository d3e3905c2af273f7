"""The documenter module (docs/research.md § Documenter): grows a living Markdown document from blessed
insights, addresses author comments and reviews its sections.

``service`` (the process) dispatches to ``planning`` (what to incorporate next), ``flow`` (evaluate ->
draft -> exposition -> append), ``upkeep`` (comments, section reviews) and ``seats`` (evaluation slots that
follow capacity); ``model`` holds the key layout, the record types and the versioned document, ``parsers``
the answer formats, ``context`` the Env and the prompt context, ``export`` the atomic Markdown file.
"""
