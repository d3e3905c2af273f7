"""The documenter module (docs/research.md § Documenter): grows a living Markdown document from blessed
insights, addresses author comments and reviews its sections.

``service`` (the process) dispatches to ``flow`` (plan -> evaluate -> draft -> exposition -> append),
``upkeep`` (comments, section reviews); ``model`` holds the key layout and the versioned document,
``parsers`` the answer formats, ``context`` the prompt context, ``export`` the atomic Markdown file.
"""
