"""Planning and the incorporation pipeline, step by step on the in-process broker core (answers given by the
test; tests/unit/dochelp.py)."""
import random

import pytest

from services.modules.documenter import context as C
from services.modules.documenter import flow, planning
from services.modules.documenter import model as M
from services.modules.documenter.model import HEAD
from shared import txn
from tests.unit.dochelp import Run

INCLUDE = "DECISION: INCLUDE\nNATURAL: yes\nREASONING: fits"
EXCLUDE = "DECISION: EXCLUDE\nREASONING: repeats"
DRAFT = "ESTABLISHES: flag\nREQUIRES: point\nDRAFT:\n## Flags\n\nA flag is an incident point-line pair; there are 21.\n"
APPROVE = "DECISION: APPROVE\nREVISION_NOTES: none"


def pending(run, kind):
    return [s for s in run.pending() if s["kind"] == kind]


def plan_once(run, answer):
    run.propose()
    [spec] = pending(run, C.PLAN)
    run.settle(spec, text=answer)
    return spec


def job(run, ident):
    return run.store.get(M.job_key(ident))[1]


def incorporate(run, ident, evals=(INCLUDE,) * 3, draft=DRAFT, expositions=(APPROVE,)):
    plan_once(run, f"INCORPORATE\nINSIGHT_ID: {ident}")
    for spec, text in zip(pending(run, C.EVALUATE), evals, strict=False):
        run.settle(spec, text=text)
    for expo in expositions:
        if job(run, ident)["stage"] != "draft":
            break
        [d] = pending(run, C.DRAFT)
        run.settle(d, text=draft)
        if job(run, ident)["stage"] != "exposition":
            break
        [e] = pending(run, C.EXPOSITION)
        run.settle(e, text=expo)
    return job(run, ident)


def test_the_run_driver_grows_a_document():
    r = Run()
    for n in range(4):
        r.bless(f"ins-{n}", f"Claim number {n}: the Fano plane has {7 * (n + 1)} flags of kind {n}.")
    r.run(400, random.Random(1))
    assert r.doc().version >= 1
    assert r.store.get(HEAD)[1]["version"] == r.doc().version


def test_nothing_to_plan_without_blessed_insights():
    run = Run()
    run.bless("p1", "A pending claim.", status="pending")
    run.bless("i1", "An interesting claim.", status="interesting")
    run.propose()
    assert run.pending() == []


def test_a_planning_turn_offers_candidates_by_priority_once():
    run = Run()
    run.bless("low", "Low priority claim about lines.", priority=2)
    run.bless("high", "High priority claim about points.", priority=9)
    run.propose()
    run.propose()
    [spec] = run.pending()
    assert spec["key"] == "documenter.plan/1" and spec["payload"]["insight_ids"] == ["high", "low"]
    assert "[high] High priority claim" in spec["payload"]["prompt"]
    assert spec["requires"] == {"mode": "deep", "deep_fallback": True}


def test_incorporate_starts_a_panel_on_three_accounts():
    run = Run(accounts=("a", "b", "c", "d"))
    run.bless("x", "The Fano plane has 21 flags.")
    plan_once(run, "Sure.\n\n**INCORPORATE**\n**INSIGHT_ID:** [x]")   # no DECISION: tag, bold, brackets
    evals = pending(run, C.EVALUATE)
    assert len(evals) == 3 and len({tuple(e["requires"]["backends"]) for e in evals}) == 3
    assert {e["payload"]["evaluator"] for e in evals} == {e["requires"]["backends"][0] for e in evals}
    assert job(run, "x")["stage"] == "evaluate" and job(run, "x")["run"] == 1


def test_one_account_gets_two_unbound_evaluators():
    run = Run(accounts=("solo",))
    run.bless("x", "The Fano plane has 21 flags.")
    plan_once(run, "DECISION: INCORPORATE\nINSIGHT_ID: 1")    # the list number instead of the id
    evals = pending(run, C.EVALUATE)
    assert len(evals) == 2 and all("requires" not in e for e in evals)
    assert [e["payload"]["evaluator"] for e in evals] == ["evaluator-1", "evaluator-2"]


def test_an_unknown_insight_id_is_a_visible_error_and_planning_backs_off():
    run = Run()
    run.bless("x", "A claim.")
    plan_once(run, "DECISION: INCORPORATE\nINSIGHT_ID: ins-999")
    assert run.errors and "ins-999" in run.errors[-1][1]
    assert list(run.values("errors/"))
    ps = run.store.get(M.PLAN_STATE)[1]
    assert ps["pending"] is False and ps["failures"] == 1 and ps["wait_until"] == run.now + planning.FAIL_BASE
    run.propose()
    assert run.pending() == []                    # backing off ...
    run.now += planning.FAIL_BASE
    run.propose()
    assert [s["key"] for s in run.pending()] == ["documenter.plan/2"]   # ... then a fresh turn


def test_wait_holds_planning_until_something_changes():
    run = Run()
    run.bless("x", "A claim about points.")
    plan_once(run, "DECISION: WAIT\nREASON: not yet")
    run.propose()
    assert run.pending() == []
    run.bless("y", "A new claim about lines.")     # the candidates changed: plan again at once
    run.propose()
    assert [s["key"] for s in run.pending()] == ["documenter.plan/2"]
    plan_once(run, "WAIT")
    ps = run.store.get(M.PLAN_STATE)[1]
    assert ps["waits"] == 2 and ps["wait_until"] == run.now + 2 * planning.WAIT_BASE   # WAITs in a row back off


def test_prerequisite_is_appended_once():
    run = Run()
    run.bless("x", "A claim needing duality.")
    answer = "DECISION: PREREQUISITE\nNEEDED: duality\nESTABLISHES: duality\nCONTENT:\nPoints and lines swap roles."
    plan_once(run, answer)
    [sec] = run.doc().ordered()
    assert sec["source"]["kind"] == "prerequisite" and sec["establishes"] == ["duality"] and sec["title"] == "Duality"
    plan_once(run, answer.replace("swap roles", "exchange places"))
    assert run.doc().version == 1
    assert "already established" in run.store.get(M.PLAN_STATE)[1]["last"]["outcome"]


def test_agreement_then_draft_then_approval_appends_the_section():
    run = Run()
    run.bless("x", "The Fano plane has 21 flags.")
    j = incorporate(run, "x")
    assert j["stage"] == "done" and j["section"] == "s0001"
    sec = run.doc().sections["s0001"][1]
    assert (sec["title"], sec["establishes"], sec["source"]) == ("Flags", ["flag"], {"kind": "insight", "ref": "x"})
    assert run.store.get(M.incorporated_key("x"))[1]["how"] == "section"
    assert run.store.get("concepts/flag")[1]["sections"] == ["s0001"]
    run.propose()
    assert pending(run, C.PLAN) == []             # nothing left to plan


def test_a_finished_job_is_working_data_and_its_expiry_changes_nothing():
    run = Run()
    run.bless("x", "The Fano plane has 21 flags.")
    run.bless("y", "Each point of the Fano plane lies on three lines.")
    j = incorporate(run, "x")
    assert j["stage"] == "done" and M.job_key("x") in run.store.working
    plan_once(run, "INCORPORATE\nINSIGHT_ID: y")
    assert job(run, "y")["stage"] == "evaluate" and M.job_key("y") not in run.store.working  # live work: kept
    assert M.incorporated_key("x") not in run.store.working and "sections/s0001" not in run.store.working
    before = run.doc().sections
    run.store.txn([txn.delete(M.job_key("x"))])  # as the broker's working_retention deletes it
    run.propose()
    assert [s for s in pending(run, C.PLAN) if "x" in s["payload"]["insight_ids"]] == []  # not planned again
    assert run.doc().sections == before


def test_disagreement_is_a_dispute_and_three_wait_for_a_human():
    run = Run()
    run.bless("x", "The Fano plane has 21 flags.")
    for n in range(1, 4):
        j = incorporate(run, "x", evals=(INCLUDE, EXCLUDE, INCLUDE))
        assert j["disputes"] == n and "1 EXCLUDE" in j["last_reason"]
    assert j["stage"] == "needs_human" and j["run"] == 3
    assert {e["payload"]["evaluator"] for e in run.submitted.values() if e["kind"] == C.EVALUATE} >= {"a#3"}
    run.propose()
    assert run.pending() == [] and run.doc().version == 0


def test_revise_gets_one_redraft_and_a_second_revise_fails():
    run = Run()
    run.bless("x", "The Fano plane has 21 flags.")
    revise = "DECISION: REVISE\nREVISION_NOTES: define incidence first"
    j = incorporate(run, "x", expositions=(revise, APPROVE))
    assert j["stage"] == "done" and j["round"] == 2
    redraft = [s for s in run.submitted.values() if s["key"] == "documenter.draft/x/1/2"][0]
    assert "define incidence first" in redraft["payload"]["prompt"]
    run.bless("y", "The Heawood graph is the incidence graph of the Fano plane.")
    j = incorporate(run, "y", expositions=(revise, revise))
    assert j["stage"] == "idle" and j["disputes"] == 1 and "REVISE" in j["last_reason"]


def test_reject_and_unusable_draft_are_disputes():
    run = Run()
    run.bless("x", "The Fano plane has 21 flags.")
    assert incorporate(run, "x", expositions=("REJECT",))["disputes"] == 1
    j = incorporate(run, "x", draft="I cannot write this section.")
    assert j["disputes"] == 2 and "DRAFT" in j["last_reason"] and run.errors


def test_a_duplicate_of_a_section_is_recorded_not_dropped():
    run = Run()
    run.bless("x", "The Fano plane has 21 flags.")
    incorporate(run, "x", draft=DRAFT.replace("A flag is an incident point-line pair; there are 21.",
                                              "The Fano plane has 21 flags."))
    run.bless("y", "The Fano plane has 21 flags!")
    plan_once(run, "DECISION: INCORPORATE\nINSIGHT_ID: y")
    assert job(run, "y")["stage"] == "duplicate"
    assert run.store.get(M.incorporated_key("y"))[1] == {"insight_id": "y", "how": "duplicate", "section": "s0001",
                                                        "version": 1, "at": run.now, "run": 0}
    assert pending(run, C.EVALUATE) == []


def test_answers_to_an_abandoned_run_change_nothing():
    run = Run()
    run.bless("x", "The Fano plane has 21 flags.")
    plan_once(run, "DECISION: INCORPORATE\nINSIGHT_ID: x")
    first, second, third = pending(run, C.EVALUATE)
    run.settle(first, state="PARKED")                       # a failed step: dispute, run abandoned
    assert job(run, "x")["stage"] == "idle" and job(run, "x")["disputes"] == 1
    before = job(run, "x")
    run.settle(second, text=INCLUDE)                        # late answers of run 1
    run.settle(third, state="PARKED")
    assert job(run, "x") == before
    plan_once(run, "DECISION: INCORPORATE\nINSIGHT_ID: x")
    assert job(run, "x")["run"] == 2 and len(pending(run, C.EVALUATE)) == 3


def test_a_replayed_answer_is_not_applied_twice():
    run = Run()
    run.bless("x", "The Fano plane has 21 flags.")
    incorporate(run, "x")
    [expo] = [s for s in run.submitted.values() if s["kind"] == C.EXPOSITION]
    run.settle(expo, text=APPROVE)                          # the same result again (the broker would refuse)
    assert run.doc().version == 1 and len(run.doc().sections) == 1


@pytest.mark.slow   # over 2 s: left out by -m "not slow" (README, "Tests")
def test_the_whole_flow_on_simulated_answers_keeps_its_invariants():
    for seed in range(4):
        run = Run(seed=seed, garbage=0.05)
        for n in range(10):
            run.bless(f"ins-{n}", f"Claim {n}: {['PG(2,2)', 'GL(3,2)', 'K7', 'the Heawood graph'][n % 4]} has "
                      f"{7 * (n + 2)} {['flags', 'orbits', 'edges', 'codewords', 'lines'][n % 5]} ({n}).",
                      priority=n % 10)
        rng = random.Random(seed)
        for _ in range(40):
            if run.run(300, rng):
                run.now += planning.WAIT_MAX        # let any WAIT or backoff pass, then plan again
        check_invariants(run)


def check_invariants(run):
    doc = run.doc()
    versions = run.values("versions/")
    assert sorted(v["version"] for v in versions.values()) == list(range(1, doc.version + 1))
    assert versions and versions[M.version_key(doc.version)]["manifest"] == doc.head["manifest"]
    causes = [(v["cause"]["kind"], v["cause"]["ref"], v["cause"]["task"]) for v in versions.values()]
    assert len(causes) == len(set(causes))                  # no change applied twice
    by_insight = [s["source"]["ref"] for s in doc.ordered() if s["source"]["kind"] == "insight"]
    assert len(by_insight) == len(set(by_insight))          # each insight at most once
    inc = run.values("incorporated/")
    assert {i for i, rec in ((k.split("/")[1], v) for k, v in inc.items())
            if rec["how"] == "section"} == set(by_insight)
    for ident, j in ((k.split("/")[1], v) for k, v in run.values("jobs/").items()):
        assert j["stage"] in ("done", "duplicate", "idle", "needs_human"), (ident, j["stage"])
        assert j["disputes"] <= flow.MAX_DISPUTES
    assert doc.head["next_section"] == len(doc.head["revs"]) + 1


def test_an_insight_no_longer_blessed_stops_its_pipeline_without_a_dispute():
    run = Run()
    run.bless("x", "The Fano plane has 21 flags.")
    plan_once(run, "DECISION: INCORPORATE\nINSIGHT_ID: x")
    run.bless("x", "The Fano plane has 21 flags.", status="rejected")     # a user override in the explorer
    run.settle(pending(run, C.EVALUATE)[0], text=INCLUDE)
    j = job(run, "x")
    assert j["stage"] == "idle" and j["disputes"] == 0 and j["history"][-1]["event"] == "withdrawn"
    run.propose()
    assert pending(run, C.PLAN) == []


def test_a_claim_appended_while_another_pipeline_ran_is_a_duplicate_at_append():
    # start_job's dedup cannot see a section written after it ran: two pipelines of the same claim both
    # start on a document without it; the first appends, the second must be stopped by append's own check
    run = Run()
    claim = DRAFT.replace("A flag is an incident point-line pair; there are 21.", "The Fano plane has 21 flags.")
    run.bless("y", "The Fano plane has 21 flags!")
    plan_once(run, "DECISION: INCORPORATE\nINSIGHT_ID: y")
    for spec in pending(run, C.EVALUATE):
        run.settle(spec, text=INCLUDE)
    [d] = pending(run, C.DRAFT)
    run.settle(d, text=claim)
    [y_expo] = pending(run, C.EXPOSITION)            # y waits for its exposition review ...
    assert job(run, "y")["stage"] == "exposition"

    run.bless("x", "The Fano plane has 21 flags.")     # ... while x goes all the way
    plan_once(run, "DECISION: INCORPORATE\nINSIGHT_ID: x")
    assert job(run, "x")["stage"] == "evaluate"        # x started: the document did not have the claim yet
    for spec in pending(run, C.EVALUATE):
        run.settle(spec, text=INCLUDE)
    [d] = pending(run, C.DRAFT)
    run.settle(d, text=claim)
    [x_expo] = [e for e in pending(run, C.EXPOSITION) if e is not y_expo]
    run.settle(x_expo, text=APPROVE)
    assert job(run, "x")["stage"] == "done" and job(run, "x")["section"] == "s0001"

    run.settle(y_expo, text=APPROVE)                   # approved, but its claim is in the document now
    assert job(run, "y")["stage"] == "duplicate" and job(run, "y")["section"] == "s0001"
    assert run.store.get(M.incorporated_key("y"))[1]["how"] == "duplicate"
    assert list(run.doc().sections) == ["s0001"] and run.doc().version == 1
