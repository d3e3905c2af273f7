"""The document as Markdown, written atomically (docs/modules.md § Exported files).

:func:`write_atomic` writes a temporary file in the target's folder, fsyncs it, ``os.replace``s it over
the target and fsyncs the folder: a reader (or a crash at any instruction) sees either the old or the
new complete file, never a torn one. The first line names the document version, so a restarted
module can tell whether the file on disk is current (:func:`exported_version`).
"""
from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

DEFAULT_TITLE = "Fano — a living document"
_VERSION_LINE = re.compile(r"^<!-- fano document version (\d+)")


def render(sections: Sequence[Mapping[str, Any]], version: int, title: str = DEFAULT_TITLE,
           at: str | None = None) -> str:
    """Markdown: a version marker, the title, then each section as ``## title`` with its concepts in an
    HTML comment (invisible when rendered, useful when read as text). Only what a version fixes is
    rendered (no review status), so the file of a version never goes stale."""
    lines = [f"<!-- fano document version {version}" + (f", exported {at}" if at else "") + " -->", "",
             f"# {title}", ""]
    if not sections:
        lines += ["*Nothing has been written yet.*", ""]
    for sec in sections:
        meta = [f"section {sec['id']}"]
        if sec.get("establishes"):
            meta.append("establishes: " + ", ".join(sec["establishes"]))
        if sec.get("requires"):
            meta.append("requires: " + ", ".join(sec["requires"]))
        lines += [f"## {sec.get('title') or sec['id']}", f"<!-- {' · '.join(meta)} -->", "",
                  (sec.get("text") or "").strip(), ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def write_atomic(path: str | os.PathLike, text: str) -> Path:
    """Replace ``path`` with ``text`` so that it is always either the old or the new complete file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    # the rename itself must be durable too: fsync the folder that holds the new directory entry
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return path


def exported_version(path: str | os.PathLike) -> int | None:
    """The document version recorded in an exported file, or None (missing or not ours)."""
    try:
        with open(path, encoding="utf-8") as f:
            m = _VERSION_LINE.match(f.readline())
    except (OSError, UnicodeDecodeError):
        return None
    return int(m.group(1)) if m else None
