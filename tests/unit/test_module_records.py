"""The research modules' record types (their model.py TypedDicts) describe what the modules really write:
every field of every record a run leaves in the broker is declared, and every required one is present (the
modules on the in-process broker core, tests/unit/modhelp.py)."""
from __future__ import annotations

import json
import random
from typing import Any

import pytest

from services.modules.documenter import model as DM
from services.modules.documenter import planning
from services.modules.explorer import model as XM
from services.modules.operations.documenter import add_comment
from services.modules.researcher import model as RM
from services.modules.researcher.fetch import FetchError
from services.modules.researcher.service import GENERATE_QUESTIONS
from shared import txn
from tests.unit.dochelp import Run
from tests.unit.test_records import check
from tests.unit.test_researcher_service import (
    FINDINGS,
    FINDINGS_B,
    URL_A,
    URL_B,
    fetched,
    insight,
    run_source,
    settle,
    tasks,
)


def check_all(store, shapes: dict[str, Any], nested) -> set[str]:
    """Check every record under each prefix of ``shapes``; ``nested(prefix, record)`` yields (shape, part,
    what) for the maps inside a record. Returns the prefixes that held a record."""
    seen = set()
    for prefix, shape in shapes.items():
        for key, _, value in store.scan(prefix):
            seen.add(prefix)
            check(shape, value, key, shape.__module__)
            for part_shape, part, what in nested(prefix, value):
                check(part_shape, part, f"{key}: {what}", part_shape.__module__)
    return seen


def documenter_parts(prefix: str, rec: dict):
    if prefix == "sections/" and rec["source"] is not None:
        yield DM.Source, rec["source"], "source"
    if prefix in ("revisions/", "versions/"):
        yield DM.Cause, rec["cause"], "cause"
    if prefix == "jobs/":
        for slot in rec.get("slots") or []:
            yield DM.Slot, slot, "a slot"
        for ev in (rec.get("evals") or {}).values():
            yield DM.Evaluation, ev, "an evaluation"
        if rec.get("draft"):
            yield DM.Draft, rec["draft"], "draft"
    if prefix == DM.PLAN_STATE and "last" in rec:
        yield DM.PlanOutcome, rec["last"], "last"
    if prefix == DM.REVIEW_STATE and "last" in rec:
        yield DM.ReviewOutcome, rec["last"], "last"


def test_the_documenters_records_are_the_declared_shapes():
    shapes = {DM.HEAD: DM.Head, "sections/": DM.Section, "revisions/": DM.Revision, "versions/": DM.Version,
              "concepts/": DM.Concept, "incorporated/": DM.Incorporated, "comments/": DM.Comment, "jobs/": DM.Job,
              DM.PLAN_STATE: DM.PlanState, DM.REVIEW_STATE: DM.ReviewState, DM.MIX: DM.Mix}
    seen: set[str] = set()
    for seed in range(2):
        run = Run(seed=seed, garbage=0.05)
        for n in range(6):
            run.bless(f"ins-{n}", f"Claim {n}: {['PG(2,2)', 'GL(3,2)', 'K7'][n % 3]} has {7 * (n + 2)} "
                      f"{['flags', 'orbits', 'edges', 'lines'][n % 4]} ({n}).")
        rng = random.Random(seed)
        for step in range(12):
            if run.run(200, rng):
                run.now += planning.WAIT_MAX
            if step == 3:
                for sec in run.doc().ordered()[:2]:
                    add_comment(run.client, sec["id"], "Please define the terms first.", now=run.now)
            run.now += 86400          # sections become due for review
        assert run.doc().version >= 1
        seen |= check_all(run.store, shapes, documenter_parts)
    assert seen == set(shapes), f"no record under {sorted(set(shapes) - seen)}: the run did not cover them"


def researcher_parts(prefix: str, rec: dict):
    if prefix == "sources/":
        for ev in rec["evaluations"].values():
            yield RM.Evaluation, ev, "an evaluation"


def test_the_researchers_records_are_the_declared_shapes(make_researcher):
    svc = make_researcher(trusted_domains={"a.example": 90, "b.example": 90}, auto_promote=True, evaluations=2,
                   excluded_domains=["x.example"])
    svc.client.txn("explorer", [txn.put("insights/i1", insight("The Fano plane has 7 points and 168 symmetries.",
                                                               ["fano"]))])
    svc.client.txn("documenter", [txn.put("sections/s0001", {"id": "s0001", "title": "Klein", "rev": 1,
                                                             "text": "It has 168 automorphisms.", "updated": 5.0})])
    svc.observe()
    [t] = tasks(svc, GENERATE_QUESTIONS)
    assert svc.apply(settle(svc, t, json.dumps({"questions": [
        {"question": "Where else does 168 appear?", "type": "supporting", "numbers": [168], "priority": 8,
         "urls": ["https://c.example/168"]},
        {"question": "Where else does 168 appear??", "type": "supporting", "numbers": [168]}]})))
    for url, findings in ((URL_A, FINDINGS), (URL_B, FINDINGS_B)):
        sid = fetched(svc, url)
        for ev in (e for e in tasks(svc, "researcher.evaluate_source") if e["payload"]["source_id"] == sid):
            assert svc.apply(settle(svc, ev, json.dumps({"score": 80, "cites_primary": True, "reasons": ["ok"]})))
        [ex] = [e for e in tasks(svc, "researcher.extract_findings") if e["payload"]["source_id"] == sid]
        assert svc.apply(settle(svc, ex, json.dumps(findings)))
    run_source(svc, "http://d.example/x", score=90, findings=FINDINGS)   # one evaluation of two: stays fetched
    sid, ops = RM.add_source_ops("http://e.example/slow", "user", 1.0)
    svc.client.txn("researcher", ops)
    assert svc.apply_fetch(sid, FetchError("timeout", "slow"))          # queued again, with not_before
    svc.client.txn("researcher", RM.add_source_ops("http://x.example/no", "user", 1.0)[1])
    svc.pool = None
    svc.schedule_fetches()                                             # excluded
    shapes = {"questions/": RM.Question, "sources/": RM.Source, "content/": RM.Content, "queue/fetch/": RM.FetchEntry,
              "findings/": RM.Finding, "crossrefs/": RM.CrossRef, "promotions/": RM.Promotion,
              "observed/": RM.Observed}
    seen = check_all(svc.store, shapes, researcher_parts)
    assert seen == set(shapes), f"no record under {sorted(set(shapes) - seen)}: the run did not cover them"
    statuses = {s["status"] for s in svc.store.records("sources/")}
    assert {"extracted", "fetched", "new", "excluded"} <= statuses, statuses


def no_parts(prefix: str, rec: dict):
    return iter(())


@pytest.mark.slow   # a whole explorer run: over 2 s
def test_the_explorers_records_are_the_declared_shapes(rig):
    shapes = {"seeds/": XM.Seed, "threads/": XM.Thread, "exchanges/": XM.Exchange, "syntheses/": XM.Synthesis,
              "proposals/": XM.Proposals, "insights/": XM.Insight, "reviews/": XM.Review, "pace/": XM.Pace,
              "imported/": XM.Imported}
    r = rig(settings="max_active_threads = 2\nthreads_per_account = 0\n")
    r.import_seeds()
    # a finding the researcher promoted (and one that is no seed: the marker is written all the same)
    r.client.txn("researcher", [txn.put("promotions/f1", {"text": "Why is PG(2,2) self-dual?", "priority": 6}),
                                txn.put("promotions/f2", {"text": ""})])
    r.run_until(lambda: len(r.blessed()) >= 3 and any(rv["stage"] == "done" and rv["outcome"]["round"] == 3
                                                       for rv in r.values("reviews/")))
    seen = check_all(r.svc.store, shapes, no_parts)
    assert seen == set(shapes), f"no record under {sorted(set(shapes) - seen)}: the run did not cover them"


def test_the_advisors_records_are_the_declared_shapes(monkeypatch):
    """A run of the advisor (auto_apply on) over the in-process core: backlogs out of balance, an advice
    task answered and applied (the scheduler refuses: ``not_applied``), then one answered unusably."""
    from services.modules.advisor import logic as AL
    from services.modules.advisor import model as AM
    from services.modules.advisor.service import STATE, AdvisorService
    from services.modules.advisor.settings import load_settings
    from tests.unit.modhelp import ModuleRig, RefusingScheduler, table_text
    rig = ModuleRig(AdvisorService, table=table_text({"enabled": True, "auto_apply": True, "min_backlog": 2}))
    svc = rig.svc   # what initialize() sets besides the client and the store
    svc.settings = load_settings(svc.config)
    svc.explorer, svc.documenter = rig.ns("explorer"), rig.ns("documenter")
    for i in range(44):   # out of balance, and enough tasks that two advice tasks stay within 5%
        rig.client.submit(f"e{i}", "explorer", "explorer.explore", {"prompt": "p"})
    rig.client.submit("r0", "researcher", "researcher.ask", {"prompt": "p"})
    answer = "EXPLORER_WEIGHT: 0.5\nDOCUMENTER_WEIGHT: 1\nRESEARCHER_WEIGHT: 2\nREASONING: the researcher waits."
    with RefusingScheduler() as sched:
        monkeypatch.setenv("FANO_SCHEDULER", sched.endpoint)
        for text in (answer, "no weights here"):
            svc.plan()
            (task,) = rig.tasks(state="PENDING", kind=AL.KIND)
            rig.settle_id(task["id"], text=text)
            rig.apply(task["id"])
            svc.apply_recorded()
            rig.clock.advance(svc.settings.interval + 1)
    proposals = svc.store.records("proposals/")
    assert [p["status"] for p in proposals] == ["not_applied", "unusable"]
    for key, _, value in svc.store.scan("proposals/"):
        check(AM.Proposal, value, key, AM.__name__)
    _, state = svc.store.get(STATE)
    check(AM.State, state, STATE, AM.__name__)
    check(AM.Check, state["last_check"], "state.last_check", AM.__name__)
