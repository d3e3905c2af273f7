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

EXTRACT = ("INSIGHT: The plane is self-dual.\nDOMAINS: geometry, algebra\nSCORES: impact=7, intuition=5, surprise=8, total=20\n"
           "INTUITION_NOTE: natural\n===\nINSIGHT: Seven is forced\nby the incidence.\nSCORES: Impact: 11, intuition = 4\n")


@pytest.mark.parametrize("variant", VARIANTS)
def test_extract_blocks_scores_and_multiline_insights(variant):
    out = P.parse_extract(variant(EXTRACT))
    assert [b["text"] for b in out] == ["The plane is self-dual.", "Seven is forced by the incidence."]
    assert out[0]["scores"] == {"impact": 7, "intuition": 5, "surprise": 8} and out[0]["domains"] == ["geometry", "algebra"]
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
    assert out[0] == {"text": "The plane is self-dual.", "confidence": "high", "tags": ["projective_geometry", "duality"],
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

REVIEW1 = ("RATING: ⚡\nMATHEMATICAL_VERIFICATION: checks out\nSTRUCTURAL_ANALYSIS: deep\nNATURALNESS_ASSESSMENT: discovered\n"
           "REASONING: It is forced\nby the incidence.\nCONFIDENCE: high\nPROPOSED_MODIFICATION: NONE\nMODIFICATION_RATIONALE: NONE\n")


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
            "CLAIM: 8 lines\nPROOF_OR_COUNTEREXAMPLE: Counterexample: there are 7.\nVERDICT: REFUTED\nCONFIDENCE: 85%\n")
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
    minority = P.parse_review3("STRONGEST_ARGUMENT: It is numerology.\nPROPOSED_MODIFICATION: A weaker claim.\n", "minority")
    assert minority["argument"] == "It is numerology." and minority["proposed_modification"] == "A weaker claim."
    majority = P.parse_review3(crlf("RESPONSE: No, it is forced.\nACCEPT_MODIFICATION: yes\nUPDATED_RATING: ⚡\n"), "majority")
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
        real_kind, parse = (S.EXPLORER_REVIEW3, lambda t: P.parse_review3(t, kind)) if kind in ("minority", "majority", "vote") \
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
