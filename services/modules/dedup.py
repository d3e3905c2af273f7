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
from functools import lru_cache
from typing import NamedTuple

CANDIDATE = 0.35   # similarity above which an LLM should decide
EXACT = 0.97       # similarity above which texts are the same claim
LEXICAL = 0.8      # without an LLM check: similarity from which a close wording is a duplicate
FEATURE_CACHE = 4096   # texts whose features are kept (a few KB each): the corpus of a long run, bounded

_STOP = frozenset("""a an the of and or to in on for with by is are be as at that this it its from which
into than then there their these those we our can may must will not no any all each every""".split())


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text or "").lower()
    text = re.sub(r"[*_`#>\[\]()]", " ", text)
    return re.sub(r"\s+", " ", text).strip(" .;:!?")


class _Set(NamedTuple):
    """A set of words or trigrams as a bitmap over :data:`_WORDS` / :data:`_TRIGRAMS` (``bits``), with its
    size: |A ∩ B| is ``(a.bits & b.bits).bit_count()``, one C loop over a few KB, exact."""
    bits: int
    n: int


class _Features(NamedTuple):
    norm: str
    tokens: _Set
    shingles: _Set


# Bit positions of every word and trigram seen, in order of first appearance (trigrams are bounded by the
# alphabet, words by the research's vocabulary). A text's sets are bitmaps over them: a few KB per text,
# where frozensets of strings took ~24 KB for a 450-character text (the cache of 4,096 texts would have
# held ~100 MB).
_WORDS: dict[str, int] = {}
_TRIGRAMS: dict[str, int] = {}


def _bitmap(items: set[str], index: dict[str, int]) -> _Set:
    positions = [index.setdefault(x, len(index)) for x in items]
    if not positions:
        return _Set(0, 0)
    buf = bytearray((max(positions) >> 3) + 1)
    for i in positions:
        buf[i >> 3] |= 1 << (i & 7)
    return _Set(int.from_bytes(buf, "little"), len(positions))


@lru_cache(maxsize=FEATURE_CACHE)
def _features(text: str) -> _Features:
    """A text's normalised form, content words and character trigrams, computed once per text.

    Every new insight is compared with every known one, so without the cache each comparison would
    re-normalise the whole corpus: a cost growing with the research's history on every extraction.
    The cache is bounded (least recently used out), and each entry is small (bitmaps, :class:`_Set`)."""
    norm = normalize(text)
    tokens = {t for t in re.findall(r"[a-z0-9⁰-⁹]+", norm) if t not in _STOP}
    shingles = {norm[i:i + 3] for i in range(max(1, len(norm) - 2))}
    return _Features(norm, _bitmap(tokens, _WORDS), _bitmap(shingles, _TRIGRAMS))


def _jaccard(a: _Set, b: _Set) -> float:
    if not (a.n and b.n):
        return 0.0
    both = (a.bits & b.bits).bit_count()
    return both / (a.n + b.n - both)


def _similarity(fa: _Features, fb: _Features, floor: float = 0.0) -> float:
    """:func:`similarity` over precomputed features; 0.0 as soon as neither Jaccard can reach ``floor``.

    |A ∩ B| / |A ∪ B| is at most min(|A|, |B|) / max(|A|, |B|), so two texts of very different lengths
    are ruled out by their sizes alone, without intersecting any set (the exact score is unchanged for
    every pair that can reach the floor)."""
    def bound(a: _Set, b: _Set) -> float:
        return min(a.n, b.n) / max(a.n, b.n) if a.n and b.n else 0.0
    if floor > 0.0 and bound(fa.tokens, fb.tokens) < floor and bound(fa.shingles, fb.shingles) < floor:
        return 0.0
    return max(_jaccard(fa.tokens, fb.tokens), _jaccard(fa.shingles, fb.shingles))


def similarity(a: str, b: str) -> float:
    """A 0..1 lexical similarity: the larger of word Jaccard and character-trigram Jaccard."""
    return _similarity(_features(a), _features(b))


def classify(text: str, corpus: dict[str, str], limit: int = 5) -> tuple[str, list[tuple[str, float]]]:
    """("duplicate", [(id, score)]) | ("candidates", [...best first]) | ("new", []).

    ``corpus`` maps ids to texts.
    """
    mine = _features(text)
    scored = []
    for ident, other in corpus.items():
        theirs = _features(other)
        if theirs.norm == mine.norm:
            return "duplicate", [(ident, 1.0)]
        score = _similarity(mine, theirs, CANDIDATE)
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
    mine = _features(text)
    nums = numbers(text)
    best: tuple[str, float] | None = None
    for ident, other in corpus.items():
        theirs = _features(other)
        if theirs.norm == mine.norm:
            return ident, 1.0
        score = _similarity(mine, theirs, threshold)
        if score < threshold or (best is not None and score <= best[1]):
            continue
        their_nums = numbers(other)
        if nums and their_nums and nums != their_nums:
            continue
        best = (ident, round(score, 3))
    return best
