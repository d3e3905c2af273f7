"""Seed records: validation and the TOML seed file format (``fanoctl seeds import FILE``).

File format (see ``seeds/demo.toml``)::

    [[seeds]]
    id = "fano-lines"              # optional; [a-z0-9][a-z0-9_-]{0,47}; default: derived from the text
    type = "question"              # axiom | conjecture | question (default conjecture)
    text = "Why does ..."
    priority = 8                   # 1-10, or high (8) / medium (5) / low (2); default 5
    tags = ["fano", "symmetry"]
    images = []                    # file names, kept as given
    notes = "where this came from"  # optional: the researcher's own notes (never sent to a model)

Importing is idempotent by seed id: a seed whose stored content is the same is left alone, a changed one
is updated (keeping ``created_at``), a new one is added.
"""
from __future__ import annotations

import hashlib
import re
import tomllib

from services.modules.explorer.model import SEED_ID, SEED_TYPES

PRIORITY_WORDS = {"high": 8, "medium": 5, "low": 2}
CONTENT = ("type", "text", "priority", "tags", "images", "source", "notes")
MAX_NOTES = 4000   # characters of a seed's notes


class SeedError(ValueError):
    pass


def derive_id(text: str) -> str:
    return "seed-" + hashlib.sha256(" ".join(text.split()).lower().encode()).hexdigest()[:8]


def priority(value) -> int:
    if isinstance(value, str) and value.strip().lower() in PRIORITY_WORDS:
        return PRIORITY_WORDS[value.strip().lower()]
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10:
        raise SeedError(f"priority must be an integer 1-10 or high/medium/low, got {value!r}")
    return value


def tags(value) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise SeedError(f"tags must be a list of strings, got {value!r}")
    out = []
    for t in value:
        t = re.sub(r"\s+", "_", t.strip().lstrip("#").lower())
        if t and t not in out:
            out.append(t)
    return out


def validate(raw: dict, now: float, existing: dict | None = None) -> dict:
    """A stored seed record from user input (a file entry or CLI options); raises SeedError."""
    if not isinstance(raw, dict):
        raise SeedError("a seed must be a table")
    unknown = set(raw) - {"id", *CONTENT}
    if unknown:
        raise SeedError(f"unknown seed field(s): {', '.join(sorted(unknown))}")
    text = raw.get("text")
    if not isinstance(text, str) or not text.strip():
        raise SeedError("a seed needs a non-empty text")
    sid = raw.get("id") or derive_id(text)
    if not isinstance(sid, str) or not SEED_ID.match(sid):
        raise SeedError(f"seed id {sid!r} must match {SEED_ID.pattern}")
    kind = raw.get("type", "conjecture")
    if kind not in SEED_TYPES:
        raise SeedError(f"seed {sid}: type must be one of {', '.join(SEED_TYPES)}, got {kind!r}")
    images = raw.get("images", [])
    if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
        raise SeedError(f"seed {sid}: images must be a list of file names")
    notes = raw.get("notes") or ""
    if not isinstance(notes, str) or len(notes) > MAX_NOTES:
        raise SeedError(f"seed {sid}: notes must be a text of at most {MAX_NOTES} characters")
    try:
        seed = {"id": sid, "type": kind, "text": text.strip(), "priority": priority(raw.get("priority", 5)),
                "tags": tags(raw.get("tags", [])), "images": list(images), "source": str(raw.get("source", "user"))}
    except SeedError as exc:
        raise SeedError(f"seed {sid}: {exc}") from None
    if notes.strip():
        # kept only when given: seeds stored before notes existed compare equal to their file entries
        seed["notes"] = notes.strip()
    created = (existing or {}).get("created_at", now)
    return dict(seed, created_at=created, updated_at=now)


def from_promotion(fid: str, promo: dict, now: float) -> dict:
    """The seed a finding the researcher promoted (``promotions/<finding>`` in its namespace) becomes;
    raises SeedError."""
    return validate({"text": promo.get("text", ""), "type": promo.get("type", "question"),
                     "priority": promo.get("priority", 5), "tags": promo.get("tags", []),
                     "source": promo.get("source", f"researcher:finding:{fid}")}, now)


def same_content(a: dict | None, b: dict) -> bool:
    return a is not None and all(a.get(k) == b.get(k) for k in CONTENT)


def load_file(path: str, now: float) -> list[dict]:
    """The seeds of a TOML seed file, validated; duplicate ids are an error."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SeedError(f"{path}: {exc}") from None
    entries = data.get("seeds")
    if not isinstance(entries, list) or set(data) - {"seeds"}:
        raise SeedError(f"{path}: expected only [[seeds]] tables")
    out, seen = [], set()
    for n, raw in enumerate(entries, 1):
        try:
            seed = validate(raw, now)
        except SeedError as exc:
            raise SeedError(f"{path}: seed #{n}: {exc}") from None
        if seed["id"] in seen:
            raise SeedError(f"{path}: seed id {seed['id']} appears twice")
        seen.add(seed["id"])
        out.append(seed)
    return out
