"""Answer parsers, one per explorer task kind, built on :mod:`services.modules.parsing`.

Each accepts the near misses real models produce (prose around the tags, Markdown bold, CRLF, a missing
optional field) and raises :class:`ParseError` naming what is missing when the answer is unusable. An
optional field that is absent is returned as ``None`` (recorded as "not given"), never invented.
"""
from __future__ import annotations

import re
from typing import Any

from services.modules.explorer.model import ABANDON, BLESS, MAYBE, REJECT
from services.modules.parsing import (
    ParseError,
    blocks,
    bullets,
    choice,
    field,
    labelled_blocks,
    normalize,
    proportion,
    sections,
)

EXPLORE_SECTIONS = ["NEW_INSIGHTS", "CONNECTIONS", "QUESTIONS"]
CRITIQUE_SECTIONS = ["CRITICAL_ISSUES", "PROMISING_DIRECTIONS", "PROBING_QUESTIONS"]
SYNTHESIS_TAGS = ["TITLE", "SUMMARY", "CONTENT"]
EXTRACT_TAGS = ["INSIGHT", "DOMAINS", "SCORES", "INTUITION_NOTE", "NO_INSIGHTS"]
CONSOLIDATE_TAGS = ["INSIGHT", "SCORES", "CONFIDENCE", "TAGS", "PROPOSED_BY", "DEPENDS_ON", "NO_INSIGHTS"]
DEDUP_TAGS = ["IS_DUPLICATE", "DUPLICATE_OF", "CONFIDENCE", "REASON"]
REVIEW1_TAGS = ["RATING", "MATHEMATICAL_VERIFICATION", "STRUCTURAL_ANALYSIS", "NATURALNESS_ASSESSMENT",
                "REASONING", "CONFIDENCE", "PROPOSED_MODIFICATION", "MODIFICATION_RATIONALE"]
MATH_TAGS = ["CLAIM", "PRECISE_STATEMENT", "VERIFICATION_APPROACH", "PROOF_OR_COUNTEREXAMPLE", "VERDICT",
             "CONFIDENCE", "CONCERNS"]
REVIEW2_TAGS = ["NEW_INFORMATION", "REASSESSMENT", "DOES_THIS_CHANGE_THINGS", "UPDATED_RATING",
                "UPDATED_REASONING", "CONFIDENCE", "PROPOSED_MODIFICATION", "MODIFICATION_RATIONALE"]
REVIEW3_TAGS = ["STRONGEST_ARGUMENT", "PROPOSED_MODIFICATION", "MODIFICATION_RATIONALE", "RESPONSE",
                "ACCEPT_MODIFICATION", "MODIFICATION_ASSESSMENT", "DOES_THIS_CHANGE_YOUR_RATING", "UPDATED_RATING",
                "FINAL_STANCE", "REASON", "FINAL_RATING", "ONE_SENTENCE_JUSTIFICATION"]

_SIGNOFF = re.compile(r"^\W*(?:let me know|i hope this helps|hope this helps|feel free to|in summary,|"
                      r"note: the above|would you like me to|happy to expand)", re.IGNORECASE | re.MULTILINE)
_NONE = {"none", "n/a", "na", "-", "—", "no", "nothing", "null", "no modification", "no change", "unchanged"}
_RATING_TOKENS = {"⚡": BLESS, "BLESS": BLESS, "BLESSED": BLESS, "PROFOUND": BLESS, "LIGHTNING": BLESS,
                  "?": MAYBE, "❓": MAYBE, "INTERESTING": MAYBE, "UNCERTAIN": MAYBE,
                  "✗": REJECT, "✘": REJECT, "❌": REJECT, "✖": REJECT, "X": REJECT, "REJECT": REJECT,
                  "REJECTED": REJECT, "ABANDON": ABANDON, "ABANDONED": ABANDON}


def strip_signoff(text: str) -> str:
    """Cut a trailing sign-off ("Let me know if ...", "I hope this helps") and what follows it."""
    m = _SIGNOFF.search(text)
    return (text[:m.start()] if m else text).strip()


def _text(answer: str, tag: str, tags, required: bool = False) -> str | None:
    value = field(answer, tag, required=required, multiline=True, stop_tags=tags)
    if value is None:
        return None
    value = strip_signoff(value)
    if required and not value:
        raise ParseError(f"{tag}: is empty")
    return value or None


def optional_text(value: str | None) -> str | None:
    """``None`` for NONE / N/A / empty (a reviewer proposing no modification)."""
    if value is None:
        return None
    cleaned = value.strip().strip("*_`\"'").strip()
    return None if cleaned.lower().rstrip(".") in _NONE else cleaned


def rating(answer: str, tag: str) -> str:
    """⚡ | ? | ✗ | ABANDON from ``TAG:``; words (bless, interesting, reject) and variants of the symbols
    count. The first recognised token wins."""
    value = field(answer, tag).replace("\ufe0f", "")
    if value.strip(" .*_`()[]").upper() == "X":
        return REJECT
    for token in re.findall(r"⚡|✗|✘|❌|✖|❓|\?|[A-Za-z]+", value):
        found = _RATING_TOKENS.get(token.upper()) if token.upper() != "X" else None   # a bare x in prose is no vote
        if found:
            return found
    raise ParseError(f"{tag}: expected ⚡, ?, ✗ or ABANDON, got {value!r}")


# a numeric confidence (0.85, 85%, 8/10) on the high | medium | low scale the prompts ask for
CONFIDENCE_HIGH, CONFIDENCE_MEDIUM = 0.7, 0.4


def confidence_word(answer: str, tag: str = "CONFIDENCE") -> str | None:
    """high | medium | low; "moderate" is medium, and a number is mapped by the thresholds above.
    None when absent or unreadable (the rest of the answer still counts)."""
    value = field(answer, tag, required=False)
    if not value:
        return None
    word = choice(answer, tag, ["high", "medium", "low", "moderate"], required=False)
    if word:
        return "medium" if word == "moderate" else word
    n = proportion(value)
    if n is None:
        return None
    return "high" if n >= CONFIDENCE_HIGH else "medium" if n >= CONFIDENCE_MEDIUM else "low"


def yes_no(answer: str, tag: str, required: bool = True) -> bool | None:
    value = choice(answer, tag, ["yes", "no", "true", "false"], required=required)
    return None if value is None else value in ("yes", "true")


# a word where a number was asked for: the middle of the band confidence_word maps back to that word
CONFIDENCE_OF_WORD = {"high": 0.9, "medium": 0.6, "moderate": 0.6, "low": 0.3}


def fraction(answer: str, tag: str) -> float | None:
    """A confidence in 0..1; ``85%``, ``85`` and ``8.5/10`` mean 0.85, and high | medium | low mean 0.9 |
    0.6 | 0.3 (a model that answers "REFUTED, CONFIDENCE: high" means it). None when absent or unreadable."""
    value = field(answer, tag, required=False)
    word = (value or "").strip().strip("*_.").lower()
    return CONFIDENCE_OF_WORD[word] if word in CONFIDENCE_OF_WORD else proportion(value)


# --- turns ----------------------------------------------------------------------------------------------

def _tagged_turn(answer: str, names: list[str], must: str) -> dict:
    found = sections(answer, names, required=(must,))
    parsed = {name: bullets(strip_signoff(body)) for name, body in found.items()}
    cleaned = "\n\n".join(f"[{name}]\n" + "\n".join(f"- {b}" for b in parsed[name]) for name in names if name in parsed)
    return {"sections": parsed, "response": cleaned}


def parse_explore(answer: str) -> dict:
    """``{"sections": {NAME: [bullet]}, "response": cleaned text}``; [NEW_INSIGHTS] is required."""
    return _tagged_turn(answer, EXPLORE_SECTIONS, "NEW_INSIGHTS")


def parse_critique(answer: str) -> dict:
    """As :func:`parse_explore`; [CRITICAL_ISSUES] is required."""
    return _tagged_turn(answer, CRITIQUE_SECTIONS, "CRITICAL_ISSUES")


def parse_synthesis(answer: str) -> dict:
    title = field(answer, "TITLE").strip("# ")
    summary = field(answer, "SUMMARY")
    content = _text(answer, "CONTENT", SYNTHESIS_TAGS, required=True)
    return {"title": title, "summary": summary, "content": content}


# --- extraction -----------------------------------------------------------------------------------------

def _score(block: str, name: str) -> int | None:
    m = re.search(rf"\b{name}\W{{0,3}}\s*[=:]\s*\**\s*(\d+(?:\.\d+)?)", block, re.IGNORECASE)
    if not m:
        return None
    n = float(m.group(1))
    return int(round(n)) if 1 <= n <= 10 else None


def _list(value: str | None) -> list[str]:
    if not value or value.strip().lower().rstrip(".") in _NONE:
        return []
    return [p.strip().strip("*_`[]\"'") for p in re.split(r"[,;]\s*", value) if p.strip().strip("*_`[]\"'")]


def _insight_blocks(answer: str, tags: list[str], what: str) -> list[tuple[str, str]]:
    """(block, insight text) for every block with an INSIGHT; [] for an explicit NO_INSIGHTS.

    A block starts at every INSIGHT label (see :func:`labelled_blocks`), so blocks separated by ``---``,
    headings, list numbers or nothing at all are all kept. A label with no text (or "none") makes no
    insight; an answer whose every label is empty is unusable."""
    out, empty = [], 0
    for block in labelled_blocks(answer, "INSIGHT"):
        text = _text(block, "INSIGHT", tags)
        if text is not None and optional_text(text):     # "INSIGHT: none" is no insight either
            out.append((block, " ".join(text.split())))
        else:
            empty += 1
    if not out:
        if field(answer, "NO_INSIGHTS", required=False) is not None:
            return []
        if empty:
            raise ParseError(f"every INSIGHT: in the {what} answer is empty ({empty} block(s))")
        raise ParseError(f"no INSIGHT: blocks in the {what} answer (expected blocks starting with 'INSIGHT: "
                         f"<claim>', or the line 'NO_INSIGHTS: <reason>')")
    return out


def parse_extract(answer: str, limit: int = 15) -> list[dict]:
    """Proposals ``{"text", "domains", "scores": {impact, intuition, surprise}, "note"}``, at most
    ``limit``; scores outside 1..10 or missing are ``None``."""
    out = []
    for block, text in _insight_blocks(answer, EXTRACT_TAGS, "extraction")[:limit]:
        out.append({"text": text, "domains": _list(field(block, "DOMAINS", required=False)),
                    "scores": {n: _score(block, n) for n in ("impact", "intuition", "surprise")},
                    "note": field(block, "INTUITION_NOTE", required=False)})
    return out


def _tag(value: str) -> str:
    return re.sub(r"\s+", "_", value.strip().lstrip("#").lower())


def parse_consolidate(answer: str, known_ids=(), limit: int = 10) -> list[dict]:
    """Final insights ``{"text", "confidence", "tags", "proposed_by", "depends_on", "unresolved_depends"}``.

    ``DEPENDS_ON`` ids not in ``known_ids`` (the blessed insights the prompt listed) go to
    ``unresolved_depends`` instead of being trusted."""
    known = set(known_ids)
    out = []
    for block, text in _insight_blocks(answer, CONSOLIDATE_TAGS, "consolidation")[:limit]:
        deps = _list(field(block, "DEPENDS_ON", required=False))
        out.append({"text": text, "confidence": confidence_word(block),
                    "tags": [_tag(t) for t in _list(field(block, "TAGS", required=False)) if _tag(t)],
                    "proposed_by": _list(field(block, "PROPOSED_BY", required=False)),
                    "depends_on": [d for d in deps if d in known],
                    "unresolved_depends": [d for d in deps if d not in known]})
    return out


def parse_dedup(answer: str, candidates: list[str]) -> dict:
    """``{"duplicate": bool, "of": candidate id|None, "confidence", "reason"}``. ``DUPLICATE_OF`` may be
    a candidate id or its 1-based position in the list the prompt showed."""
    dup = yes_no(answer, "IS_DUPLICATE")
    raw = field(answer, "DUPLICATE_OF", required=False)
    of = None
    if dup:
        value = (raw or "").strip().strip("*_`[]#\"'. ")
        if value in candidates:
            of = value
        else:
            inside = [c for c in candidates if re.search(rf"(?<![\w.-]){re.escape(c)}(?![\w-])", raw or "")]
            m = re.fullmatch(r"(\d+)", value)
            if inside:
                of = inside[0]
            elif m and 1 <= int(m.group(1)) <= len(candidates):
                of = candidates[int(m.group(1)) - 1]
        if of is None:
            raise ParseError(f"IS_DUPLICATE: yes but DUPLICATE_OF: {raw!r} names none of the candidates")
    return {"duplicate": bool(dup), "of": of, "confidence": confidence_word(answer),
            "reason": field(answer, "REASON", required=False)}


# --- review ---------------------------------------------------------------------------------------------

def _modification(answer: str, tags) -> dict:
    proposed = optional_text(_text(answer, "PROPOSED_MODIFICATION", tags))
    return {"proposed_modification": " ".join(proposed.split()) if proposed else None,
            "modification_rationale": optional_text(_text(answer, "MODIFICATION_RATIONALE", tags))}


def parse_review1(answer: str) -> dict:
    out: dict[str, Any] = {"rating": rating(answer, "RATING")}
    for tag in ("MATHEMATICAL_VERIFICATION", "STRUCTURAL_ANALYSIS", "NATURALNESS_ASSESSMENT", "REASONING"):
        out[tag.lower()] = _text(answer, tag, REVIEW1_TAGS)
    out["confidence"] = confidence_word(answer)
    out.update(_modification(answer, REVIEW1_TAGS))
    return out


def _claim_blocks(answer: str) -> list[str]:
    """The math check's claim blocks: split at rules; a block that still holds several VERDICTs (the
    model left the separators out) is split where its first field repeats — the first tag of the format
    that occurs as often as VERDICT — so that no verdict, least of all a refutation, is lost."""
    out = []
    for block in blocks(answer):
        count = len(labelled_blocks(block, "VERDICT"))
        if count < 2:
            out.append(block)
            continue
        first = next(t for t in MATH_TAGS if len(labelled_blocks(block, t)) == count)
        parts = labelled_blocks(block, first)
        if any(len(labelled_blocks(p, "VERDICT")) > 1 for p in parts):
            raise ParseError("several VERDICT: lines in one claim block; expected one block per claim, "
                             "separated by ===")
        out += parts
    return out


def parse_mathcheck(answer: str) -> dict:
    """``{"verdict": verified|refuted|unclear|not_mathematical, "confidence", "claims": [...]}``; the
    answer may check several claims in blocks (see :func:`_claim_blocks`). Any refuted claim refutes; its
    confidence counts."""
    claims = []
    for block in _claim_blocks(answer):
        verdict = choice(block, "VERDICT", ["VERIFIED", "REFUTED", "UNCLEAR", "NOT_MATHEMATICAL"], required=False)
        if verdict is None:
            continue
        claims.append({"claim": field(block, "CLAIM", required=False), "verdict": verdict.lower(),
                       "confidence": fraction(block, "CONFIDENCE"),
                       "proof_or_counterexample": _text(block, "PROOF_OR_COUNTEREXAMPLE", MATH_TAGS),
                       "concerns": field(block, "CONCERNS", required=False)})
    if not claims:
        raise ParseError("no VERDICT: (VERIFIED, REFUTED, UNCLEAR or NOT_MATHEMATICAL) in the math check answer")
    verdicts = [c["verdict"] for c in claims]
    if "refuted" in verdicts:
        verdict = "refuted"
        conf = max((c["confidence"] or 0.0) for c in claims if c["verdict"] == "refuted")
    elif all(v == "not_mathematical" for v in verdicts):
        verdict, conf = "not_mathematical", None
    elif all(v in ("verified", "not_mathematical") for v in verdicts):
        verdict = "verified"
        conf = min((c["confidence"] or 0.0) for c in claims if c["verdict"] == "verified")
    else:
        verdict, conf = "unclear", None
    return {"verdict": verdict, "confidence": conf, "claims": claims}


def parse_review2(answer: str) -> dict:
    out = {"rating": rating(answer, "UPDATED_RATING"),
           "new_information": _text(answer, "NEW_INFORMATION", REVIEW2_TAGS),
           "reassessment": _text(answer, "REASSESSMENT", REVIEW2_TAGS),
           "changed": yes_no(answer, "DOES_THIS_CHANGE_THINGS", required=False) if field(
               answer, "DOES_THIS_CHANGE_THINGS", required=False) else None,
           "reasoning": _text(answer, "UPDATED_REASONING", REVIEW2_TAGS),
           "confidence": confidence_word(answer)}
    out.update(_modification(answer, REVIEW2_TAGS))
    return out


def parse_review3(answer: str, step: str) -> dict:
    """By deliberation step: ``minority`` (STRONGEST_ARGUMENT), ``majority`` (RESPONSE, UPDATED_RATING,
    ACCEPT_MODIFICATION — absent counts as not accepted), ``vote`` (FINAL_RATING, FINAL_STANCE)."""
    if step == "minority":
        out = {"argument": _text(answer, "STRONGEST_ARGUMENT", REVIEW3_TAGS, required=True)}
        out.update(_modification(answer, REVIEW3_TAGS))
        return out
    if step == "majority":
        accept = field(answer, "ACCEPT_MODIFICATION", required=False)
        return {"response": _text(answer, "RESPONSE", REVIEW3_TAGS, required=True),
                "rating": rating(answer, "UPDATED_RATING"),
                "accept_modification": bool(accept) and bool(yes_no(answer, "ACCEPT_MODIFICATION", required=False)),
                "assessment": _text(answer, "MODIFICATION_ASSESSMENT", REVIEW3_TAGS)}
    if step == "vote":
        stance = choice(answer, "FINAL_STANCE", ["CONCEDE", "MAINTAIN"], required=False) if field(
            answer, "FINAL_STANCE", required=False) else None
        return {"rating": rating(answer, "FINAL_RATING"), "stance": stance.lower() if stance else None,
                "reason": _text(answer, "REASON", REVIEW3_TAGS) or _text(answer, "ONE_SENTENCE_JUSTIFICATION",
                                                                         REVIEW3_TAGS)}
    raise ValueError(f"unknown deliberation step {step!r}")


def is_math_request(*texts: str | None) -> bool:
    """A reviewer asking for the maths to be checked ("verify the math", "proof needed")."""
    from services.modules.explorer.model import MATH_REQUESTS
    blob = normalize(" ".join(t for t in texts if t)).lower()
    return any(p in blob for p in MATH_REQUESTS)
