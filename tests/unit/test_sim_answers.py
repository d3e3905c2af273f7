"""sim_answers: every kind answers in its format, deterministically; reviews really split; deviations
stay parseable by a tolerant parser."""
from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from services.backends import sim_answers as A

PROMPT = "Explore why the Fano plane has 168 symmetries.\n1. [ins-1] first\n2. [ins-2] second\n"


def ans(kind, payload=None, prompt=PROMPT, mode="standard", key=0, seed=1, account="acct"):
    return A.answer(kind, payload or {}, prompt, mode, A.derive_rng("test", kind, key), seed=seed, account=account)


def tolerant_tag(text: str, tag: str) -> str | None:
    """The kind of parser the modules must have: bold, CRLF and surrounding prose are accepted."""
    text = text.replace("\r\n", "\n")
    m = re.search(rf"^\W*{tag}\W*:\**\s*(.*)$", text, re.M)
    return m.group(1).strip() if m else None


def test_kind_table_is_complete_and_named_by_module():
    assert set(A.REQUIRED_TAGS) == set(A.KINDS) - {A.ASK}
    for kind in A.REQUIRED_TAGS:
        assert re.fullmatch(r"(explorer|documenter|researcher|advisor)\.[a-z_0-9]+", kind), kind
    assert len(A.REQUIRED_TAGS) == 20


@pytest.mark.parametrize("kind", sorted(A.REQUIRED_TAGS))
@pytest.mark.parametrize("mode", ["standard", "deep"])
def test_every_research_kind_has_its_format_tags(kind, mode):
    for key in range(25):
        payload = {"insight_id": f"ins-{key}", "reviewer": "r1", "insight_ids": ["ins-1", "ins-2"]}
        text = ans(kind, payload, mode=mode, key=key)
        missing = [t for t in A.REQUIRED_TAGS[kind] if t not in text]
        assert not missing, f"{kind}/{mode} answer {key} lacks {missing}:\n{text}"
        if kind in A.JSON_KINDS:
            json.loads(text)


def test_specific_field_values_are_in_their_vocabulary():
    for key in range(40):
        p = {"insight_id": f"i{key}", "reviewer": "a"}
        assert tolerant_tag(ans(A.EXPLORER_REVIEW1, p, key=key), "RATING") in A.RATINGS
        assert tolerant_tag(ans(A.EXPLORER_REVIEW2, p, key=key), "UPDATED_RATING") in A.RATINGS
        assert tolerant_tag(ans(A.EXPLORER_MATHCHECK, p, key=key), "VERDICT") in ("VERIFIED", "REFUTED", "UNCLEAR")
        assert 0 <= float(tolerant_tag(ans(A.EXPLORER_MATHCHECK, p, key=key), "CONFIDENCE")) <= 1
        assert tolerant_tag(ans(A.DOCUMENTER_EVALUATE, p, key=key), "DECISION") in ("INCLUDE", "EXCLUDE")
        assert tolerant_tag(ans(A.DOCUMENTER_EXPOSITION, p, key=key), "DECISION") in ("APPROVE", "REVISE", "REJECT")
        assert tolerant_tag(ans(A.DOCUMENTER_PLAN, p, key=key), "DECISION") in ("INCORPORATE", "PREREQUISITE", "WAIT")
        sec = ans(A.DOCUMENTER_REVIEW_SECTION, p, key=key)
        assert tolerant_tag(sec, "DECISION") in ("CONFIRMED", "REVISE")
        assert ("REVISED_SECTION:" in sec) == (tolerant_tag(sec, "DECISION") == "REVISE")
        assert 0 <= json.loads(ans(A.RESEARCHER_EVALUATE_SOURCE, {"url": f"http://x/{key}"}))["score"] <= 100
        for tag in ("EXPLORER_WEIGHT", "DOCUMENTER_WEIGHT", "RESEARCHER_WEIGHT"):
            assert 0.5 <= float(tolerant_tag(ans(A.ADVISOR_WEIGHTS, key=key), tag)) <= 2.0
        blocks = [b for b in re.split(r"^===\s*$", ans(A.EXPLORER_EXTRACT, key=key), flags=re.M) if b.strip()]
        for b in blocks:
            s = dict(re.findall(r"(impact|intuition|surprise|total)=(\d+)", b))
            assert all(1 <= int(s[k]) <= 10 for k in ("impact", "intuition", "surprise"))
            assert int(s["total"]) == sum(int(s[k]) for k in ("impact", "intuition", "surprise"))


def test_same_inputs_same_answer_and_different_seed_differs():
    for kind in list(A.KINDS) + ["nobody.knows"]:
        assert ans(kind, key=3) == ans(kind, key=3)
    for kind in set(A.REQUIRED_TAGS) - {A.RESEARCHER_EVALUATE_SOURCE}:   # that one depends on the URL only
        assert len({ans(kind, key=k) for k in range(10)}) >= 2, kind     # the wording follows the rng
    # the seed drives the verdicts
    assert any(A.review_rating(1, f"s{i}", "a", 1) != A.review_rating(2, f"s{i}", "a", 1) for i in range(20))


def test_ask_echoes_the_prompt_and_unknown_kinds_are_generic():
    prompt = "x" * 100 + " tail"
    text = ans(A.ASK, {}, prompt=prompt)
    assert text.startswith("sim answer to: " + "x" * 80 + "\n")
    assert ans(A.ASK, {}, prompt="other") != text
    generic = ans("mystery.kind")
    assert generic.startswith("sim generic answer (kind mystery.kind)")


def review_shape(ratings: list[str]) -> str:
    n = len(set(ratings))
    return {1: "unanimous " + ratings[0], 2: "2-1", 3: "3-way"}[n]


def test_review_ratings_really_split_across_insights():
    shapes = Counter()
    for i in range(300):
        ratings = [A.review_rating(seed=5, subject=f"insight_id=i{i}", reviewer=r, round_no=1)
                   for r in ("gemini", "chatgpt", "claude")]
        shapes[review_shape(ratings)] += 1
    for shape in ("unanimous ⚡", "unanimous ✗", "2-1", "3-way"):
        assert shapes[shape] >= 10, shapes
    assert shapes["unanimous ⚡"] > shapes["unanimous ✗"]       # defaults: more good than bad insights


def test_review_answers_use_the_shared_verdict_and_converge_over_rounds():
    unanimous = Counter()
    changed = 0
    for i in range(200):
        per_round = []
        for rnd, kind, tag in ((1, A.EXPLORER_REVIEW1, "RATING"), (2, A.EXPLORER_REVIEW2, "UPDATED_RATING"),
                               (3, A.EXPLORER_REVIEW3, "FINAL_RATING")):
            ratings = [tolerant_tag(ans(kind, {"insight_id": f"i{i}", "reviewer": r}, key=(i, r)), tag)
                       for r in ("a", "b", "c")]
            assert ratings == [A.review_rating(1, f"insight_id=i{i}", r, rnd) for r in ("a", "b", "c")]
            per_round.append(ratings)
            unanimous[rnd] += len(set(ratings)) == 1
        changed += per_round[0] != per_round[1]
    assert unanimous[1] < unanimous[2] < unanimous[3], unanimous
    assert changed >= 20                      # mind changes happen


def test_review_settings_shift_the_outcomes():
    def blessed(reviews):
        return sum(A.review_rating(9, f"s{i}", "x", 1, reviews) == "⚡" for i in range(300))
    assert blessed({"good": 0.9, "bad": 0.0}) > 200 > 100 > blessed({"good": 0.0, "bad": 0.9})


def test_deep_answers_are_longer():
    for kind in (A.EXPLORER_EXPLORE, A.EXPLORER_SYNTHESIS, A.EXPLORER_REVIEW1, A.DOCUMENTER_DRAFT):
        std = sum(len(ans(kind, mode="standard", key=k)) for k in range(30))
        deep = sum(len(ans(kind, mode="deep", key=k)) for k in range(30))
        assert deep > 1.1 * std, kind


def test_consolidate_merges_the_insights_quoted_in_the_prompt():
    prompt = ("Proposals:\nINSIGHT: Seven points, seven lines.\n===\n**INSIGHT:** Seven points, seven lines.\n"
              "===\nINSIGHT: The automorphism group has order 168.\n")
    text = ans(A.EXPLORER_CONSOLIDATE, {"blessed_ids": ["b-1", "b-2"]}, prompt=prompt)
    got = [tolerant_tag(b, "INSIGHT") for b in re.split(r"^===\s*$", text, flags=re.M)]
    assert got == ["Seven points, seven lines.", "The automorphism group has order 168."]
    for dep in re.findall(r"DEPENDS_ON: (.*)", text):
        assert dep == "none" or set(dep.split(", ")) <= {"b-1", "b-2"}


def test_dedup_and_plan_refer_to_real_candidates():
    dups = 0
    for i in range(100):
        text = ans(A.EXPLORER_DEDUP, {"insight_id": f"n{i}", "candidates": ["ins-7", "ins-9"]}, key=i)
        of = tolerant_tag(text, "DUPLICATE_OF")
        dup = tolerant_tag(text, "IS_DUPLICATE") == "yes"
        dups += dup
        assert of in (("ins-7", "ins-9") if dup else ("none",))
        plan = ans(A.DOCUMENTER_PLAN, {"insight_ids": ["ins-3", "ins-4"]}, key=i)
        if tolerant_tag(plan, "DECISION") == "INCORPORATE":
            assert tolerant_tag(plan, "INSIGHT_ID") in ("ins-3", "ins-4")
    assert 5 <= dups <= 40
    # without ids in the payload, the numbered lines of the prompt are the candidates
    for i in range(50):
        of = tolerant_tag(ans(A.EXPLORER_DEDUP, {"insight_id": f"m{i}"}), "DUPLICATE_OF")
        assert of in ("1", "2", "none")


def test_evaluators_of_one_subject_mostly_agree():
    agree = 0
    for i in range(100):
        votes = {tolerant_tag(ans(A.DOCUMENTER_EVALUATE, {"insight_id": f"i{i}", "evaluator": e}, key=(i, e)),
                              "DECISION") for e in ("a", "b", "c")}
        agree += len(votes) == 1
    assert 50 <= agree < 100


def test_sloppy_decoration_is_realistic_and_still_parseable():
    seen = Counter()
    for i in range(200):
        text = ans(A.EXPLORER_REVIEW1, {"insight_id": f"i{i}", "reviewer": "a"}, key=i)
        out = A.decorate(text, A.EXPLORER_REVIEW1, A.derive_rng("style", i), sloppy_rate=1.0)
        assert out != text
        seen["bold"] += "**RATING" in out
        seen["crlf"] += "\r\n" in out
        seen["prose"] += not out.lstrip("*").startswith("RATING")
        assert tolerant_tag(out, "RATING") == tolerant_tag(text, "RATING")
        assert tolerant_tag(out, "PROPOSED_MODIFICATION") == tolerant_tag(text, "PROPOSED_MODIFICATION")
        if "\r\n" in out:
            assert "\n" not in out.replace("\r\n", "")          # uniform line endings
    assert min(seen.values()) >= 40, seen
    for i in range(20):   # JSON kinds keep valid JSON inside the prose
        text = ans(A.RESEARCHER_EVALUATE_SOURCE, {"url": f"u{i}"})
        out = A.decorate(text, A.RESEARCHER_EVALUATE_SOURCE, A.derive_rng("j", i), sloppy_rate=1.0)
        body = out.replace("\r\n", "\n")
        assert json.loads(body[body.index("{"):body.rindex("}") + 1]) == json.loads(text)


def test_sloppy_rate_and_garbage_rate():
    text = ans(A.EXPLORER_EXPLORE)
    outs = [A.decorate(text, A.EXPLORER_EXPLORE, A.derive_rng("d", i)) for i in range(1000)]
    assert 20 <= sum(o != text for o in outs) <= 90              # the 5 % default
    assert all(all(t in o.replace("**", "") for t in A.REQUIRED_TAGS[A.EXPLORER_EXPLORE]) for o in outs)
    garbage = [A.decorate(text, A.EXPLORER_EXPLORE, A.derive_rng("g", i), 0.0, 1.0) for i in range(20)]
    assert all("[NEW_INSIGHTS]" not in g for g in garbage)
    # free-text kinds have no format to deviate from
    assert A.decorate("hello", A.ASK, A.derive_rng(1), 1.0, 1.0) == "hello"


def _real_parsers():
    """kind -> the module's own parser of that kind's answers (what a padded answer must survive)."""
    from services.modules.documenter import parsers as D
    from services.modules.explorer import parsers as E
    from services.modules.researcher import parsers as R
    return {A.EXPLORER_EXPLORE: E.parse_explore, A.EXPLORER_CRITIQUE: E.parse_critique,
            A.EXPLORER_SYNTHESIS: E.parse_synthesis, A.EXPLORER_EXTRACT: E.parse_extract,
            A.EXPLORER_CONSOLIDATE: E.parse_consolidate, A.EXPLORER_REVIEW1: E.parse_review1,
            A.EXPLORER_MATHCHECK: E.parse_mathcheck, A.EXPLORER_REVIEW2: E.parse_review2,
            A.DOCUMENTER_PLAN: D.parse_plan, A.DOCUMENTER_EVALUATE: D.parse_evaluation,
            A.DOCUMENTER_DRAFT: D.parse_draft, A.DOCUMENTER_EXPOSITION: D.parse_exposition,
            A.DOCUMENTER_REVIEW_SECTION: D.parse_review, A.DOCUMENTER_ADDRESS_COMMENT: D.parse_comment,
            A.RESEARCHER_GENERATE_QUESTIONS: R.parse_questions, A.RESEARCHER_EVALUATE_SOURCE: R.parse_evaluation,
            A.RESEARCHER_EXTRACT_FINDINGS: R.parse_findings}


@pytest.mark.parametrize("kind", sorted(_real_parsers()))
def test_padded_answers_reach_their_size_and_parse_like_the_bare_ones(kind):
    parse = _real_parsers()[kind]
    for key, size in enumerate((3000, 20000, 60000)):
        payload = {"insight_id": f"ins-{key}", "reviewer": "r1", "insight_ids": ["ins-1", "ins-2"]}
        text = ans(kind, payload, mode="deep", key=key)
        out = A.pad(text, kind, size, A.derive_rng("pad", kind, key))
        assert size - 200 <= len(out.encode()) <= size, (kind, size, len(out.encode()))
        assert text.replace("\n", "") in out.replace("\n", "")
        assert not re.search(r"^\W*[A-Z][A-Z_]+\W*:|^\[[A-Z_]+\]", out[:out.index(text[:20])], re.M), \
            "the working notes must hold no tag-like line"
        assert parse(out) == parse(text), kind
    assert A.pad("short", kind, 3, A.derive_rng(1)) == "short"      # already that long: untouched


def test_free_text_answers_are_padded_after_the_text():
    text = ans(A.ASK, prompt="why 168?")
    out = A.pad(text, A.ASK, 5000, A.derive_rng("p"))
    assert out.startswith(text) and 4800 <= len(out.encode()) <= 5000
