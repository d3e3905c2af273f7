"""The researcher's JSON parsers: near misses accepted, unusable answers raise a clear ParseError."""
import json
import random

import pytest

from services.backends import sim_answers as sa
from services.modules.parsing import ParseError
from services.modules.researcher.parsers import (
    extract_json,
    numbers_of,
    parse_evaluation,
    parse_findings,
    parse_questions,
)

Q = {"questions": [{"question": "Where else does 168 appear?", "type": "supporting", "concepts": ["GL(3,2)"],
                    "numbers": [168], "priority": 7}]}


@pytest.mark.parametrize("text", [
    json.dumps(Q),
    "```json\n" + json.dumps(Q, indent=2) + "\n```",
    "Sure! Here is my answer.\n\n```json\n" + json.dumps(Q) + "```\n\nI hope this helps.",
    "Here you go: " + json.dumps(Q) + " -- let me know.",
    "```\n" + json.dumps(Q) + "\n```",
    json.dumps(Q, indent=2).replace("\n", "\r\n"),
    '{"questions": [{"question": "Where else does 168 appear?", "type": "Supporting", "numbers": ["168"],'
    ' "priority": "7",},],}',
    "Prose with {braces} first. " + json.dumps(Q),
])
def test_questions_near_misses_are_accepted(text):
    q = parse_questions(text)["questions"][0]
    assert q["question"] == "Where else does 168 appear?" and q["type"] == "supporting"
    assert q["numbers"] == [168] and q["priority"] == 7


@pytest.mark.parametrize("text, message", [
    ('{"questions": [{"question": "Where else does 168', "truncated"),
    ("I'm sorry, but I can't help with that request.", "no JSON object"),
    ("<!DOCTYPE html><html><body><h1>Something went wrong</h1></body></html>", "no JSON object"),
    ('{"answer": 42}', 'no "questions"'),
    ('{"questions": "none"}', "not a list"),
    ('{"questions": []}', "empty"),
    ('{"questions": [{"question": "x", "type": "weird"}]}', "known type"),
    ('{"questions": [{"question": "x" "type": "supporting"}]}', "no valid JSON"),
])
def test_unusable_question_answers_raise(text, message):
    with pytest.raises(ParseError, match=message):
        parse_questions(text)


def test_malformed_items_are_dropped_and_counted():
    text = json.dumps({"questions": [{"question": "ok?", "type": "context"}, {"type": "supporting"},
                                     {"question": "q", "type": "nonsense"}, "Is a bare string a question?"]})
    parsed = parse_questions(text)
    assert [q["type"] for q in parsed["questions"]] == ["contextual"]
    assert parsed["dropped"] == 3   # a bare string has no type


def test_question_urls_are_kept_only_when_http():
    text = json.dumps({"questions": [{"question": "q", "type": "supporting",
                                      "urls": ["https://oeis.org/A001349", "ftp://x", "not a url"]}]})
    assert parse_questions(text)["questions"][0]["urls"] == ["https://oeis.org/A001349"]


def test_evaluation_shapes():
    ev = parse_evaluation('```json\n{"score": "85/100", "scholarly_tone": "yes", "cites_primary": false,'
                          ' "reasons": "cites papers",}\n```')
    assert ev == {"score": 85.0, "scholarly_tone": True, "cites_primary": False, "reasons": ["cites papers"]}
    with pytest.raises(ParseError, match='no "score"'):
        parse_evaluation('{"reasons": []}')
    with pytest.raises(ParseError, match="0-100"):
        parse_evaluation('{"score": 140}')
    with pytest.raises(ParseError, match="truncated"):
        parse_evaluation('{"score": 80, "reasons": ["a"')


def test_findings_shapes():
    text = json.dumps({"findings": [
        {"summary": "GL(3,2) has order 168.", "quote": "order 168", "type": "supporting", "confidence": 0.9,
         "concepts": ["GL(3,2)"], "numbers": [168, "7"]},
        {"summary": "Percent confidence", "type": "challenging", "confidence": "80"},
        {"summary": "", "type": "supporting", "confidence": 0.5},
        {"summary": "no confidence", "type": "supporting"}],
        "numbers": [{"value": "168", "context": "order", "significance": "high", "mention_type": "structural"}]})
    parsed = parse_findings(text)
    assert [f["confidence"] for f in parsed["findings"]] == [0.9, 0.8]
    assert parsed["findings"][0]["numbers"] == [168, 7]
    assert parsed["numbers"][0]["value"] == 168 and parsed["dropped"] == 2
    assert parse_findings('{"findings": [], "numbers": []}')["findings"] == []   # nothing relevant is valid
    with pytest.raises(ParseError, match="none of the 1 findings"):
        parse_findings('{"findings": [{"summary": "x"}]}')


def test_numbers_of():
    assert numbers_of([3, "7", 7, "2.5", {"value": 168}, True, "x", None]) == [3, 7, 2.5, 168]
    assert numbers_of("21") == [21]


def test_extract_json_prefers_the_fenced_block_and_top_level_objects():
    text = 'See {"note": 1}?\n```json\n{"score": 70, "reasons": ["a"]}\n```'
    assert extract_json(text)["score"] == 70
    # an outer object that cannot be repaired must not yield one of its inner objects
    with pytest.raises(ParseError):
        parse_questions('{"questions": [{"question": "q", "type": "supporting"}] "oops": }')


@pytest.mark.parametrize("kind, parse", [(sa.RESEARCHER_GENERATE_QUESTIONS, parse_questions),
                                         (sa.RESEARCHER_EVALUATE_SOURCE, parse_evaluation),
                                         (sa.RESEARCHER_EXTRACT_FINDINGS, parse_findings)])
def test_every_sim_answer_parses_even_decorated(kind, parse):
    for i in range(40):
        rng = random.Random(i)
        text = sa.answer(kind, {"url": f"http://x/{i}"}, "prompt", "standard", rng, seed=i)
        parse(text)
        parse(sa.decorate(text, kind, rng, sloppy_rate=1.0))
