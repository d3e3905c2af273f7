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
