"""ops/soak_metrics: how the soak measures busy fractions, deep budgets and the targets it reports."""
import datetime as dt
import json

from ops import soak_metrics as SM
from shared.quota import normalize_windows

T0 = dt.datetime(2024, 1, 10, 13, 0, tzinfo=dt.UTC).timestamp()   # a Wednesday
ACCOUNTS = {"a": ("sim", ["standard", "deep"]), "b": ("sim", ["standard"])}


def task(module="explorer", **requires):
    return {"id": 1, "module": module, "requires": requires}


def quota(rows=(), accounts=()):
    return {"quotas": list(rows), "accounts": list(accounts)}


def row(account, mode, limit, used, reserves=None, by_module=None):
    return {"account": account, "mode": mode, "windows": [{"limit": limit, "used": used, "reserves": reserves or {},
                                                             "by_module": by_module or {}}]}


def test_an_account_is_eligible_only_with_work_it_may_run_and_quota_for_it():
    states = SM.account_states([task()], [], quota(), ACCOUNTS, T0)
    assert states == {"a": (True, False), "b": (True, False)}
    assert SM.account_states([], [], quota(), ACCOUNTS, T0) == {"a": (False, False), "b": (False, False)}
    # deep work: only the account with deep mode; with fallback, both
    assert SM.account_states([task(mode="deep")], [], quota(), ACCOUNTS, T0)["b"] == (False, False)
    assert SM.account_states([task(mode="deep", deep_fallback=True)], [], quota(), ACCOUNTS, T0)["b"][0]
    # an explicit account binding (an operator's ask) counts for that account only
    assert SM.account_states([task(account="b")], [], quota(), ACCOUNTS, T0) == {"a": (False, False),
                                                                                 "b": (True, False)}
    # a conversation binding does not: work the research could move
    assert SM.account_states([task(conversation="c1")], [], quota(), ACCOUNTS, T0)["a"][0]


def test_work_no_account_may_run_now_makes_no_account_eligible():
    """As the scheduler's idle query: a backoff, a conversation's turn in flight, another's unknown turn."""
    waiting = dict(task(), not_before=T0 + 30)
    assert SM.account_states([waiting], [], quota(), ACCOUNTS, T0) == {"a": (False, False), "b": (False, False)}
    assert SM.account_states([waiting], [], quota(), ACCOUNTS, T0 + 30)["a"][0]
    turn = task(conversation="c1")
    running = [{"lease": {"account": "a"}, "requires": {"conversation": "c1"}}]
    assert SM.account_states([turn], running, quota(), ACCOUNTS, T0)["b"] == (False, False)
    unknown = dict(task(), unknown_turn={"account": "a", "attempt": 1})
    assert SM.account_states([unknown], [], quota(), ACCOUNTS, T0) == {"a": (True, False), "b": (False, False)}


def test_exhausted_windows_reserves_cooldowns_and_pauses_make_an_account_ineligible():
    full = quota([row("b", "standard", 10, 10)])
    assert SM.account_states([task()], [], full, ACCOUNTS, T0)["b"] == (False, False)
    # 2 left, both reserved for the documenter: not the explorer's, but the documenter's
    reserved = quota([row("b", "standard", 10, 8, reserves={"documenter": 2})])
    assert SM.account_states([task()], [], reserved, ACCOUNTS, T0)["b"][0] is False
    assert SM.account_states([task("documenter")], [], reserved, ACCOUNTS, T0)["b"][0] is True
    cooling = quota(accounts=[{"account": "b", "cooldowns": {"*": {"until": T0 + 60}}}])
    assert SM.account_states([task()], [], cooling, ACCOUNTS, T0)["b"][0] is False
    assert SM.account_states([task()], [], cooling, ACCOUNTS, T0 + 61)["b"][0] is True
    paused = quota(accounts=[{"account": "a", "paused": True}])
    running = [{"lease": {"account": "a"}}]
    assert SM.account_states([task()], running, paused, ACCOUNTS, T0)["a"] == (False, True)


def test_busy_integrates_eligible_time_from_the_previous_sample():
    b = SM.Busy()
    b.sample(T0, {"a": (True, True), "b": (True, False)})
    b.sample(T0 + 60, {"a": (True, False), "b": (False, False)})
    b.sample(T0 + 90, {"a": (True, True), "b": (True, True)})
    assert b.fractions() == {"a": round(60 / 90, 4), "b": 0.0}
    assert b.as_dict()["a"] == {"busy_fraction": 0.6667, "eligible_s": 90, "busy_s": 60,
                                "idle_by": {"?": 30}}
    assert SM.Busy().fractions() == {}


def test_idle_time_is_told_by_what_the_account_could_have_run():
    first: dict = {}
    bound = dict(task(conversation="c1"), kind="explorer.explore")
    states = SM.account_states([bound], [], quota(), ACCOUNTS, T0, first)
    assert states["a"] == (True, False) and first["a"] is bound
    why = {"a": SM.idle_label(first["a"], "a", "b"), "b": SM.idle_label(first["b"], "b", "b")}
    assert why == {"a": "explorer explorer.explore (conversation on b)", "b": "explorer explorer.explore"}
    assert SM.idle_label(dict(task(mode="deep"), kind="k"), "a", None) == "explorer k (deep)"
    b = SM.Busy()
    b.sample(T0, states, why)
    b.sample(T0 + 40, {"a": (True, True), "b": (True, True)})
    assert b.as_dict()["a"]["idle_by"] == {"explorer explorer.explore (conversation on b)": 40}


def test_deep_budgets_count_complete_periods_and_the_weekly_cap():
    wins = normalize_windows(["2/day@00:00 UTC", "5/week@mon 00:00 UTC"])
    day0 = dt.datetime(2024, 1, 8, tzinfo=dt.UTC).timestamp()     # a Monday, midnight
    times = [day0 + d * 86400 + 3600 * k for d in range(4) for k in (1, 2)]   # 2 a day Mon-Thu (Thu: over the week's 5)
    out = SM.deep_budgets({"a": times[:5]}, {"a": wins}, day0 - 1, day0 + 4 * 86400 + 1)
    # Mon 2/2, Tue 2/2, Wed 1/1 (weekly 5 - 4 used before), Thu 0/0: all of what was available
    assert out["a"] == {"periods": 4, "used": 5, "available": 5, "fraction": 1.0}
    assert SM.deep_budgets({}, {"a": wins}, day0 - 1, day0 + 86400 + 1)["a"]["fraction"] == 0.0
    assert SM.deep_budgets({}, {"a": normalize_windows(["9/3h"])}, day0, day0 + 86400) == {}


def test_log_tail_reads_what_was_appended_and_waits_for_a_torn_line(tmp_path):
    path = tmp_path / "log.jsonl"
    tail = SM.LogTail(path)
    assert tail.read() == []
    path.write_text(json.dumps({"n": 1}) + "\n" + '{"n": ')
    assert tail.read() == [{"n": 1}]
    with open(path, "a") as f:
        f.write('2}\n')
    assert tail.read() == [{"n": 2}] and tail.read() == []


def test_percentiles_and_targets():
    assert SM.percentile([], 0.5) is None and SM.percentile([1, 2, 3, 4], 0.5) == 2.5
    assert SM.percentile(range(101), 0.95) == 95
    total = {"busy": {"a": {"busy_fraction": 0.97}, "b": {"busy_fraction": 0.5}},
             "deep_budget": {"a": {"fraction": 1.0}},
             "deep_tasks": 3, "comments": {"latency_p95_s": 100.0}, "storage": {"multiple_of_answers": 2.0},
             "rss_anon_max_mb": {"broker": 40.0}, "fatal": 0, "lost": 0, "duplicated": 1, "over_quota": 0}
    days = [{"storage": {"bytes_per_task": b}, "rss_anon_max_mb": {"broker": r}} for b, r in ((900, 30.0), (1000, 35.0),
                                                                                          (1200, 60.0))]
    t = SM.targets(total, days, comment_target_s=120.0)
    assert t["accounts_busy_95pct"]["pass"] is False and t["deep_budget_used_99pct"]["pass"] is True
    assert t["comment_latency_p95"]["pass"] is True and t["bytes_per_task_flat_from_day2"]["pass"] is True
    assert t["rss_flat_after_day1"]["pass"] is False          # 30 -> 60 MB
    assert t["zero_duplicated"]["pass"] is False and t["zero_lost"]["pass"] is True


def test_comment_breakdown_splits_the_latency_at_the_tasks_transitions():
    comment = {"status": "resolved", "created": 100.0, "resolved_at": 190.0, "task_key": "k"}
    task = {"key": "k", "history": [{"at": 105.0, "why": "submitted", "to": "PENDING"},
                                    {"at": 130.0, "to": "RUNNING"}, {"at": 140.0, "to": "PENDING"},
                                    {"at": 150.0, "to": "RUNNING"}, {"at": 180.0, "to": "DONE"}]}
    out = SM.comment_breakdown([comment, {"status": "open", "created": 1.0}], {"k": task})
    assert out == {"to_submit": {"p50": 5.0, "p95": 5.0}, "queued": {"p50": 45.0, "p95": 45.0},
                   "turn": {"p50": 30.0, "p95": 30.0}, "to_apply": {"p50": 10.0, "p95": 10.0}}
