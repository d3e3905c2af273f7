"""prompt_answers: the stand-ins' research-format replies, read from the prompt alone (the real prompt
templates in prompts/), through the sim's one generator."""
from __future__ import annotations

import json
import string
from collections import defaultdict
from pathlib import Path

import pytest

from services.backends import prompt_answers as P
from services.backends import sim_answers as A
from services.modules import prompts

# every template -> the kind (and round-3 step) a prompt rendered from it asks for
TEMPLATES = {
    ("explorer", "explore"): (A.EXPLORER_EXPLORE, None), ("explorer", "critique"): (A.EXPLORER_CRITIQUE, None),
    ("explorer", "synthesis"): (A.EXPLORER_SYNTHESIS, None), ("explorer", "extract"): (A.EXPLORER_EXTRACT, None),
    ("explorer", "consolidate"): (A.EXPLORER_CONSOLIDATE, None), ("explorer", "dedup"): (A.EXPLORER_DEDUP, None),
    ("explorer", "review1"): (A.EXPLORER_REVIEW1, None), ("explorer", "mathcheck"): (A.EXPLORER_MATHCHECK, None),
    ("explorer", "review2"): (A.EXPLORER_REVIEW2, None),
    ("explorer", "review3_minority"): (A.EXPLORER_REVIEW3, "minority"),
    ("explorer", "review3_majority"): (A.EXPLORER_REVIEW3, "majority"),
    ("explorer", "review3_vote"): (A.EXPLORER_REVIEW3, "vote"),
    ("documenter", "address_comment"): (A.DOCUMENTER_ADDRESS_COMMENT, None),
    ("documenter", "plan"): (A.DOCUMENTER_PLAN, None), ("documenter", "evaluate"): (A.DOCUMENTER_EVALUATE, None),
    ("documenter", "draft"): (A.DOCUMENTER_DRAFT, None), ("documenter", "exposition"): (A.DOCUMENTER_EXPOSITION, None),
    ("documenter", "review_section"): (A.DOCUMENTER_REVIEW_SECTION, None),
    ("researcher", "generate_questions"): (A.RESEARCHER_GENERATE_QUESTIONS, None),
    ("researcher", "evaluate_source"): (A.RESEARCHER_EVALUATE_SOURCE, None),
    ("researcher", "extract_findings"): (A.RESEARCHER_EXTRACT_FINDINGS, None),
    ("advisor", "weights"): (A.ADVISOR_WEIGHTS, None),
}
STEP_TAG = {"minority": "STRONGEST_ARGUMENT:", "majority": "UPDATED_RATING:", "vote": "FINAL_RATING:"}
# context a prompt quotes: earlier answers carry the tags of *other* formats, which must not decide the kind
EXCHANGES = ("[explore, turn 1]\n[NEW_INSIGHTS]\n- a claim\n[CRITICAL_ISSUES]\n- a doubt\nRATING: ⚡\n"
             "UPDATED_RATING: ?\nIS_DUPLICATE: no\nDECISION: INCLUDE\nTITLE: x\nSUMMARY: y\nCONTENT: z")
INSIGHT = "The 168 collineations of the Fano plane act transitively on its 7 points."


def render(module: str, name: str, insight: str = INSIGHT) -> str:
    text = prompts.template_path(module, name).read_text()
    fields = {f for _, f, _, _ in string.Formatter().parse(text) if f}
    values = defaultdict(str, {f: EXCHANGES for f in fields})
    values.update(insight=insight, text=insight, seed_text="Why 168?", title="A title",
                  candidates="1. [ins-7] first candidate\n2. [ins-9] second candidate",
                  format="EXPLORER_WEIGHT: <factor>\nDOCUMENTER_WEIGHT: <factor>\nRESEARCHER_WEIGHT: <factor>")
    return text.format_map(values)


def test_every_template_is_covered():
    root = prompts.template_path("explorer", "explore").parent.parent
    on_disk = {(p.parent.name, p.stem) for p in root.rglob("*.md")}
    assert on_disk - {("explorer", "retry")} == set(TEMPLATES)


@pytest.mark.parametrize("template", sorted(TEMPLATES), ids="/".join)
@pytest.mark.parametrize("mode", ["standard", "deep"])
def test_each_prompt_gets_an_answer_in_its_own_format(template, mode):
    kind, step = TEMPLATES[template]
    prompt = render(*template)
    found = P.prompt_kind(prompt)
    assert found is not None and found[0] == kind, (template, found)
    if step:
        assert found[1]["step"] == step
    for retry in ("", "\n\n" + prompts.template_path("explorer", "retry").read_text().format(retry=1)):
        text = P.answer_prompt(prompt + retry, mode, account="model-a")
        tags = A.REQUIRED_TAGS[kind] if not step else (STEP_TAG[step],)
        assert all(t in text for t in tags), (template, text)
        if kind in A.JSON_KINDS:
            json.loads(text)


def test_the_subject_and_candidates_are_read_from_the_prompt():
    _, payload = P.prompt_kind(render("explorer", "review1"))
    assert payload["insight"] == INSIGHT
    _, payload = P.prompt_kind(render("documenter", "plan"))
    assert payload["insight_ids"] == ["ins-7", "ins-9"]
    assert "INSIGHT_ID: ins-" in P.answer_prompt(render("documenter", "plan"), account="a") or \
        "DECISION: INCORPORATE" not in P.answer_prompt(render("documenter", "plan"), account="a")


def test_reviewers_on_different_accounts_share_the_insights_latent_quality():
    """With every insight good and reviewers agreeing, every account blesses (what the end-to-end tests
    configure); by default, ratings are drawn per account around one shared class."""
    sure = {"good": 1.0, "bad": 0.0, "agree": 1.0}
    for n in range(10):
        prompt = render("explorer", "review1", insight=f"{INSIGHT} Variant {n}.")
        ratings = {P.answer_prompt(prompt, account=a, reviews=sure).splitlines()[0] for a in ("m1", "m2", "m3")}
        assert ratings == {"RATING: ⚡"}
    classes = {A.review_class(0, "insight=" + f"{INSIGHT} Variant {n}.") for n in range(30)}
    assert len(classes) >= 2


def test_favour_makes_every_documenter_vote_favourable_and_is_off_by_default():
    favour = {"favour": 1.0}
    for n in range(20):
        insight = f"{INSIGHT} Variant {n}."
        for name, word in (("evaluate", "DECISION: INCLUDE"), ("exposition", "DECISION: APPROVE")):
            assert P.answer_prompt(render("documenter", name, insight), account=f"m{n}", reviews=favour)\
                .startswith(word)
    plain = {P.answer_prompt(render("documenter", "exposition", f"{INSIGHT} V{n}."), account="m").splitlines()[0]
             for n in range(40)}
    assert len(plain) >= 2, plain


def test_other_prompts_are_not_research_prompts():
    for prompt in ("hello", "", "think hard", "[[standin:overloaded]] explain RATING: in one line"):
        assert P.prompt_kind(prompt) is None and P.answer_prompt(prompt) is None


def test_the_stand_ins_take_the_review_tuning_on_their_command_line():
    import argparse

    from ops.standins.server import parse_reviews
    assert parse_reviews("good=1,agree=0.9, favour=1") == {"good": 1.0, "agree": 0.9, "favour": 1.0}
    for bad in ("good=2", "nice=1", "good", "good=x"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_reviews(bad)
    import subprocess
    import sys
    for name in ("claude", "openai", "chat-site"):
        out = subprocess.run([sys.executable, "-m", "ops.standins", name, "--help"], capture_output=True, text=True,
                             timeout=60, cwd=str(Path(__file__).resolve().parents[2]))
        assert out.returncode == 0 and "--reviews" in out.stdout, (name, out.stderr)
