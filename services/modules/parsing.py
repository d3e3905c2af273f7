"""Tolerant parsing of model answers: the formats DOMAIN.md asks for, as real models actually write them.

Models add prose around the tags, put tag names in Markdown bold (``**RATING:** ⚡``), use CRLF, add a
space before the colon, or write ``Decision - INCLUDE``. Every function here accepts those near misses
and raises :class:`ParseError` — never returns a silent default — when the answer is unusable, so the
module can store a visible error on the task instead of inventing a result.
"""
from __future__ import annotations

import re


class ParseError(ValueError):
    """The answer does not contain what the prompt asked for; the message says what is missing."""


def normalize(text: str) -> str:
    """CRLF to LF, strip zero-width characters and trailing spaces."""
    if not isinstance(text, str):
        raise ParseError(f"answer is not text but {type(text).__name__}")
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u200b", "").replace("\ufeff", "")
    return "\n".join(line.rstrip() for line in text.split("\n"))


def _tag_pattern(tag: str) -> str:
    # optional list marker / heading hashes / bold or italic markers around the name, then ':' or '-'
    name = re.escape(tag).replace(r"\ ", r"[ _]").replace("_", "[ _]")
    return rf"^[ \t>]*(?:[-*+]\s+)?(?:#+\s*)?[*_`]{{0,3}}{name}[*_`]{{0,3}}\s*(?::|-|—|=)[*_`]{{0,3}}[ \t]*"


def field(text: str, tag: str, required: bool = True, multiline: bool = False, stop_tags=()) -> str | None:
    """The value after ``TAG:`` (first occurrence). ``multiline``: up to the next known tag or the end.

    ``stop_tags``: other tags of the format; a multi-line value ends where one of them starts.
    """
    text = normalize(text)
    m = re.search(_tag_pattern(tag), text, re.IGNORECASE | re.MULTILINE)
    if not m:
        if required:
            raise ParseError(f"no {tag}: in the answer")
        return None
    rest = text[m.end():]
    if not multiline:
        value = rest.split("\n", 1)[0]
    else:
        end = len(rest)
        for other in stop_tags:
            if other.upper() == tag.upper():
                continue
            n = re.search(_tag_pattern(other), rest, re.IGNORECASE | re.MULTILINE)
            if n and n.start() < end:
                end = n.start()
        value = rest[:end]
    value = value.strip().strip("*_`").strip()
    if required and not value:
        raise ParseError(f"{tag}: is empty")
    return value


def choice(text: str, tag: str, options: list[str], required: bool = True) -> str | None:
    """A field whose value must be one of ``options`` (case-insensitive; the first word counts).

    Also accepts the bare option on a line of its own when the tag is missing (the original Fano's
    documenter never incorporated anything because models wrote ``INCLUDE`` without ``DECISION:``).
    """
    value = field(text, tag, required=False)
    opts = {o.upper(): o for o in options}
    if value:
        for token in re.findall(r"[^\s,.;:()\[\]]+", value.upper()):
            if token in opts:
                return opts[token]
    if value is None:
        for line in normalize(text).split("\n"):
            bare = line.strip().strip("*_`#> ").rstrip(".").upper()
            if bare in opts:
                return opts[bare]
    if required:
        raise ParseError(f"{tag}: expected one of {', '.join(options)}, got {value!r}")
    return None


def number(text: str, tag: str, lo: float | None = None, hi: float | None = None, required: bool = True):
    value = field(text, tag, required=required)
    if value is None:
        return None
    m = re.search(r"-?\d+(?:\.\d+)?", value)
    if not m:
        if required:
            raise ParseError(f"{tag}: expected a number, got {value!r}")
        return None
    n = float(m.group())
    if (lo is not None and n < lo) or (hi is not None and n > hi):
        if required:
            raise ParseError(f"{tag}: {n:g} is outside [{lo}, {hi}]")
        return None
    return n


def sections(text: str, names: list[str], required: tuple = ()) -> dict[str, str]:
    """``[NAME]`` (or ``## NAME``, ``**NAME**``) headed sections -> their bodies."""
    text = normalize(text)
    alt = "|".join(re.escape(n).replace("_", "[ _]") for n in names)
    head = re.compile(rf"^[ \t]*(?:#+\s*)?[*_]{{0,2}}\[?({alt})\]?[*_]{{0,2}}:?[ \t]*$", re.IGNORECASE | re.MULTILINE)
    found = list(head.finditer(text))
    out: dict[str, str] = {}
    for i, m in enumerate(found):
        key = next(n for n in names if n.replace("_", " ").upper() == m.group(1).replace("_", " ").upper())
        end = found[i + 1].start() if i + 1 < len(found) else len(text)
        out.setdefault(key, text[m.end():end].strip())
    missing = [n for n in required if not out.get(n)]
    if missing:
        raise ParseError(f"missing section(s): {', '.join('[' + n + ']' for n in missing)}")
    return out


def bullets(body: str) -> list[str]:
    """List items of a section (``-``, ``*``, ``1.``); a body without markers counts by paragraphs."""
    items = []
    for line in normalize(body).split("\n"):
        m = re.match(r"^\s*(?:[-*+•]|\d+[.)])\s+(.*\S)", line)
        if m:
            items.append(m.group(1).strip())
        elif items and line.startswith("  ") and line.strip():
            items[-1] += " " + line.strip()
    if not items:
        items = [p.strip() for p in re.split(r"\n\s*\n", normalize(body)) if p.strip()]
    return items


def blocks(text: str, separator: str = "===") -> list[str]:
    """Non-empty blocks between separator lines (three or more of the separator character)."""
    ch = re.escape(separator[0])
    parts = re.split(rf"^\s*{ch}{{3,}}\s*$", normalize(text), flags=re.MULTILINE)
    return [p.strip() for p in parts if p.strip()]
