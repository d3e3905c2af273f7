"""Idle while work waits (services/scheduler/idle.py): SchedulerCore on a fake clock, no sockets."""
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
)

QUOTA_MSG = "account a2 standard quota 80/80 (80/3h) for module explorer"


def idle(core) -> dict:
    return core.idle_watch.report(core.view)


def rows(core) -> dict:
    return {r["account"]: r for r in idle(core)["accounts"]}


def bound_to_a2(core, tid):
    """A turn of conversation c<tid>, which the broker says a2 holds."""
    event(core, "task.submitted", id=tid, module="explorer", kind="explorer.explore", priority=50,
          requires={"conversation": f"c{tid}"}, attrs={}, created=core.clock.world(), not_before=0.0,
          conversation_account="a2", state="PENDING")


def test_an_account_idle_while_work_bound_elsewhere_waits_says_so_and_since_when():
    core = make_core()
    ready(core, W1, "a1")
    core.tick()
    assert idle(core)["accounts"] == []                      # no work: idle is fine
    for tid in range(1, 5):
        bound_to_a2(core, tid)
    until = T0 + 3 * 3600
    ready(core, W2, "a2", modes=("standard", "deep"))        # a2 takes one and the broker declines its lease
    (_, tid), = assigns(core)
    done(core, W2, tid, outcome="declined", account="a2", retry_at=until, message=QUOTA_MSG)
    ready(core, W2, "a2", modes=("standard", "deep"))
    core.tick()
    start = core.clock.world()
    r = rows(core)
    assert set(r) == {"a1"}                                   # a2 is blocked itself: not idle with headroom
    a1 = r["a1"]
    assert a1["waiting"] == 4 and a1["since"] == start and a1["for"] == 0
    assert a1["groups"] == [{"reason": "bound", "n": 4, "account": "a2", "until": until,
                             "detail": f"standard quota for explorer blocked until {queries.fmt_time(until)}"}]
    assert a1["line"] == (f"account a1 idle while 4 tasks wait (bound to a2: standard quota for explorer "
                          f"blocked until {queries.fmt_time(until)})")
    advance(core, 200, W1, W2)   # (under [scheduler] conversation_handoff, after which the turns move to a1)
    core.tick()
    assert rows(core)["a1"]["since"] == start and rows(core)["a1"]["for"] == 200
    # work a1 can run arrives: it takes it, and its idle spell ends
    submitted(core, 9)
    assert assigns(core) == [(W1, 9)]
    assert "a1" not in rows(core)
    # idle again later: a new spell, from then
    running(core, 9, account="a1")
    done(core, W1, 9)
    event(core, "task.done", id=9, module="explorer", kind="explorer.explore")
    advance(core, 60, W1, W2)
    ready(core, W1, "a1")
    core.tick()
    assert rows(core)["a1"]["since"] == core.clock.world()


def test_backoff_own_quota_pause_and_cooling_are_not_idle_while_work_waits():
    core = make_core()
    ready(core, W1, "a1")
    submitted(core, 1, not_before=T0 + 300)                   # retry backoff: waits for time
    core.tick()
    assert idle(core)["accounts"] == []
    # a1's own quota for explorer is used up: its task waits for a1's reset, not for capacity elsewhere
    submitted(core, 2)
    assert assigns(core) == [(W1, 2)]
    done(core, W1, 2, outcome="declined", retry_at=T0 + 3600,
         message="account a1 standard quota 5/5 (5/3h) for module explorer")
    ready(core, W1, "a1")
    core.tick()
    assert idle(core)["accounts"] == []
    # a documenter task a1 cannot take either (a2 only): now a1 is idle while work waits, and the line
    # also says what its own quota and the backoff keep
    submitted(core, 3, module="documenter", kind="documenter.synthesis", requires={"account": "a2"})
    core.tick()
    a1 = rows(core)["a1"]
    assert a1["waiting"] == 1 and a1["groups"][0]["reason"] == "account" and a1["delayed"] == 1
    assert a1["own_quota"] == [{"mode": "standard", "module": "explorer", "status": "blocked",
                                "until": T0 + 3600, "n": 1}]
    assert "idle while 1 task waits (only account a2 may run them: offline (no worker connected))" in a1["line"]
    assert "its own quota keeps 1 (standard quota for explorer blocked" in a1["line"]
    assert "1 more in retry backoff" in a1["line"]
    # paused: not idle with headroom
    event(core, "account.paused", account="a1", reason="auth")
    core.tick()
    assert idle(core)["accounts"] == []
    event(core, "account.resumed", account="a1")
    core.tick()
    assert "a1" in rows(core)
    # cooling in its only mode: no headroom
    event(core, "account.cooldown", account="a1", mode="standard", until=T0 + 900, reason="429")
    core.tick()
    assert idle(core)["accounts"] == []


def test_work_for_other_backends_or_modes_is_named_and_the_answer_stays_bounded():
    core = make_core(accounts=(("a1", "sim", ("standard",)), ("c1", "claude", ("standard",))))
    ready(core, W1, "a1")
    for n in range(1, 2001):
        submitted(core, n, requires={"backends": ["claude"]})
    submitted(core, 5000, requires={"mode": "deep"})
    core.tick()
    a1 = rows(core)["a1"]
    assert a1["waiting"] == 2001
    assert [(g["reason"], g["n"]) for g in a1["groups"]] == [("backends", 2000), ("no_mode", 1)]
    assert a1["line"] == ("account a1 idle while 2001 tasks wait (2000 only claude may run them; "
                          "1 need deep mode)")
    ops = core.table.queue.ops
    idle(core)
    assert core.table.queue.ops == ops              # bins and their sizes only: no heap walk, no sample


def test_idle_query_while_rebuilding_says_nothing_yet():
    core = make_core()
    ready(core, W1, "a1")
    submitted(core, 1, requires={"account": "a2"})
    core.status["synced"] = False
    assert idle(core) == {"now": core.clock.world(), "synced": False, "accounts": []}


def test_a_spell_ends_when_the_account_takes_work_even_between_two_checks():
    core = make_core()
    ready(core, W1, "a1")
    submitted(core, 1, requires={"account": "a2"})
    core.tick()                                               # a check: the spell starts
    start = core.clock.world()
    assert rows(core)["a1"]["since"] == start
    # within one check interval (the monotonic clock stands still): a1 takes a task, runs it, is idle again
    submitted(core, 2)
    assert assigns(core) == [(W1, 2)]
    running(core, 2, account="a1")
    done(core, W1, 2)
    event(core, "task.done", id=2, module="explorer", kind="explorer.explore")
    core.clock.set_world(start + 100)
    ready(core, W1, "a1")
    core.tick()
    assert rows(core)["a1"]["since"] == start + 100           # a new spell, not the old one


def test_work_allowed_on_several_other_accounts_names_the_state_of_each():
    core = make_core(accounts=tuple((name, "sim", ("standard",)) for name in ("a1", "a2", "a3")))
    ready(core, W1, "a1")
    event(core, "account.cooldown", account="a2", mode="standard", until=T0 + 600, reason="429")
    event(core, "account.cooldown", account="a3", mode="*", until=T0 + 900, reason="overloaded")
    submitted(core, 1, requires={"backends": ["a2", "a3"]})
    core.tick()
    (g,) = rows(core)["a1"]["groups"]
    assert g["reason"] == "backends" and g["account"] is None and g["until"] == T0 + 600
    assert g["detail"] == (f"only a2, a3 may run them: a2 standard cooling down until {queries.fmt_time(T0 + 600)}; "
                           f"a3 standard cooling down until {queries.fmt_time(T0 + 900)}")
