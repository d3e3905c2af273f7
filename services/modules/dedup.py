"""Cheap duplicate detection shared by every module (docs/research.md § Dedup).

An insight (or a section, a finding) is compared with a corpus of known texts — pending, blessed and
documented content alike (the original forgot blessed-but-not-yet-documented ones). Exact duplicates
(after normalisation) are decided here; close candidates (lexical similarity above ``CANDIDATE``) go to
an LLM duplicate check (a task) and everything below is new. Nothing is dropped silently: callers
record the decision.

Two entry points:

* :func:`classify` (the explorer): exact / candidates / new; the caller asks an LLM about candidates.
* :func:`lexical_duplicate` (the researcher, which has no LLM duplicate-check task): the decision is
  made lexically — an exact match after normalisation, or a similarity of at least ``LEXICAL`` (0.8)
  between texts that do not name different numbers. The threshold is deliberately high: with no LLM to
  confirm, a missed rewording (stored twice) is cheaper than two different questions merged. Measured
  on the domain's wordings, rewordings such as "the significance of 168 in the automorphism group of
  the Fano plane" / "... of the number 168 in the Fano plane automorphism group" score 0.85-1.0, while
  different questions on one template ("Where else does 7 appear alongside duality / orbit?", "... the
  Fano plane / the Klein quartic") score 0.6-0.75. Numbers are compared because a template with
  another number is another claim ("Where else does 7 appear?" is not "Where else does 168 appear?").
"""
from __future__ import annotations

import re
import unicodedata

CANDIDATE = 0.35   # similarity above which an LLM should decide
EXACT = 0.97       # similarity above which texts are the same claim
LEXICAL = 0.8      # without an LLM check: similarity from which a close wording is a duplicate

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


_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def numbers(text: str) -> frozenset[str]:
    """The numbers a text names (as written after normalisation: "168", "2.5")."""
    return frozenset(_NUMBER.findall(normalize(text)))


def lexical_duplicate(text: str, corpus: dict[str, str], threshold: float = LEXICAL) -> tuple[str, float] | None:
    """``(id, score)`` of the corpus entry ``text`` duplicates, decided without an LLM, or None when new.

    An exact match after normalisation scores 1.0; otherwise the most similar entry scoring at least
    ``threshold`` whose numbers are not different from the text's (when both name numbers, the sets must
    be equal). ``corpus`` maps ids to texts.
    """
    norm = normalize(text)
    nums = numbers(text)
    best: tuple[str, float] | None = None
    for ident, other in corpus.items():
        if normalize(other) == norm:
            return ident, 1.0
        score = similarity(text, other)
        if score < threshold or (best is not None and score <= best[1]):
            continue
        theirs = numbers(other)
        if nums and theirs and nums != theirs:
            continue
        best = (ident, round(score, 3))
    return best
