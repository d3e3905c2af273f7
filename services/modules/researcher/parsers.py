"""Tolerant parsing of the researcher's JSON answers (``researcher.*`` kinds).

Models wrap JSON in Markdown code fences, put prose before and after it, leave trailing commas, use
"smart" quotes around keys, write numbers as strings (``"85"``, ``"85/100"``, ``"0.8"``) and confidences
as percentages. :func:`extract_json` accepts those near misses; the three ``parse_*`` functions then
check the shape of one kind's answer. When the answer is unusable (no JSON object, truncated, the
wrong shape) they raise :class:`ParseError` with a message that says what is missing — never a silent
default. Single items that are malformed (a question without text, a finding without a summary) are
dropped and *counted* (``dropped`` in the result) so the caller can record them; an answer whose every
item is malformed is unusable.
"""
from __future__ import annotations

import json
import math
import re

from services.modules.parsing import ParseError, normalize

FINDING_TYPES = ("supporting", "challenging", "alternative", "contextual")
_TYPE_ALIASES = {"support": "supporting", "supports": "supporting", "challenge": "challenging",
                 "challenges": "challenging", "counter": "challenging", "counterevidence": "challenging",
                 "alternatives": "alternative", "context": "contextual", "background": "contextual"}
_FENCE = re.compile(r"```[ \t]*(?:json|JSON|javascript|js)?[ \t]*\n(.*?)```", re.S)
_TRAILING_COMMA = re.compile(r",(\s*[}\]])")
_SMART = str.maketrans({"\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2018": "'", "\u2019": "'"})


def _balanced_object(text: str, start: int) -> str | None:
    """The ``{...}`` starting at ``start`` with balanced braces (string-aware), or None if truncated."""
    depth, in_str, esc = 0, False, False
    for i in range(start, len(text)):
        ch = text[i]
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth == 0:
                return text[start:i + 1]
    return None


def _loads(candidate: str):
    try:
        return json.loads(candidate)
    except json.JSONDecodeError:
        pass
    repaired = _TRAILING_COMMA.sub(r"\1", candidate.translate(_SMART))
    return json.loads(repaired)  # may raise; the caller reports it


def extract_json(text: str) -> dict:
    """The first JSON object in a model's answer (fenced or bare, with prose around it)."""
    text = normalize(text)
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    last_error = None
    truncated = False
    for chunk in candidates:
        pos = chunk.find("{")
        while pos >= 0:
            obj_text = _balanced_object(chunk, pos)
            if obj_text is None:
                truncated = True
                break  # an unbalanced brace here means every later one is inside it too
            try:
                value = _loads(obj_text)
            except json.JSONDecodeError as exc:
                last_error = exc
            else:
                if isinstance(value, dict):
                    return value
            # only top-level objects count: an inner one (a single question) is not the answer
            pos = chunk.find("{", pos + len(obj_text))
    if last_error is not None:
        raise ParseError(f"answer holds no valid JSON object ({last_error.msg} at line {last_error.lineno})")
    if truncated:
        raise ParseError("answer holds truncated JSON (an object is never closed)")
    raise ParseError("answer holds no JSON object")


# --- small coercions ------------------------------------------------------------------------------------

def _num(value) -> float | None:
    """A finite number from a number or a numeric string (``"85"``, ``"85/100"``, ``"80%"``); else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        m = re.match(r"^\s*(-?\d+(?:\.\d+)?)", value)
        return float(m.group(1)) if m else None
    return None


def _strings(value, limit: int = 20) -> list[str]:
    """A list of non-empty strings from a list or a comma-separated string."""
    if isinstance(value, str):
        value = [v for v in re.split(r"[,;]", value)]
    if not isinstance(value, list):
        return []
    out = []
    for v in value:
        if isinstance(v, (str, int, float)) and not isinstance(v, bool) and str(v).strip():
            s = str(v).strip()
            if s not in out:
                out.append(s)
    return out[:limit]


def numbers_of(value, limit: int = 20) -> list[int | float]:
    """Numbers from a list of numbers / numeric strings / ``{"value": n}`` maps (integers stay ints)."""
    if not isinstance(value, list):
        value = [value] if value not in (None, "") else []
    out: list = []
    for v in value:
        if isinstance(v, dict):
            v = v.get("value")
        n = _num(v)
        if n is None:
            continue
        n = int(n) if n.is_integer() else n
        if n not in out:
            out.append(n)
    return out[:limit]


def finding_type(value) -> str | None:
    word = str(value or "").strip().lower()
    word = _TYPE_ALIASES.get(word, word)
    return word if word in FINDING_TYPES else None


def _items(data: dict, name: str, what: str) -> list:
    items = data.get(name)
    if items is None:
        raise ParseError(f'no "{name}" list in the JSON answer ({what})')
    if not isinstance(items, list):
        raise ParseError(f'"{name}" is a {type(items).__name__}, not a list')
    return items


# --- the three kinds ------------------------------------------------------------------------------------

def parse_questions(text: str) -> dict:
    """``{"questions": [{"question", "type", "concepts", "numbers", "priority", "urls"}], "dropped": n}``.

    ``priority`` 1-10 (a missing or odd one becomes 5 and is *not* counted as dropped: it only orders
    the list); ``urls`` (optional) are http(s) sources the model proposes.
    """
    data = extract_json(text)
    items = _items(data, "questions", "researcher.generate_questions")
    out, dropped = [], 0
    for item in items:
        if isinstance(item, str):
            item = {"question": item}
        q = str(item.get("question") or item.get("text") or "").strip() if isinstance(item, dict) else ""
        kind = finding_type(item.get("type")) if isinstance(item, dict) else None
        if not q or kind is None:
            dropped += 1
            continue
        prio = _num(item.get("priority"))
        prio = 5 if prio is None else int(min(10, max(1, round(prio))))
        urls = [u for u in _strings(item.get("urls") or item.get("sources"), 5) if re.match(r"^https?://", u)]
        out.append({"question": q[:500], "type": kind, "concepts": _strings(item.get("concepts")),
                    "numbers": numbers_of(item.get("numbers")), "priority": prio, "urls": urls})
    if items and not out:
        raise ParseError(f"none of the {len(items)} questions has both a question text and a known type "
                         f"({', '.join(FINDING_TYPES)})")
    if not out:
        raise ParseError('"questions" is empty')
    return {"questions": out, "dropped": dropped}


def parse_evaluation(text: str) -> dict:
    """``{"score": 0-100, "scholarly_tone": bool|None, "cites_primary": bool|None, "reasons": [str]}``."""
    data = extract_json(text)
    if "score" not in data:
        raise ParseError('no "score" in the JSON answer (researcher.evaluate_source)')
    score = _num(data.get("score"))
    if score is None or not 0 <= score <= 100:
        raise ParseError(f'"score" must be a number in 0-100, got {data.get("score")!r}')
    reasons = data.get("reasons", data.get("reasoning"))
    reasons = [reasons.strip()] if isinstance(reasons, str) and reasons.strip() else _strings(reasons, 10)

    def flag(name):
        v = data.get(name)
        if isinstance(v, str):
            return {"true": True, "yes": True, "false": False, "no": False}.get(v.strip().lower())
        return v if isinstance(v, bool) else None
    return {"score": round(score, 1), "scholarly_tone": flag("scholarly_tone"),
            "cites_primary": flag("cites_primary"), "reasons": reasons}


def parse_findings(text: str) -> dict:
    """``{"findings": [{summary, quote, type, confidence 0-1, concepts, numbers, urls}], "numbers": [...],
    "dropped": n}``. An empty ``findings`` list is a valid answer (a page with nothing relevant)."""
    data = extract_json(text)
    items = _items(data, "findings", "researcher.extract_findings")
    out, dropped = [], 0
    for item in items:
        if not isinstance(item, dict):
            dropped += 1
            continue
        summary = str(item.get("summary") or "").strip()
        kind = finding_type(item.get("type"))
        conf = _num(item.get("confidence"))
        if conf is not None and 1 < conf <= 100:
            conf /= 100.0  # a percentage
        if not summary or kind is None or conf is None or not 0 <= conf <= 1:
            dropped += 1
            continue
        out.append({"summary": summary[:1000], "quote": str(item.get("quote") or "").strip()[:1000],
                    "type": kind, "confidence": round(conf, 3), "concepts": _strings(item.get("concepts")),
                    "numbers": numbers_of(item.get("numbers"))})
    if items and not out:
        raise ParseError(f"none of the {len(items)} findings has a summary, a known type and a confidence in 0-1")
    mentions = []
    for m in data.get("numbers") or []:
        if isinstance(m, dict) and numbers_of([m.get("value")]):
            mentions.append({"value": numbers_of([m.get("value")])[0], "context": str(m.get("context") or "")[:300],
                             "significance": str(m.get("significance") or "")[:200],
                             "mention_type": str(m.get("mention_type") or "")[:40]})
    return {"findings": out, "numbers": mentions[:30], "dropped": dropped}
