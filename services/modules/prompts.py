"""Prompt templates: plain files a user can edit, with ``{placeholders}``.

Lookup order for ``render("explorer", "explore", ...)``: ``$FANO_PROMPTS_DIR/explorer/explore.md`` (the
user's own copies, outside the repository), then the shipped defaults in ``prompts/explorer/explore.md``.
A placeholder the caller does not fill is an error (a silently empty section would change the answer).
"""
from __future__ import annotations

import os
import string
from pathlib import Path

from shared.config import REPO_ROOT

DEFAULT_DIR = REPO_ROOT / "prompts"


class PromptError(Exception):
    pass


def template_path(module: str, name: str) -> Path:
    own = os.environ.get("FANO_PROMPTS_DIR")
    if own:
        candidate = Path(own) / module / f"{name}.md"
        if candidate.exists():
            return candidate
    path = DEFAULT_DIR / module / f"{name}.md"
    if not path.exists():
        raise PromptError(f"no prompt template {module}/{name}.md (looked in {own or '-'} and {DEFAULT_DIR})")
    return path


def render(module: str, name: str, **values) -> str:
    text = template_path(module, name).read_text()
    wanted = {f for _, f, _, _ in string.Formatter().parse(text) if f}
    missing = wanted - set(values)
    if missing:
        raise PromptError(f"prompt {module}/{name}: no value for {', '.join(sorted(missing))}")
    return text.format_map(values)
