"""The explorer's pacing rules (services/modules/explorer/pacing.py) and its re-asks that ask differently
(services/modules/explorer/model.py: task_spec), as pure functions."""
import pytest

from services.modules.explorer import model as M
from services.modules.explorer import pacing as PC

NOW = 1_800_000_000.0


def test_the_seed_of_a_task_comes_from_its_thread_or_insight_id():
    assert PC.seed_of_task({"payload": {"thread_id": "fano-168.t3"}}) == "fano-168"
    assert PC.seed_of_task({"payload": {"insight_id": "fano-168.t3.i2"}}) == "fano-168"
    assert PC.seed_of_task({"payload": {"prompt": "x"}}) is None and PC.seed_of_task({}) is None


def test_the_hourly_budget_creates_what_fits_and_holds_the_rest_until_the_next_hour():
    rec = PC.current(None, "s", NOW)
    take, hold = PC.ration(rec, ["k1", "k2", "k3"], 2, NOW)
    assert take == {"k1", "k2"} and hold == {"k3"} and rec["tasks"] == 2 and set(rec["held"]) == {"k3"}
    assert PC.room(rec, 2) == 0 and "max_tasks_per_seed_hour = 2" in PC.budget_note(rec, 2)
    later = PC.current(rec, "s", NOW + 1800)            # the same hour: still no room
    assert PC.room(later, 2) == 0
    nxt = PC.current(rec, "s", NOW + PC.HOUR)           # a new hour: the held key is created and counted
    take, hold = PC.ration(nxt, ["k3"], 2, NOW + PC.HOUR)
    assert take == {"k3"} and not hold and nxt["tasks"] == 1 and nxt["held"] == {}
    assert PC.room(PC.current(None, "s", NOW), 0) > 10**6   # 0: no budget


def test_a_seed_gets_no_new_thread_when_paused_or_over_a_budget():
    settings = M.ExplorerSettings(max_threads_per_seed_hour=2, max_tasks_per_seed_hour=5)
    seeds = [{"id": "a"}, {"id": "b"}, {"id": "c"}, {"id": "d"}]
    threads = [{"id": "b.t1", "seed_id": "b", "created_at": NOW - 60},
               {"id": "b.t2", "seed_id": "b", "created_at": NOW - 30},
               {"id": "d.t1", "seed_id": "d", "created_at": NOW - 4000},
               {"id": "d.t2", "seed_id": "d", "created_at": NOW - 10}]
    paces = {"a": {"seed_id": "a", "paused": True, "pause_reason": "2 thread(s) paused by unusable answers"},
             "c": {"seed_id": "c", "window_start": NOW - 10, "tasks": 5, "held": {"k": NOW}}}
    blocked = PC.blocked_seeds(seeds, threads, paces, settings, NOW)
    assert set(blocked) == {"a", "b", "c"}
    assert "unusable" in blocked["a"] and "max_threads_per_seed_hour" in blocked["b"] and "budget" in blocked["c"]


def test_the_seed_pauses_on_threads_paused_by_unusable_answers_not_by_the_operator():
    threads = [{"id": "s.t1", "seed_id": "s", "status": "paused", "paused_by": "unusable answers", "pause_reason": "x"},
               {"id": "s.t2", "seed_id": "s", "status": "paused", "paused_by": None},
               {"id": "s.t3", "seed_id": "s", "status": "active"},
               {"id": "s.t4", "seed_id": "s", "status": "paused", "paused_by": "unusable answers", "pause_reason": "y"}]
    failed = PC.failed_threads(threads, "s")
    assert [t["id"] for t in failed] == ["s.t1", "s.t4"]
    rec = PC.pause(PC.current(None, "s", NOW), failed, NOW)
    assert rec["paused"] and "s.t1, s.t4" in rec["pause_reason"] and "fanoctl seeds resume s" in rec["pause_reason"]


def test_a_re_ask_asks_differently_each_time():
    base = {"thread_id": "s.t1", "turn": 1, "prompt": "Explore.\n\n[NEW_INSIGHTS]\n"}
    first = M.task_spec("k", M.EXPLORE, dict(base), 5)["payload"]["prompt"]
    again = M.task_spec("k:retry1", M.EXPLORE, dict(base, retry=1), 5)["payload"]["prompt"]
    third = M.task_spec("k:retry2", M.EXPLORE, dict(base, retry=2), 5)["payload"]["prompt"]
    assert first == base["prompt"] and len({first, again, third}) == 3
    assert again.startswith(base["prompt"].rstrip()) and "could not be used" in again and "re-ask 1" in again


@pytest.mark.parametrize("key", ["seed_pause_after", "max_threads_per_seed_hour", "max_tasks_per_seed_hour"])
def test_pacing_settings_are_counts(key):
    assert getattr(M.settings_from_table({key: 0}), key) == 0
    with pytest.raises(M.SettingsError, match=key):
        M.settings_from_table({key: -1})
    with pytest.raises(M.SettingsError, match=key):
        M.settings_from_table({key: "many"})
