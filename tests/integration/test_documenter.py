"""The documenter as a process: a real broker, scheduler and sim workers, seeded blessed insights.

Sections appear, comments are addressed and applied, the export is written; ``kill -9`` of the module
at random moments loses nothing and applies nothing twice; the fanoctl commands work on the result.
"""
import json
import random
import shutil
import time

import pytest
from click.testing import CliRunner

import cli.research_documenter  # noqa: F401  (registers `comments` and `document` on fanoctl)
from cli.fanoctl import main as fanoctl
from services.modules.base import Store
from services.modules.documenter import context as C
from services.modules.documenter import export, flow
from services.modules.documenter import model as M
from shared import txn
from tests.scheduler_support import SchedulerProcess
from tests.support import BrokerProcess, ServiceProcess, short_tmpdir, wait_for, write_config

pytestmark = pytest.mark.integration

ACCOUNTS = ("sim-a", "sim-b", "sim-c")
SCALE = 200.0   # world seconds per real second: WAIT and failure backoffs (minutes) pass in seconds
CLAIMS = ("The Fano plane has seven points and seven lines, each line through three points.",
          "The automorphism group of the Fano plane is GL(3,2), of order 168.",
          "The Heawood graph is the incidence graph of the Fano plane.",
          "The difference set {1, 2, 4} mod 7 generates the lines of the Fano plane.",
          "The Hamming [7,4] code's weight-3 codewords are the lines of the Fano plane.",
          "The octonion multiplication table is encoded by an oriented Fano plane.",
          "The Klein quartic has 168 automorphisms, matching GL(3,2).",
          "The complete graph K7 decomposes into seven triangles forming a Steiner triple system S(2,3,7).")


class Stack:
    def __init__(self, garbage: float = 0.0, documenter: str = ""):
        """``garbage``: the sim workers' share of answers without the expected sections; ``documenter``:
        lines of ``[modules.documenter]``."""
        self.root = short_tmpdir("fd")
        accounts = {a: {"backend": "sim", "modes": ["standard"], "seed": n + 1, "garbage_rate": garbage,
                        "latency": {"dist": "fixed", "value": 40.0}} for n, a in enumerate(ACCOUNTS)}
        self.cfg = write_config(self.root, broker={"lease_ttl": 5.0, "backoff_base": 1.0},
                                scheduler={"lease_ttl": 5.0, "assign_timeout": 3.0}, accounts=accounts)
        if documenter:
            self.cfg.write_text(self.cfg.read_text() + "[modules.documenter]\n" + documenter + "\n")
        clock = {"FANO_CLOCK_SCALE": str(SCALE), "FANO_CLOCK_ORIGIN": str(time.time())}
        self.env = clock
        self.broker = BrokerProcess(self.root, self.cfg)
        self.broker.extra_env = dict(clock)
        self.broker.start()
        self.scheduler = SchedulerProcess(self.root, self.cfg)
        self.scheduler.extra_env = dict(clock)
        self.scheduler.start()
        self.workers = [ServiceProcess(self.root, self.cfg, ["backend", "--account", a], f"worker-{a}.log", env=clock)
                        for a in ACCOUNTS]
        for w in self.workers:
            w.spawn()
        self.module = ServiceProcess(self.root, self.cfg, ["documenter"], "documenter.log", env=clock)
        self.client = self.broker.client()
        self.store = Store(self.client, "documenter")
        self.export_path = self.root / "data" / "document.md"

    def seed(self, n):
        ops = [txn.put(f"insights/ins-{i}", {
            "id": f"ins-{i}", "text": CLAIMS[i], "status": "blessed", "tags": ["fano"], "priority": 5 + i % 3,
            "depends_on": []}) for i in range(n)]
        ops.append(txn.put("insights/ins-pending", {"text": "Not blessed yet.", "status": "pending"}))
        ops.append(txn.put("insights/ins-broken", "not a map"))   # read defensively
        self.client.txn("explorer", ops)

    def fanoctl(self, *args):
        res = CliRunner().invoke(fanoctl, ["--broker", self.broker.endpoint, *args], catch_exceptions=False)
        assert res.exit_code == 0, res.output
        return res.output

    def values(self, prefix):
        return {k: v for k, _, v in self.store.scan(prefix)}

    def doc(self):
        return M.read_doc(self.store)

    def in_flight(self):
        return sum(len(self.client.list(module="documenter", state=s, limit=1000)["tasks"])
                   for s in ("PENDING", "RUNNING"))

    def close(self):
        self.client.close()
        for proc in [self.module, *self.workers, self.scheduler, self.broker]:
            proc.kill()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def stack():
    s = Stack()
    yield s
    s.close()


def test_planning_whose_answers_stay_unusable_is_paused_with_a_visible_reason(tmp_path):
    """Issue 16 for the documenter: every answer lacks the expected sections (the sim's garbage_rate 1).
    Before, planning backed off and asked again forever; now ``pause_after`` unusable planning answers in
    a row pause it, ``fanoctl document show`` says why, and ``document resume`` starts it again."""
    s = Stack(garbage=1.0, documenter="pause_after = 3")
    try:
        s.seed(2)
        s.module.spawn()

        def paused():
            state = s.store.get(M.PLAN_STATE)[1] or {}
            return state if state.get("paused") else None
        state = wait_for(paused, 60, interval=0.2, what="planning to pause\n" + s.module.log())
        assert state["failures"] == 3 and "3 unusable answers in a row" in state["pause_reason"], state
        time.sleep(5.0)                       # many planning passes (≈ 17 world minutes): nothing new starts
        plans = s.client.list(module="documenter", kind=C.PLAN, limit=100)["tasks"]
        assert len(plans) == 3, [t["key"] for t in plans]
        shown = s.fanoctl("document", "show")
        assert "planning paused: 3 unusable answers in a row to the documenter's planning turns" in shown, shown
        assert "fanoctl document resume" in shown
        assert "resumed: planning" in s.fanoctl("document", "resume")
        wait_for(lambda: len(s.client.list(module="documenter", kind=C.PLAN, limit=100)["tasks"]) > 3, 30,
                 interval=0.2, what="a planning turn after the resume")
        assert s.module.alive(), s.module.log()
    finally:
        s.close()


def insight_sections(doc):
    return [s for s in doc.ordered() if (s.get("source") or {}).get("kind") == "insight"]


def test_sections_appear_comments_are_applied_and_the_document_is_exported(stack):
    stack.seed(6)
    stack.module.spawn()
    wait_for(lambda: len(insight_sections(stack.doc())) >= 2, 40, interval=0.2,
             what="two sections from insights\n" + stack.module.log())
    sid = insight_sections(stack.doc())[0]["id"]
    out = stack.fanoctl("--json", "comments", "add", sid, "Please state the number of flags explicitly.")
    cid = json.loads(out)["id"]

    def resolved():
        c = stack.store.get(M.comment_key(cid))[1]
        return c if c["status"] == "resolved" else None
    c = wait_for(resolved, 30, interval=0.2, what=f"comment {cid} resolved\n{stack.module.log()}")
    if c["changed"]:   # applied: the section holds the revision, the version names the comment
        ver = stack.store.get(M.version_key(c["version"]))[1]
        assert ver["cause"]["ref"] == cid and ver["cause"]["kind"] == "comment"
        _, rev = stack.store.get(M.revision_key(sid, dict(ver["manifest"])[sid]))
        assert rev["cause"]["ref"] == cid
    assert "resolved" in stack.fanoctl("comments", "ls")
    # the export follows the document
    wait_for(lambda: export.exported_version(stack.export_path) == stack.doc().version, 15, interval=0.2,
             what="the export to catch up")
    text = stack.export_path.read_text()
    assert all(f"section {s['id']}" in text for s in insight_sections(stack.doc()))
    # show, versions, revert, export through fanoctl
    assert sid in stack.fanoctl("document", "show")
    assert "incorporate insight" in stack.fanoctl("document", "versions")
    out = json.loads(stack.fanoctl("--json", "document", "revert", "1"))
    reverted = stack.store.get(M.version_key(out["version"]))[1]
    assert reverted["cause"] == {"kind": "revert", "ref": 1, "task": None}

    def texts(n):
        return [(s["id"], s["text"])
                for s in M.version_text(stack.store, stack.store.get(M.version_key(n))[1]["manifest"])]
    assert texts(out["version"]) == texts(1)
    target = stack.root / "copy.md"
    stack.fanoctl("document", "export", str(target))
    assert export.exported_version(target) is not None
    assert "document version" in stack.fanoctl("document", "show", "--text")


def test_kill_9_of_the_module_loses_nothing_and_applies_nothing_twice(stack):
    stack.seed(8)
    rng = random.Random(7)
    stack.module.spawn()

    def started():
        wait_for(lambda: stack.module.log(10**7).count("module-documenter started") == stack.module.starts, 15,
                 what="the module to start")
    wait_for(lambda: stack.doc().sections, 30, interval=0.2, what="a first section\n" + stack.module.log())
    comments, kills = [], 0
    for _ in range(6):
        started()
        time.sleep(rng.uniform(0.2, 1.2))   # somewhere in the middle of applying and proposing
        if len(comments) < 4:
            sid = rng.choice(sorted(stack.doc().sections))
            comments.append(stack.fanoctl("--json", "comments", "add", sid, f"Comment {len(comments)}: be precise."))
        if quiet(stack, [json.loads(c)["id"] for c in comments]):
            break   # out of work: a kill now would prove nothing
        stack.module.kill()
        kills += 1
        stack.module.spawn()
    assert kills >= 4, f"only {kills} kills hit the module while it had work"
    cids = [json.loads(c)["id"] for c in comments]
    started()   # a SIGTERM before the last incarnation set its handler would kill it
    wait_for(lambda: quiet(stack, cids), 60, interval=0.3, what="the documenter to run out of work")
    assert stack.module.stop() == 0
    check(stack, cids)


def quiet(stack, cids) -> bool:
    """Nothing left to do: comments settled, no task in flight or unapplied, no planning turn or review
    out, no insight left to plan, and the export holds the last version."""
    if any(stack.store.get(M.comment_key(c))[1]["status"] not in ("resolved", "needs_human") for c in cids):
        return False
    if stack.in_flight() or stack.client.unconsumed("documenter")["tasks"]:
        return False
    if ((stack.store.get(M.PLAN_STATE)[1] or {}).get("pending")
            or (stack.store.get(M.REVIEW_STATE)[1] or {}).get("section")):
        return False
    env = C.Env(stack.store, Store(stack.client, "explorer"), time.time(), list(ACCOUNTS))
    if flow.candidates(env):
        return False
    return export.exported_version(stack.export_path) == stack.doc().version


def check(stack, cids):
    doc = stack.doc()
    versions = stack.values("versions/")
    assert sorted(v["version"] for v in versions.values()) == list(range(1, doc.version + 1))
    assert versions[M.version_key(doc.version)]["manifest"] == doc.head["manifest"]
    causes = [(v["cause"]["kind"], str(v["cause"]["ref"]), v["cause"]["task"]) for v in versions.values()]
    assert len(causes) == len(set(causes)), "a change was applied twice"
    # every version came from one consumed task (or a fanoctl revert), each task at most once
    tasks = [v["cause"]["task"] for v in versions.values() if v["cause"]["task"] is not None]
    assert len(tasks) == len(set(tasks))
    for tid in tasks:
        t = stack.client.get(tid, history=False)
        assert t["module"] == "documenter" and t["state"] == "DONE" and t["consumed"]
    # each insight in at most one section, and incorporated exactly when it has one
    refs = [s["source"]["ref"] for s in insight_sections(doc)]
    assert len(refs) == len(set(refs)) and refs
    inc = {k.split("/", 1)[1]: v for k, v in stack.values("incorporated/").items()}
    assert {i for i, r in inc.items() if r["how"] == "section"} == set(refs)
    assert all(versions[M.version_key(r["version"])]["cause"]["ref"] == i for i, r in inc.items()
               if r["how"] == "section")
    # every comment kept, and applied at most once: a version exactly when it changed the section
    for cid in cids:
        c = stack.store.get(M.comment_key(cid))[1]
        mine = [v for v in versions.values() if v["cause"]["kind"] == "comment" and v["cause"]["ref"] == cid]
        assert len(mine) == (1 if c.get("changed") else 0), (cid, c, mine)
        if c.get("changed"):
            assert mine[0]["version"] == c["version"]
    # no pipeline left half-way, and the export holds the last version
    assert all(j["stage"] in ("done", "duplicate", "idle", "needs_human") for j in stack.values("jobs/").values())
    assert export.exported_version(stack.export_path) == doc.version
    rendered = export.render(doc.ordered(), doc.version)
    assert stack.export_path.read_text().split("\n", 1)[1] == rendered.split("\n", 1)[1]


# --- fanoctl on a broker alone ------------------------------------------------------------------------

def ctl(broker, *args, code=0):
    res = CliRunner().invoke(fanoctl, ["--broker", broker.endpoint, *args], catch_exceptions=False)
    assert res.exit_code == code, res.output
    return res.output


def test_fanoctl_document_commands_and_their_errors(broker, client):
    store = Store(client, "documenter")
    assert "nothing" in ctl(broker, "document", "show", "--text").lower()
    assert "no versions yet" in ctl(broker, "document", "versions")
    assert "NOT_FOUND" in ctl(broker, "comments", "add", "s0001", "hello", code=1)
    for n, text in enumerate(("First text.", "Second text."), 1):
        doc = M.read_doc(store)
        ops, _ = M.commit(doc, {"s0001": {"title": "T", "text": text, "establishes": ["point"], "requires": []}},
                          {"kind": "test", "ref": n, "task": None}, f"change {n}", time.time())
        client.txn("documenter", ops)
    assert "First text." in ctl(broker, "document", "show", "--version", "1")
    assert "NOT_FOUND" in ctl(broker, "document", "show", "--version", "9", code=1)
    diff = ctl(broker, "document", "diff", "1", "2")
    assert "s0001 T (changed)" in diff and "- First text." in diff and "+ Second text." in diff
    assert "no differences" in ctl(broker, "document", "diff", "2", "2")
    assert json.loads(ctl(broker, "--json", "document", "diff", "0", "1"))["sections"][0]["change"] == "added"
    assert "Second text." in ctl(broker, "document", "show", "--text")
    assert "NOT_FOUND" in ctl(broker, "document", "revert", "7", code=1)
    assert json.loads(ctl(broker, "--json", "document", "revert", "1"))["version"] == 3
    assert store.get(M.section_key("s0001"))[1]["text"] == "First text."
    rec = json.loads(ctl(broker, "--json", "comments", "add", "s0001", "Say more.", "--quote", "First  text."))
    assert rec["quote"] == "First text."
    assert rec["status"] == "open" and store.get(M.comment_key(rec["id"]))[1]["text"] == "Say more."
    listed = json.loads(ctl(broker, "--json", "comments", "ls", "--status", "open"))["comments"]
    assert [c["id"] for c in listed] == [rec["id"]]
    # disputes and retry
    client.txn("documenter", [txn.put(M.job_key("ins-9"), {"insight_id": "ins-9", "stage": "needs_human", "disputes": 3,
                                                         "run": 3, "last_reason": "evaluation: 1 INCLUDE, 1 EXCLUDE"})])
    assert "ins-9" in ctl(broker, "document", "disputes")
    assert "waiting for a human: 1" in ctl(broker, "document", "show")
    ctl(broker, "document", "retry", "ins-9")
    assert store.get(M.job_key("ins-9"))[1]["stage"] == "idle" and store.get(M.job_key("ins-9"))[1]["disputes"] == 0
    assert "NOT_FOUND" in ctl(broker, "document", "retry", "nope", code=1)
    versions = json.loads(ctl(broker, "--json", "document", "versions"))["versions"]
    assert [v["cause"]["kind"] for v in versions] == ["test", "test", "revert"]
