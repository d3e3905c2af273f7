"""The operations layer (services/modules/operations/) against the real broker core in-process: what each
write stores, the errors it refuses with, and how it gives way to the running module on a race."""
from __future__ import annotations

import subprocess
import sys

import pytest

from services.modules.documenter import model as DM
from services.modules.explorer import model as XM
from services.modules.explorer import pacing as PC
from services.modules.operations import documenter as OD
from services.modules.operations import explorer as OX
from services.modules.operations import researcher as OR
from services.modules.researcher import model as RM
from shared import txn
from tests.support import REPO
from tests.unit.corehelp import CoreClient, expect_error

NOW = 1_700_000_000.0


@pytest.fixture
def client(core):
    return CoreClient(core)


class Racing(CoreClient):
    """Plays the running module: before each of the first ``races`` transactions it rewrites ``key``."""

    def __init__(self, harness, ns: str, key: str, change, races: int):
        super().__init__(harness)
        self.ns, self.key, self.change, self.races, self.sent = ns, key, change, races, 0

    def txn(self, module, ops, rid=None):
        self.sent += 1
        if self.races:
            self.races -= 1
            rec = self.kv_get(self.ns, self.key)
            self.h.call("txn", module=self.ns, ops=[txn.put(self.key, self.change(rec["value"]),
                                                            if_version=rec["version"])])
        return super().txn(module, ops, rid)


def get(client, ns, key):
    rec = client.kv_get(ns, key)
    return None if rec is None else rec["value"]


def thread(tid, seed_id, status="active", **kw):
    return {"id": tid, "seed_id": seed_id, "status": status, "priority": 5, **kw}


# --- explorer: seeds ----------------------------------------------------------------------------------------

def test_add_seed(client):
    seed = OX.add_seed(client, "Why does 7 = 2^3 - 1 matter?", kind="question", priority="high", tags=["Numbers"],
                       now=NOW)
    assert seed["priority"] == 8 and seed["tags"] == ["numbers"] and seed["type"] == "question"
    assert get(client, "explorer", XM.seed_key(seed["id"])) == seed
    exc = expect_error("CONDITION_FAILED", OX.add_seed, client, "Why does 7 = 2^3 - 1 matter?", now=NOW + 1)
    assert exc.message == f"seed {seed['id']} exists"
    assert get(client, "explorer", XM.seed_key(seed["id"])) == seed          # left alone
    assert "priority must be" in expect_error("BAD_ARGUMENT", OX.add_seed, client, "x", priority=11, now=NOW).message
    expect_error("BAD_ARGUMENT", OX.add_seed, client, "x", kind="axiomatic", now=NOW)


def test_a_seed_keeps_the_researchers_notes_and_edits_or_removes_them(client):
    seed = OX.add_seed(client, "Is 7 special?", seed_id="c-notes", notes="  from Tuesday's talk ", now=NOW)
    assert seed["notes"] == "from Tuesday's talk" and get(client, "explorer", XM.seed_key("c-notes")) == seed
    assert "notes" not in OX.add_seed(client, "No notes here", now=NOW)       # none given: none stored
    assert OX.edit_seed(client, "c-notes", notes="see also Hall", now=NOW + 1)["notes"] == "see also Hall"
    assert OX.edit_seed(client, "c-notes", text="Is 7 special, really?", now=NOW + 2)["notes"] == "see also Hall"
    assert "notes" not in OX.edit_seed(client, "c-notes", notes="", now=NOW + 3)
    assert "notes must be" in expect_error("BAD_ARGUMENT", OX.add_seed, client, "y", notes="n" * 4001, now=NOW).message


def test_edit_seed_and_its_priority_reaches_open_threads(client):
    seed = OX.add_seed(client, "Is the Fano plane unique?", seed_id="c-unique", now=NOW)
    client.txn("explorer", [txn.put(XM.thread_key("t1"), thread("t1", "c-unique")),
                            txn.put(XM.thread_key("t2"), thread("t2", "c-unique", "extracted")),
                            txn.put(XM.thread_key("t3"), thread("t3", "other"))])
    new = OX.edit_seed(client, "c-unique", text="Is the Fano plane the unique 7-point plane?", priority=9, now=NOW + 5)
    assert new["text"].startswith("Is the Fano plane the unique") and new["priority"] == 9
    assert new["type"] == seed["type"] and get(client, "explorer", XM.seed_key("c-unique")) == new
    assert get(client, "explorer", XM.thread_key("t1"))["priority"] == 9             # open: follows
    assert get(client, "explorer", XM.thread_key("t2"))["priority"] == 5             # extracted: does not
    assert get(client, "explorer", XM.thread_key("t3"))["priority"] == 5
    d = OX.set_seed_priority(client, "c-unique", "low", now=NOW + 6)
    assert d["threads"] == ["t1"]
    assert d["seed"]["priority"] == get(client, "explorer", XM.seed_key("c-unique"))["priority"] == 2
    expect_error("NOT_FOUND", OX.edit_seed, client, "nope", text="x", now=NOW)
    expect_error("BAD_ARGUMENT", OX.set_seed_priority, client, "c-unique", 0, now=NOW)


def test_remove_and_resume_seed(client):
    OX.add_seed(client, "A question?", seed_id="q-a", kind="question", now=NOW)
    expect_error("NOT_FOUND", OX.resume_seed, client, "nope", now=NOW)
    assert OX.resume_seed(client, "q-a", now=NOW) is None                     # never paused: nothing written
    client.txn("explorer", [txn.put(PC.pace_key("q-a"), {"seed_id": "q-a", "paused": True, "pause_reason": "r"})])
    pace = OX.resume_seed(client, "q-a", now=NOW + 1)
    assert pace["paused"] is False and pace["resumed_at"] == NOW + 1
    assert get(client, "explorer", PC.pace_key("q-a")) == pace
    assert OX.remove_seed(client, "q-a") == {"removed": "q-a"}
    assert get(client, "explorer", XM.seed_key("q-a")) is None
    assert expect_error("NOT_FOUND", OX.remove_seed, client, "q-a").message == "no seed 'q-a'"


def test_import_seeds_is_idempotent_and_written_in_parts(core, client, monkeypatch):
    wanted = OX.seed_file(str(REPO / "seeds" / "demo.toml"), NOW)
    counting = Racing(core, "explorer", "unused", None, races=0)
    monkeypatch.setattr(OX, "MAX_OPS", 3)
    first = OX.import_seeds(counting, wanted, now=NOW)
    assert sorted(first["added"]) == sorted(s["id"] for s in wanted) and counting.sent == -(-len(wanted) // 3)
    again = OX.import_seeds(counting, wanted, now=NOW + 1)
    assert again == {"added": [], "updated": [], "unchanged": [s["id"] for s in wanted]}
    changed = [dict(wanted[0], text=wanted[0]["text"] + " (revised)")] + wanted[1:]
    assert OX.import_seeds(client, changed, now=NOW + 2)["updated"] == [wanted[0]["id"]]


def test_a_bad_seed_file_is_a_bad_argument(tmp_path):
    bad = tmp_path / "seeds.toml"
    bad.write_text('[[seeds]]\ntext = "x"\npriority = 99\n')
    assert "seed #1" in expect_error("BAD_ARGUMENT", OX.seed_file, str(bad), NOW).message


def test_a_race_with_the_module_is_read_again_and_recomputed(core):
    CoreClient(core).txn("explorer", [txn.put(XM.seed_key("s"), {"id": "s", "type": "question", "text": "S?",
                                                                  "priority": 5, "tags": []})])
    racer = Racing(core, "explorer", XM.seed_key("s"), lambda s: dict(s, tags=["from-the-module"]), races=2)
    d = OX.set_seed_priority(racer, "s", 7, now=NOW)
    assert racer.sent == 3 and d["seed"]["tags"] == ["from-the-module"] and d["seed"]["priority"] == 7
    assert get(racer, "explorer", XM.seed_key("s")) == d["seed"]
    endless = Racing(core, "explorer", XM.seed_key("s"), lambda s: dict(s, n=s.get("n", 0) + 1), races=99)
    exc = expect_error("CONDITION_FAILED", OX.set_seed_priority, endless, "s", 3, now=NOW)
    assert isinstance(exc, txn.Conflict) and exc.message == "seed s kept changing under us; try again"
    assert endless.sent == txn.RETRIES


def test_a_client_that_notifies_wakes_the_module(core):
    c = CoreClient(core)
    c.name, c.notify_writes = "fanoctl", True
    OX.add_seed(c, "Wake up?", kind="question", now=NOW)
    assert core.events[-1]["type"] == "module.notify" and core.events[-1]["module"] == "explorer"


# --- explorer: threads and insights -------------------------------------------------------------------------

def test_thread_status_changes(client):
    client.txn("explorer", [txn.put(XM.thread_key("t1"), thread("t1", "s", "ready"))])
    paused = OX.pause_thread(client, "t1", now=NOW)
    assert (paused["status"], paused["paused_from"]) == ("paused", "ready")
    assert expect_error("INVALID_STATE", OX.pause_thread, client, "t1", now=NOW).details["status"] == "paused"
    resumed = OX.resume_thread(client, "t1", now=NOW + 1)
    assert resumed["status"] == "ready" and resumed["paused_from"] is None
    expect_error("INVALID_STATE", OX.resume_thread, client, "t1", now=NOW)
    archived = OX.archive_thread(client, "t1", now=NOW + 2)
    assert (archived["status"], archived["paused_from"]) == ("archived", "ready")
    version = client.kv_get("explorer", XM.thread_key("t1"))["version"]
    assert OX.archive_thread(client, "t1", now=NOW + 3) == archived                # already: nothing written
    assert client.kv_get("explorer", XM.thread_key("t1"))["version"] == version
    expect_error("NOT_FOUND", OX.pause_thread, client, "t9", now=NOW)


def test_insight_override_and_priority(client):
    client.txn("explorer", [txn.put(XM.insight_key("i1"), {"id": "i1", "status": "pending", "priority": 5}),
                            txn.put(XM.review_key("i1"), {"insight_id": "i1", "stage": "round2"})])
    new = OX.override_insight(client, "i1", "blessed", note="clearly right", now=NOW)
    assert new["status"] == "blessed" and new["decided_by"] == "human" and new["blessed_at"] == NOW
    assert new["overrides"] == [{"from": "pending", "to": "blessed", "at": NOW, "note": "clearly right"}]
    assert get(client, "explorer", XM.review_key("i1"))["stage"] == "stopped"
    again = OX.override_insight(client, "i1", "rejected", now=NOW + 1)
    assert again["blessed_at"] == NOW and [o["to"] for o in again["overrides"]] == ["blessed", "rejected"]
    expect_error("BAD_ARGUMENT", OX.override_insight, client, "i1", "pending", now=NOW)
    assert OX.set_insight_priority(client, "i1", 9, now=NOW)["priority"] == 9
    for bad in (0, 11, "9", True):
        expect_error("BAD_ARGUMENT", OX.set_insight_priority, client, "i1", bad, now=NOW)
    expect_error("NOT_FOUND", OX.set_insight_priority, client, "i2", 3, now=NOW)


# --- documenter -----------------------------------------------------------------------------------------------

def _section(client, text: str) -> None:
    from services.modules.base import Store
    doc = DM.read_doc(Store(client, "documenter"))
    ops, _ = DM.commit(doc, {"s0001": {"title": "T", "text": text, "establishes": ["point"], "requires": []}},
                       {"kind": "test", "ref": 0, "task": None}, "a change", NOW)
    client.txn("documenter", ops)


def test_comments(client):
    assert expect_error("NOT_FOUND", OD.add_comment, client, "s0001", "hello", now=NOW).details == {"id": "s0001"}
    _section(client, "First.")
    empty = expect_error("BAD_ARGUMENT", OD.add_comment, client, "s0001", "  ", now=NOW)
    assert empty.message == "the comment is empty"
    rec = OD.add_comment(client, "s0001", "  Say more. ", now=NOW)
    assert rec["text"] == "Say more." and rec["status"] == "open"
    assert get(client, "documenter", DM.comment_key(rec["id"])) == rec


def test_a_comment_on_a_selected_passage(client):
    _section(client, "A line has three points.")
    rec = OD.add_comment(client, "s0001", "Which lines?", quote="  three\n points ", now=NOW)
    assert rec["quote"] == "three points"
    assert get(client, "documenter", DM.comment_key(rec["id"]))["quote"] == rec["quote"]
    assert OD.add_comment(client, "s0001", "All of it.", now=NOW)["quote"] is None
    assert OD.add_comment(client, "s0001", "Blank.", quote=" \n", now=NOW)["quote"] is None
    long = expect_error("BAD_ARGUMENT", OD.add_comment, client, "s0001", "x", quote="y" * (OD.MAX_QUOTE + 1), now=NOW)
    assert "at most" in long.message
    expect_error("BAD_ARGUMENT", OD.add_comment, client, "s0001", "x", quote=5, now=NOW)


def test_versions_sections_diff_and_markdown(client):
    assert OD.versions(client) == [] and OD.version_sections(client) == {"version": 0, "sections": []}
    _section(client, "First line.\nSecond line.")                                   # version 1
    from services.modules.base import Store
    doc = DM.read_doc(Store(client, "documenter"))
    ops, _ = DM.commit(doc, {"s0001": {"title": "T", "text": "First line.\nA new second line.", "establishes": [],
                                       "requires": []},
                             "s0002": {"title": "U", "text": "More.", "establishes": [], "requires": []}},
                       {"kind": "test", "ref": 0, "task": None}, "two changes", NOW + 1)
    client.txn("documenter", ops)                                                  # version 2
    assert [v["version"] for v in OD.versions(client)] == [1, 2]
    assert OD.versions(client)[1]["description"] == "two changes"
    v1 = OD.version_sections(client, 1)
    assert v1["version"] == 1 and [s["text"] for s in v1["sections"]] == ["First line.\nSecond line."]
    assert [s["id"] for s in OD.version_sections(client)["sections"]] == ["s0001", "s0002"]
    assert OD.version_sections(client, 0) == {"version": 0, "sections": []}
    for bad in (3, -1, "1", True):
        expect_error("NOT_FOUND", OD.version_sections, client, bad)
    d = OD.diff_versions(client, 1, 2)
    assert (d["from"], d["to"]) == (1, 2)
    s1, s2 = d["sections"]
    assert (s1["id"], s1["change"], s2["id"], s2["change"]) == ("s0001", "changed", "s0002", "added")
    assert {"tag": "-", "text": "Second line."} in s1["lines"]
    assert {"tag": "+", "text": "A new second line."} in s1["lines"]
    assert {"tag": " ", "text": "First line."} in s1["lines"]
    assert s2["lines"] == [{"tag": "+", "text": "## U"}, {"tag": "+", "text": "More."}]
    back = OD.diff_versions(client, 2, 1)["sections"]
    assert [(s["id"], s["change"]) for s in back] == [("s0001", "changed"), ("s0002", "removed")]
    assert [(s["id"], s["change"], s["lines"]) for s in OD.diff_versions(client, 2, 2)["sections"]] == \
        [("s0001", "same", []), ("s0002", "same", [])]
    version, text = OD.markdown(client)
    assert version == 2 and text.startswith("<!-- fano document version 2") and "## U" in text and "More." in text
    assert OD.markdown(client, 1)[1].count("## ") == 1


def test_revert_and_retry(client):
    _section(client, "First.")
    _section(client, "Second.")
    expect_error("NOT_FOUND", OD.revert_document, client, 7, now=NOW)
    d = OD.revert_document(client, 1, now=NOW)
    assert d == {"version": 3, "reverted_to": 1, "changed_sections": ["s0001"]}
    assert get(client, "documenter", DM.section_key("s0001"))["text"] == "First."
    assert "not worked on" in expect_error("NOT_FOUND", OD.retry_insight, client, "i1", now=NOW).message
    client.txn("documenter", [txn.put(DM.job_key("i1"), {"insight_id": "i1", "stage": "drafting", "disputes": 2})])
    expect_error("INVALID_STATE", OD.retry_insight, client, "i1", now=NOW)
    client.txn("documenter", [txn.put(DM.job_key("i1"), {"insight_id": "i1", "stage": "needs_human", "disputes": 3})])
    job = OD.retry_insight(client, "i1", now=NOW, by="web")
    assert (job["stage"], job["disputes"]) == ("idle", 0) and job["history"][-1]["by"] == "web"
    assert get(client, "documenter", DM.job_key("i1")) == job


# --- researcher ---------------------------------------------------------------------------------------------

def test_promote_a_finding(client):
    f = {"id": "abc111", "source_id": "s1", "type": "challenging", "summary": "Seven recurs.", "confidence": 0.7,
         "concepts": ["duality"], "numbers": [7], "related_questions": ["q1"], "url": "http://a.example/"}
    client.txn(RM.NS, [txn.put("findings/abc111", f), txn.put("findings/abc222", dict(f, id="abc222")),
                       txn.put(RM.k_question("q1"), {"id": "q1", "question": "Why 7?"})])
    expect_error("NOT_FOUND", OR.promote_finding, client, "zzz", now=NOW)
    assert "ambiguous" in expect_error("BAD_ARGUMENT", OR.promote_finding, client, "abc", now=NOW).message
    expect_error("BAD_ARGUMENT", OR.promote_finding, client, "abc111", kind="axiom", now=NOW)
    expect_error("BAD_ARGUMENT", OR.promote_finding, client, "abc111", priority=11, now=NOW)
    d = OR.promote_finding(client, "abc111", now=NOW)
    assert d["created"] and d["promotion"]["type"] == "question" and d["promotion"]["text"] == "Why 7?"
    assert d["promotion"]["priority"] == 7 and get(client, RM.NS, RM.k_promotion("abc111")) == d["promotion"]
    again = OR.promote_finding(client, "abc111", kind="conjecture", now=NOW + 1)
    assert again == {"promotion": d["promotion"], "created": False}


def test_add_a_source(client):
    assert "absolute" in expect_error("BAD_ARGUMENT", OR.add_source, client, "example.org", now=NOW).message
    d = OR.add_source(client, "http://a.example/page", note="a note", now=NOW)
    assert d["created"] and d["source"]["status"] == "new" and d["source"]["note"] == "a note"
    assert client.kv_get(RM.NS, RM.k_fetch(d["source"]["id"])) is not None      # queued for fetching
    assert OR.add_source(client, "http://a.example/page", now=NOW + 1) == {"source": d["source"], "created": False}


def test_the_layer_does_not_need_click():
    code = ("import sys; import services.modules.operations.explorer, services.modules.operations.documenter, "
            "services.modules.operations.researcher; assert 'click' not in sys.modules, 'click imported'")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_fanoctl_writes_module_data_only_through_the_operations_layer():
    """A CLI file that builds ops or runs a transaction itself is a second writer beside this layer."""
    import re
    writes = re.compile(r"\.txn\(|from shared import .*\btxn\b|shared\.txn|import txn")
    found = [f"{p.relative_to(REPO)}:{n}" for p in sorted((REPO / "cli").rglob("*.py"))
             for n, line in enumerate(p.read_text().splitlines(), 1) if writes.search(line)]
    assert found == [], f"fanoctl writes module data through services/modules/operations/: {found}"


# --- reads shared by fanoctl and the web panel ----------------------------------------------------------------

def test_insight_rows_groups_filters_and_pages(client):
    from services.modules.operations import research_views as V
    rows = [("i1", "pending", None), ("i2", "pending", "round2"), ("i3", "pending", "done"), ("i4", "blessed", "done"),
            ("i5", "rejected", None)]
    ops = []
    for n, (iid, status, stage) in enumerate(rows):
        ops.append(txn.put(XM.insight_key(iid), {"id": iid, "text": f"claim {iid}", "status": status,
                                                 "thread_id": "t1" if n < 2 else "t2", "disputed": iid == "i4",
                                                 "created_at": NOW + n}))
        if stage:
            ops.append(txn.put(XM.review_key(iid), {"insight_id": iid, "stage": stage}))
    client.txn("explorer", ops)
    d = V.insight_rows(client)
    assert [i["id"] for i in d["insights"]] == ["i5", "i4", "i3", "i2", "i1"]             # newest first
    assert {i["id"]: i["shown"] for i in d["insights"]} == {"i1": "pending", "i2": "reviewing", "i3": "pending",
                                                            "i4": "blessed", "i5": "rejected"}
    assert d["counts"] == {"pending": 2, "reviewing": 1, "blessed": 1, "interesting": 0, "rejected": 1,
                           "duplicate": 0, "disputed": 1}
    assert [i["id"] for i in V.insight_rows(client, status="reviewing")["insights"]] == ["i2"]
    assert [i["id"] for i in V.insight_rows(client, disputed=True)["insights"]] == ["i4"]
    assert [i["id"] for i in V.insight_rows(client, thread="t1")["insights"]] == ["i2", "i1"]
    assert [i["id"] for i in V.insight_rows(client, text="CLAIM I3")["insights"]] == ["i3"]
    chunk, nxt = V.page(d["insights"], None, 2)
    assert [i["id"] for i in chunk] == ["i5", "i4"] and nxt == "i4"
    chunk, nxt = V.page(d["insights"], "i2", 2)
    assert [i["id"] for i in chunk] == ["i1"] and nxt is None


def test_insight_view_and_document_view_carry_provenance(client):
    from services.modules.operations import research_views as V
    client.txn("explorer", [txn.put(XM.insight_key("i1"), {"id": "i1", "text": "x", "status": "blessed",
                                                           "thread_id": "t1"}),
                            txn.put(XM.thread_key("t1"), thread("t1", "s"))])
    from services.modules.base import Store
    doc = DM.read_doc(Store(client, "documenter"))
    ops, _ = DM.commit(doc, {"s0001": {"title": "T", "text": "A line.", "establishes": [], "requires": [],
                                       "source": {"kind": "insight", "ref": "i1"}}},
                       {"kind": "insight", "ref": "i1", "task": 7}, "incorporate", NOW)
    client.txn("documenter", ops)
    rec = OD.add_comment(client, "s0001", "Why?", quote="A line", now=NOW)
    view = V.insight_view(client, "i1")
    assert view["thread"]["id"] == "t1" and view["sections"] == ["s0001"] and view["review"] is None
    expect_error("NOT_FOUND", V.insight_view, client, "nope")
    d = V.document_view(client)
    [sec] = d["sections"]
    assert sec["provenance"]["insight"]["id"] == "i1" and sec["provenance"]["thread_id"] == "t1"
    cause = {"kind": "insight", "ref": "i1", "task": 7}
    assert sec["provenance"]["revisions"] == [{"rev": 1, "at": NOW, "cause": cause}]
    assert [c["id"] for c in sec["comments"]] == [rec["id"]] and d["comments"] == []


def test_findings_say_promoted_and_cross_referenced(client):
    from services.modules.operations import research_views as V
    f = {"id": "f1", "source_id": "src1", "confidence": 0.4, "summary": "a"}
    f2 = dict(f, id="f2", source_id="x", confidence=0.9)
    client.txn(RM.NS, [txn.put("findings/f1", f), txn.put("findings/f2", f2),
                       txn.put(RM.k_promotion("f1"), {"finding_id": "f1"}),
                       txn.put("crossrefs/number/168", {"active": True, "findings": ["f1"]}),
                       txn.put(RM.k_source("src1"), {"id": "src1", "added": 2, "status": "trusted"}),
                       txn.put(RM.k_source("src0"), {"id": "src0", "added": 1, "status": "ignored"}),
                       txn.put(RM.k_question("q1"), {"id": "q1", "priority": 3, "created": 1}),
                       txn.put(RM.k_question("q2"), {"id": "q2", "priority": 9, "created": 1})])
    rows = V.findings(client)
    assert [(r["id"], r["promoted"], r["crossrefs"]) for r in rows] == [("f2", False, []),
                                                                       ("f1", True, ["crossrefs/number/168"])]
    assert [r["id"] for r in V.findings(client, "src")] == ["f1"]
    assert [s["id"] for s in V.sources(client)] == ["src0", "src1"]
    assert [s["id"] for s in V.sources(client, "trusted")] == ["src1"]
    assert [q["id"] for q in V.questions(client)] == ["q2", "q1"]
