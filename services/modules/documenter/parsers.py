"""Parsers of the documenter's six answer formats (docs/research.md § Documenter).

Built on :mod:`services.modules.parsing`: tags in Markdown bold, prose around the tags, CRLF and a bare
decision word without ``DECISION:`` are accepted (the original Fano never incorporated anything because
its parser wanted ``DECISION: INCLUDE`` where models wrote ``INCLUDE``). An answer that does not say
what was asked raises :class:`ParseError` with a message naming what is missing; nothing is defaulted.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any, Literal, overload

from services.modules.parsing import ParseError, choice, field, normalize

# the tags of each format: a multi-line value ends where another tag *of the same format* starts (only
# those, so that a draft's own prose, e.g. a line "Flow: ...", does not cut a section short)
NOTE_TAGS = ("NATURAL", "ELEGANT", "BEAUTIFUL", "INTERESTING", "INEVITABLE")
PLAN_TAGS = ("DECISION", "INSIGHT_ID", "REASON", "NEEDED", "ESTABLISHES", "CONTENT")
EVALUATE_TAGS = ("DECISION", *NOTE_TAGS, "REASONING")
DRAFT_TAGS = ("DRAFT", "ESTABLISHES", "REQUIRES", "DIAGRAM_NEEDED")
EXPOSITION_TAGS = ("DECISION", "CLARITY", "CORRECTNESS", "FLOW", "DEPENDENCIES", "REVISION_NOTES")
REVIEW_TAGS = ("DECISION", "ACCURACY", "CLARITY", "CONNECTIONS", "REVISION_NOTES", "REVISED_SECTION")
COMMENT_TAGS = ("UNDERSTOOD", "RESOLUTION", "REVISED_SECTION")

# sign-offs models append after the last tag's value; they must not end up in the document
_CHATTER = re.compile(r"^\W*(let me know|i hope (this|that) helps|feel free|note:|\*?note\b|hope this|"
                      r"please let me know|if you('d| would) like|happy to)", re.IGNORECASE)
_NEGATION = re.compile(r"\b(not|don'?t|do not|never|cannot|can'?t)\b", re.IGNORECASE)
_NONE = {"", "none", "n/a", "na", "-", "—", "nothing", "no", "null", "[]"}


def strip_chatter(text: str) -> str:
    """Drop trailing paragraphs that are sign-offs ("Let me know if ...", "I hope this helps")."""
    paras = re.split(r"\n\s*\n", text.strip())
    while len(paras) > 1 and _CHATTER.match(paras[-1].strip()):
        paras.pop()
    return "\n\n".join(paras).strip()


@overload
def block(text: str, tag: str, tags: tuple, required: Literal[True] = True) -> str: ...
@overload
def block(text: str, tag: str, tags: tuple, required: bool) -> str | None: ...
def block(text: str, tag: str, tags: tuple, required: bool = True) -> str | None:
    """A multi-line value: from ``TAG:`` (same line or the next ones) to the next of ``tags``."""
    value = field(text, tag, required=False, multiline=True, stop_tags=tags)
    value = strip_chatter(value) if value else value
    if not value:
        if required:
            raise ParseError(f"no {tag}: in the answer" if value is None else f"{tag}: is empty")
        return None
    return value


def decision(text: str, options: list[str], synonyms: dict[str, str] | None = None) -> str:
    """The ``DECISION:`` word (or a bare option on its own line). A negated value ("NOT INCLUDE") is
    refused rather than read as its opposite."""
    value = field(text, "DECISION", required=False)
    synonyms = synonyms or {}
    if value:
        words = "|".join(re.escape(w) for w in options + list(synonyms))
        first = re.search(rf"\b({words})\b", value, re.IGNORECASE)
        if first and _NEGATION.search(value[:first.start()]):
            raise ParseError(f"DECISION: {value!r} is negated; expected exactly one of {', '.join(options)}")
    picked = choice(text, "DECISION", options + list(synonyms), required=False)
    if picked is None:
        raise ParseError(f"DECISION: expected one of {', '.join(options)}, got {value!r}")
    return synonyms.get(picked, picked)


def concept_list(value: str | None) -> list[str]:
    """``a, b; c`` or bullet lines -> ["a", "b", "c"]; ``none`` -> []. Order kept, duplicates dropped."""
    if value is None:
        return []
    items: list[Any] = []
    for part in re.split(r"[,;\n]", value):
        part = re.sub(r"^\s*(?:[-*+•]|\d+[.)])\s*", "", part).strip().strip("*_`'\"[]().").strip()
        if part.lower() in _NONE:
            continue
        if part.lower() not in {i.lower() for i in items}:
            items.append(part)
    return items


def split_heading(text: str) -> tuple[str | None, str]:
    """A leading Markdown heading becomes the title: ("Title", body); otherwise (None, text)."""
    lines = text.strip().split("\n")
    m = re.match(r"^\s*#{1,6}\s+(.*\S)\s*$", lines[0]) if lines else None
    if not m:
        return None, text.strip()
    return m.group(1).strip().strip("*_").strip(), "\n".join(lines[1:]).strip()


@dataclass
class Plan:
    decision: str                     # INCORPORATE | PREREQUISITE | WAIT
    insight_id: str | None = None
    reason: str | None = None
    needed: str | None = None
    establishes: list = dc_field(default_factory=list)
    content: str | None = None


def parse_plan(text: str) -> Plan:
    d = decision(text, ["INCORPORATE", "PREREQUISITE", "WAIT"])
    reason = field(text, "REASON", required=False)
    if d == "INCORPORATE":
        ident = field(text, "INSIGHT_ID", required=True)
        ident = ident.split()[0].strip("[]()<>`'\".,;:*_")
        if not ident:
            raise ParseError("INSIGHT_ID: is empty")
        return Plan(d, insight_id=ident, reason=reason)
    if d == "PREREQUISITE":
        est = concept_list(field(text, "ESTABLISHES", required=True))
        if not est:
            raise ParseError("PREREQUISITE without any concept in ESTABLISHES:")
        return Plan(d, reason=reason, needed=field(text, "NEEDED", required=False), establishes=est,
                    content=block(text, "CONTENT", PLAN_TAGS))
    return Plan(d, reason=reason)


@dataclass
class Evaluation:
    decision: str                     # INCLUDE | EXCLUDE
    notes: dict
    reasoning: str | None


def parse_evaluation(text: str) -> Evaluation:
    d = decision(text, ["INCLUDE", "EXCLUDE"], {"INCLUDED": "INCLUDE", "EXCLUDED": "EXCLUDE"})
    notes = {t.lower(): v for t in NOTE_TAGS if (v := field(text, t, required=False))}
    return Evaluation(d, notes, block(text, "REASONING", EVALUATE_TAGS, required=False))


@dataclass
class Draft:
    text: str
    title: str | None
    establishes: list
    requires: list
    diagram: str | None


def parse_draft(text: str) -> Draft:
    body = block(text, "DRAFT", DRAFT_TAGS)
    title, body = split_heading(body)
    if not body:
        raise ParseError("DRAFT: has a heading but no text")
    if field(text, "ESTABLISHES", required=False) is None:
        raise ParseError("no ESTABLISHES: in the answer (write 'none' if the draft establishes nothing)")
    if field(text, "REQUIRES", required=False) is None:
        raise ParseError("no REQUIRES: in the answer (write 'none' if nothing is required)")
    return Draft(body, title, concept_list(field(text, "ESTABLISHES", required=False)),
                 concept_list(field(text, "REQUIRES", required=False)), field(text, "DIAGRAM_NEEDED", required=False))


@dataclass
class Exposition:
    decision: str                     # APPROVE | REVISE | REJECT
    notes: str | None
    assessment: dict


def parse_exposition(text: str) -> Exposition:
    d = decision(text, ["APPROVE", "REVISE", "REJECT"], {"APPROVED": "APPROVE", "REJECTED": "REJECT"})
    notes = block(text, "REVISION_NOTES", EXPOSITION_TAGS, required=d == "REVISE")
    if notes and notes.strip().lower() in _NONE:
        if d == "REVISE":
            raise ParseError("DECISION: REVISE but REVISION_NOTES: says none")
        notes = None
    assessment = {t.lower(): v for t in ("CLARITY", "CORRECTNESS", "FLOW", "DEPENDENCIES")
                  if (v := field(text, t, required=False))}
    return Exposition(d, notes, assessment)


@dataclass
class SectionReview:
    decision: str                     # CONFIRMED | REVISE
    notes: str | None
    revised: str | None               # the revised section (REVISE only)
    title: str | None


def parse_review(text: str) -> SectionReview:
    d = decision(text, ["CONFIRMED", "REVISE"], {"CONFIRM": "CONFIRMED"})
    notes = block(text, "REVISION_NOTES", REVIEW_TAGS, required=False)
    if notes and notes.strip().lower() in _NONE:
        notes = None
    if d == "CONFIRMED":
        return SectionReview(d, notes, None, None)
    revised = block(text, "REVISED_SECTION", REVIEW_TAGS, required=False)
    if not revised:
        raise ParseError("DECISION: REVISE without a REVISED_SECTION: (the revision cannot be applied)")
    title, body = split_heading(revised)
    if not body:
        raise ParseError("REVISED_SECTION: has a heading but no text")
    return SectionReview(d, notes, body, title)


@dataclass
class CommentAnswer:
    understood: str | None
    resolution: str | None
    revised: str | None               # None: UNCHANGED
    title: str | None


def parse_comment(text: str) -> CommentAnswer:
    revised = block(text, "REVISED_SECTION", COMMENT_TAGS)
    understood = field(text, "UNDERSTOOD", required=False)
    resolution = block(text, "RESOLUTION", COMMENT_TAGS, required=False)
    if re.fullmatch(r"[\s*_`\[\]()]*unchanged[\s*_`\[\]().!]*", normalize(revised), re.IGNORECASE):
        return CommentAnswer(understood, resolution, None, None)
    title, body = split_heading(revised)
    if not body:
        raise ParseError("REVISED_SECTION: has a heading but no text")
    return CommentAnswer(understood, resolution, body, title)
