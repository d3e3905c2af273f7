"""``fanoctl seeds|threads|insights`` against the real broker core in-process (click's runner; the
explorer's data made by the module itself, see test_explorer_flow.Rig)."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from cli import research_explorer
from cli.app import Ctl
from cli.fanoctl import main
from services.modules.explorer import model as M
from shared import txn
from tests.support import REPO
from tests.unit.test_explorer_flow import Rig


@pytest.fixture
def rig(tmp_path, monkeypatch):
    r = Rig(tmp_path / "rig", settings="max_active_threads = 1\nthreads_per_account = 0\n")
    monkeypatch.setattr(Ctl, "client", lambda self: r.client)
    yield r
    r.h.close()


assert research_explorer.seeds.name in main.commands   # importing it registers the commands on fanoctl


def ctl(*args, ok=True):
    res = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert (res.exit_code == 0) == ok, res.output
    return res


def js(*args):
    return json.loads(ctl("--json", *args).output)


def test_seeds(rig):
    assert js("seeds", "import", str(REPO / "seeds" / "demo.toml"))["added"]
    again = js("seeds", "import", str(REPO / "seeds" / "demo.toml"))
    assert again["added"] == [] and again["updated"] == [] and len(again["unchanged"]) == 7
    s = js("seeds", "add", "Why does 7 = 2^3 - 1 matter?", "--type", "question", "--priority", "high", "--tag",
           "Numbers")
    assert s["priority"] == 8 and s["tags"] == ["numbers"] and s["type"] == "question"
    assert "exists" in ctl("seeds", "add", "Why does 7 = 2^3 - 1 matter?", "--type", "question", ok=False).output
    assert "priority must be" in ctl("seeds", "add", "x", "--priority", "11", ok=False).output
    edited = js("seeds", "edit", s["id"], "--text", "Why is 7 a Mersenne prime here?", "--type", "conjecture")
    assert edited["text"].startswith("Why is 7") and edited["type"] == "conjecture" and edited["priority"] == 8
    listing = ctl("seeds", "ls").output
    assert "q-why-168" in listing
    assert listing.index("q-why-168") < listing.index("c-octonions") < listing.index("ax-fano")
    assert js("seeds", "rm", s["id"]) == {"removed": s["id"]}
    assert "NOT_FOUND" in ctl("seeds", "rm", s["id"], ok=False).output
    assert len(js("seeds", "ls", "--type", "axiom")["seeds"]) == 3


def test_threads_and_insights(rig):
    ctl("seeds", "import", str(REPO / "seeds" / "demo.toml"))
    r = rig
    r.run_until(lambda: [i for i in r.values("insights/") if i["status"] not in ("pending", "duplicate")]
                and [i for i in r.values("insights/") if i["status"] == "pending" and r.get(M.review_key(i["id"]))])
    threads = js("threads", "ls")["threads"]
    tid = [t for t in threads if t["status"] == "extracted"][0]["id"]
    shown = js("threads", "show", tid)
    assert len(shown["exchanges"]) == shown["thread"]["exchanges"] and shown["synthesis"]["title"]
    text = ctl("threads", "show", tid).output
    assert "=== turn 1: EXPLORE" in text and "=== turn 2: CRITIQUE" in text and "=== SYNTHESIS" in text
    assert "ready because" in text and "=== INSIGHTS ===" in text
    # an exchange stores its prompt by reference to the exchanges it quotes; --prompts shows it whole
    stored = r.values(f"exchanges/{tid}/")
    assert all("prompt" not in e and "prompt_ref" in e for e in stored)
    assert sum(len(e["prompt_ref"]) for e in stored) < sum(len(r.client.get(e["task_id"])["payload"]["prompt"])
                                                           for e in stored)
    assert all("prompt" not in e and "prompt_ref" not in e for e in shown["exchanges"])
    # nor its sections when its response gives them back; shown as before
    assert [e for e in stored if "sections" in e] == [] and len(stored) == len(shown["exchanges"])
    assert all(e["sections"] and "NEW_INSIGHTS" in shown["exchanges"][0]["sections"] for e in shown["exchanges"])
    with_prompts = js("threads", "show", tid, "--prompts")["exchanges"]
    first = with_prompts[0]
    assert first["prompt"] and first["prompt"] == r.client.get(first["task_id"])["payload"]["prompt"]
    assert [e["response"] for e in with_prompts] == [e["response"] for e in shown["exchanges"]]
    assert "--- prompt ---\n" + first["prompt"] in ctl("threads", "show", tid, "--prompts").output
    r.client.call("compact", older_than=0)  # task retention drops the payloads: the record keeps the prompts
    assert js("threads", "show", tid, "--prompts")["exchanges"] == with_prompts
    assert js("threads", "show", tid)["exchanges"] == shown["exchanges"]
    # an exchange written before prompts were kept by reference: its own copy, else its task's payload
    old = dict(stored[0], prompt="the old copy")
    old.pop("prompt_ref")
    r.client.txn(M.MODULE, [txn.put(M.exchange_key(tid, 1), old)])
    assert js("threads", "show", tid, "--prompts")["exchanges"][0]["prompt"] == "the old copy"
    old.pop("prompt")
    r.client.txn(M.MODULE, [txn.put(M.exchange_key(tid, 1), old)])
    assert js("threads", "show", tid, "--prompts")["exchanges"][0]["prompt"] is None    # its task was compacted
    assert "(not kept: task" in ctl("threads", "show", tid, "--prompts").output
    decided = [i for i in js("insights", "ls")["insights"] if i["status"] in ("blessed", "rejected", "interesting")][0]
    text = ctl("insights", "show", decided["id"]).output
    assert "round 1 (v1)" in text and "outcome:" in text
    # a human blesses an insight under review: the review stops, the override is recorded
    pending = [i for i in js("insights", "ls", "--status", "pending")["insights"] if r.get(M.review_key(i["id"]))][0]
    blessed = js("insights", "bless", pending["id"], "--note", "I know this one")
    assert blessed["status"] == "blessed" and blessed["decided_by"] == "human" and blessed["blessed_at"]
    assert blessed["overrides"][-1] == {"from": "pending", "to": "blessed", "at": blessed["overrides"][-1]["at"],
                                        "note": "I know this one"}
    assert r.get(M.review_key(pending["id"]))["stage"] == "stopped"
    assert js("insights", "priority", pending["id"], "9")["priority"] == 9
    assert "NOT_FOUND" in ctl("insights", "show", "no.such", ok=False).output
    # threads: pause / resume / archive
    open_ = [t for t in js("threads", "ls")["threads"] if t["status"] in ("active", "ready", "synthesised")]
    if open_:
        t = open_[0]
        paused = js("threads", "pause", t["id"])
        assert paused["status"] == "paused" and paused["paused_from"] == t["status"]
        assert js("threads", "resume", t["id"])["status"] == t["status"]
    archived = js("threads", "archive", tid)
    assert archived["status"] == "archived" and archived["paused_from"] == "extracted"
    assert "INVALID_STATE" in ctl("threads", "pause", tid, ok=False).output
    assert js("threads", "resume", tid)["status"] == "extracted"


def test_seed_priority_follows_to_open_threads(rig):
    ctl("seeds", "import", str(REPO / "seeds" / "demo.toml"))
    rig.step()
    tid = rig.values("threads/")[0]["id"]
    sid = rig.get(M.thread_key(tid))["seed_id"]
    out = js("seeds", "priority", sid, "low")
    assert out["threads"] == [tid] and rig.get(M.thread_key(tid))["priority"] == 2
    # `seeds edit --priority` takes the same path
    edited = js("seeds", "edit", sid, "--priority", "9", "--tag", "moved")
    assert edited["priority"] == 9 and edited["tags"] == ["moved"]
    assert rig.get(M.thread_key(tid))["priority"] == 9 and rig.get(M.seed_key(sid))["priority"] == 9


# --- priority overrides reach queued tasks ------------------------------------------------------------------

def _queued(rig, field, ident, kind=None):
    return [t for t in rig.tasks(state="PENDING") if (t.get("payload") or {}).get(field) == ident
            and (kind is None or t["kind"] == kind)]


def _seed_term(task) -> float:
    """What the scheduler adds for this task beyond its kind's base (seed term + priority adjustment)."""
    from services.scheduler.priority import PriorityModel, QTask
    from shared.config import SchedulerConfig
    model, q = PriorityModel(SchedulerConfig()), QTask.from_fields(task)
    return model.static(q) - model.kind_base(q.kind)


def test_seed_priority_reaches_the_queued_explore_task(rig):
    ctl("seeds", "import", str(REPO / "seeds" / "demo.toml"))
    rig.step()
    thread = rig.values("threads/")[0]
    tid, old = thread["id"], thread["priority"]
    assert thread["queued_priority"] == old
    [task] = _queued(rig, "thread_id", tid)
    assert task["kind"] == M.EXPLORE and task["attrs"]["seed_priority"] == old and task["priority"] == 50
    js("seeds", "priority", thread["seed_id"], "9")
    rig.svc.plan()
    [task] = _queued(rig, "thread_id", tid)
    assert task["attrs"]["seed_priority"] == old            # attrs cannot change: the base makes up for it
    assert task["priority"] == 50 + 10 * (9 - old) and _seed_term(task) == 90
    assert js("queue", "ls", "--state", "PENDING")["tasks"][0]["priority"] == task["priority"]
    assert rig.get(M.thread_key(tid))["queued_priority"] == 9
    # aligned once: an operator's later adjustment of that task stays
    ctl("queue", "priority", str(task["id"]), "77")
    rig.svc.plan()
    assert _queued(rig, "thread_id", tid)[0]["priority"] == 77
    # the next turn is submitted at the new priority and needs no adjustment
    rig.step()
    [nxt] = _queued(rig, "thread_id", tid)
    assert nxt["id"] != task["id"] and nxt["attrs"]["seed_priority"] == 9 and nxt["priority"] == 50


def test_a_module_killed_mid_alignment_completes_it_after_a_restart(rig, monkeypatch):
    ctl("seeds", "import", str(REPO / "seeds" / "demo.toml"))

    def reviews_queued():
        for ins in rig.values("insights/"):
            tasks = _queued(rig, "insight_id", ins["id"], M.REVIEW1)
            if ins["status"] == "pending" and len(tasks) >= 2:
                return ins, tasks
    ins, tasks = rig.run_until(reviews_queued)
    old = ins["priority"]
    assert {t["attrs"]["seed_priority"] for t in tasks} == {old} and {t["priority"] for t in tasks} == {50}
    js("insights", "priority", ins["id"], "10" if old != 10 else "1")
    new = rig.get(M.insight_key(ins["id"]))["priority"]
    # the module dies after re-ranking the first task (before the others, before recording it)
    real, calls = rig.client.set_priority, []

    def dying(task_id, priority):
        if calls:
            raise SystemExit("killed")
        calls.append(task_id)
        return real(task_id, priority)
    monkeypatch.setattr(rig.client, "set_priority", dying)
    rig.svc._next_repair = 0.0
    with pytest.raises(SystemExit):
        rig.svc.plan()
    prios = {t["id"]: t["priority"] for t in _queued(rig, "insight_id", ins["id"], M.REVIEW1)}
    assert sorted(prios.values()) == sorted([50 + 10 * (new - old)] + [50] * (len(prios) - 1))
    assert rig.get(M.insight_key(ins["id"]))["queued_priority"] == old
    # a restarted module finds the difference again and completes the alignment (nothing applied twice)
    monkeypatch.setattr(rig.client, "set_priority", real)
    rig.svc = rig.new_module()
    rig.svc.plan()
    tasks = _queued(rig, "insight_id", ins["id"], M.REVIEW1)
    assert {t["priority"] for t in tasks} == {50 + 10 * (new - old)} and {_seed_term(t) for t in tasks} == {10 * new}
    assert rig.get(M.insight_key(ins["id"]))["queued_priority"] == new


def test_seeds_import_of_a_changed_file_updates_the_changed_seed(rig, tmp_path):
    ctl("seeds", "import", str(REPO / "seeds" / "demo.toml"))
    changed = tmp_path / "seeds.toml"
    text = (REPO / "seeds" / "demo.toml").read_text()
    first = js("seeds", "ls")["seeds"][0]
    assert first["text"] in text
    changed.write_text(text.replace(first["text"], first["text"] + " Revised."))
    d = js("seeds", "import", str(changed))
    assert d["updated"] == [first["id"]] and first["id"] not in d["unchanged"]
    seed = next(s for s in js("seeds", "ls")["seeds"] if s["id"] == first["id"])
    assert seed["text"].endswith("Revised.") and seed["created_at"] == first["created_at"]
