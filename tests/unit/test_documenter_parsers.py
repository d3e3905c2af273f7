"""The documenter's answer parsers: well-formed, near-miss and unusable answers of each format."""
import random

import pytest

from services.backends import sim_answers as A
from services.modules.documenter import context as C
from services.modules.documenter.parsers import (
    concept_list,
    parse_comment,
    parse_draft,
    parse_evaluation,
    parse_exposition,
    parse_plan,
    parse_review,
    split_heading,
    strip_chatter,
)
from services.modules.parsing import ParseError

PARSERS = {C.PLAN: parse_plan, C.EVALUATE: parse_evaluation, C.DRAFT: parse_draft, C.EXPOSITION: parse_exposition,
           C.REVIEW_SECTION: parse_review, C.ADDRESS_COMMENT: parse_comment}


def test_the_kinds_are_the_simulated_providers_kinds():
    assert set(C.KINDS) <= set(A.KINDS)
    assert (C.PLAN, C.EVALUATE, C.DRAFT, C.EXPOSITION, C.ADDRESS_COMMENT, C.REVIEW_SECTION) == (
        A.DOCUMENTER_PLAN, A.DOCUMENTER_EVALUATE, A.DOCUMENTER_DRAFT, A.DOCUMENTER_EXPOSITION,
        A.DOCUMENTER_ADDRESS_COMMENT, A.DOCUMENTER_REVIEW_SECTION)


@pytest.mark.parametrize("kind", C.KINDS)
def test_every_simulated_answer_parses_even_when_decorated(kind):
    for i in range(150):
        payload = {"insight_id": f"ins-{i}", "insight_ids": ["ins-1", "ins-2"], "section_id": "s0001",
                   "evaluator": f"e{i % 3}", "topic": "the Fano plane"}
        rng = random.Random(i)
        text = A.decorate(A.answer(kind, payload, "prompt", "standard", rng, seed=i), kind, rng, sloppy_rate=0.7)
        PARSERS[kind](text)


@pytest.mark.parametrize("kind", C.KINDS)
def test_garbage_is_a_parse_error(kind):
    for text in ("I'm sorry, but I can't help with that request.", "<html><body>oops</body></html>", "", "Thinking..."):
        with pytest.raises(ParseError):
            PARSERS[kind](text)


# --- decisions --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,expected", [
    ("DECISION: INCLUDE\nNATURAL: yes", "INCLUDE"),
    ("INCLUDE\n\nNATURAL: very", "INCLUDE"),                            # the original's bug: no DECISION:
    ("After some thought I conclude:\n\n**INCLUDE**\n", "INCLUDE"),
    ("**DECISION:** EXCLUDE\r\nREASONING: repeats section 2\r\n", "EXCLUDE"),
    ("**Decision**: Include.", "INCLUDE"),
    ("- decision - included", "INCLUDE"),
    ("## DECISION: EXCLUDE (it does not INCLUDE anything new)", "EXCLUDE"),
])
def test_evaluation_decision_near_misses(text, expected):
    assert parse_evaluation(text).decision == expected


@pytest.mark.parametrize("text", [
    "DECISION: NOT INCLUDE",                     # negated: refused, never read as its opposite
    "DECISION: maybe",
    "I would probably include this one.",        # prose only: no decision line
    "DECISION:\nINCLUDE or EXCLUDE",             # an empty tag followed by the options list
])
def test_evaluation_unusable(text):
    with pytest.raises(ParseError):
        parse_evaluation(text)


def test_evaluation_notes_are_kept():
    ev = parse_evaluation("DECISION: INCLUDE\nNATURAL: forced by counting\n**ELEGANT:** very\nREASONING: a\nb\n")
    assert ev.notes == {"natural": "forced by counting", "elegant": "very"} and ev.reasoning == "a\nb"


# --- plan -------------------------------------------------------------------------------------------------

def test_plan_incorporate_with_bracketed_id_and_bold_tags():
    p = parse_plan("Here is my plan.\n\n**DECISION:** INCORPORATE\r\n**INSIGHT_ID:** [ins-7]\r\nREASON: ready\r\n")
    assert (p.decision, p.insight_id, p.reason) == ("INCORPORATE", "ins-7", "ready")


def test_plan_bare_decision_word_counts():
    assert parse_plan("WAIT\nREASON: reviews pending").decision == "WAIT"


def test_plan_incorporate_without_id_is_unusable():
    with pytest.raises(ParseError, match="INSIGHT_ID"):
        parse_plan("DECISION: INCORPORATE\nREASON: it is ready")


def test_plan_prerequisite_content_runs_to_the_end_without_sign_off():
    text = ("DECISION: PREREQUISITE\nNEEDED: a definition of duality\nESTABLISHES: duality; dual plane\n"
            "CONTENT:\n## Duality\n\nPoints and lines swap.\n\n$$P \\leftrightarrow L$$\n\n"
            "Let me know if you would like me to expand on any point.")
    p = parse_plan(text)
    assert p.establishes == ["duality", "dual plane"] and p.needed == "a definition of duality"
    assert p.content == "## Duality\n\nPoints and lines swap.\n\n$$P \\leftrightarrow L$$"


def test_plan_prerequisite_needs_content_and_concepts():
    with pytest.raises(ParseError, match="CONTENT"):
        parse_plan("DECISION: PREREQUISITE\nESTABLISHES: duality\n")
    with pytest.raises(ParseError, match="ESTABLISHES"):
        parse_plan("DECISION: PREREQUISITE\nESTABLISHES: none\nCONTENT: text")


# --- draft ------------------------------------------------------------------------------------------------

def test_draft_title_concepts_and_body():
    d = parse_draft("ESTABLISHES: incidence structure, orbit\nREQUIRES: none\nDIAGRAM_NEEDED: no\n"
                    "DRAFT:\n## Flags\n\nA flag is a point on a line.\n")
    assert (d.title, d.text, d.establishes, d.requires) == ("Flags", "A flag is a point on a line.",
                                                            ["incidence structure", "orbit"], [])


def test_draft_first_with_tags_after_it():
    d = parse_draft("**DRAFT:**\r\nFlags are incident pairs.\r\n\r\nThere are 21.\r\n**ESTABLISHES:** flag\r\n"
                    "**REQUIRES:** - point\r\n- line\r\n")
    assert d.title is None and d.text == "Flags are incident pairs.\n\nThere are 21."
    assert d.establishes == ["flag"] and d.requires == ["point"]


def test_draft_missing_parts_are_unusable():
    with pytest.raises(ParseError, match="DRAFT"):
        parse_draft("ESTABLISHES: a\nREQUIRES: none\n")
    with pytest.raises(ParseError, match="REQUIRES"):
        parse_draft("ESTABLISHES: a\nDRAFT:\ntext\n")
    with pytest.raises(ParseError, match="no text"):
        parse_draft("ESTABLISHES: a\nREQUIRES: none\nDRAFT:\n## Only a title\n")


# --- exposition and section review -------------------------------------------------------------------------

def test_exposition_decisions():
    assert parse_exposition("DECISION: APPROVED\nREVISION_NOTES: none").decision == "APPROVE"
    e = parse_exposition("**DECISION**: REVISE\nCLARITY: ok\nREVISION_NOTES: define a flag first\nand cite it")
    assert e.decision == "REVISE" and e.notes == "define a flag first\nand cite it"
    assert e.assessment == {"clarity": "ok"}
    assert parse_exposition("REJECT\n\nREVISION_NOTES: n/a").notes is None


def test_exposition_revise_without_notes_is_unusable():
    with pytest.raises(ParseError, match="REVISION_NOTES"):
        parse_exposition("DECISION: REVISE\nCLARITY: poor\n")
    with pytest.raises(ParseError, match="none"):
        parse_exposition("DECISION: REVISE\nREVISION_NOTES: none\n")


def test_review_confirmed_and_revise():
    r = parse_review("DECISION: CONFIRMED\nACCURACY: fine\nREVISION_NOTES: none\n")
    assert (r.decision, r.notes, r.revised) == ("CONFIRMED", None, None)
    r = parse_review("DECISION: REVISE\nREVISION_NOTES: tighten\nREVISED_SECTION:\n## New title\n\nBetter text.\n")
    assert (r.decision, r.title, r.revised, r.notes) == ("REVISE", "New title", "Better text.", "tighten")


def test_review_revise_without_a_revised_section_is_unusable():
    with pytest.raises(ParseError, match="REVISED_SECTION"):
        parse_review("DECISION: REVISE\nREVISION_NOTES: tighten the proof\n")


# --- comments ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("tail", ["UNCHANGED", "**UNCHANGED**", "unchanged.", "  (UNCHANGED)  "])
def test_comment_unchanged(tail):
    a = parse_comment(f"UNDERSTOOD: wants more detail\nRESOLUTION: already there\nREVISED_SECTION: {tail}\n")
    assert a.revised is None and a.resolution == "already there"


def test_comment_revision_crlf_and_bold():
    a = parse_comment("**UNDERSTOOD:** clarify\r\n**RESOLUTION:** rewrote\r\n**REVISED_SECTION:**\r\n"
                      "First line.\r\n\r\nSecond paragraph.\r\n\r\nI hope this helps.\r\n")
    assert a.revised == "First line.\n\nSecond paragraph." and a.title is None


def test_comment_without_revised_section_is_unusable():
    with pytest.raises(ParseError, match="REVISED_SECTION"):
        parse_comment("UNDERSTOOD: x\nRESOLUTION: I changed the wording.")


# --- helpers ----------------------------------------------------------------------------------------------

def test_concept_lists_and_headings_and_chatter():
    assert concept_list("none") == [] and concept_list("N/A") == []
    assert concept_list("Orbit, orbit; `stabiliser`, [duality].") == ["Orbit", "stabiliser", "duality"]
    assert split_heading("### T\n\nbody") == ("T", "body") and split_heading("body") == (None, "body")
    assert strip_chatter("text\n\nFeel free to ask.") == "text"
    assert strip_chatter("Note: this is the text.") == "Note: this is the text."   # a lone paragraph stays
