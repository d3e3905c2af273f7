"""Keeping accounts responsive (services/scheduler/responsive.py): never every account in a deep turn at
once while standard work waits, never an idle worker, never an operator's ask held back."""
from tests.unit.test_scheduler_logic import W1, W2, W3, assigns, make_core, ready, submitted

THREE = tuple((a, "sim", ("standard", "deep")) for a in ("a1", "a2", "a3"))
BOTH = ("standard", "deep")


def deep(core, tid, module="explorer", kind="explorer.review2", priority=60):
    submitted(core, tid, module=module, kind=kind, priority=priority, requires={"mode": "deep"})


def standard(core, tid):
    submitted(core, tid, priority=50)


def modes_of(core):
    return {tid: a.mode for tid, a in core.table.assigned.items()}


def three_ready(core):
    for ident, account in ((W1, "a1"), (W2, "a2"), (W3, "a3")):
        ready(core, ident, account, modes=BOTH)


def test_one_account_stays_on_standard_work_while_the_others_run_deep_turns():
    core = make_core(accounts=THREE)
    for tid in (1, 2, 3):
        deep(core, tid)
    for tid in (11, 12, 13):
        standard(core, tid)
    three_ready(core)
    assert len(assigns(core)) == 3
    assert sorted(modes_of(core).values()) == ["deep", "deep", "standard"]
    assert sorted(core.table.assigned) == [1, 2, 11]     # the deep work has the higher priority


def test_off_every_account_takes_deep_work():
    core = make_core(accounts=THREE, responsive_accounts=0)
    for tid in (1, 2, 3):
        deep(core, tid)
    for tid in (11, 12, 13):
        standard(core, tid)
    three_ready(core)
    assigns(core)
    assert sorted(core.table.assigned) == [1, 2, 3]


def test_with_only_deep_work_no_worker_idles():
    core = make_core(accounts=THREE)
    for tid in (1, 2, 3):
        deep(core, tid)
    three_ready(core)
    assigns(core)
    assert sorted(core.table.assigned) == [1, 2, 3]


def test_an_operators_deep_ask_is_never_held_back():
    core = make_core(accounts=THREE)
    for tid in (1, 2):
        deep(core, tid)
    ready(core, W1, "a1", modes=BOTH)
    ready(core, W2, "a2", modes=BOTH)
    assigns(core)
    assert sorted(core.table.assigned) == [1, 2]           # two accounts in deep turns
    deep(core, 5, module="adhoc", kind="ask", priority=1000)
    standard(core, 11)
    ready(core, W3, "a3", modes=BOTH)
    assigns(core)
    assert core.table.assigned[5].account == "a3" and core.table.assigned[5].mode == "deep"


def test_two_accounts_run_one_deep_turn_at_a_time_while_standard_work_waits():
    two = THREE[:2]
    core = make_core(accounts=two)
    deep(core, 1)
    deep(core, 2)
    standard(core, 11)
    ready(core, W1, "a1", modes=BOTH)
    ready(core, W2, "a2", modes=BOTH)
    assigns(core)
    assert sorted(core.table.assigned) == [1, 11]


def test_an_account_out_of_standard_quota_cannot_be_the_responsive_one():
    """a3 (standard only) has its window used up (a declined lease said so): of the two accounts that
    could answer quickly, one stays on standard work while the other runs a deep turn."""
    from tests.unit.test_scheduler_logic import T0, done
    core = make_core(accounts=THREE[:2] + (("a3", "sim", ("standard",)),))
    standard(core, 10)
    ready(core, W3, "a3")
    assert assigns(core) == [(W3, 10)]
    done(core, W3, 10, outcome="declined", account="a3",
         message="account a3 standard quota 45/45 (45/3h) for module explorer", retry_at=T0 + 3600)
    ready(core, W3, "a3")
    for tid in (1, 2):
        deep(core, tid)
    ready(core, W1, "a1", modes=BOTH)
    ready(core, W2, "a2", modes=BOTH)
    assigns(core)
    assert sorted((a.account, a.mode) for a in core.table.assigned.values()) == [("a1", "deep"), ("a2", "standard")]
