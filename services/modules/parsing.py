"""Tolerant parsing of model answers: the formats the prompts ask for, as real models actually write
them (docs/research.md § Answer formats).

Models add prose around the tags, put tag names in Markdown bold (``**RATING:** ⚡``), use CRLF, add a
space before the colon, or write ``Decision - INCLUDE``; they separate blocks with ``---``, headings,
list numbers or nothing at all instead of the ``===`` asked for. Every function here accepts those near misses
and raises :class:`ParseError` — never returns a silent default — when the answer is unusable, so the
module can store a visible error on the task instead of inventing a result.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Literal, overload


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


@overload
def field(text: str, tag: str, required: Literal[True] = True, multiline: bool = False,
          stop_tags: Iterable[str] = ()) -> str: ...
@overload
def field(text: str, tag: str, required: bool, multiline: bool = False,
          stop_tags: Iterable[str] = ()) -> str | None: ...
def field(text: str, tag: str, required: bool = True, multiline: bool = False,
          stop_tags: Iterable[str] = ()) -> str | None:
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
        # another tag ends the value only at the start of a later line: a value that begins with a
        # tag-like word ("PROOF: Claim: every pair ...") is not empty
        first_break = rest.find("\n")
        for other in stop_tags if first_break >= 0 else ():
            if other.upper() == tag.upper():
                continue
            n = re.compile(_tag_pattern(other), re.IGNORECASE | re.MULTILINE).search(rest, first_break + 1)
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


# a decorative separator line: ===, ---, ***, ___, ~~~ (also spaced, "* * *"), or a rule around a short
# title without a colon ("=== Insight 2 ===", "--- Claim 3 ---"); a colon means a tag is inside
_RULE = re.compile(r"^[ \t]*(?:([=\-*_~])(?:[ \t]*\1){2,}|([=\-~])\2{2,}[ \t]*[^:\n]*?[ \t]*\2{3,})[ \t]*$")
# a Markdown heading without a colon ("### Insight 2", "## Proposals"): decoration, not a field
_HEADING = re.compile(r"^[ \t]*#{1,6}(?:[ \t]+[^:\n]*)?$")


def is_rule(line: str) -> bool:
    """A separator line (``===``, ``---``, ``***``, ``___``, ``=== Insight 2 ===``)."""
    return bool(_RULE.match(line))


def _section_head(names: list[str]) -> re.Pattern:
    alt = "|".join(re.escape(n).replace("_", "[ _]") for n in names)
    return re.compile(rf"^[ \t>]*(?P<hash>#{{1,6}}[ \t]*)?(?P<num>\d{{1,2}}[.)][ \t]*)?[*_]{{0,3}}"
                      rf"(?P<num2>\d{{1,2}}[.)][ \t]*)?(?P<lb>\[)?(?P<name>{alt})(?P<rb>\])?[*_]{{0,3}}[ \t]*"
                      rf"(?P<colon>:)?[*_]{{0,3}}[ \t]*(?P<rest>.*)$", re.IGNORECASE)


def _head_rest(m: re.Match) -> str | None:
    """The text after a section header on its line ("" if none), or None if the line is no header.

    Content on the header line counts only after ``[NAME]`` or ``NAME:`` without a list number: a
    numbered line ``1. Questions: why 7?`` inside a list is an item, not a header."""
    rest = m.group("rest").strip()
    if not rest:
        return ""
    if m.group("lb") and m.group("rb"):
        return rest
    if m.group("colon") and not (m.group("num") or m.group("num2")):
        return rest
    return None


def sections(text: str, names: list[str], required: tuple = ()) -> dict[str, str]:
    """``[NAME]`` (or ``## NAME``, ``## 1. Name``, ``**NAME:**``, ``NAME:``) headed sections -> their bodies.

    Content on the header line itself (``[NEW_INSIGHTS] the plane is ...``) starts the body; a section
    written twice keeps both bodies."""
    head = _section_head(names)
    found: list[tuple[str, list[str]]] = []            # (name, body lines), in the answer's order
    for line in normalize(text).split("\n"):
        m = head.match(line)
        rest = _head_rest(m) if m else None
        if m is not None and rest is not None:
            said = re.sub(r"[ _]+", " ", m.group("name")).upper()
            found.append((next(n for n in names if n.replace("_", " ").upper() == said), [rest] if rest else []))
        elif found:
            found[-1][1].append(line)
    out: dict[str, str] = {}
    for key, lines in found:
        body = "\n".join(lines).strip()
        if body:
            out[key] = f"{out[key]}\n\n{body}" if out.get(key) else body
        else:
            out.setdefault(key, "")
    missing = [n for n in required if not out.get(n)]
    if missing:
        raise ParseError(f"missing section(s): {', '.join('[' + n + ']' for n in missing)}")
    return out


_ITEM = re.compile(r"^\s*(?:[-*+•]|\d+[.)])\s+(.*\S)")


def bullets(body: str) -> list[str]:
    """List items of a section (``-``, ``*``, ``1.``); a body without markers counts by paragraphs.

    No text is dropped: a line right after an item continues it (indented or not), a paragraph after a
    blank line is an item of its own, and so is text before the first marker — unless it ends with a
    colon (an introduction such as "Here are three insights:")."""
    lines = normalize(body).split("\n")
    if not any(_ITEM.match(line) for line in lines):
        return [p.strip() for p in re.split(r"\n\s*\n", normalize(body)) if p.strip()]
    items: list[list] = []                 # [text, is a marker item]
    gap = False
    for line in lines:
        if not line.strip() or is_rule(line):
            gap = True
            continue
        m = _ITEM.match(line)
        if m:
            items.append([m.group(1).strip(), True])
        elif items and (not gap or line[:1] in (" ", "\t")):
            items[-1][0] += " " + line.strip()
        else:
            items.append([line.strip(), False])
        gap = False
    return [t for t, marked in items if marked or not t.endswith(":")]


def blocks(text: str, separator: str | None = None) -> list[str]:
    """Non-empty blocks between separator lines.

    By default any rule separates (``===``, ``---``, ``***``, ``___``, ``=== Insight 2 ===``): models
    do not keep to the ``===`` the prompt asks for. ``separator``: only lines of three or more of its
    first character count."""
    if separator is None:
        parts: list[Any] = []
        current: list[Any] = []
        for line in normalize(text).split("\n"):
            if is_rule(line):
                parts.append("\n".join(current))
                current = []
            else:
                current.append(line)
        parts.append("\n".join(current))
    else:
        ch = re.escape(separator[0])
        parts = re.split(rf"^\s*{ch}{{3,}}\s*$", normalize(text), flags=re.MULTILINE)
    return [p.strip() for p in parts if p.strip()]


def _label(tag: str) -> re.Pattern:
    # ``TAG:`` as a block's first field, however decorated: a list marker or number, heading hashes,
    # bold, an ordinal ("INSIGHT 2:", "Insight #2:"); a dash counts as the colon only with spaces around
    # it ("Insight 2 - ...") so that prose such as "Insight-driven ..." starts no block
    name = re.escape(tag).replace("_", "[ _]")
    return re.compile(rf"^[ \t>]*(?:(?:[-*+•]|\(?\d{{1,3}}[.)])[ \t]+)?(?:#{{1,6}}[ \t]*)?(?:\d{{1,3}}[.)][ \t]+)?"
                      rf"[*_`]{{0,3}}{name}(?:[ \t]*#?[ \t]*\d{{1,3}})?[*_`]{{0,3}}"
                      rf"(?:[ \t]*:|[ \t]+[-—–](?=[ \t]|$))[*_`]{{0,3}}[ \t]*", re.IGNORECASE)


def _decoration(tag: str) -> re.Pattern:
    # a line that only numbers or titles a block: "2.", "(2)", "**Insight 2**", "Insight #2"
    name = re.escape(tag).replace("_", "[ _]")
    return re.compile(rf"^[ \t>*_`#(\[]*(?:{name}[ \t]*#?[ \t]*\d{{0,3}}|#?\d{{1,3}}[.)])[ \t*_`.:)\]]*$",
                      re.IGNORECASE)


def _is_title(line: str) -> bool:
    """A heading or a line entirely in bold: how models title a block ("### Insight 1: Self-duality")."""
    s = line.strip()
    return s.startswith("#") or bool(re.fullmatch(r"(\*\*|__).+\1", s))


def labelled_blocks(text: str, tag: str) -> list[str]:
    """One block per ``TAG:`` label line, whatever precedes it (a rule, a heading, a list number, bold
    markers, a blank line or nothing) — a model that leaves out the separators loses no block.

    Each block starts with its label rewritten as a plain ``TAG: ...`` and runs to the next label or
    rule; decoration (rules, headings without a colon, block numbers such as ``**Insight 2**``) is
    removed, and text before the first label or after a rule with no label (preamble, postscript) is
    left out. A label line that only titles the block below it (a heading or bold line followed directly
    by a plain label) is dropped, not read as a block of its own. A label with an empty value still
    makes a block: the caller decides what an empty block means."""
    label, decoration = _label(tag), _decoration(tag)
    out = []
    for segment in blocks(text):
        found: list[tuple[list[str], bool]] = []            # (lines, label line is a title style)
        for line in segment.split("\n"):
            m = label.match(line)
            if m:
                found.append(([f"{tag}: {line[m.end():]}"], _is_title(line)))
            elif found and not (_HEADING.match(line) or decoration.match(line)):
                found[-1][0].append(line)
        for i, (lines, title) in enumerate(found):
            body = "\n".join(lines).strip()
            nxt = found[i + 1] if i + 1 < len(found) else None
            if title and nxt and not nxt[1] and len(body.split("\n")) == 1:
                continue
            out.append(body)
    return out


def proportion(value: str | None) -> float | None:
    """A number in 0..1 from how models write one: ``0.85``, ``85%``, ``8/10``, ``85`` (a percentage),
    ``8`` (out of 10; a bare ``1`` is 1.0, as a 0..1 scale reads it). None when there is no number or
    it is out of range."""
    m = re.search(r"(\d+(?:\.\d+)?)\s*(%|/\s*(\d+(?:\.\d+)?))?", value or "")
    if not m:
        return None
    n = float(m.group(1))
    if m.group(3):
        d = float(m.group(3))
        n = n / d if d > 0 else -1.0
    elif m.group(2) == "%" or (n > 10 and n <= 100):
        n /= 100.0
    elif n > 1 and n <= 10:
        n /= 10.0
    return n if 0.0 <= n <= 1.0 else None
