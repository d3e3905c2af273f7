"""How documenter work competes with exploration: every task carries the insight's priority on the
explorer's scale, the backlog of blessed insights as a priority boost, comments their boost; and the
``[modules.documenter]`` settings (panel size and accounts, limits) with their validation."""
from types import SimpleNamespace

import pytest

from services.modules.documenter import context as C
from services.modules.documenter import flow
from services.modules.documenter import model as M
from services.modules.documenter.settings import Settings, load_settings, settings_from_table
from shared import txn
from shared.config import ConfigError
from tests.unit.dochelp import Run
from tests.unit.test_documenter_flow import DRAFT, INCLUDE, job, pending, plan_once
from tests.unit.test_documenter_upkeep import comment, with_sections

EXCLUDE = "DECISION: EXCLUDE\nREASONING: repeats"


def test_every_pipeline_task_carries_the_insights_priority_and_the_backlog():
    run = Run()
    run.bless("low", "Low priority claim about lines.", priority=3)
    run.bless("high", "High priority claim about points.", priority=8)
    run.propose()
    [plan] = pending(run, C.PLAN)
    # the highest priority offered; two blessed insights wait: no boost yet
    assert plan["attrs"] == {"seed_priority": 8.0, "backlog": 2} and plan["priority"] == 50
    run.settle(plan, text="DECISION: INCORPORATE\nINSIGHT_ID: low")
    evals = pending(run, C.EVALUATE)
    assert len(evals) == 3 and all(e["attrs"]["seed_priority"] == 3.0 for e in evals)
    for e in evals:
        run.settle(e, text=INCLUDE)
    [draft] = pending(run, C.DRAFT)
    assert draft["attrs"]["seed_priority"] == 3.0
    run.settle(draft, text=DRAFT)
    [expo] = pending(run, C.EXPOSITION)
    assert expo["attrs"]["seed_priority"] == 3.0 and expo["priority"] == 50


@pytest.mark.parametrize("blessed, boost", [(10, 0), (11, 15), (20, 15), (21, 30)])
def test_the_backlog_boost_counts_blessed_insights_waiting(blessed, boost):
    run = Run()
    for i in range(blessed):
        run.bless(f"i{i:02d}", f"Claim number {i} about the {i}-th configuration of lines and points.")
    run.propose()
    [plan] = pending(run, C.PLAN)
    assert plan["priority"] == 50 + boost and plan["attrs"]["backlog"] == blessed


def test_incorporated_insights_no_longer_count_as_waiting():
    run = Run()
    for i in range(12):
        run.bless(f"i{i:02d}", f"Claim number {i} about the {i}-th configuration of lines and points.")
    assert run.env().waiting() == 12
    run.store.txn([txn.put(M.incorporated_key(f"i{i:02d}"), {"how": "section"}) for i in range(3)])
    env = run.env()
    assert env.waiting() == 9 and env.hints(5)["priority"] == 50


def test_comments_and_section_reviews_carry_their_boosts():
    run = with_sections(1, Run(settings=Settings(comment_boost=77.0, section_priority=4)))
    comment(run, "s0001", "Please define a flag.")
    run.propose()
    [c] = pending(run, C.ADDRESS_COMMENT)
    assert c["attrs"]["comment_boost"] == 77.0 and c["attrs"]["seed_priority"] == 4
    [r] = pending(run, C.REVIEW_SECTION)
    assert r["attrs"]["seed_priority"] == 4 and "comment_boost" not in r["attrs"]


def test_a_panel_of_two_on_the_configured_accounts():
    run = Run(accounts=("a", "b", "c", "d"), settings=Settings(evaluators=2, panel_accounts=("b", "d", "zz")))
    run.bless("x", "The Fano plane has 21 flags.")
    plan_once(run, "DECISION: INCORPORATE\nINSIGHT_ID: x")
    evals = pending(run, C.EVALUATE)
    assert sorted(e["requires"]["backends"][0] for e in evals) == ["b", "d"]
    for e in evals:
        run.settle(e, text=INCLUDE)
    assert job(run, "x")["stage"] == "draft"   # two INCLUDEs are agreement for a panel of two


def test_max_active_and_max_disputes_come_from_the_settings():
    run = Run(settings=Settings(max_active=1, max_disputes=1))
    run.bless("x", "The Fano plane has 21 flags.")
    run.bless("y", "The Heawood graph has 14 vertices.")
    plan_once(run, "DECISION: INCORPORATE\nINSIGHT_ID: x")
    run.propose()
    assert pending(run, C.PLAN) == []          # one pipeline in flight is the limit
    for e in pending(run, C.EVALUATE):
        run.settle(e, text=EXCLUDE)
    assert job(run, "x")["stage"] == "needs_human" and job(run, "x")["disputes"] == 1


def test_an_insight_that_just_failed_is_offered_after_the_others():
    run = Run()
    run.bless("a", "The Fano plane has 21 flags.", priority=9)
    run.bless("b", "The Heawood graph has 14 vertices.", priority=2)
    plan_once(run, "DECISION: INCORPORATE\nINSIGHT_ID: a")
    for e in pending(run, C.EVALUATE):
        run.settle(e, text=EXCLUDE)
    assert job(run, "a")["stage"] == "idle" and job(run, "a")["disputes"] == 1
    assert [i for i, _ in flow.candidates(run.env())] == ["b", "a"]
    run.propose()
    [plan] = pending(run, C.PLAN)
    assert plan["payload"]["insight_ids"] == ["b", "a"]


def test_settings_are_validated():
    assert settings_from_table({}) == Settings()
    s = settings_from_table({"evaluators": 2, "backlog_boosts": [[20, 30], [5, 10]], "panel_accounts": ["a"]})
    assert s.evaluators == 2 and s.backlog_boosts == ((5, 10), (20, 30)) and s.panel_accounts == ("a",)
    assert [s.backlog_boost(n) for n in (5, 6, 20, 21)] == [0, 10, 10, 30]
    d = Settings()   # the defaults of docs/research.md § Documenter settings
    assert (d.section_stale_days, d.section_stale, d.comment_max_failures) == (7.0, 7 * 86400.0, 3)
    s = settings_from_table({"section_stale_days": 1.5, "comment_max_failures": 5})
    assert (s.section_stale, s.comment_max_failures) == (1.5 * 86400.0, 5)
    for bad in ({"evaluators": 4}, {"evaluators": 1}, {"max_active": 0}, {"evaluator": 3},
                {"backlog_boosts": [[10]]}, {"backlog_boosts": {"10": 15}}, {"review_share": 2},
                {"panel_accounts": "a"}, {"max_disputes": True}, {"section_stale_days": 0},
                {"section_stale_days": "7"}, {"comment_max_failures": 0}, {"comment_max_failures": 2.5}):
        with pytest.raises(ConfigError):
            settings_from_table(bad)
    cfg = SimpleNamespace(path="fano.toml", modules={"documenter": {"evaluators": 2}, "explorer": {"reviewers": 9}})
    assert load_settings(cfg).evaluators == 2
    assert load_settings(SimpleNamespace(path=None, modules={})) == Settings()
