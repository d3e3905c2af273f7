"""``fanoctl research`` against the researcher's namespace in the in-process broker core (the modules' rig,
tests/unit/modhelp.py, behind fanoctl's client): tables, --json shapes, promotions, errors and exit codes."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import cli.research_researcher  # noqa: F401  (registers `fanoctl research`)
from cli.app import Ctl
from cli.fanoctl import main
from services.modules.researcher import model as M
from services.modules.researcher.service import ResearcherService
from shared import txn
from tests.unit.corehelp import CoreClient
from tests.unit.modhelp import ModuleRig


@pytest.fixture
def rig(tmp_path, monkeypatch):
    """The researcher over an in-process core; fanoctl's client is answered by the same core."""
    r = ModuleRig(ResearcherService, root=tmp_path / "rig", accounts=())

    def fanoctl_client(self):
        c = CoreClient(r.h, name="fanoctl")
        c.notify_writes = True   # as fanoctl's own client: a human's change wakes the module
        return c
    monkeypatch.setattr(Ctl, "client", fanoctl_client)
    return r


def run(rig, *args, code=0):
    res = CliRunner().invoke(main, ["--config", str(rig.h.config_path), *args], catch_exceptions=False)
    assert res.exit_code == code, f"{args}: exit {res.exit_code}\n{res.output}"
    return res


def run_json(rig, *args):
    return json.loads(run(rig, *args, "--json").stdout)


def finding(fid, sid="s1", **kw):
    return {"id": fid, "source_id": sid, "url": "http://a.example/", "domain": "a.example", "type": "supporting",
            "summary": f"Claim {fid}.", "quote": "", "concepts": ["duality"], "numbers": [7], "confidence": 0.7,
            "status": "kept", "related_questions": ["q1"], **kw}


@pytest.fixture
def seeded(rig):
    c = rig.client
    c.txn("researcher", [
        txn.put("questions/q1", {"id": "q1", "question": "Why 7?", "type": "challenging", "numbers": [7],
                                   "concepts": [], "priority": 6, "created": 1.0}),
        txn.put("findings/abc111", finding("abc111", type="challenging")),
        txn.put("findings/abc222", finding("abc222", confidence=0.4, status="low_confidence")),
        txn.put("findings/def333", finding("def333", sid="s2", domain="b.example")),
        txn.put("crossrefs/number/7", {"kind": "number", "value": "7", "domains": ["a.example", "b.example"],
                                         "findings": ["abc111", "def333"], "active": True, "strength": 0.5}),
        txn.put("errors/000000000009", {"task_id": 9, "kind": "researcher.extract_findings", "key": "k",
                                          "error": "unusable answer: no JSON object", "at": 1.0})])
    return c


def test_empty_views(rig):
    assert run(rig, "research", "questions").stdout.strip() == "no research questions yet"
    assert "add-source" in run(rig, "research", "sources").stdout
    assert run(rig, "research", "findings").stdout.strip() == "no findings yet"
    assert run(rig, "research", "crossrefs").stdout.strip() == "no cross-references yet"
    assert run_json(rig, "research", "errors") == {"errors": []}


def test_views_with_data(rig, seeded):
    rows = run_json(rig, "research", "findings")["findings"]
    assert [f["id"] for f in rows] == ["abc111", "def333", "abc222"]          # most confident first
    assert rows[0]["crossrefs"] == ["crossrefs/number/7"] and rows[2]["crossrefs"] == []
    text = run(rig, "research", "findings").stdout
    assert "abc222  --" in text and "0.40 low" in text and "abc111  X-" in text
    assert [f["id"] for f in run_json(rig, "research", "findings", "--source", "s2")["findings"]] == ["def333"]
    assert "Why 7?" in run(rig, "research", "questions").stdout
    assert "a.example, b.example" in run(rig, "research", "crossrefs").stdout
    assert "no JSON object" in run(rig, "research", "errors").stdout


def test_promote_writes_the_contract_record_once(rig, seeded):
    res = run_json(rig, "research", "promote", "abc1")
    p = res["promotion"]
    assert res["created"] and p["type"] == "question" and p["text"] == "Why 7?" and p["priority"] == 7
    assert p["source"] == "researcher:finding:abc111" and p["by"] == "user" and p["url"] == "http://a.example/"
    assert seeded.kv_get("researcher", "promotions/abc111")["value"] == p
    again = run_json(rig, "research", "promote", "abc111", "--type", "conjecture")
    assert not again["created"] and again["promotion"] == p                  # written once, never changed
    assert "already promoted" in run(rig, "research", "promote", "abc111").stdout
    res = run_json(rig, "research", "promote", "def333", "--type", "conjecture", "--priority", "3")
    assert res["promotion"]["text"] == "Claim def333." and res["promotion"]["priority"] == 3
    assert "XP" in run(rig, "research", "findings").stdout and "abc111  XP" in run(rig, "research",
                                                                                      "findings").stdout


def test_promote_errors(rig, seeded):
    res = run(rig, "research", "promote", "zzz", code=1)
    assert res.stderr.strip().startswith("fanoctl: NOT_FOUND: no finding 'zzz'")
    assert "ambiguous" in run(rig, "research", "promote", "abc", code=1).stderr
    run(rig, "research", "promote", "abc111", "--type", "axiom", code=2)
    run(rig, "research", "promote", "abc111", "--priority", "11", code=2)


def test_add_source(rig):
    res = run_json(rig, "research", "add-source", "HTTP://Example.org/Page#x", "--note", "a hint")
    src = res["source"]
    assert res["created"] and src["url"] == "http://example.org/Page" and src["note"] == "a hint"
    assert src["id"] == M.source_id("http://example.org/Page") and src["status"] == "new"
    assert rig.client.kv_get("researcher", M.k_fetch(src["id"]))["value"]["url"] == src["url"]
    assert "already known" in run(rig, "research", "add-source", "http://example.org/Page").stdout
    assert "not an absolute http(s) URL" in run(rig, "research", "add-source", "example.org", code=2).output
    assert "new     -      0         user    http://example.org/Page" in run(rig, "research", "sources").stdout
