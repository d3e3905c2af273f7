"""Tolerant parsers: the near misses real models produce are accepted; unusable answers raise ParseError."""
import pytest

from services.modules.parsing import (
    ParseError,
    blocks,
    bullets,
    choice,
    field,
    is_rule,
    labelled_blocks,
    normalize,
    number,
    proportion,
    sections,
)


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


# --- separators, labelled blocks, section headers: the layouts models use instead of the asked-for one ---

@pytest.mark.parametrize("rule", ["===", "---", "***", "___", "* * *", "~~~~", "=== Insight 2 ===", "--- Claim 3 ---"])
def test_blocks_split_at_any_rule(rule):
    assert blocks(f"A\n{rule}\nB") == ["A", "B"]
    assert is_rule(rule)


def test_rules_are_not_mistaken_for_content():
    for line in ("--> then", "x === y", "=== INSIGHT: a ===", "**bold**", "- item", "|---|---|"):
        assert not is_rule(line)
    assert blocks("A\n---\nB", separator="===") == ["A\n---\nB"]       # an explicit separator keeps its meaning


@pytest.mark.parametrize("between", ["===", "---", "***", "___", "=== Insight 2 ===", "### Insight 2", "**Insight 2**",
                                     "", "2.", "\n\n"])
def test_labelled_blocks_start_at_every_label(between):
    text = f"Preamble prose.\nINSIGHT: a\nDOMAINS: x\n{between}\nINSIGHT: b\nDOMAINS: y\n"
    assert labelled_blocks(text, "INSIGHT") == ["INSIGHT: a\nDOMAINS: x", "INSIGHT: b\nDOMAINS: y"]


@pytest.mark.parametrize("line",
                         ["INSIGHT 1: a", "Insight #1: a", "**INSIGHT:** a", "**INSIGHT 1:** a", "1. INSIGHT: a",
                                  "2) **Insight 2**: a", "- **INSIGHT:** a", "### INSIGHT 1: a", "## 1. Insight: a",
                                  "Insight 1 - a", "> INSIGHT: a"])
def test_labelled_blocks_label_variants(line):
    assert labelled_blocks(line + "\nDOMAINS: x", "INSIGHT") == ["INSIGHT: a\nDOMAINS: x"]


def test_labelled_blocks_do_not_over_accept():
    assert labelled_blocks("Insight-driven work is hard.\nInsights: many.\nKey INSIGHT: no", "INSIGHT") == []
    assert labelled_blocks("INSIGHT:\n===\nINSIGHT: b", "INSIGHT") == ["INSIGHT:",
                                                                       "INSIGHT: b"]   # empty: the caller decides
    # a postscript after a rule is no part of the last block
    assert labelled_blocks("INSIGHT: a\n---\nOverall, these show X.", "INSIGHT") == ["INSIGHT: a"]


def test_labelled_blocks_a_heading_label_that_titles_the_next_block_is_dropped():
    text = "### Insight 1: Self-duality\nINSIGHT: a\n\n**Insight 2: Seven**\nINSIGHT: b\n"
    assert labelled_blocks(text, "INSIGHT") == ["INSIGHT: a", "INSIGHT: b"]
    assert labelled_blocks("### INSIGHT 1: a\n### INSIGHT 2: b", "INSIGHT") == ["INSIGHT: a", "INSIGHT: b"]


@pytest.mark.parametrize("header", ["[NEW_INSIGHTS]", "**[NEW_INSIGHTS]**", "NEW INSIGHTS:", "## 1. New Insights",
                                    "**New Insights:**", "### New insights", "**1. New Insights**", "New_Insights"])
def test_section_header_variants(header):
    out = sections(f"Intro.\n\n{header}\n- a\n\n[QUESTIONS]\n- q", ["NEW_INSIGHTS", "QUESTIONS"],
                   required=("NEW_INSIGHTS",))
    assert bullets(out["NEW_INSIGHTS"]) == ["a"] and bullets(out["QUESTIONS"]) == ["q"]


def test_section_content_on_the_header_line():
    out = sections("[NEW_INSIGHTS] The plane is self-dual.\n- Seven is forced.\n[QUESTIONS]: Why 7?",
                   ["NEW_INSIGHTS", "QUESTIONS"])
    assert bullets(out["NEW_INSIGHTS"]) == ["The plane is self-dual.", "Seven is forced."]
    assert out["QUESTIONS"] == "Why 7?"


def test_sections_do_not_over_accept():
    # prose that starts with a section's name, and a numbered item with a colon, are no headers
    out = sections("[NEW_INSIGHTS]\n1. Questions: why 7?\nConnections between X and Y are deep.",
                   ["NEW_INSIGHTS", "CONNECTIONS", "QUESTIONS"])
    assert list(out) == ["NEW_INSIGHTS"]
    with pytest.raises(ParseError, match=r"missing section\(s\): \[NEW_INSIGHTS\]"):
        sections("New insights about the plane are hard to find.", ["NEW_INSIGHTS"], required=("NEW_INSIGHTS",))


def test_a_section_written_twice_keeps_both_bodies():
    out = sections("[NEW_INSIGHTS]\n- a\n[QUESTIONS]\n- q\n[NEW_INSIGHTS]\n- b", ["NEW_INSIGHTS", "QUESTIONS"])
    assert bullets(out["NEW_INSIGHTS"]) == ["a", "b"]


def test_bullets_drop_no_text():
    body = ("The key point is X.\n\nHere are the others:\n- a\nwrapped without indent\n- b\n\n---\n"
            "A closing paragraph.")
    assert bullets(body) == ["The key point is X.", "a wrapped without indent", "b", "A closing paragraph."]
    assert bullets("Three insights:\n- a\n- b\n  continued") == ["a", "b continued"]    # an introduction is no item


@pytest.mark.parametrize("value,expected", [("0.85", 0.85), ("85%", 0.85), ("8/10", 0.8), ("85", 0.85), ("8", 0.8),
                                            ("1", 1.0), ("0", 0.0), ("about 0.6 (moderate)", 0.6), ("4 / 5", 0.8),
                                            ("high", None), (None, None), ("150", None), ("3/0", None)])
def test_proportion(value, expected):
    assert proportion(value) == (pytest.approx(expected) if expected is not None else None)


def test_multiline_value_may_begin_with_a_tag_like_word():
    text = "PROOF: Claim: every pair lies on a line.\nSo there are 7.\nVERDICT: REFUTED"
    assert field(text, "PROOF", multiline=True, stop_tags=["CLAIM", "VERDICT"]) == \
        "Claim: every pair lies on a line.\nSo there are 7."
