"""Evaluation panels follow capacity: drawn from accounts with room, a slot blocked past member_patience
moved to a distinct account with room or left out, late answers and cancels of the old task ignored."""
from services.modules import capacity as CAP
from services.modules.documenter import context as C
from services.modules.documenter import flow, seats
from services.modules.documenter.settings import Settings
from shared import txn
from tests.unit.dochelp import NOW, Run
from tests.unit.test_documenter_flow import INCLUDE, job, pending, plan_once

MODES = ("standard", "deep")


class CapRun(Run):
    """The documenter on the in-process core, with the accounts' headroom given by the test."""

    def __init__(self, accounts=("a", "b", "c", "d"), blocked=(), **kw):
        super().__init__(accounts=accounts, settings=Settings(evaluators=3), **kw)
        self.svc.capacity = lambda: self.cap   # the headroom the test gives, not the broker's
        self.block(*blocked)

    def block(self, *accounts):
        self.cap = CAP.Capacity("documenter", self.now, {a: MODES for a in self.accounts},
                                {(a, "standard"): (self.now + 3600, "no standard quota left") for a in accounts})

    def live(self, age=400.0):
        """The PENDING tasks by key, as the broker lists them to the service (no payloads), as if
        submitted ``age`` seconds ago."""
        listed = CAP.pending(self.client, "documenter", payloads=False)
        return {key: dict(t, created=self.now - age) for key, t in listed.items()}

    def follow(self, age=400.0):
        moves, stale = seats.follow(self.env(), self.cap, self.live(age))
        for ops, abandoned in moves:
            self.store.txn(ops)
            stale.append(abandoned)
        return stale


def test_a_new_panel_is_drawn_from_accounts_with_room():
    run = CapRun(accounts=("a", "b", "c"), blocked=("b",))
    run.bless("x", "The Fano plane has 21 flags.")
    plan_once(run, "INCORPORATE\nINSIGHT_ID: x")
    assert sorted(s["account"] for s in job(run, "x")["slots"]) == ["a", "c"]
    run = CapRun(accounts=("a", "b", "c"), blocked=("b", "c"))      # fewer than two with room: as before
    run.bless("x", "The Fano plane has 21 flags.")
    plan_once(run, "INCORPORATE\nINSIGHT_ID: x")
    assert len(job(run, "x")["slots"]) == 3


def test_a_blocked_evaluator_moves_to_a_distinct_account_and_its_old_answer_is_ignored():
    run = CapRun()
    run.bless("x", "The Fano plane has 21 flags.")
    plan_once(run, "INCORPORATE\nINSIGHT_ID: x")
    slots = job(run, "x")["slots"]
    on_panel = [s["account"] for s in slots]
    spare = next(a for a in run.accounts if a not in on_panel)
    victim = slots[1]
    run.block(victim["account"])
    assert run.follow(age=10.0) == []                               # patience first
    stale = run.follow()
    moved = job(run, "x")["slots"][1]
    assert moved["name"] == victim["name"] and moved["account"] == spare and moved["replaced"] == [victim["account"]]
    old_key = flow.slot_key("x", 1, 2, victim)
    assert stale and job(run, "x")["replaced_tasks"] == stale
    old = run.submitted[old_key]
    run.settle(old, state="CANCELLED")                              # the cancel: no dispute
    assert job(run, "x")["disputes"] == 0 and job(run, "x")["stage"] == "evaluate"
    new = next(s for s in pending(run, C.EVALUATE) if s["key"].endswith(f"@{spare}"))
    assert new["requires"] == {"backends": [spare]} and new["payload"]["evaluator"] == victim["name"]
    for spec in pending(run, C.EVALUATE):
        run.settle(spec, text=INCLUDE)
    assert job(run, "x")["stage"] == "draft"


def test_a_late_answer_of_the_old_task_is_not_counted():
    run = CapRun()
    run.bless("x", "The Fano plane has 21 flags.")
    plan_once(run, "INCORPORATE\nINSIGHT_ID: x")
    victim = job(run, "x")["slots"][0]
    old = run.submitted[flow.slot_key("x", 1, 1, victim)]
    run.block(victim["account"])
    run.follow()
    run.settle(old, text="DECISION: EXCLUDE\nREASONING: late")     # it ran after all: stale
    assert victim["name"] not in job(run, "x").get("evals", {})


def test_without_a_distinct_account_a_slot_is_left_out_while_two_remain():
    run = CapRun(accounts=("a", "b", "c"))
    run.bless("x", "The Fano plane has 21 flags.")
    plan_once(run, "INCORPORATE\nINSIGHT_ID: x")
    slots = job(run, "x")["slots"]
    for spec in pending(run, C.EVALUATE):
        if spec["requires"]["backends"][0] != slots[2]["account"]:
            run.settle(spec, text=INCLUDE)
    run.block(slots[2]["account"])
    run.follow()
    j = job(run, "x")
    assert j["slots"][2].get("dropped") and j["stage"] == "draft"   # the two counted verdicts decide
    # a panel of two never loses a slot
    run = CapRun(accounts=("a", "b"))
    run.bless("y", "The Fano plane has 7 lines.")
    plan_once(run, "INCORPORATE\nINSIGHT_ID: y")
    run.block("a")
    run.follow()
    assert not any(s.get("dropped") for s in job(run, "y")["slots"]) and job(run, "y")["stage"] == "evaluate"


def test_the_abandoned_task_is_cancelled_again_on_a_later_pass():
    run = CapRun()
    run.bless("x", "The Fano plane has 21 flags.")
    plan_once(run, "INCORPORATE\nINSIGHT_ID: x")
    run.block(job(run, "x")["slots"][0]["account"])
    first = run.follow()
    assert run.follow() == first        # still PENDING (nobody cancelled it): named again
    assert NOW == run.now


# --- the service against the real broker core ----------------------------------------------------------

def test_the_service_moves_a_blocked_evaluator_through_the_broker():
    run = Run(accounts=("alpha", "beta", "gamma", "delta"), table="evaluators = 3\nmember_patience = 60.0")
    h, client, clock, svc = run.h, run.client, run.clock, run.svc
    client.txn("explorer", [txn.put("insights/x", {"id": "x", "text": "The Fano plane has 21 flags.",
                                                     "status": "blessed", "tags": [], "priority": 5})])
    svc.plan()
    [plan] = client.list(state="PENDING", module="documenter")["tasks"]
    r = h.call("lease", worker="backend-alpha", account="alpha", backend="sim", modes=["standard", "deep"],
               ttl=60.0, task_id=plan["id"])
    h.call("complete", id=plan["id"], epoch=r["epoch"], result={"text": "DECISION: INCORPORATE\nINSIGHT_ID: x"})
    svc.sweep()
    evals = client.list(state="PENDING", module="documenter", kind=C.EVALUATE)["tasks"]
    assert len(evals) == 3
    on_panel = {t["requires"]["backends"][0] for t in evals}
    victim = evals[0]
    acct = victim["requires"]["backends"][0]
    client.quota_set(acct, "standard", ["0/3h"])          # its window is used up
    svc.follow_capacity()
    assert client.get(victim["id"])["state"] == "PENDING"  # not before member_patience
    clock.advance(61)
    svc.follow_capacity()
    assert client.get(victim["id"])["state"] == "CANCELLED"
    spare = ({"alpha", "beta", "gamma", "delta"} - on_panel).pop()
    moved = [t for t in client.list(state="PENDING", module="documenter", kind=C.EVALUATE)["tasks"]
             if t["requires"]["backends"] == [spare]]
    assert len(moved) == 1 and moved[0]["key"].endswith(f"@{spare}")
    svc.sweep()                                            # the cancelled task: acked, no dispute
    job = svc.store.get("jobs/x")[1]
    assert job["disputes"] == 0 and job["stage"] == "evaluate" and job["replaced_tasks"] == [victim["id"]]
