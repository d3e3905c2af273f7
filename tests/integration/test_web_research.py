"""The panel's research pages (services/web/pages/insights.py, document.py, research.py, modules.py) against a
real broker process and the real app on a real socket: what each page shows, what each form writes (through
the operations layer), what it refuses, and that model-written text is rendered inert."""
from __future__ import annotations

import re
import shutil

import pytest

from services.modules.documenter import model as DM
from services.modules.explorer import model as XM
from services.modules.operations import weights as W
from services.web.app import create_app
from shared import txn
from shared.config import load_config
from tests.scheduler_support import SchedulerProcess
from tests.support import BrokerProcess, short_tmpdir, write_config
from tests.web_research_support import plant
from tests.web_support import Session, serve

pytestmark = pytest.mark.integration

XSS = '<script>alert("x")</script><img src=x onerror=alert(1)> [click](javascript:alert(2))'


@pytest.fixture(scope="module")
def panel():
    root = short_tmpdir("fw")
    cfg = write_config(root, scheduler={"module_weights": {"explorer": 1}}, accounts={"a1": ["standard"]})
    broker = BrokerProcess(root, cfg).start()
    sched = SchedulerProcess(root, cfg)
    client = broker.client()
    try:
        sched.start()
        planted = plant(client, 40, payload=XSS)
        planted["scheduler"] = sched.endpoint
        with serve(create_app(load_config(cfg))) as url:
            yield url, client, planted
    finally:
        client.close()
        sched.kill()
        broker.kill()
        shutil.rmtree(root, ignore_errors=True)


def inert(body: str) -> None:
    """No model-written markup survives as markup (the page's own script tags are src= only)."""
    assert "<script>" not in body and "onerror=alert" not in body.replace("onerror=alert(1)&gt;", "")
    assert 'href="javascript:' not in body and "<img" not in body
    assert "&lt;script&gt;" in body


def test_insights_list_groups_filters_and_pages(panel):
    url, _, planted = panel
    s = Session(url)
    page = s.get("/insights")
    assert page.status == 200
    inert(page.body)
    assert "<math" in page.body                                    # the insights' $...$ rendered
    counts = dict(re.findall(r'status=(\w+)"[^>]*>\w+ \((\d+)\)', page.body))
    assert counts == {"pending": "5", "reviewing": "10", "blessed": "10", "interesting": "5", "rejected": "5",
                      "duplicate": "5"}
    blessed = s.get("/insights?status=blessed").body
    shown = re.findall(r'<tr id="row-([^"]+)"', blessed)
    assert sorted(shown) == sorted(planted["blessed"])
    reviewing = s.get("/insights?status=reviewing").body
    assert 'class="state reviewing"' in reviewing and "round2" in reviewing
    disputed = re.findall(r'<tr id="row-([^"]+)"', s.get("/insights?disputed=1").body)
    assert disputed and all(int(i.split(".i")[1]) - 1 + 10 * (int(i.split(".t")[1].split(".")[0]) - 1) in
                            (3, 10, 17, 24, 31, 38) for i in disputed)
    one = s.get("/insights?q=Insight+17:").body
    assert re.findall(r'<tr id="row-([^"]+)"', one) == ["fano-plane.t2.i8"]
    # paging: 40 insights, 15 a page, newest first, every one exactly once
    seen, path = [], "/insights?limit=15"
    while path:
        body = s.get(path).body
        seen += re.findall(r'<tr id="row-([^"]+)"', body)
        m = re.search(r'<a href="([^"]+)" rel="next">', body)
        path = m.group(1).replace("&amp;", "&") if m else None
    assert len(seen) == 40 and len(set(seen)) == 40 and seen[0] == planted["insights"][-1]


def test_an_insight_page_shows_its_review_rounds(panel):
    url, _, planted = panel
    iid = planted["insights"][5]
    body = Session(url).get(f"/insights/{iid}").body
    inert(body)
    assert "Round 1" in body and "chatgpt" in body and "Math check: verified" in body and "Mind changes" in body
    assert f'href="/threads/{iid.rsplit(".", 1)[0]}"' in body
    assert Session(url).get("/insights/no.such.i1").status == 404


def test_bless_reject_and_priority_through_the_operations_layer(panel):
    url, client, planted = panel
    s = Session(url)
    iid = planted["insights"][0]                                   # pending
    token = s.csrf(f"/insights/{iid}")
    r = s.post(f"/insights/{iid}/decide", {"csrf": token, "status": "blessed", "note": "clearly right"})
    assert r.status == 303 and "ok=" in r.header("location")
    rec = client.kv_get("explorer", XM.insight_key(iid))["value"]
    assert rec["status"] == "blessed" and rec["decided_by"] == "human"
    assert rec["overrides"][-1]["note"] == "clearly right"
    r = s.post(f"/insights/{iid}/decide", {"csrf": token, "status": "promoted"})
    assert r.status == 303 and "error=" in r.header("location")                  # the layer's refusal, shown
    assert client.kv_get("explorer", XM.insight_key(iid))["value"]["status"] == "blessed"
    r = s.post(f"/insights/{iid}/priority", {"csrf": token, "priority": "9", "back": "/insights?status=blessed"})
    assert r.header("location").startswith("/insights?status=blessed&ok=")
    assert client.kv_get("explorer", XM.insight_key(iid))["value"]["priority"] == 9
    for bad in ("11", "x"):
        r = s.post(f"/insights/{iid}/priority", {"csrf": token, "priority": bad})
        assert "error=" in r.header("location")
    assert client.kv_get("explorer", XM.insight_key(iid))["value"]["priority"] == 9
    assert s.post(f"/insights/{iid}/decide", {"status": "rejected"}).status == 403                # no CSRF token
    assert s.post("/insights/no.such.i1/decide", {"csrf": token, "status": "rejected"}).header("location").count(
        "error=") == 1


def test_the_document_page_renders_sections_comments_and_provenance(panel):
    url, _, planted = panel
    body = Session(url).get("/document").body
    inert(body)
    sid = planted["sections"][0]
    assert f'id="{sid}"' in body and f'data-comment-section="{sid}"' in body and "<math" in body
    src = planted["blessed"][0]
    assert f'href="/insights/{src}"' in body and f'href="/threads/{src.rsplit(".", 1)[0]}"' in body
    assert 'class="quote">three points</blockquote>' in body and 'data-status="open"' in body
    assert '<script src="/static/document.js" defer></script>' in body


def test_comment_versions_diff_revert_and_download(panel):
    url, client, planted = panel
    s = Session(url)
    sid = planted["sections"][1]
    token = s.csrf("/document")
    r = s.post("/document/comment", {"csrf": token, "section": sid, "text": "Say why.", "quote": "three  points"})
    assert r.status == 303 and r.header("location").startswith("/document?ok=comment+")
    mine = [c for _, _, c in client.kv_items("documenter", "comments/") if c["text"] == "Say why."]
    assert len(mine) == 1 and mine[0]["quote"] == "three points" and mine[0]["section"] == sid
    r = s.post("/document/comment", {"csrf": token, "section": sid, "text": "  "})
    assert "error=" in r.header("location")
    r = s.post("/document/comment", {"csrf": token, "section": "s9999", "text": "hello"})
    assert "error=" in r.header("location")
    # versions, one version, diff
    version = planted["version"]
    body = s.get("/document/versions").body
    assert f'id="version-{version}"' in body and 'class="revert" data-version="1"' in body
    assert "Section 1: incidence" in s.get("/document/versions/1").body
    assert s.get(f"/document/versions/{version + 5}").status == 404
    diff = s.get(f"/document/diff?from=1&to={version}").body
    assert 'class="diff added"' in diff and "+ ## Section 2: incidence" in diff
    # revert to version 1: a new version equal to it
    r = s.post("/document/revert", {"csrf": s.csrf("/document/versions"), "version": "1"})
    assert "ok=" in r.header("location")
    doc = DM.read_doc(_store(client))
    assert doc.version == version + 1 and [sec["id"] for sec in doc.ordered()] == [planted["sections"][0]]
    assert "error=" in s.post("/document/revert", {"csrf": token, "version": "99"}).header("location")
    # download: the exported Markdown
    md = s.get("/document/download?version=2")
    assert md.status == 200 and md.header("content-type").startswith("text/markdown")
    assert 'filename="fano-document-v2.md"' in md.header("content-disposition")
    assert md.body.startswith("<!-- fano document version 2") and "## Section 2: incidence" in md.body
    assert s.get("/document/download").body.startswith(f"<!-- fano document version {version + 1}")


def _store(client):
    from services.modules.store import Store
    return Store(client, "documenter")


def test_the_research_page_and_promote(panel):
    url, client, _ = panel
    s = Session(url)
    body = s.get("/research").body
    inert(body)
    assert 'id="finding-f1abcdef0001"' in body and "trust 82" in body
    token = s.csrf("/research")
    r = s.post("/research/promote", {"csrf": token, "finding": "f1abcdef0001", "type": "", "priority": "7"})
    assert "ok=" in r.header("location") and "promoted" in r.header("location")
    rec = client.kv_get("researcher", "promotions/f1abcdef0001")["value"]
    assert rec["priority"] == 7 and rec["by"] == "user"
    assert 'class="state blessed">promoted' in s.get("/research").body
    assert "already" in s.post("/research/promote", {"csrf": token, "finding": "f1abcdef0001"}).header("location")
    for bad in ({"finding": "nope"}, {"finding": "f1abcdef0001", "type": "axiom"}, {"finding": "f1", "priority": "x"}):
        assert "error=" in s.post("/research/promote", {"csrf": token, **bad}).header("location")
    questions = s.get("/research?tab=questions").body
    inert(questions)
    assert 'id="question-q1"' in questions
    sources = s.get("/research?tab=sources").body
    assert 'id="source-src1"' in sources and 'value="82"' in sources and 'id="source-src2"' in sources
    assert 'id="source-src1"' not in s.get("/research?tab=sources&status=ignored").body
    r = s.post("/research/source", {"csrf": token, "url": "http://example.net/page", "note": "n"})
    assert "ok=" in r.header("location")
    assert "error=" in s.post("/research/source", {"csrf": token, "url": "example.net"}).header("location")


def test_the_modules_page_sets_and_resets_weights(panel):
    url, client, planted = panel
    client.txn("advisor", [txn.put("proposals/000001", {"seq": 1, "at": 1_700_000_000.0, "status": "proposed",
                                                        "weights": {"explorer": 2.0}, "reason": "backlog"})])
    s = Session(url)
    body = s.get("/modules").body
    assert 'id="weight-explorer"' in body and 'id="weight-documenter"' in body and 'id="proposal-1"' in body
    token = s.csrf("/modules")
    r = s.post("/modules/weights", {"csrf": token, "w.documenter": "7.5", "w.explorer": ""})
    assert "ok=" in r.header("location")
    assert W.module_weights(planted["scheduler"])["weights"] == {"explorer": 1.0, "documenter": 7.5}
    for bad in ({"w.explorer": "x"}, {"w.nosuch": "1"}, {}):
        assert "error=" in s.post("/modules/weights", {"csrf": token, **bad}).header("location")
    assert W.module_weights(planted["scheduler"])["weights"] == {"explorer": 1.0, "documenter": 7.5}
    assert "ok=" in s.post("/modules/weights/reset", {"csrf": token}).header("location")
    assert W.module_weights(planted["scheduler"])["weights"] == {"explorer": 1.0}
