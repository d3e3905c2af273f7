"""Tolerant parsers: the near misses real models produce are accepted; unusable answers raise ParseError."""
import pytest

from services.modules.parsing import ParseError, blocks, bullets, choice, field, normalize, number, sections


@pytest.mark.parametrize("text", [
    "RATING: ⚡\nREASONING: fine",
    "**RATING:** ⚡\r\nREASONING: fine",
    "Here is my review.\n\n- **Rating**: ⚡ \n",
    "## RATING - ⚡",
    "rating : ⚡",
])
def test_field_accepts_near_misses(text):
    assert field(text, "RATING") == "⚡"


def test_field_missing_or_empty_raises():
    with pytest.raises(ParseError, match="no RATING"):
        field("nothing here", "RATING")
    with pytest.raises(ParseError, match="empty"):
        field("RATING:\nREASONING: x", "RATING")
    assert field("nothing", "RATING", required=False) is None


def test_multiline_field_stops_at_the_next_tag():
    text = "TITLE: T\nSUMMARY: short\nCONTENT:\nline one\nline two\n\n**NOTES:** x"
    assert field(text, "CONTENT", multiline=True, stop_tags=["TITLE", "SUMMARY", "NOTES"]) == "line one\nline two"


@pytest.mark.parametrize("text,expected", [
    ("DECISION: INCLUDE", "INCLUDE"),
    ("**Decision:** include — it is natural", "INCLUDE"),
    ("After thought:\n\nEXCLUDE\n", "EXCLUDE"),        # bare word without the tag (the original's bug)
    ("DECISION: I would INCLUDE this.", "INCLUDE"),
])
def test_choice(text, expected):
    assert choice(text, "DECISION", ["INCLUDE", "EXCLUDE"]) == expected


def test_choice_rejects_other_words():
    with pytest.raises(ParseError, match="expected one of"):
        choice("DECISION: maybe", "DECISION", ["INCLUDE", "EXCLUDE"])


def test_number_with_range():
    assert number("CONFIDENCE: 0.85 (high)", "CONFIDENCE", 0, 1) == 0.85
    with pytest.raises(ParseError):
        number("CONFIDENCE: 7", "CONFIDENCE", 0, 1)
    with pytest.raises(ParseError):
        number("CONFIDENCE: high", "CONFIDENCE")


def test_sections_and_bullets():
    text = ("Intro prose.\n\n[NEW_INSIGHTS]\n- a\n- b\n  continued\n\n**[CONNECTIONS]**\n1. c\n\n"
            "## QUESTIONS\n* d?\n")
    out = sections(text, ["NEW_INSIGHTS", "CONNECTIONS", "QUESTIONS"], required=("NEW_INSIGHTS",))
    assert bullets(out["NEW_INSIGHTS"]) == ["a", "b continued"]
    assert bullets(out["CONNECTIONS"]) == ["c"] and bullets(out["QUESTIONS"]) == ["d?"]
    with pytest.raises(ParseError, match=r"\[QUESTIONS\]"):
        sections("[NEW_INSIGHTS]\n- a", ["NEW_INSIGHTS", "QUESTIONS"], required=("QUESTIONS",))


def test_blocks_and_normalize():
    assert blocks("A\n===\nB\r\n=====\n\n===\nC") == ["A", "B", "C"]
    assert normalize("x \r\ny\u200b") == "x\ny"
    with pytest.raises(ParseError):
        normalize(None)
