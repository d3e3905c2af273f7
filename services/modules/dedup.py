"""Cheap duplicate detection shared by every module (DOMAIN.md "Dedup").

An insight (or a section, a finding) is compared with a corpus of known texts — pending, blessed and
documented content alike (the original forgot blessed-but-not-yet-documented ones). Exact duplicates
(after normalisation) are decided here; close candidates (lexical similarity above ``CANDIDATE``) go to
an LLM duplicate check (a task) and everything below is new. Nothing is dropped silently: callers
record the decision.
"""
from __future__ import annotations

import re
import unicodedata

CANDIDATE = 0.35   # similarity above which an LLM should decide
EXACT = 0.97       # similarity above which texts are the same claim

_STOP = frozenset("""a an the of and or to in on for with by is are be as at that this it its from which
into than then there their these those we our can may must will not no any all each every""".split())


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text or "").lower()
    text = re.sub(r"[*_`#>\[\]()]", " ", text)
    return re.sub(r"\s+", " ", text).strip(" .;:!?")


def _tokens(text: str) -> set[str]:
    return {t for t in re.findall(r"[a-z0-9⁰-⁹]+", normalize(text)) if t not in _STOP}


def _shingles(text: str, n: int = 3) -> set[str]:
    s = normalize(text)
    return {s[i:i + n] for i in range(max(1, len(s) - n + 1))}


def similarity(a: str, b: str) -> float:
    """A 0..1 lexical similarity: the larger of word Jaccard and character-trigram Jaccard."""
    ta, tb = _tokens(a), _tokens(b)
    words = len(ta & tb) / len(ta | tb) if ta and tb else 0.0
    sa, sb = _shingles(a), _shingles(b)
    chars = len(sa & sb) / len(sa | sb) if sa and sb else 0.0
    return max(words, chars)


def classify(text: str, corpus: dict[str, str], limit: int = 5) -> tuple[str, list[tuple[str, float]]]:
    """("duplicate", [(id, score)]) | ("candidates", [...best first]) | ("new", []).

    ``corpus`` maps ids to texts.
    """
    norm = normalize(text)
    scored = []
    for ident, other in corpus.items():
        if normalize(other) == norm:
            return "duplicate", [(ident, 1.0)]
        score = similarity(text, other)
        if score >= CANDIDATE:
            scored.append((ident, round(score, 3)))
    scored.sort(key=lambda kv: -kv[1])
    if scored and scored[0][1] >= EXACT:
        return "duplicate", scored[:1]
    return ("candidates", scored[:limit]) if scored else ("new", [])
