"""The explorer module against the real broker core in-process (no sockets): the whole flow, exactly-once
application, unusable answers and retries, parked and cancelled tasks, paused threads, human overrides,
stale results, a restarted module, and a panel member that never answers.

A :class:`Rig` plays the scheduler and the workers: it leases every runnable task for each sim account
and completes it with the simulated provider's answer (or a test's own), then lets the module apply the
settled results (``sweep``) and plan.
"""
from __future__ import annotations

from typing import Any

import pytest

from services.backends import sim_answers as S
from services.modules.explorer import context as C
from services.modules.explorer import model as M
from services.modules.explorer.seeds import load_file
from services.modules.explorer.service import ExplorerService
from shared import txn
from tests.support import REPO
from tests.unit.modhelp import ModuleRig

ACCOUNTS = ("alpha", "beta", "gamma")


class Rig(ModuleRig[ExplorerService]):
    """The explorer on the modules' rig (tests/unit/modhelp.py), answered by the simulated provider."""

    def __init__(self, root, accounts=ACCOUNTS, settings: str = "", seed: int = 7, reviews=None):
        super().__init__(ExplorerService, root=root, accounts=accounts, broker={"default_max_attempts": 2},
                         table="repair_interval = 0.0\n" + settings)
        self.seed, self.reviews = seed, reviews or {"good": 0.5, "bad": 0.2, "agree": 0.85, "persuade": 0.4}
        self.answer = self.sim_answer
        self.served: dict[Any, Any] = {}        # task id -> account
        self.svc = self.new_module()

    def new_module(self) -> ExplorerService:
        """A module process as it starts (``initialize`` without its sockets)."""
        svc = self.new_service()
        svc.settings = M.load_settings(self.h.cfg)
        svc._next_repair = 0.0
        return svc

    def sim_answer(self, task: dict, account: str, mode: str) -> str:
        rng = S.derive_rng(self.seed, account, task["key"])
        text = S.answer(task["kind"], task["payload"], task["payload"].get("prompt", ""), mode, rng, seed=self.seed,
                        account=account, reviews=self.reviews)
        return S.decorate(text, task["kind"], rng, sloppy_rate=0.3)

    def import_seeds(self, path=REPO / "seeds" / "demo.toml") -> None:
        self.client.txn(M.MODULE, [txn.put(M.seed_key(s["id"]), s) for s in load_file(str(path), self.clock.world())])

    def work(self, accounts=None) -> int:
        """Lease and complete everything runnable on ``accounts``; returns how many tasks ran."""
        ran = 0
        for acct in accounts or self.accounts:
            while True:
                r = self.h.call("lease", worker=f"backend-{acct}", account=acct, backend="sim",
                                modes=["standard", "deep"], ttl=60.0)
                if not r.get("task"):
                    break
                task = r["task"]
                text = self.answer(task, acct, r["mode"])
                self.served[task["id"]] = acct
                if text is None:    # a test's way to say: fail it terminally
                    self.h.call("fail", id=task["id"], epoch=r["epoch"], error_class="terminal", message="400 bad")
                else:
                    self.h.call("complete", id=task["id"], epoch=r["epoch"], result={"text": text, "meta": {}})
                ran += 1
        return ran

    def step(self, accounts=None) -> int:
        ran = self.work(accounts)
        self.svc.sweep()
        self.svc.plan()
        return ran

    def run_until(self, predicate, steps: int = 200, accounts=None):
        for _ in range(steps):
            self.step(accounts)
            value = predicate()
            if value:
                return value
        raise AssertionError("the flow did not get there")

    # --- reading ------------------------------------------------------------------------------------------

    def values(self, prefix: str) -> list:
        return self.svc.store.records(prefix)

    def get(self, key: str):
        return self.svc.store.get(key)[1]

    def blessed(self) -> list:
        return [i for i in self.values("insights/") if i["status"] == "blessed"]


def check_applied_once(values, tasks: list[dict]) -> None:
    """Every settled task is consumed and left exactly one trace (a record naming it, or an error).

    ``values(prefix)`` lists the explorer's records under a prefix; ``tasks`` are all explorer tasks."""
    by_id = {t["id"]: t for t in tasks}
    settled = {i: t for i, t in by_id.items() if t["state"] in ("DONE", "PARKED", "CANCELLED")}
    assert all(t["consumed"] for t in settled.values()), [t for t in settled.values() if not t["consumed"]]
    traces = [e["task_id"] for e in values("exchanges/")]
    traces += [s["task_id"] for s in values("syntheses/")] + [p["task_id"] for p in values("proposals/")]
    traces += sorted({i["task_id"] for i in values("insights/")})
    traces += [i["dedup"]["llm"]["task_id"] for i in values("insights/") if i["dedup"].get("llm")]
    for rv in values("reviews/"):
        for rd in rv["rounds"].values():
            traces += [r["task_id"] for r in rd["responses"].values()]
        if rv.get("math") and rv["math"].get("task_id"):
            traces.append(rv["math"]["task_id"])
        for part in ("argument", "answer"):
            if (rv.get("deliberation") or {}).get(part) and "task_id" in rv["deliberation"][part]:
                traces.append(rv["deliberation"][part]["task_id"])
        changes = [(m["reviewer"], m["round"]) for m in rv["mind_changes"]]
        assert len(changes) == len(set(changes)), rv["mind_changes"]
        assert len({w["round"] for w in rv["rewordings"]}) == len(rv["rewordings"]), rv["rewordings"]
    errors = [e["task_id"] for e in values("errors/")]
    assert len(traces) == len(set(traces)), "a result was applied twice"
    assert len(errors) == len(set(errors)) and not set(traces) & set(errors)
    unaccounted = set(settled) - set(traces) - set(errors)
    assert not unaccounted, [by_id[i]["key"] for i in unaccounted]
    for thread in values("threads/"):
        ex = values(f"exchanges/{thread['id']}/")
        assert [e["turn"] for e in ex] == list(range(1, thread["exchanges"] + 1))
        assert thread["critiques"] == sum(1 for e in ex if e["role"] == "critique")
        usable = [t for t in settled.values() if t["kind"] in (M.EXPLORE, M.CRITIQUE) and t["state"] == "DONE"
                  and t["payload"]["thread_id"] == thread["id"] and t["id"] not in errors]
        assert len(usable) == thread["exchanges"]        # exchanges == DONE turn tasks with a usable answer


# --- the whole flow ---------------------------------------------------------------------------------------

@pytest.mark.slow   # over 2 s: left out by -m "not slow" (README, "Tests")
def test_demo_seeds_to_blessed_insights(rig):
    r = rig(settings="max_active_threads = 2\nthreads_per_account = 0\n")
    r.import_seeds()
    r.step()
    first = sorted(t["seed_id"] for t in r.values("threads/"))
    assert first == ["q-difference-set", "q-why-168"]          # questions first, then by priority
    r.run_until(lambda: len(r.blessed()) >= 3 and any(rv["stage"] == "done" and rv["outcome"]["round"] == 3
                                                       for rv in r.values("reviews/")))
    check_applied_once(r.values, r.tasks())
    tasks = r.tasks()
    turns = {t["key"]: t for t in tasks if t["kind"] in (M.EXPLORE, M.CRITIQUE)}
    for thread in r.values("threads/"):
        explorer = thread.get("explore_account")
        for k in range(2, thread["exchanges"] + 1, 2):
            crit = turns[M.turn_task_key(thread["id"], k)]
            assert crit["requires"]["conversation"] == M.conversation(thread["id"], critic=True)
            assert explorer not in crit["requires"]["backends"]          # the critic is someone else
            assert r.served[crit["id"]] != explorer
        if thread["exchanges"]:
            assert turns[M.turn_task_key(thread["id"], 1)]["requires"]["conversation"] == M.conversation(thread["id"])
    kinds = {t["kind"]: t for t in tasks}
    assert kinds[M.SYNTHESIS]["requires"] == {"mode": "deep", "deep_fallback": True}
    assert kinds[M.REVIEW2]["requires"]["mode"] == "deep" and kinds[M.REVIEW2]["requires"]["deep_fallback"] is False
    assert kinds[M.REVIEW1]["requires"].get("mode", "standard") == "standard"
    assert all(t["priority"] == 50 and t["attrs"]["seed_priority"] in range(1, 11) for t in tasks)
    ins = r.blessed()[0]
    assert ins["decided_by"] == "panel" and ins["blessed_at"] and ins["text"] == ins["versions"][-1]["text"]
    extracted = [t for t in r.values("threads/") if t["status"] == "extracted"]
    assert extracted and all(set(t["panel_settled"]) == set(ACCOUNTS) for t in extracted)


def test_a_replayed_result_is_a_no_op(rig):
    r = rig(settings="max_active_threads = 1\nthreads_per_account = 0\n")
    r.import_seeds()
    r.run_until(lambda: r.values("exchanges/"))
    done = [t for t in r.tasks(state="DONE") if t["kind"] == M.EXPLORE][0]
    before = r.get(M.thread_key(done["payload"]["thread_id"]))
    assert r.svc.apply(r.client.get(done["id"], history=False)) is False
    assert r.new_module().apply(r.client.get(done["id"], history=False)) is False
    assert r.get(M.thread_key(done["payload"]["thread_id"])) == before


@pytest.mark.slow   # over 2 s: left out by -m "not slow" (README, "Tests")
def test_a_restarted_module_carries_on(rig):
    r = rig(settings="max_active_threads = 2\nthreads_per_account = 0\n")
    r.import_seeds()
    for n in range(400):
        r.work()
        if n % 3 == 0:
            r.svc = r.new_module()          # a new process: nothing in memory
        r.svc.sweep()
        r.svc.plan()
        if len(r.blessed()) >= 2:
            break
    assert len(r.blessed()) >= 2
    check_applied_once(r.values, r.tasks())


# --- unusable answers, parked and cancelled tasks ---------------------------------------------------------

def test_unusable_turn_answers_are_recorded_retried_then_the_thread_pauses(rig):
    r = rig(settings="max_active_threads = 1\nthreads_per_account = 0\nmax_retries = 2\n")
    r.import_seeds()
    r.answer = lambda task, acct, mode: "I'm sorry, but I can't help with that request." \
        if task["kind"] == M.EXPLORE else r.sim_answer(task, acct, mode)
    tid = "q-why-168.t1"
    thread = r.run_until(lambda: (r.get(M.thread_key(tid)) or {}).get("status") == "paused"
                         and r.get(M.thread_key(tid)))
    assert thread["status"] == "paused" and thread["paused_from"] == "active" and thread["exchanges"] == 0
    assert "unusable answer" in thread["last_error"] and "explorer.explore failed" in thread["pause_reason"]
    keys = sorted(t["key"] for t in r.tasks() if t["payload"].get("thread_id") == tid)
    assert keys == [M.turn_task_key(tid, 1), M.turn_task_key(tid, 1, 1), M.turn_task_key(tid, 1, 2)]
    errors = [e for e in r.values("errors/") if e["key"] in keys]
    assert len(errors) == 3 and all("NEW_INSIGHTS" in e["error"] and e["answer"] for e in errors)
    assert r.get(M.thread_key("q-difference-set.t1"))      # a paused thread is not open: the next seed starts
    # a human resumes it: the next pass re-asks with a new key, and the thread goes on
    r.answer = r.sim_answer
    version, t = r.svc.store.get(M.thread_key(tid))
    r.client.txn(M.MODULE, [txn.put(M.thread_key(tid), dict(t, status="active", paused_from=None), if_version=version)])
    r.run_until(lambda: r.get(M.thread_key(tid))["exchanges"] >= 2)
    retry3 = [t for t in r.tasks() if t["key"] == M.turn_task_key(tid, 1, 3)][0]
    assert r.get(M.exchange_key(tid, 1))["task_id"] == retry3["id"] and retry3["payload"]["retry"] == 3
    check_applied_once(r.values, r.tasks())


def test_a_parked_task_is_re_asked_and_a_cancelled_one_pauses_the_thread(rig):
    r = rig(settings="max_active_threads = 1\nthreads_per_account = 0\n")
    r.import_seeds()
    r.answer = lambda task, acct, mode: None if task["kind"] == M.EXPLORE and "retry" not in task["payload"] \
        else r.sim_answer(task, acct, mode)
    r.run_until(lambda: any(t["state"] == "PARKED" for t in r.tasks()))
    r.run_until(lambda: r.values("exchanges/"))
    tid = r.values("threads/")[0]["id"]
    assert r.get(M.exchange_key(tid, 1))["task_id"] == [t for t in r.tasks()
                                                        if t["key"] == M.turn_task_key(tid, 1, 1)][0]["id"]
    assert "task PARKED" in r.values("errors/")[0]["error"]
    # the operator cancels the pending critique: recorded, not re-asked, the thread waits for a human
    crit = [t for t in r.tasks(state="PENDING") if t["kind"] == M.CRITIQUE][0]
    r.client.cancel(crit["id"], "not now")
    r.svc.sweep()
    thread = r.get(M.thread_key(tid))
    assert thread["status"] == "paused" and "CANCELLED" in thread["last_error"]
    assert not [t for t in r.tasks(state="PENDING") if t["kind"] == M.CRITIQUE]
    check_applied_once(r.values, r.tasks())


@pytest.mark.slow   # over 2 s: left out by -m "not slow" (README, "Tests")
def test_an_unusable_reviewer_is_dropped_and_the_panel_decides_without_it(rig):
    r = rig(settings="max_active_threads = 1\nthreads_per_account = 0\nmax_retries = 1\nmath_check = false\n")
    r.import_seeds()
    r.answer = lambda task, acct, mode: "Thinking...\n\nThe user wants" \
        if task["kind"] == M.REVIEW1 and task["payload"]["reviewer"] == "gamma" else r.sim_answer(task, acct, mode)
    rv = r.run_until(lambda: [v for v in r.values("reviews/") if "gamma" in v["rounds"]["1"]["dropped"]])[0]
    assert rv["rounds"]["1"]["retries"]["gamma"] == 2 and "gamma" not in rv["rounds"]["1"]["responses"]
    r.run_until(lambda: r.get(M.review_key(rv["insight_id"]))["stage"] in ("done", "stalled"))
    final = r.get(M.review_key(rv["insight_id"]))
    assert final["stage"] == "done"
    assert "gamma" not in final["rounds"].get("2", {"responses": {}})["responses"]   # dropped in R1: out of R2
    check_applied_once(r.values, r.tasks())


# --- humans, pauses, stale results ------------------------------------------------------------------------

def test_a_human_override_stops_the_review(rig):
    r = rig(settings="max_active_threads = 1\nthreads_per_account = 0\n")
    r.import_seeds()
    iid = r.run_until(lambda: [i["id"] for i in r.values("insights/") if i["status"] == "pending"
                               and r.get(M.review_key(i["id"]))])[0]
    version, ins = r.svc.store.get(M.insight_key(iid))
    r.client.txn(M.MODULE,
                 [txn.put(M.insight_key(iid), dict(ins, status="rejected", decided_by="human"), if_version=version)])
    r.step()
    r.step()
    assert r.get(M.review_key(iid))["stage"] == "stopped"
    assert r.get(M.insight_key(iid))["status"] == "rejected"
    assert not [t for t in r.tasks(state="PENDING") if t["payload"].get("insight_id") == iid]


def test_a_paused_thread_records_answers_but_proposes_nothing(rig):
    r = rig(settings="max_active_threads = 1\nthreads_per_account = 0\n")
    r.import_seeds()
    r.step()
    tid = r.values("threads/")[0]["id"]
    version, t = r.svc.store.get(M.thread_key(tid))
    r.client.txn(M.MODULE,
                 [txn.put(M.thread_key(tid), dict(t, status="paused", paused_from="active"), if_version=version)])
    for _ in range(3):
        r.step()
    t = r.get(M.thread_key(tid))
    assert t["status"] == "paused" and t["exchanges"] == 1                  # turn 1 recorded ...
    assert not [x for x in r.tasks() if x["key"] == M.turn_task_key(tid, 2)]  # ... and no turn 2
    assert len(r.values("threads/")) == 2       # a paused thread is not open: another seed got a thread
    version, t = r.svc.store.get(M.thread_key(tid))
    r.client.txn(M.MODULE, [txn.put(M.thread_key(tid), dict(t, status="active", paused_from=None), if_version=version)])
    r.run_until(lambda: r.get(M.thread_key(tid))["exchanges"] >= 3)


def test_a_stale_result_is_acked_without_effect(rig):
    r = rig(settings="max_active_threads = 1\nthreads_per_account = 0\n")
    r.import_seeds()
    r.run_until(lambda: r.values("exchanges/"))
    tid = r.values("threads/")[0]["id"]
    r.client.submit(M.turn_task_key(tid, 7), M.MODULE, M.EXPLORE, {"thread_id": tid, "turn": 7, "prompt": "x"})
    r.client.submit("explorer:nobody.i1:review1:alpha", M.MODULE, M.REVIEW1,
                    {"insight_id": "nobody.i1", "reviewer": "alpha"})
    r.work()
    r.svc.sweep()
    assert M.exchange_key(tid, 7) not in [f"exchanges/{e['thread_id']}/{e['turn']:03d}" for e in r.values("exchanges/")]
    assert all(t["consumed"] for t in r.tasks(state="DONE"))


def test_a_panel_member_that_never_answers_is_waited_for_then_left_out(rig):
    r = rig(settings="max_active_threads = 1\nthreads_per_account = 0\nextract_patience = 600.0\n")
    r.import_seeds()
    working = ["alpha", "beta"]   # gamma's worker is down for good
    thread = r.run_until(lambda: [t for t in r.values("threads/") if t["status"] == "synthesised"
                                  and set(t["panel_settled"]) == {"alpha", "beta"}], accounts=working)[0]
    assert not thread.get("panel_closed")
    r.clock.advance(601)
    r.run_until(lambda: r.get(M.thread_key(thread["id"]))["status"] == "extracted", accounts=working)
    t = r.get(M.thread_key(thread["id"]))
    assert "without gamma" in t["extraction_note"] and t["insight_ids"]


def test_served_account_and_mode(rig):
    r = rig()
    env = r.svc.env()
    assert env.served({"id": 1, "requires": {"backends": ["beta"]}, "result": {"text": ""}}) == \
        {"account": "beta", "mode": "standard"}
    assert env.served({"id": 1, "requires": {"mode": "deep", "deep_fallback": False}, "served": {"account": "a"}}) == \
        {"account": "a", "mode": "deep"}
    assert env.served({"id": 1, "requires": {"mode": "deep", "deep_fallback": True},
                       "result": {"meta": {"account": "a"}}}) == \
        {"account": "a", "mode": None}                       # a fallback leaves the mode unknown unless told
    assert env.served({"id": 1, "requires": {}, "result": {"served": {"account": "c", "mode": "deep"}}}) == \
        {"account": "c", "mode": "deep"}


def test_the_blessed_list_in_prompts_holds_the_most_recently_blessed():
    from services.modules.explorer.extraction import blessed_list
    insights = [{"id": f"t{n}-i1", "status": "blessed", "text": f"claim {n}", "blessed_at": 1000.0 - n}
                for n in range(5)] + [{"id": "t9-i1", "status": "pending", "text": "not yet"}]
    text = blessed_list(insights, limit=2)
    assert "claim 0" in text and "claim 1" in text and "claim 4" not in text and "not yet" not in text


def test_every_task_kind_has_a_handler_and_an_unusable_step():
    """The service's two tables (docs/modules.md § Module style) cover every kind the explorer submits:
    a kind missing from HANDLERS would be acked without effect, one missing from UNUSABLE never re-asked."""
    from services.modules.explorer import service as SV
    assert set(SV.HANDLERS) == set(M.KINDS)
    assert set(SV.UNUSABLE) == set(M.KINDS)


def test_a_repair_pass_reads_the_insights_and_seeds_once_however_many_threads_are_open(rig):
    """The whole-history prefixes are read once per Env: the repair pass rebuilds every open thread's task
    from one snapshot instead of reading every insight again for each synthesised thread."""
    r = rig()
    r.import_seeds()
    for _ in range(6):
        r.step()
    threads = r.values("threads/")
    reads: list[str] = []
    real = r.svc.store.scan
    r.svc.store.scan = lambda prefix: reads.append(prefix) or real(prefix)   # type: ignore[method-assign]
    kept = r.svc.kept("insights/")   # the insights: kept by the service, brought up to date by versions
    refreshes: list[int] = []
    refresh = kept.refresh
    kept.refresh = lambda: refreshes.append(1) or refresh()   # type: ignore[method-assign]
    env = r.svc.env()
    for thread in threads:
        C.thread_tasks(env, dict(thread, status="synthesised", panel_closed=True, panel_settled={}))
        C.thread_tasks(env, dict(thread, status="active"))
    assert len(threads) >= 2
    assert len(refreshes) == 1 and reads.count("seeds/") == 1, reads
    assert reads.count("insights/") == 0, reads   # read whole once already, by the steps before
    before = kept.reads
    C.thread_tasks(r.svc.env(), dict(threads[0], status="synthesised", panel_closed=True, panel_settled={}))
    assert len(refreshes) == 2 and reads.count("insights/") == 0 and kept.reads == before, reads
