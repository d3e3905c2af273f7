"""Capacity-following in the scheduler core: conversation hand-off proposals and operator asks first."""
import pytest

from services.scheduler import queries
from tests.unit.test_scheduler_logic import (
    T0,
    W1,
    W2,
    advance,
    assigns,
    done,
    event,
    make_core,
    ready,
    running,
    submitted,
    timer,
)

HANDOFF = 300.0   # [scheduler] conversation_handoff default
TWO = (("a1", "sim", ("standard",)), ("a2", "sim", ("standard",)))


def turn(core, tid, created=None, **kw):
    """A later turn of conversation c, which the broker says lives on a1."""
    core.on_event({"seq": 0, "ts": core.clock.world(), "type": "task.submitted", "id": tid, "module": "explorer",
                   "kind": "explorer.explore", "priority": 50, "requires": {"conversation": "c"}, "attrs": {},
                   "created": core.clock.world() if created is None else created, "not_before": 0.0,
                   "pending_since": core.clock.world(), "unknown_account": None, "conversation_account": "a1",
                   "state": "PENDING", **kw})


def exhausted(core):
    """a1 is online, and the broker refuses its lease of turn 1 for quota until tomorrow."""
    ready(core, W1, "a1")
    assert assigns(core) == [(W1, 1)]
    done(core, W1, 1, outcome="declined", account="a1",
         message="account a1 standard quota 80/80 (80/3h) for module explorer", retry_at=T0 + 86400)
    ready(core, W1, "a1")


def test_a_turn_bound_to_an_exhausted_account_is_proposed_elsewhere_after_the_handoff_time_not_before():
    core = make_core(accounts=TWO)
    turn(core, 1)
    exhausted(core)
    ready(core, W2, "a2")
    assert assigns(core) == []                                  # bound to a1, not yet due
    assert timer(core, "handoff") == pytest.approx(HANDOFF)     # sleeps until then, no polling
    line = queries.why(core.view, 1)["line"]
    assert "lives on a1" in line and "handed off" in line and "quota" in line
    advance(core, HANDOFF - 1, W1, W2)
    assert assigns(core) == []
    advance(core, 1, W1, W2)
    assert assigns(core) == [(W2, 1)]
    assert core.table.tasks[1].handoff == "a1"
    running(core, 1, account="a2")                              # the broker moved the conversation
    assert core.convs.holder["c"] == "a2"


def test_no_handoff_while_the_holding_account_can_run_it():
    core = make_core(accounts=TWO)
    running(core, 5, account="a1")                              # a1 busy with a long turn of another task
    turn(core, 1)
    ready(core, W2, "a2")
    advance(core, 10 * HANDOFF, W2)
    msg_alive = core.workers.named("backend-a1")
    assert msg_alive is None or msg_alive.account == "a1"
    ready(core, W1, "a1")                                       # online (busy), not blocked
    done(core, W1, 5)
    assert core.table.tasks[1].handoff is None
    assert [t for _, t in assigns(core)] == [1]
    assert core.table.assigned[1].account == "a1"


def test_an_offline_account_hands_off_once_gone_for_the_handoff_time():
    core = make_core(accounts=TWO)
    ready(core, W1, "a1")
    turn(core, 1)
    running(core, 1, account="a1")
    core.on_disconnect(W1, {})                                  # its worker is gone
    event(core, "task.pending", id=1, module="explorer", kind="explorer.explore", priority=50,
          requires={"conversation": "c"}, attrs={}, created=T0, not_before=0.0, pending_since=T0,
          conversation_account="a1", state="PENDING")
    ready(core, W2, "a2")
    advance(core, HANDOFF - 1, W2)
    assert assigns(core) == []
    advance(core, 1, W2)
    assert assigns(core) == [(W2, 1)]


def test_a_worker_back_online_takes_its_conversation_back():
    core = make_core(accounts=TWO)
    ready(core, W1, "a1")
    event(core, "account.paused", account="a1", reason="login")
    turn(core, 1)
    advance(core, HANDOFF, W1)
    core.tick()
    assert core.table.tasks[1].handoff == "a1"
    assert "being handed off from a1 (paused (login))" in queries.why(core.view, 1)["line"]
    event(core, "account.resumed", account="a1")
    assert core.table.tasks[1].handoff is None                        # re-checked at once
    ready(core, W2, "a2")
    assert assigns(core) == [(W1, 1)]


def test_never_while_a_turn_is_in_flight_nor_with_an_unknown_turn_held():
    core = make_core(accounts=TWO)
    turn(core, 1)
    running(core, 1, account="a1")
    turn(core, 2)                                               # waits for turn 1 (held)
    event(core, "account.paused", account="a1", reason="x")
    ready(core, W2, "a2")
    advance(core, 2 * HANDOFF, W2)
    assert assigns(core) == []
    assert "in flight" in queries.why(core.view, 2)["line"]
    # turn 1 ends unknown: only a1 may reconcile it until the hold lapses, hand-off time or not
    event(core, "task.pending", id=1, module="explorer", kind="explorer.explore", priority=50,
          requires={"conversation": "c"}, attrs={}, created=T0, not_before=0.0, pending_since=T0,
          conversation_account="a1", unknown_account="a1", unknown_until=core.clock.world() + 600,
          state="PENDING")
    assert assigns(core) == []
    assert "unknown" in queries.why(core.view, 1)["line"]
    advance(core, 601, W2)
    assert [t for _, t in assigns(core)] == [1]


def test_handoff_zero_means_never():
    core = make_core(accounts=TWO, conversation_handoff=0.0)
    turn(core, 1)
    event(core, "account.paused", account="a1", reason="x")
    ready(core, W2, "a2")
    advance(core, 100 * HANDOFF, W2)
    assert assigns(core) == [] and core.table.tasks[1].handoff is None


# --- operator asks ---------------------------------------------------------------------------------------

def test_an_ask_bound_to_an_account_gets_its_next_slot_ahead_of_a_deep_explore_backlog():
    core = make_core(accounts=TWO)
    for tid in range(1, 41):   # explore work of the highest seed priority, aged to the cap
        submitted(core, tid, attrs={"seed_priority": 10}, created=T0 - 86400)
    submitted(core, 99, module="adhoc", kind="ask", requires={"backends": ["a1"]})
    ready(core, W1, "a1")
    assert assigns(core) == [(W1, 99)]
    terms = queries.why(core.view, 1)["terms"]
    assert terms["total"] < queries.why(core.view, 99)["terms"]["base"]


# --- queue why names every way a task waits ---------------------------------------------------------------

def test_why_names_backoff_declines_unknown_turns_missing_modes_and_operator_pauses():
    core = make_core(accounts=TWO)
    submitted(core, 1, not_before=T0 + 600)
    assert "retry backoff" in queries.why(core.view, 1)["line"]
    submitted(core, 2, kind="x.ask")
    ready(core, W1, "a1")
    assert assigns(core) == [(W1, 2)]
    done(core, W1, 2, outcome="declined", account="a1", message="task 2 is RUNNING")
    line = queries.why(core.view, 2)["line"]
    assert "sitting out" in line and "declined" in line
    submitted(core, 3, unknown_account="a2", kind="x.review")
    core.table.tasks[3].unknown_until = T0 + 1800
    line = queries.why(core.view, 3)["line"]
    assert "unknown outcome on a2: only a2 may run it" in line and "then any account may" in line
    submitted(core, 4, requires={"mode": "deep"})
    assert "offers no deep mode" in queries.why(core.view, 4)["line"]
    paused = queries.why_untracked(5, {"id": 5, "state": "PAUSED"})
    assert "fanoctl queue resume 5" in paused["line"]
    submitted(core, 6, requires={"conversation": "c"}, kind="explorer.explore")
    running(core, 6, account="a2")
    submitted(core, 7, requires={"conversation": "c"}, kind="explorer.explore")
    assert "waiting for task 6, the turn of conversation c in flight" in queries.why(core.view, 7)["line"]


def test_a_proposal_is_withdrawn_when_the_block_ends():
    core = make_core(accounts=TWO)
    turn(core, 1)
    ready(core, W1, "a1")
    assert assigns(core) == [(W1, 1)]
    done(core, W1, 1, outcome="declined", account="a1", message="quota", retry_at=T0 + 2 * HANDOFF)
    advance(core, HANDOFF, W1)
    core.tick()
    assert core.table.tasks[1].handoff == "a1"
    advance(core, HANDOFF, W1)            # a1's window has room again: the conversation stays with it
    core.tick()
    assert core.table.tasks[1].handoff is None


def test_a_declined_proposal_leaves_the_conversation_where_it_lives_in_the_estimates():
    core = make_core(accounts=TWO)
    event(core, "account.paused", account="a1", reason="x")
    turn(core, 1)
    ready(core, W2, "a2")
    advance(core, HANDOFF, W2)
    assert assigns(core) == [(W2, 1)]
    assert core.convs.account_of("c") == "a2"        # tentatively, while it is assigned
    done(core, W2, 1, outcome="declined", account="a2", message="conversation c lives on account a1 (a1 can run it)")
    assert core.convs.account_of("c") == "a1"


def test_a_comment_may_run_on_the_operators_reserve_while_its_modules_share_is_blocked():
    """The scheduler mirrors the broker's shares (shared/quota.py charge_modules): a decline blocks the
    documenter's share on a1, not the work that may also draw on the operator's adhoc reserve."""
    core = make_core(accounts=(("a1", "sim", ("standard",)),))
    submitted(core, 1, module="documenter", kind="documenter.plan")
    ready(core, W1, "a1")
    assert assigns(core) == [(W1, 1)]
    done(core, W1, 1, outcome="declined", account="a1",
         message="account a1 standard quota 80/80 (80/3h) for module documenter", retry_at=T0 + 3600)
    ready(core, W1, "a1")
    assert assigns(core) == []
    submitted(core, 2, module="documenter", kind="documenter.address_comment", requires={"share": "adhoc"})
    assert assigns(core) == [(W1, 2)]


def busy_a1(core):
    """a1's only worker runs task 5 (pinned to a1); conversation c's next turn waits for a1; a2 is idle."""
    ready(core, W1, "a1")
    submitted(core, 5, requires={"account": "a1"})
    assert assigns(core) == [(W1, 5)]
    running(core, 5, account="a1")
    turn(core, 1)
    ready(core, W2, "a2")
    assert assigns(core) == []


def test_a_turn_waiting_behind_its_accounts_other_work_is_proposed_to_an_idle_account_after_the_handoff_time():
    core = make_core(accounts=TWO)
    busy_a1(core)
    line = queries.why(core.view, 1)["line"]
    assert "lives on a1 (busy with task 5)" in line and "handed off" in line
    advance(core, HANDOFF - 1, W1, W2)
    assert assigns(core) == []
    advance(core, 1, W1, W2)
    assert assigns(core) == [(W2, 1)]
    assert core.table.tasks[1].handoff == "a1"


def test_a_busy_account_that_frees_up_in_time_keeps_its_conversation():
    core = make_core(accounts=TWO)
    busy_a1(core)
    advance(core, HANDOFF / 2, W1, W2)
    done(core, W1, 5)
    ready(core, W1, "a1")
    assert assigns(core) == [(W1, 1)]


def test_a_turn_due_while_its_account_was_idle_is_looked_at_again_when_it_stays_busy():
    """Due at a moment its account could run it (no proposal), the turn is checked again a hand-off time
    later: by then the account is busy with other work, and the idle account takes the turn."""
    core = make_core(accounts=TWO)
    turn(core, 1)
    submitted(core, 5, priority=90, requires={"account": "a1"})
    advance(core, HANDOFF)
    ready(core, W1, "a1")
    assert assigns(core) == [(W1, 5)]              # the higher-priority pinned task first
    running(core, 5, account="a1")
    ready(core, W2, "a2")
    assert assigns(core) == []
    advance(core, HANDOFF, W1, W2)
    assert assigns(core) == [(W2, 1)]


def test_a_turn_proposed_to_leave_a_busy_account_goes_back_to_it_when_it_is_free_again():
    """Nobody took the proposed turn while its account was busy; once free, the account takes its own turn
    rather than opening another conversation (a turn left unbound waits behind every account's own turns)."""
    core = make_core(accounts=TWO)
    busy_a1(core)
    submitted(core, 7, requires={"account": "a2"})
    assert assigns(core) == [(W2, 7)]
    running(core, 7, account="a2")
    advance(core, HANDOFF, W1, W2)
    assert assigns(core) == []
    assert core.table.tasks[1].handoff == "a1"        # proposed, but a2 is busy too
    submitted(core, 8, requires={"conversation": "c3"}, created=T0 - 600)   # an older opening turn
    done(core, W1, 5)
    ready(core, W1, "a1")
    assert assigns(core) == [(W1, 1)]
