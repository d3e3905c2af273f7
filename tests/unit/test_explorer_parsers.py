"""Explorer answer parsers: well-formed answers, the near misses real models produce (Markdown bold, prose
around the tags, CRLF, missing optional fields), and unusable answers that must raise ParseError."""
from __future__ import annotations

import random

import pytest

from services.backends import sim_answers as S
from services.modules.explorer import model as M
from services.modules.explorer import parsers as P
from services.modules.parsing import ParseError


def crlf(text: str) -> str:
    return text.replace("\n", "\r\n")


def bold(text: str) -> str:
    import re
    return re.sub(r"^([A-Z][A-Z_]+):", r"**\1:**", text, flags=re.M)


def prose(text: str) -> str:
    return "Sure! Here is my assessment.\n\n" + text + "\n\nLet me know if you would like me to expand on any point."


VARIANTS = [lambda t: t, crlf, bold, prose, lambda t: crlf(prose(bold(t)))]


def test_kind_names_are_the_simulated_providers():
    assert set(M.KINDS) == {k for k in S.KINDS if k.startswith("explorer.")}


# --- turns ----------------------------------------------------------------------------------------------

EXPLORE = "[NEW_INSIGHTS]\n- A is B.\n- C forces D.\n\n[CONNECTIONS]\n- E links F.\n\n[QUESTIONS]\n- Why 7?\n"


@pytest.mark.parametrize("variant", VARIANTS)
def test_explore_sections_and_cleaned_response(variant):
    out = P.parse_explore(variant(EXPLORE))
    assert out["sections"] == {"NEW_INSIGHTS": ["A is B.", "C forces D."], "CONNECTIONS": ["E links F."],
                               "QUESTIONS": ["Why 7?"]}
    assert out["response"].startswith("[NEW_INSIGHTS]\n- A is B.") and "Sure!" not in out["response"]
    assert "Let me know" not in out["response"]


def test_explore_near_misses_headings_and_bold_sections():
    text = "## NEW INSIGHTS\n* one\n\n**[CONNECTIONS]**\n1. two\n"
    out = P.parse_explore(text)
    assert out["sections"]["NEW_INSIGHTS"] == ["one"] and out["sections"]["CONNECTIONS"] == ["two"]


def test_explore_without_insights_is_unusable():
    with pytest.raises(ParseError, match="NEW_INSIGHTS"):
        P.parse_explore("[CONNECTIONS]\n- only this\n")
    with pytest.raises(ParseError):
        P.parse_explore("I'm sorry, but I can't help with that request.")


def test_critique_requires_its_issues_section():
    out = P.parse_critique(prose("[CRITICAL_ISSUES]\n- forced\n\n[PROBING_QUESTIONS]\n- why?\n"))
    assert out["sections"]["CRITICAL_ISSUES"] == ["forced"] and "PROMISING_DIRECTIONS" not in out["sections"]
    with pytest.raises(ParseError, match="CRITICAL_ISSUES"):
        P.parse_critique(EXPLORE)


@pytest.mark.parametrize("variant", VARIANTS)
def test_synthesis(variant):
    out = P.parse_synthesis(variant("TITLE: The plane\nSUMMARY: It is forced.\nCONTENT:\n## Part\n\nBody text.\n"))
    assert out["title"] == "The plane" and out["summary"] == "It is forced."
    assert out["content"].replace("\r", "") == "## Part\n\nBody text."


def test_synthesis_missing_content_is_unusable():
    with pytest.raises(ParseError, match="CONTENT"):
        P.parse_synthesis("TITLE: x\nSUMMARY: y\n")


# --- extraction -----------------------------------------------------------------------------------------

EXTRACT = ("INSIGHT: The plane is self-dual.\nDOMAINS: geometry, algebra\n"
           "SCORES: impact=7, intuition=5, surprise=8, total=20\n"
           "INTUITION_NOTE: natural\n===\nINSIGHT: Seven is forced\nby the incidence.\n"
           "SCORES: Impact: 11, intuition = 4\n")


@pytest.mark.parametrize("variant", VARIANTS)
def test_extract_blocks_scores_and_multiline_insights(variant):
    out = P.parse_extract(variant(EXTRACT))
    assert [b["text"] for b in out] == ["The plane is self-dual.", "Seven is forced by the incidence."]
    assert out[0]["scores"] == {"impact": 7, "intuition": 5, "surprise": 8}
    assert out[0]["domains"] == ["geometry", "algebra"]
    assert out[1]["scores"] == {"impact": None, "intuition": 4, "surprise": None}   # out of range / missing: None


def test_extract_limit_no_insights_and_garbage():
    assert len(P.parse_extract(EXTRACT, limit=1)) == 1
    assert P.parse_extract("NO_INSIGHTS: nothing new here") == []
    with pytest.raises(ParseError, match="INSIGHT"):
        P.parse_extract("<!DOCTYPE html><html><body><h1>Something went wrong</h1></body></html>")


CONSOLIDATE = ("INSIGHT: The plane is self-dual.\nCONFIDENCE: High\nTAGS: Projective Geometry, #duality\n"
               "PROPOSED_BY: gemini, claude\nDEPENDS_ON: b.t1.i1, made.up\n===\n"
               "INSIGHT: Seven is forced.\nTAGS: counting\nDEPENDS_ON: none\n")


@pytest.mark.parametrize("variant", VARIANTS)
def test_consolidate_fields_and_unknown_dependencies(variant):
    out = P.parse_consolidate(variant(CONSOLIDATE), known_ids=["b.t1.i1"])
    assert out[0] == {"text": "The plane is self-dual.", "confidence": "high",
                      "tags": ["projective_geometry", "duality"],
                      "proposed_by": ["gemini", "claude"], "depends_on": ["b.t1.i1"], "unresolved_depends": ["made.up"]}
    assert out[1]["confidence"] is None and out[1]["depends_on"] == [] and out[1]["proposed_by"] == []


def test_consolidate_limit_and_unusable():
    assert len(P.parse_consolidate(CONSOLIDATE, limit=1)) == 1
    with pytest.raises(ParseError):
        P.parse_consolidate("Here are my thoughts on the proposals, in prose only.")


@pytest.mark.parametrize("answer,expected", [
    ("IS_DUPLICATE: yes\nDUPLICATE_OF: a.t1.i2\nCONFIDENCE: high\nREASON: same", "a.t1.i2"),
    ("**IS_DUPLICATE:** Yes.\r\n**DUPLICATE_OF:** 1\r\n", "a.t1.i1"),          # a 1-based position
    ("IS_DUPLICATE: yes\nDUPLICATE_OF: [a.t1.i2] (the second one)\n", "a.t1.i2"),
    ("IS_DUPLICATE: no\nDUPLICATE_OF: none\n", None),
    ("IS_DUPLICATE: false\n", None),
])
def test_dedup(answer, expected):
    out = P.parse_dedup(answer, ["a.t1.i1", "a.t1.i2", "a.t1.i20"])
    assert out["of"] == expected and out["duplicate"] == (expected is not None)


def test_dedup_unresolvable_or_missing_is_unusable():
    with pytest.raises(ParseError, match="names none"):
        P.parse_dedup("IS_DUPLICATE: yes\nDUPLICATE_OF: 9\n", ["a", "b"])
    with pytest.raises(ParseError):
        P.parse_dedup("It might be a duplicate, hard to say.", ["a"])


# --- reviews --------------------------------------------------------------------------------------------

REVIEW1 = ("RATING: ⚡\nMATHEMATICAL_VERIFICATION: checks out\nSTRUCTURAL_ANALYSIS: deep\n"
           "NATURALNESS_ASSESSMENT: discovered\nREASONING: It is forced\nby the incidence.\nCONFIDENCE: high\n"
           "PROPOSED_MODIFICATION: NONE\nMODIFICATION_RATIONALE: NONE\n")


@pytest.mark.parametrize("variant", VARIANTS)
def test_review1(variant):
    out = P.parse_review1(variant(REVIEW1))
    assert out["rating"] == M.BLESS and out["reasoning"] == "It is forced\nby the incidence."
    assert out["confidence"] == "high" and out["proposed_modification"] is None and out["structural_analysis"] == "deep"


@pytest.mark.parametrize("value,rating", [
    ("⚡", M.BLESS), ("⚡️ (profound)", M.BLESS), ("bless", M.BLESS), ("?", M.MAYBE), ("Interesting", M.MAYBE),
    ("✗", M.REJECT), ("❌ reject", M.REJECT), ("X", M.REJECT), ("ABANDON", M.ABANDON), ("**✗**", M.REJECT),
    ("depends on x, so ?", M.MAYBE)])
def test_rating_words_and_symbols(value, rating):
    assert P.rating(f"RATING: {value}\n", "RATING") == rating


def test_review1_near_misses_and_unusable():
    out = P.parse_review1("- **Rating**: ?\n**Proposed modification:** The plane is self-dual.\n")
    assert out["rating"] == M.MAYBE and out["proposed_modification"] == "The plane is self-dual."
    assert out["reasoning"] is None and out["confidence"] is None          # absent: None, never invented
    with pytest.raises(ParseError, match="RATING"):
        P.parse_review1("REASONING: I like it a lot.\n")
    with pytest.raises(ParseError, match="expected"):
        P.parse_review1("RATING: it depends\n")


@pytest.mark.parametrize("variant", VARIANTS)
def test_mathcheck_blocks_and_aggregate(variant):
    text = ("CLAIM: 7 points\nVERDICT: VERIFIED\nCONFIDENCE: 0.9\n===\n"
            "CLAIM: 8 lines\nPROOF_OR_COUNTEREXAMPLE: Counterexample: there are 7.\n"
            "VERDICT: REFUTED\nCONFIDENCE: 85%\n")
    out = P.parse_mathcheck(variant(text))
    assert out["verdict"] == "refuted" and out["confidence"] == pytest.approx(0.85) and len(out["claims"]) == 2
    assert P.parse_mathcheck("VERDICT: VERIFIED\nCONFIDENCE: 0.7")["verdict"] == "verified"
    assert P.parse_mathcheck("VERDICT: UNCLEAR\n===\nVERDICT: VERIFIED\n")["verdict"] == "unclear"
    assert P.parse_mathcheck("VERDICT: NOT_MATHEMATICAL")["verdict"] == "not_mathematical"


def test_mathcheck_without_a_verdict_is_unusable():
    with pytest.raises(ParseError, match="VERDICT"):
        P.parse_mathcheck("CLAIM: something\nCONFIDENCE: 0.9\n")


def test_review2():
    out = P.parse_review2(prose("NEW_INFORMATION: x\nDOES_THIS_CHANGE_THINGS: Yes\nUPDATED_RATING: ✗\n"
                                "UPDATED_REASONING: now I doubt it\nCONFIDENCE: medium\nPROPOSED_MODIFICATION: n/a\n"))
    assert out["rating"] == M.REJECT and out["changed"] is True and out["reasoning"] == "now I doubt it"
    assert out["proposed_modification"] is None
    with pytest.raises(ParseError, match="UPDATED_RATING"):
        P.parse_review2("RATING: ⚡\nREASONING: I did not follow the format")


def test_review3_steps():
    minority = P.parse_review3("STRONGEST_ARGUMENT: It is numerology.\nPROPOSED_MODIFICATION: A weaker claim.\n",
                               "minority")
    assert minority["argument"] == "It is numerology." and minority["proposed_modification"] == "A weaker claim."
    majority = P.parse_review3(crlf("RESPONSE: No, it is forced.\nACCEPT_MODIFICATION: yes\nUPDATED_RATING: ⚡\n"),
                               "majority")
    assert majority["accept_modification"] is True and majority["rating"] == M.BLESS
    silent = P.parse_review3("RESPONSE: No.\nUPDATED_RATING: ⚡\n", "majority")
    assert silent["accept_modification"] is False                 # not said: not accepted
    vote = P.parse_review3(bold("FINAL_STANCE: concede\nREASON: fair point\nFINAL_RATING: ?\n"), "vote")
    assert vote == {"rating": M.MAYBE, "stance": "concede", "reason": "fair point"}
    for step, text in (("minority", "PROPOSED_MODIFICATION: x"), ("majority", "RESPONSE: x"), ("vote", "REASON: x")):
        with pytest.raises(ParseError):
            P.parse_review3(text, step)


# --- every simulated answer, decorated, parses ------------------------------------------------------------

PARSERS = {
    S.EXPLORER_EXPLORE: P.parse_explore, S.EXPLORER_CRITIQUE: P.parse_critique, S.EXPLORER_SYNTHESIS: P.parse_synthesis,
    S.EXPLORER_EXTRACT: P.parse_extract, S.EXPLORER_CONSOLIDATE: P.parse_consolidate,
    S.EXPLORER_DEDUP: lambda t: P.parse_dedup(t, ["a.t1.i1", "a.t1.i2"]), S.EXPLORER_REVIEW1: P.parse_review1,
    S.EXPLORER_MATHCHECK: P.parse_mathcheck, S.EXPLORER_REVIEW2: P.parse_review2}


@pytest.mark.parametrize("kind", sorted(PARSERS) + ["minority", "majority", "vote"])
def test_every_simulated_answer_parses(kind):
    rng = random.Random(kind)
    for n in range(60):
        payload = {"insight_id": f"x{n}", "reviewer": "r", "candidates": ["a.t1.i1", "a.t1.i2"], "blessed_ids": ["b1"]}
        real_kind, parse = (S.EXPLORER_REVIEW3, lambda t: P.parse_review3(t, kind)) \
            if kind in ("minority", "majority", "vote") \
            else (kind, PARSERS[kind])
        if real_kind == S.EXPLORER_REVIEW3:
            payload["step"] = kind
        text = S.answer(real_kind, payload, "INSIGHT: a claim\n", ("standard", "deep")[n % 2], rng, seed=n)
        parse(S.decorate(text, real_kind, rng, sloppy_rate=1.0))


def test_garbage_answers_of_the_sim_are_unusable():
    rng = random.Random(1)
    for kind, parse in PARSERS.items():
        with pytest.raises(ParseError):
            parse(S.decorate("x", kind, rng, garbage_rate=1.0))


# --- layouts that used to lose insights silently (all kept now) or fail -----------------------------------

FIELDS = "DOMAINS: geometry\nSCORES: impact=7, intuition=6, surprise=8, total=21\n"


@pytest.mark.parametrize("between", ["---", "***", "___", "=== Insight 2 ===", "### Insight 2", "**Insight 2**", "\n",
                                     ""])
def test_extract_keeps_every_block_whatever_separates_them(between):
    text = f"INSIGHT: The plane is self-dual.\n{FIELDS}{between}\nINSIGHT: Seven is forced.\n{FIELDS}"
    out = P.parse_extract(text)
    assert [b["text"] for b in out] == ["The plane is self-dual.", "Seven is forced."]
    assert all(b["domains"] == ["geometry"] and b["scores"]["impact"] == 7 for b in out)


@pytest.mark.parametrize("first,second", [("INSIGHT 1:", "INSIGHT 2:"), ("Insight #1:", "Insight #2:"),
                                          ("**INSIGHT:**", "**INSIGHT:**"), ("**INSIGHT 1:**", "**INSIGHT 2:**"),
                                          ("1. INSIGHT:", "2. INSIGHT:"), ("1. **Insight:**", "2. **Insight:**"),
                                          ("### Insight 1:", "### Insight 2:")])
def test_extract_label_variants(first, second):
    text = f"{first} The plane is self-dual.\n   {FIELDS}\n{second} Seven is forced.\n   {FIELDS}"
    assert [b["text"] for b in P.parse_extract(text)] == ["The plane is self-dual.", "Seven is forced."]


def test_numbered_layout_does_not_merge_two_insights():
    out = P.parse_consolidate("1. INSIGHT: a\n2. INSIGHT: b\n")
    assert [i["text"] for i in out] == ["a", "b"]


EXTRACT_REAL = """Thank you for the rich exploration. Below are the insights I would extract.

---

### Insight 1
**INSIGHT:** The Fano plane is self-dual: exchanging points and lines preserves
incidence, so every theorem about points has a dual about lines.
**DOMAINS:** projective geometry, combinatorics
**SCORES:** impact=8, intuition=7, surprise=5, total=20
**INTUITION_NOTE:** Duality feels forced by the symmetry of the incidence matrix.

---

### Insight 2
**INSIGHT:** The 7 points correspond to the nonzero vectors of $\\mathbb{F}_2^3$.
**DOMAINS:** linear algebra, coding theory
**SCORES:** impact=9, intuition=8, surprise=6, total=23
**INTUITION_NOTE:** It explains *why* seven.

---

### Insight 3
**INSIGHT:** The Hamming(7,4) code is the Fano plane read as a code.
**DOMAINS:** coding theory
**SCORES:** impact=7, intuition=6, surprise=9, total=22
**INTUITION_NOTE:** A bridge between two domains.

---

I hope this helps! Let me know if you'd like me to score them differently."""


@pytest.mark.parametrize("variant", [lambda t: t, crlf])
def test_a_realistic_extraction_answer_with_markdown_rules_and_headings(variant):
    out = P.parse_extract(variant(EXTRACT_REAL))
    assert len(out) == 3
    assert out[0]["text"] == ("The Fano plane is self-dual: exchanging points and lines preserves incidence, "
                              "so every theorem about points has a dual about lines.")
    assert out[1]["scores"] == {"impact": 9, "intuition": 8, "surprise": 6}
    assert out[2]["domains"] == ["coding theory"] and out[2]["note"] == "A bridge between two domains."
    assert not any("hope this helps" in b["text"] or "Insight" in b["text"] for b in out)


CONSOLIDATE_REAL = """Here is the consolidated list.

1. **INSIGHT 1:** The plane is self-dual.
   **CONFIDENCE:** 0.85
   **TAGS:** duality, projective geometry
   **PROPOSED_BY:** gemini, claude
   **DEPENDS_ON:** none

2. **INSIGHT 2:** Seven is forced by the incidence axioms.
   **CONFIDENCE:** 60%
   **TAGS:** counting
   **PROPOSED_BY:** chatgpt
   **DEPENDS_ON:** b.t1.i1
3. **INSIGHT 3:** The automorphism group has order 168.
   **CONFIDENCE:** 3/10
   **TAGS:** group theory
   **PROPOSED_BY:** multiple
   **DEPENDS_ON:** none
"""


def test_a_realistic_numbered_consolidation_answer_with_numeric_confidences():
    out = P.parse_consolidate(CONSOLIDATE_REAL, known_ids=["b.t1.i1"])
    assert [i["text"] for i in out] == ["The plane is self-dual.", "Seven is forced by the incidence axioms.",
                                        "The automorphism group has order 168."]
    assert [i["confidence"] for i in out] == ["high", "medium", "low"]
    assert out[0]["tags"] == ["duality", "projective_geometry"] and out[1]["depends_on"] == ["b.t1.i1"]
    assert out[2]["proposed_by"] == ["multiple"]


@pytest.mark.parametrize("value,expected", [("0.85", "high"), ("85%", "high"), ("8/10", "high"), ("0.5", "medium"),
                                            ("moderate", "medium"), ("0.2", "low"), ("High (0.9)", "high"),
                                            ("not sure", None)])
def test_numeric_confidence_is_mapped_onto_the_scale(value, expected):
    assert P.parse_review1(f"RATING: ⚡\nREASONING: ok\nCONFIDENCE: {value}\n")["confidence"] == expected
    out = P.parse_consolidate(f"INSIGHT: a\nCONFIDENCE: {value}\nTAGS: x\n")
    assert out[0]["confidence"] == expected and out[0]["text"] == "a" and out[0]["tags"] == ["x"]   # the rest kept


def test_an_empty_insight_label_is_no_insight():
    out = P.parse_extract(f"INSIGHT:\n{FIELDS}===\nINSIGHT: none\n{FIELDS}===\nINSIGHT: Seven is forced.\n{FIELDS}")
    assert [b["text"] for b in out] == ["Seven is forced."]
    with pytest.raises(ParseError, match="empty"):
        P.parse_extract(f"INSIGHT:\n{FIELDS}===\nINSIGHT: n/a\n")
    with pytest.raises(ParseError, match="empty"):
        P.parse_consolidate("**INSIGHT 1:**\nCONFIDENCE: high\n")


def test_answers_without_a_recognisable_insight_still_fail_with_what_was_expected():
    for text in ("Insight-driven work is hard; I found nothing to add.",
                 "### Insight 1\nThe plane is self-dual.\n### Insight 2\nSeven is forced.",    # titles, no labels
                 "My insights: the plane is self-dual."):
        with pytest.raises(ParseError, match=r"INSIGHT: .*NO_INSIGHTS"):
            P.parse_extract(text)


@pytest.mark.parametrize("header", ["## 1. New Insights", "**[NEW_INSIGHTS]**", "NEW INSIGHTS:", "**New Insights:**",
                                    "### NEW_INSIGHTS"])
def test_explore_section_header_variants(header):
    text = f"{header}\n- A is B.\n- C forces D.\n\n## 2. Connections\n- E links F.\n\n## 3. Questions\n- Why 7?\n"
    assert P.parse_explore(text)["sections"] == {"NEW_INSIGHTS": ["A is B.", "C forces D."],
                                                 "CONNECTIONS": ["E links F."], "QUESTIONS": ["Why 7?"]}


def test_explore_content_on_the_header_line():
    out = P.parse_explore("[NEW_INSIGHTS] The plane is self-dual.\n[QUESTIONS] Why 7?")
    assert out["sections"] == {"NEW_INSIGHTS": ["The plane is self-dual."], "QUESTIONS": ["Why 7?"]}
    assert out["response"] == "[NEW_INSIGHTS]\n- The plane is self-dual.\n\n[QUESTIONS]\n- Why 7?"


EXPLORE_REAL = """Building on the critic's point about arbitrariness, here is this turn's development.

## 1. New Insights

The central realisation is that the number seven is not chosen.

1. **Self-duality.** Points and lines play symmetric roles,
so the incidence structure is its own dual.
2. **Field structure.** The points are the nonzero vectors of $\\mathbb{F}_2^3$.

## 2. Connections

- Hamming(7,4) code.

## 3. Questions

- Is every such plane isomorphic to this one?

Let me know if you want me to develop any of these further."""


def test_a_realistic_explore_answer_with_numbered_headings_loses_no_text():
    s = P.parse_explore(EXPLORE_REAL)["sections"]
    assert s["NEW_INSIGHTS"] == [
        "The central realisation is that the number seven is not chosen.",
        "**Self-duality.** Points and lines play symmetric roles, so the incidence structure is its own dual.",
        "**Field structure.** The points are the nonzero vectors of $\\mathbb{F}_2^3$."]
    assert s["CONNECTIONS"] == ["Hamming(7,4) code."]
    assert s["QUESTIONS"] == ["Is every such plane isomorphic to this one?"]


def test_mathcheck_without_separators_keeps_the_refutation():
    text = ("CLAIM: The plane has 7 points.\nPROOF_OR_COUNTEREXAMPLE: Count them.\n"
            "VERDICT: VERIFIED\nCONFIDENCE: 0.95\n"
            "CONCERNS: none\n\nCLAIM: It has 8 lines.\nPROOF_OR_COUNTEREXAMPLE: Claim: two points lie on one line.\n"
            "So there are 7 lines.\nVERDICT: REFUTED\nCONFIDENCE: 9/10\nCONCERNS: none\n")
    for layout in (text, text.replace("\n\nCLAIM", "\n---\nCLAIM"), text.replace("\n\nCLAIM", "\n### Claim 2\nCLAIM")):
        out = P.parse_mathcheck(layout)
        assert [c["verdict"] for c in out["claims"]] == ["verified", "refuted"]
        assert out["verdict"] == "refuted" and out["confidence"] == pytest.approx(0.9)
        assert out["claims"][1]["proof_or_counterexample"] == \
            "Claim: two points lie on one line.\nSo there are 7 lines."
    with pytest.raises(ParseError, match="several VERDICT"):
        P.parse_mathcheck("CLAIM: a\nCLAIM: b\nVERDICT: VERIFIED\nVERDICT: REFUTED\n")


@pytest.mark.parametrize("word, value", [("high", 0.9), ("**High**", 0.9), ("moderate", 0.6), ("low.", 0.3)])
def test_mathcheck_confidence_given_as_a_word_counts(word, value):
    out = P.parse_mathcheck(f"CLAIM: It has 8 lines.\nPROOF_OR_COUNTEREXAMPLE: 7 lines.\nVERDICT: REFUTED\n"
                            f"CONFIDENCE: {word}\n")
    assert out["verdict"] == "refuted" and out["confidence"] == pytest.approx(value)
