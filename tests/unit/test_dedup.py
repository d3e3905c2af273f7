from services.modules.dedup import classify, normalize, similarity


def test_exact_after_normalisation_is_a_duplicate():
    corpus = {"i1": "The Fano plane has **7 points** and 7 lines."}
    assert classify("the fano plane has 7 points and 7 lines", corpus) == ("duplicate", [("i1", 1.0)])


def test_close_wording_is_a_candidate_for_an_llm_check_and_unrelated_is_new():
    corpus = {"i1": "The Fano plane has 7 points and 7 lines, each line holding 3 points.",
              "i2": "Quaternions form a division algebra over the reals."}
    verdict, cands = classify("Each of the 7 lines of the Fano plane holds exactly 3 of its 7 points.", corpus)
    assert verdict == "candidates" and cands[0][0] == "i1"
    assert classify("Sourdough needs a long fermentation.", corpus) == ("new", [])


def test_similarity_is_symmetric_and_bounded():
    a, b = "octonions and the fano plane", "the Fano plane encodes octonion multiplication"
    assert similarity(a, b) == similarity(b, a)
    assert 0 < similarity(a, b) < 1 and similarity(a, a) == 1.0
    assert normalize("  **Bold** `code`  ") == "bold code"


def test_lexical_duplicate_catches_rewordings_but_not_other_numbers_or_subjects():
    from services.modules.dedup import LEXICAL, lexical_duplicate
    corpus = {"q1": "What is the significance of 168 in the automorphism group of the Fano plane?",
              "q2": "Where else does 7 appear alongside duality?"}
    assert lexical_duplicate("what is the significance of 168 in the automorphism group of the fano plane",
                             corpus) == ("q1", 1.0)
    hit = lexical_duplicate("What is the significance of the number 168 in the Fano plane automorphism group?", corpus)
    assert hit is not None and hit[0] == "q1" and LEXICAL <= hit[1] < 1.0
    assert lexical_duplicate("What is the significance of 336 in the automorphism group of the Fano plane?",
                             corpus) is None                      # another number: another question
    assert lexical_duplicate("Where else does 7 appear alongside orbit?", corpus) is None   # another subject
    assert lexical_duplicate("Sourdough needs a long fermentation.", corpus) is None
    assert lexical_duplicate("anything", {}) is None


def _reference_similarity(a: str, b: str) -> float:
    """The definition, computed from scratch (no cache, no size bound)."""
    import re

    from services.modules.dedup import _STOP
    na, nb = normalize(a), normalize(b)
    ta = {t for t in re.findall(r"[a-z0-9⁰-⁹]+", na) if t not in _STOP}
    tb = {t for t in re.findall(r"[a-z0-9⁰-⁹]+", nb) if t not in _STOP}
    sa = {na[i:i + 3] for i in range(max(1, len(na) - 2))}
    sb = {nb[i:i + 3] for i in range(max(1, len(nb) - 2))}
    words = len(ta & tb) / len(ta | tb) if ta and tb else 0.0
    chars = len(sa & sb) / len(sa | sb) if sa and sb else 0.0
    return max(words, chars)


def test_classify_and_lexical_duplicate_agree_with_the_definition_on_random_corpora():
    """The size bound that skips pairs must never skip one that reaches the threshold."""
    import random

    from services.modules.dedup import CANDIDATE, EXACT, LEXICAL, lexical_duplicate
    rng = random.Random(11)
    words = "fano plane seven points lines octonion 168 automorphism group klein quartic duality orbit 7 3".split()
    for _ in range(200):
        corpus = {f"i{n}": " ".join(rng.choices(words, k=rng.randint(1, 14))) for n in range(12)}
        text = " ".join(rng.choices(words, k=rng.randint(1, 14)))
        scores = {i: _reference_similarity(text, t) for i, t in corpus.items()}
        exact = [i for i, t in corpus.items() if normalize(t) == normalize(text)]
        verdict, cands = classify(text, corpus, limit=50)
        if exact:
            assert verdict == "duplicate" and cands == [(exact[0], 1.0)]
            continue
        want = sorted(((i, round(s, 3)) for i, s in scores.items() if s >= CANDIDATE), key=lambda kv: -kv[1])
        if want and want[0][1] >= EXACT:
            assert verdict == "duplicate" and cands == want[:1]
        else:
            assert (verdict, cands) == (("candidates", want) if want else ("new", []))
        hit = lexical_duplicate(text, corpus)
        if hit is None:
            continue
        assert round(scores[hit[0]], 3) == hit[1] >= LEXICAL
    assert any(lexical_duplicate(t, {"x": t + " plane"}) for t in ("fano plane seven points lines",))


def test_text_features_are_cached_within_a_bound():
    from services.modules.dedup import FEATURE_CACHE, _features
    _features.cache_clear()
    corpus = {f"i{n}": f"claim number {n} about the fano plane" for n in range(50)}
    classify("a new claim about the fano plane", corpus)
    classify("another new claim about the fano plane", corpus)
    info = _features.cache_info()
    assert info.hits >= 50 and info.misses == 52
    assert info.maxsize == FEATURE_CACHE


def test_a_cached_text_costs_a_few_kilobytes():
    """The cache must not become the module's memory: frozensets of trigrams took ~24 KB per text."""
    import random
    import tracemalloc

    from services.modules.dedup import _features
    rng = random.Random(5)
    words = [f"w{n}" for n in range(400)] + "fano plane octonion klein quartic automorphism".split()
    texts = [" ".join(rng.choices(words, k=70)) + f" #{i}" for i in range(300)]
    for t in texts[:50]:
        _features(t)   # the word and trigram index warm, as in a running module
    tracemalloc.start()
    for t in texts[50:]:
        _features(t)
    used, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert used / 250 < 4000, used / 250
