"""The documenter bounds its own reaction to unusable answers (issue 16; services/modules/pace.py):
planning turns or section reviews whose answers keep being unusable are paused with a visible reason
until ``fanoctl document resume``, and no more than ``max_tasks_per_hour`` tasks are created per hour."""
from cli.research_documenter import show_text
from services.modules import pace
from services.modules.documenter import context as C
from services.modules.documenter import model as M
from services.modules.documenter import service as S
from services.modules.documenter import upkeep
from services.modules.documenter.settings import Settings
from services.modules.operations import documenter as O
from tests.unit.dochelp import Run
from tests.unit.test_documenter_upkeep import with_sections

HOUR = 3600.0


def pending(run, kind):
    return [s for s in run.pending() if s["kind"] == kind]


def plan_pass(run):
    """The service's own planning pass over the proposals (counted and held by the hourly budget)."""
    for ops in S.proposals(run.env()):
        run.svc._start(ops, new_work=True)


def show(run) -> str:
    store = run.store
    d = {"version": 0, "sections": [], "concepts": [], "comments": [], "disputes": [], "incorporated": 0,
         "now": run.now, "plan": store.get(M.PLAN_STATE)[1], "waiting": O.pauses(store, run.now)}
    return show_text(d)


def test_planning_pauses_after_unusable_answers_in_a_row_until_resumed():
    run = Run(settings=Settings(pause_after=3))
    run.bless("x", "The Fano plane has 168 symmetries.")
    for n in range(1, 4):
        plan_pass(run)
        [spec] = pending(run, C.PLAN)
        run.settle(spec, text="I would rather not decide.")             # no DECISION: unusable
        state = run.store.get(M.PLAN_STATE)[1]
        assert state["failures"] == n
        run.now += 7 * 86400                                            # far past any backoff
    assert state["paused"] and pace.paused(state).startswith("3 unusable answers in a row to the documenter's "
                                                             "planning turns (last: unusable answer")
    assert "`fanoctl document resume`" in state["pause_reason"]
    plan_pass(run)
    assert pending(run, C.PLAN) == []                                   # paused: no planning turn
    text = show(run)
    assert "planning paused: 3 unusable answers in a row" in text, text
    assert O.resume_work(run.client) == {"resumed": ["planning"]}
    assert O.resume_work(run.client) == {"resumed": []}
    plan_pass(run)
    [spec] = pending(run, C.PLAN)
    run.settle(spec, text="I would rather not decide.")
    assert run.store.get(M.PLAN_STATE)[1]["failures"] == 1             # a new start after the resume


def test_a_usable_planning_answer_ends_the_streak():
    run = Run(settings=Settings(pause_after=2))
    run.bless("x", "The Fano plane has 168 symmetries.")
    plan_pass(run)
    run.settle(pending(run, C.PLAN)[0], text="I would rather not decide.")
    run.now += 86400
    plan_pass(run)
    run.settle(pending(run, C.PLAN)[0], text="DECISION: WAIT\nREASON: nothing is ready")
    state = run.store.get(M.PLAN_STATE)[1]
    assert state["failures"] == 0 and not state.get("paused")


def test_section_reviews_pause_after_unusable_answers_in_a_row():
    run = with_sections(3, run=Run(settings=Settings(pause_after=2)))
    for sid in ("s0001", "s0002"):
        plan_pass(run)
        [spec] = pending(run, C.REVIEW_SECTION)
        assert spec["payload"]["section_id"] == sid
        run.settle(spec, text="DECISION: REVISE\nREVISION_NOTES: too vague")   # no revised section: unusable
    state = run.store.get(M.REVIEW_STATE)[1]
    assert pace.paused(state).startswith("2 unusable answers in a row to section reviews"), state
    plan_pass(run)
    assert pending(run, C.REVIEW_SECTION) == [] and upkeep.due_sections(run.doc(), run.now)
    assert "section reviews paused: 2 unusable answers" in show(run)
    assert O.resume_work(run.client) == {"resumed": ["section reviews"]}
    plan_pass(run)
    assert [s["payload"]["section_id"] for s in pending(run, C.REVIEW_SECTION)] == ["s0003"]


def test_no_more_than_max_tasks_per_hour_start_and_the_next_hour_goes_on():
    run = with_sections(3, run=Run(settings=Settings(max_tasks_per_hour=1)))
    plan_pass(run)                      # the review of s0001: the hour's one task
    [spec] = pending(run, C.REVIEW_SECTION)
    run.settle(spec, text="DECISION: CONFIRMED\nACCURACY: fine")
    plan_pass(run)                      # s0002 is due, but the hour has no room
    assert pending(run, C.REVIEW_SECTION) == [] and upkeep.due_sections(run.doc(), run.now)
    hour = run.store.get(pace.HOUR_KEY)[1]
    assert (hour["tasks"], hour["limit"]) == (1, 1)
    assert "1 tasks created this hour (max_tasks_per_hour = 1); new work waits until" in show(run)
    run.now += HOUR
    plan_pass(run)
    assert [s["payload"]["section_id"] for s in pending(run, C.REVIEW_SECTION)] == ["s0002"]
    assert run.store.get(pace.HOUR_KEY)[1]["tasks"] == 1 and O.pauses(run.store, run.now)["budget"] is not None


def test_the_steps_of_a_started_pipeline_are_counted_never_held():
    """An INCORPORATE starts the insight's evaluations in the same transaction: counted past the budget,
    so the pipeline is never stranded half started."""
    run = Run(settings=Settings(max_tasks_per_hour=1))
    run.bless("x", "The Fano plane has 168 symmetries.")
    plan_pass(run)
    [spec] = pending(run, C.PLAN)
    run.settle(spec, text="DECISION: INCORPORATE\nINSIGHT_ID: x\nREASON: ready")
    assert len(pending(run, C.EVALUATE)) == 3
    assert run.store.get(pace.HOUR_KEY)[1]["tasks"] == 4
