"""The explorer follows capacity: what the broker says about the accounts' headroom decides which threads
hold a slot, who sits on a new panel, and when a blocked panel member is replaced or left out.

Driven with the rig of ``test_explorer_flow`` (the real broker core in-process, a fake clock); accounts are
blocked the way the world blocks them: a cool-down (a provider's 429), a used-up quota window, a pause.
"""
from __future__ import annotations

import pytest

from services.modules import capacity as CAP
from services.modules.explorer import flow
from services.modules.explorer import model as M
from services.modules.explorer import threads as T
from shared import txn
from tests.unit.test_explorer_flow import check_applied_once

DAY = 86400.0


def block(r, account: str, seconds: float = DAY, mode=None) -> None:
    r.client.cooldown(account, r.clock.world() + seconds, mode=mode, reason="429 from the provider")


def cap_of(r) -> CAP.Capacity:
    return r.svc.capacity()


# --- the headroom view ------------------------------------------------------------------------------------

def test_capacity_reads_windows_reserves_cooldowns_and_pauses(rig):
    r = rig(accounts=("alpha", "beta", "gamma"))
    c = cap_of(r)
    assert c.known and all(c.room(a) and c.room(a, "deep") for a in ("alpha", "beta", "gamma"))
    # a window the explorer has used up (the other module's reserve is not its to take)
    r.client.quota_set("alpha", "standard", ["2/3h reserve documenter=1"])
    r.import_seeds()
    r.svc.plan()
    assert r.work(["alpha"]) >= 1
    c = cap_of(r)
    assert not c.room("alpha") and c.room("alpha", "deep")
    assert "explorer has no standard quota left" in c.reason("alpha")
    assert r.clock.world() < c.until("alpha") <= r.clock.world() + 3 * 3600 + 1
    # a cool-down on one mode, a pause of the whole account
    block(r, "beta", 600, mode="deep")
    c = cap_of(r)
    assert c.room("beta") and not c.room("beta", "deep") and c.until("beta", "deep") == r.clock.world() + 600
    assert c.serves({"requires": {"mode": "deep", "deep_fallback": True}}, ["beta"])        # may fall back
    assert not c.serves({"requires": {"mode": "deep", "deep_fallback": False}}, ["beta"])
    assert c.usable(["alpha", "beta", "gamma"], "deep", patience=601) == ["alpha", "beta", "gamma"]
    assert c.usable(["alpha", "beta", "gamma"], "deep", patience=0) == ["alpha", "gamma"]
    r.h.call("account_pause", account="gamma", reason="login expired")
    c = cap_of(r)
    assert not c.room("gamma") and c.until("gamma") == CAP.INF and "paused" in c.reason("gamma")
    assert r.svc.env().available_accounts(c) == ["beta"]      # alpha: no standard quota left; gamma: paused


def test_task_accounts_follow_the_conversation_then_the_requirements():
    names = ["a", "b", "c"]
    assert CAP.task_accounts({"requires": {"backends": ["b"], "conversation": "x"}}, names, "c") == ["c"]
    assert CAP.task_accounts({"requires": {"backends": ["b"]}}, names) == ["b"]
    assert CAP.task_accounts({"requires": {}}, names) == names
    assert CAP.task_modes({"requires": {"mode": "deep", "deep_fallback": True}}) == ["deep", "standard"]


def test_an_unknown_view_blocks_nothing():
    c = CAP.Capacity.unknown("explorer", {"a": ("standard",)}, 0.0)
    assert not c.known and c.room("a") and not c.room("a", "deep")   # a mode the account lacks never has room


# --- thread slots -----------------------------------------------------------------------------------------

def test_a_thread_waiting_on_a_blocked_account_does_not_hold_the_only_slot(rig):
    r = rig(settings="max_active_threads = 1\nthreads_per_account = 0\nmax_waiting_threads = 1\n")
    r.import_seeds()
    first = r.run_until(lambda: [t for t in r.values("threads/") if t["exchanges"] >= 1])[0]
    assert [t["id"] for t in r.values("threads/")] == [first["id"]]
    acct = first["explore_account"]
    # run the critique so that the next task is an explore turn bound to the explorer's account
    r.run_until(lambda: r.get(M.thread_key(first["id"]))["exchanges"] >= 2,
                accounts=[a for a in r.accounts if a != acct])
    block(r, acct)
    others = [a for a in r.accounts if a != acct]
    r.step(others)
    threads = r.values("threads/")
    assert len(threads) == 2, "the new seed got no thread while the old one waits on a blocked account"
    second = next(t for t in threads if t["id"] != first["id"])
    r.run_until(lambda: r.get(M.thread_key(second["id"]))["exchanges"] >= 3, accounts=others)
    assert r.get(M.thread_key(first["id"]))["exchanges"] == 2            # still waiting for its account
    # both bounds hold: one moving thread at a time, at most one waiting beside it
    for _ in range(5):
        r.step(others)
    assert len([t for t in r.values("threads/") if t["status"] in M.OPEN_THREAD]) <= 2


def test_without_a_blocked_account_the_slot_count_is_as_before(rig):
    r = rig(settings="max_active_threads = 1\nthreads_per_account = 0\n")
    r.import_seeds()
    for _ in range(3):
        r.step()
    assert len([t for t in r.values("threads/") if t["status"] in M.OPEN_THREAD]) == 1


# --- panels ----------------------------------------------------------------------------------------------

def _to_review(r, accounts=None):
    return r.run_until(lambda: [i for i in r.values("reviews/") if i["stage"] == "round1"], accounts=accounts)[0]


def test_a_new_review_panel_leaves_out_an_account_blocked_past_patience(rig):
    r = rig(settings="max_active_threads = 1\nthreads_per_account = 0\nmath_check = false\n")
    r.import_seeds()
    r.run_until(lambda: [t for t in r.values("threads/") if t["status"] == "synthesised"])
    block(r, "gamma")
    review = _to_review(r, ["alpha", "beta"])
    assert [p["account"] for p in review["panel"]] == ["alpha", "beta"]   # two distinct seats, none waiting
    thread = r.values("threads/")[0]
    assert thread["panel_settled"].get("gamma") in (None, "skipped", "done")


@pytest.mark.slow   # over 2 s: left out by -m "not slow" (README, "Tests")
def test_a_reviewer_blocked_past_patience_is_replaced_by_an_account_not_on_the_panel(rig):
    r = rig(accounts=("alpha", "beta", "gamma", "delta"),
            settings="max_active_threads = 1\nthreads_per_account = 0\nmath_check = false\n")
    r.import_seeds()
    review = _to_review(r)
    iid = review["insight_id"]
    assert [p["account"] for p in review["panel"]] == ["alpha", "beta", "gamma"]
    key = M.insight_task_key(iid, "review1:beta")
    old = next(t for t in r.tasks() if t["key"] == key)
    assert old["state"] == "PENDING"
    block(r, "beta")
    r.step(["alpha", "gamma"])
    assert r.get(M.review_key(iid))["panel"][1]["account"] == "beta"     # not before member_patience
    r.clock.advance(301)
    r.step(["alpha", "gamma", "delta"])
    rv = r.get(M.review_key(iid))
    seat = rv["panel"][1]
    assert seat["reviewer"] == "beta" and seat["account"] == "delta" and seat["replaced"][0]["account"] == "beta"
    assert rv["replacements"][0]["from"] == "beta" and rv["replacements"][0]["to"] == "delta"
    assert next(t for t in r.tasks() if t["key"] == key)["state"] == "CANCELLED"
    r.run_until(lambda: "beta" in r.get(M.review_key(iid))["rounds"]["1"]["responses"]
                or r.get(M.review_key(iid))["stage"] != "round1", accounts=["alpha", "gamma", "delta"])
    resp = r.get(M.review_key(iid))["rounds"]["1"]["responses"]["beta"]
    assert resp["backend"] == "delta"
    check_applied_once(r.values, r.tasks())


def _pending_seat(r, accounts):
    """A review just opened (its round-1 tasks not yet run) and its seat on an account not in ``accounts``."""
    rv = _to_review(r)
    seat = next(p for p in rv["panel"] if p["account"] not in accounts)
    key = M.insight_task_key(rv["insight_id"], f"review1:{seat['reviewer']}")
    task = next(t for t in r.tasks(state="PENDING") if t["key"] == key)
    return rv, seat, task


def test_a_blocked_reviewer_without_a_distinct_replacement_is_left_out_and_the_review_goes_on(rig):
    r = rig(settings="max_active_threads = 1\nthreads_per_account = 0\nmath_check = false\n")
    r.import_seeds()
    rv, seat, task = _pending_seat(r, ["alpha", "beta"])
    block(r, seat["account"])
    r.clock.advance(301)
    r.step(["alpha", "beta"])
    after = r.get(M.review_key(rv["insight_id"]))
    assert seat["reviewer"] in after["rounds"]["1"]["dropped"]
    assert after["replacements"][-1]["to"] is None and "member_patience" in after["replacements"][-1]["why"]
    from cli.research_explorer_render import insight_text
    shown = insight_text({"insight": r.get(M.insight_key(rv["insight_id"])), "review": after})
    assert f"{seat['reviewer']}: left out: its account had no room past member_patience" in shown
    assert f"seat {seat['reviewer']} in round1: {seat['account']} -> left out" in shown
    assert next(t for t in r.tasks() if t["id"] == task["id"])["state"] == "CANCELLED"
    r.run_until(lambda: r.get(M.insight_key(rv["insight_id"]))["status"] != "pending"
                or r.get(M.review_key(rv["insight_id"]))["stage"] not in ("round1",), accounts=["alpha", "beta"])
    check_applied_once(r.values, r.tasks())


def test_on_a_scaled_clock_blocked_seats_are_followed_between_repair_passes(rig):
    """member_patience is world time: at 336 world seconds per real one (ops/soak) a pass every
    repair_interval (30 real s) would notice a blocked seat 2.8 world hours late."""
    r = rig(settings="max_active_threads = 1\nthreads_per_account = 0\nmath_check = false\n")
    r.import_seeds()
    rv, seat, task = _pending_seat(r, ["alpha", "beta"])
    r.svc.clock.scale = 336.0
    assert r.svc.follow_interval() == 1.0   # member_patience / 4 = 75 world s is 0.22 real s: the floor
    block(r, seat["account"])
    r.clock.advance(301)
    r.svc._next_repair = r.clock.mono() + 30.0      # the repair pass is not due
    r.svc._next_follow = r.clock.mono() + 0.1
    r.svc.plan()
    assert not r.get(M.review_key(rv["insight_id"])).get("replacements")
    r.clock.advance(0.1)
    r.svc.plan()
    after = r.get(M.review_key(rv["insight_id"]))
    assert after["replacements"][-1]["from"] == seat["account"]
    assert r.svc._next_follow == r.clock.mono() + 1.0


def test_a_late_answer_of_a_replaced_seat_is_ignored_and_its_task_cancelled_after_a_crash(rig):
    r = rig(settings="max_active_threads = 1\nthreads_per_account = 0\nmath_check = false\n")
    r.import_seeds()
    rv, seat, task = _pending_seat(r, ["alpha", "beta"])
    iid = rv["insight_id"]
    block(r, seat["account"])
    r.clock.advance(301)
    real_cancel = r.svc._cancel
    r.svc._cancel = lambda *a, **k: None           # the module dies between its transaction and the cancel
    r.svc.plan()
    before = r.get(M.review_key(iid))
    assert seat["reviewer"] in before["rounds"]["1"]["dropped"]
    # the old task still runs (the account comes back) and answers late: acked, not counted
    r.client.cooldown(seat["account"], r.clock.world() - 1)
    r.work([seat["account"]])
    assert next(t for t in r.tasks() if t["id"] == task["id"])["state"] == "DONE"
    r.svc.sweep()
    after = r.get(M.review_key(iid))
    assert seat["reviewer"] not in after["rounds"]["1"]["responses"]
    late = {x["task_id"] for rv_ in r.values("reviews/") for x in rv_.get("replacements") or []}
    tasks = r.tasks()
    assert task["id"] in late and all(t["consumed"] for t in tasks if t["id"] in late)   # acked as stale
    check_applied_once(r.values, [t for t in tasks if t["id"] not in late])
    r.svc._cancel = real_cancel


@pytest.mark.parametrize("left_review", [False, True])
def test_a_restarted_module_cancels_the_replaced_seats_task(rig, left_review):
    """The restarted module re-derives the cancel from the review record. A full pass reads only the
    reviews that can matter (not every review ever held): of a pending insight, or named by a PENDING
    task, as when the insight was rejected meanwhile (``left_review``)."""
    r = rig(settings="max_active_threads = 1\nthreads_per_account = 0\nmath_check = false\n")
    r.import_seeds()
    rv, seat, task = _pending_seat(r, ["alpha", "beta"])
    block(r, seat["account"])
    r.clock.advance(301)
    r.svc._cancel = lambda *a, **k: None
    r.svc.plan()
    assert next(t for t in r.tasks() if t["id"] == task["id"])["state"] == "PENDING"
    if left_review:
        version, insight = r.svc.store.get(M.insight_key(rv["insight_id"]))
        r.svc.store.txn([txn.put(M.insight_key(rv["insight_id"]), dict(insight, status="rejected"),
                                 if_version=version)])
    r.svc = r.new_module()
    r.svc.plan()
    assert next(t for t in r.tasks() if t["id"] == task["id"])["state"] == "CANCELLED"


def test_an_extractor_blocked_past_patience_is_skipped(rig):
    r = rig(settings="max_active_threads = 1\nthreads_per_account = 0\n")
    r.import_seeds()
    working = ["alpha", "beta"]
    thread = r.run_until(lambda: [t for t in r.values("threads/") if t["status"] == "synthesised"
                                  and set(t["panel_settled"]) == {"alpha", "beta"}], accounts=working)[0]
    block(r, "gamma")
    r.step(working)
    assert not r.get(M.thread_key(thread["id"])).get("panel_closed")   # patience first
    r.clock.advance(301)
    r.run_until(lambda: r.get(M.thread_key(thread["id"]))["status"] == "extracted", accounts=working)
    t = r.get(M.thread_key(thread["id"]))
    assert t["panel_settled"]["gamma"] == "skipped" and "gamma blocked past member_patience" in t["extraction_note"]
    assert next(x for x in r.tasks() if x["id"] == t["panel_skipped"]["gamma"])["state"] == "CANCELLED"
    check_applied_once(r.values, r.tasks())


def test_a_backlogged_account_is_left_off_new_extraction_panels(rig):
    """gamma does no work: the tasks only it can run pile up past busy_backlog, and the panels formed
    after that are drawn from the accounts that keep up (each extraction waits for its slowest member)."""
    r = rig()
    r.import_seeds()
    working = ["alpha", "beta"]

    def quick_panel():
        return [t for t in r.values("threads/") if t.get("panel") and "gamma" not in t["panel"]]
    thread = r.run_until(quick_panel, accounts=working)[0]
    assert set(thread["panel"]) == {"alpha", "beta"}
    assert r.svc.load_view().pinned.get("gamma", 0) > r.svc.settings.busy_backlog


def test_a_backlogged_account_is_left_off_new_review_panels_while_two_others_remain(rig):
    r = rig(accounts=("alpha", "beta", "gamma", "delta"))
    r.import_seeds()
    working = ["alpha", "beta", "delta"]

    def quick_reviews():
        return [v for v in r.values("reviews/") if "gamma" not in {s["account"] for s in v["panel"]}
                and r.svc.load_view().pinned.get("gamma", 0) > r.svc.settings.busy_backlog]
    review = r.run_until(quick_reviews, accounts=working)[0]
    assert len({s["account"] for s in review["panel"]}) == len(review["panel"]) >= 2


def _backlogged(r, account: str) -> bool:
    return r.svc.load_view().pinned.get(account, 0) > r.svc.settings.busy_backlog


def test_an_extractor_seated_before_its_account_fell_behind_is_skipped_after_patience(rig):
    """gamma has room but does no work: an extraction seated on it before its queue grew is not waited
    for past member_patience (its thread would hold a slot while alpha and beta idle)."""
    r = rig()
    r.import_seeds()
    working = ["alpha", "beta"]

    def stuck():
        return [t for t in r.values("threads/") if t["status"] == "synthesised" and "gamma" in t["panel"]
                and "gamma" not in t["panel_settled"] and _backlogged(r, "gamma")]
    thread = r.run_until(stuck, accounts=working)[0]
    r.svc._next_repair = 0.0
    r.svc.plan()
    assert "gamma" not in r.get(M.thread_key(thread["id"]))["panel_settled"]   # patience first
    r.clock.advance(301)
    r.work(working)                                   # the others keep up: only gamma is behind
    r.svc.sweep()
    r.svc._next_repair = 0.0
    r.svc.plan()
    t = r.get(M.thread_key(thread["id"]))
    assert t["panel_settled"]["gamma"] == "skipped" and "gamma backlogged past member_patience" in t["extraction_note"]
    assert next(x for x in r.tasks() if x["id"] == t["panel_skipped"]["gamma"])["state"] == "CANCELLED"


def _review_seated_on(r, account: str, working):
    def seated():
        out = []
        for rv in r.values("reviews/"):
            seat = next((p for p in rv["panel"] if p["account"] == account), None)
            if rv["stage"] != "round1" or seat is None or not _backlogged(r, account):
                continue
            key = M.insight_task_key(rv["insight_id"], f"review1:{seat['reviewer']}")
            if any(t["key"] == key for t in r.tasks(state="PENDING")):
                out.append((rv, seat))
        return out
    return r.run_until(seated, accounts=working)[0]


def _past_patience_with_others_keeping_up(r, working, rv) -> dict:
    """The working accounts drain their queues (only gamma is behind), member_patience passes, and a
    full capacity pass runs; the review afterwards."""
    r.work(working)
    r.clock.advance(301)
    r.svc._next_repair = 0.0
    r.svc.plan()
    return r.get(M.review_key(rv["insight_id"]))


def test_a_reviewer_seated_on_a_backlogged_account_moves_to_a_free_one_after_patience(rig):
    r = rig(accounts=("alpha", "beta", "gamma", "delta"), settings="math_check = false\n")
    r.import_seeds()
    working = ["alpha", "beta", "delta"]
    rv, seat = _review_seated_on(r, "gamma", working)
    after = _past_patience_with_others_keeping_up(r, working, rv)
    moved = next(p for p in after["panel"] if p["reviewer"] == seat["reviewer"])
    last = after["replacements"][-1]
    assert moved["account"] in working and last["from"] == "gamma" and last["to"] == moved["account"]
    assert "gamma backlogged past member_patience" in last["why"]
    assert len({p["account"] for p in after["panel"]}) == len(after["panel"])   # still distinct models


def test_a_reviewer_on_a_backlogged_account_without_a_free_one_keeps_its_seat(rig):
    """Leaving a reviewer out is for an account without room; one that is merely slow is waited for."""
    r = rig(settings="math_check = false\n")
    r.import_seeds()
    working = ["alpha", "beta"]
    rv, seat = _review_seated_on(r, "gamma", working)
    after = _past_patience_with_others_keeping_up(r, working, rv)
    assert next(p for p in after["panel"] if p["reviewer"] == seat["reviewer"])["account"] == "gamma"
    assert seat["reviewer"] not in after["rounds"]["1"]["dropped"] and not after.get("replacements")
    # the frequent pass does not read that review again while the capacity stays the same ...
    key = M.insight_task_key(rv["insight_id"], f"review1:{seat['reviewer']}")
    r.svc.follow_capacity()
    assert key not in {t["key"] for t in r.svc._patient}
    block(r, "alpha")                                 # ... and does once it changes
    r.svc.follow_capacity()
    assert key in {t["key"] for t in r.svc._patient}


def test_a_first_turn_restricted_to_an_account_that_lost_its_room_moves_after_patience(rig):
    r = rig()
    r.import_seeds()
    r.svc.plan()
    thread = next(t for t in r.values("threads/") if len(t.get("explore_on") or []) == 1)
    target = thread["explore_on"][0]
    first = next(t for t in r.tasks(state="PENDING") if t["payload"].get("thread_id") == thread["id"])
    block(r, target)
    others = [a for a in r.accounts if a != target]
    r.step([])                                       # nothing runs; patience first
    assert r.get(M.thread_key(thread["id"])).get("first_turn_moves") is None
    r.clock.advance(301)
    r.step([])
    moved = r.get(M.thread_key(thread["id"]))
    assert moved["first_turn_moves"] == 1 and target not in (moved.get("explore_on") or [])
    assert next(t for t in r.tasks() if t["id"] == first["id"])["state"] == "CANCELLED"
    r.run_until(lambda: r.get(M.thread_key(thread["id"]))["exchanges"] >= 1, accounts=others)
    check_applied_once(r.values, r.tasks())


def test_the_repair_pass_does_not_re_propose_live_tasks_whose_prompt_changed(rig):
    """An extraction prompt lists the insights blessed so far: re-proposing a live extraction after a
    blessing would be a KEY_CONFLICT, counted as an error in `fanoctl status`, though nothing is wrong."""
    r = rig()
    r.import_seeds()
    working = ["alpha", "beta"]
    thread = r.run_until(lambda: [t for t in r.values("threads/") if t["status"] == "synthesised"
                                  and "gamma" not in t["panel_settled"]], accounts=working)[0]
    r.client.txn(M.MODULE, [txn.put(M.insight_key("zz.t1.i1"), {
        "id": "zz.t1.i1", "text": "a blessed claim", "status": "blessed", "blessed_at": r.clock.world(),
        "tags": [], "thread_id": "zz.t1"})])
    r.svc._next_repair = 0.0
    r.svc.plan()
    assert r.h.core.errors.get("KEY_CONFLICT", 0) == 0
    assert any(t["key"].endswith(":extract:gamma") for t in r.tasks(state="PENDING")), thread["id"]


# --- a conversation served by another account -------------------------------------------------------------

def test_the_critic_keeps_the_account_holding_its_conversation_after_a_hand_off():
    s = M.ExplorerSettings()
    thread = {"id": "q.t1", "explore_account": "b", "critic_account": "b"}   # the explorer moved onto b
    assert "b" in T.critic_accounts(thread, ["a", "b", "c"], s)
    assert T.critic_accounts({"id": "q.t1", "explore_account": "b"}, ["a", "b", "c"], s) == ["a", "c"]


def test_an_explore_turn_served_elsewhere_moves_the_threads_explore_account(rig):
    r = rig(settings="max_active_threads = 1\nthreads_per_account = 0\n")
    r.import_seeds()
    first = r.run_until(lambda: [t for t in r.values("threads/") if t["exchanges"] >= 2])[0]
    acct = first["explore_account"]
    other = next(a for a in r.accounts if a != acct and a != first.get("critic_account"))
    # what a hand-off does, seen from the module: the next explore turn is served by another account
    r.h.call("cooldown", account=acct, until=r.clock.world() + DAY, mode=None, reason="test")
    task = next(t for t in r.tasks(state="PENDING") if t["payload"].get("thread_id") == first["id"])
    text = "[NEW_INSIGHTS]\n- x\n[CONNECTIONS]\n- y\n[QUESTIONS]\n- z"
    done = flow.handle_turn(r.svc.env(), dict(task, state="DONE", served={"account": other, "mode": "standard"},
                                              result={"text": text}))
    put = next(op for op in done if op.get("key") == M.thread_key(first["id"]))
    assert put["value"]["explore_account"] == other
    crit = next(op for op in done if op["op"] == "submit")["task"]
    assert crit["kind"] == M.CRITIQUE
    assert other not in crit["requires"]["backends"] and first["critic_account"] in crit["requires"]["backends"]


def test_capacity_settings_are_validated():
    import pytest

    from services.modules.documenter.settings import settings_from_table as doc_settings
    from shared.config import ConfigError
    s = M.settings_from_table({"member_patience": 60, "max_waiting_threads": 0})
    assert s.member_patience == 60.0 and s.max_waiting_threads == 0
    for bad in ({"member_patience": -1.0}, {"max_waiting_threads": -1}, {"member_patience": "5m"}):
        with pytest.raises(ConfigError):
            M.settings_from_table(bad)
    assert doc_settings({"member_patience": 30}).member_patience == 30.0
    with pytest.raises(ConfigError):
        doc_settings({"member_patience": -5})


def test_a_seat_left_out_earlier_frees_its_account_for_a_later_round():
    from services.modules.explorer import review as R
    ctx = R.Ctx(M.ExplorerSettings(), "", {a: ("standard", "deep") for a in "abc"}, 1000.0)
    insight = {"id": "t.i1", "text": "A claim.", "version": 1, "versions": [], "tags": [], "priority": 5}
    review = R.new_review(insight, R.make_panel(["a", "b", "c"]), 0.0)
    review["rounds"]["1"]["responses"] = {w: {"rating": r} for w, r in (("a", "⚡"), ("b", "?"))}
    review["rounds"]["1"]["dropped"] = ["c"]               # c had no room in round 1
    review["stage"] = "round2"
    review["rounds"]["2"] = R._round(1)
    [task_b] = [t for t in R.open_tasks(review, insight, ctx) if t["payload"]["reviewer"] == "b"]
    tasks = R.replace_member(review, insight, dict(task_b, id=7), ["c"], "b blocked", ctx)
    assert review["panel"][1]["account"] == "c" and tasks[0]["requires"]["backends"] == ["c"]
    assert tasks[0]["key"].endswith("review2:b@c")
    # with both other seats counted, the only candidate is taken: two in play, so the step waits
    review2 = R.new_review(insight, R.make_panel(["a", "b", "c"]), 0.0)
    [task_a] = [t for t in R.open_tasks(review2, insight, ctx) if t["payload"]["reviewer"] == "a"]
    # 3 in play: left out
    assert R.replace_member(review2, insight, dict(task_a, id=8), ["b"], "a blocked", ctx) is not None
    assert review2["rounds"]["1"]["dropped"] == ["a"]
    [task_b2] = [t for t in R.open_tasks(review2, insight, ctx) if t["payload"]["reviewer"] == "b"]
    assert R.replace_member(review2, insight, dict(task_b2, id=9), ["c"], "b blocked", ctx) is None      # 2 left: waits


def test_a_skipped_extractors_task_is_cancelled_after_a_restart_even_once_the_panel_closed(rig):
    r = rig(settings="max_active_threads = 1\nthreads_per_account = 0\n")
    r.import_seeds()
    working = ["alpha", "beta"]
    thread = r.run_until(lambda: [t for t in r.values("threads/") if t["status"] == "synthesised"
                                  and set(t["panel_settled"]) == {"alpha", "beta"}], accounts=working)[0]
    block(r, "gamma")
    r.clock.advance(301)
    r.svc._cancel = lambda *a, **k: None           # dies between its transaction and the cancel
    r.svc.plan()
    t = r.get(M.thread_key(thread["id"]))
    assert t["panel_closed"] and t["panel_settled"]["gamma"] == "skipped"
    old = t["panel_skipped"]["gamma"]
    assert next(x for x in r.tasks() if x["id"] == old)["state"] == "PENDING"
    r.svc = r.new_module()
    r.svc.plan()
    assert next(x for x in r.tasks() if x["id"] == old)["state"] == "CANCELLED"


def test_a_tasks_thread_is_read_from_its_payload_or_else_from_its_key():
    """Load views list PENDING tasks without payloads (prompts are most of the bytes)."""
    assert M.task_thread_id({"payload": {"thread_id": "q-a.t3"}}) == "q-a.t3"
    assert M.task_thread_id({"key": M.turn_task_key("q-a.t3", 2, 1)}) == "q-a.t3"
    assert M.task_thread_id({"key": M.thread_task_key("q-a.t3", "extract:gamma")}) == "q-a.t3"
    assert M.task_thread_id({"key": M.insight_task_key("q-a.t3.i2", "dedup")}) is None
    assert M.task_thread_id({"key": "adhoc:x:y"}) is None


def test_an_insight_tasks_insight_is_read_from_its_payload_or_else_from_its_key():
    """The capacity pass lists PENDING tasks without payloads and finds the reviews to follow by key."""
    assert M.task_insight_id({"payload": {"insight_id": "q-a.t3.i2"}}) == "q-a.t3.i2"
    assert M.task_insight_id({"key": M.insight_task_key("q-a.t3.i2", "review1:r2", 1)}) == "q-a.t3.i2"
    assert M.task_insight_id({"key": M.insight_task_key("q-a.t3.i2", "review3:vote:r1")}) == "q-a.t3.i2"
    assert M.task_insight_id({"key": M.thread_task_key("q-a.t3", "synthesis")}) is None
    assert M.task_insight_id({"key": "adhoc:x:y"}) is None
