"""``fanoctl top``'s research panel against a real broker: records written into the modules' namespaces
with module transactions (the modules' own record builders), then counted by ``top --once``; the count
is bounded (``N+``) and ``top`` recounts at most every 10 s."""
from __future__ import annotations

import json
import types

import pytest
from click.testing import CliRunner

from cli import work
from cli.fanoctl import main
from services.modules.base import Store
from services.modules.documenter import model as D
from services.modules.explorer import model as X
from services.modules.explorer import threads as T
from services.modules.operations import summary as RS
from services.modules.researcher import model as R
from shared import txn
from tests.support import run_fanoctl

pytestmark = pytest.mark.integration


def top_json(broker) -> dict:
    # --timeout: the scheduler is not running here; its part of the frame says so sooner
    res = run_fanoctl(broker.config_path, "--json", "--timeout", "0.5", "top", "--once")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def put_threads(client, statuses: list[str]) -> None:
    ops = []
    for n, status in enumerate(statuses, 1):
        seed: dict = {"id": f"q{n}", "type": "question", "text": f"question {n}?", "priority": 5}
        ops.append(txn.put(X.thread_key(X.thread_id(seed["id"], 1)), dict(T.new_thread(seed, [], 1.0), status=status),
                             if_version=0))
    client.txn(X.MODULE, ops)


def test_top_once_shows_the_research_so_far(broker):
    c = broker.client()
    empty = top_json(broker)["research"]
    assert empty["threads"] == dict.fromkeys(X.THREAD_STATUSES, 0)
    assert empty["insights"] == dict.fromkeys(X.INSIGHT_STATUSES, 0)
    assert {k: empty[k] for k in ("sections", "document_version", "questions", "findings", "partial")} == \
        {"sections": 0, "document_version": 0, "questions": 0, "findings": 0, "partial": []}

    put_threads(c, ["active", "active", "ready", "extracted"])
    c.txn(X.MODULE, [txn.put(X.insight_key(f"q4.t1.i{n}"), {"id": f"q4.t1.i{n}", "text": "a claim", "status": status,
                                                              "priority": 5, "queued_priority": 5}, if_version=0)
                     for n, status in enumerate(["pending", "blessed", "blessed", "rejected", "duplicate"], 1)])
    doc = Store(c, "documenter")
    for n in (1, 2):   # two versions, each appending a section (what the documenter commits)
        ops, _ = D.commit(D.read_doc(doc), {f"s{n:04d}": {"title": f"Section {n}", "text": "text",
                                                         "establishes": [], "requires": []}},
                          {"kind": "insight", "ref": f"q4.t1.i{n}", "task": n}, f"section {n}", 2.0)
        c.txn("documenter", ops)
    c.txn(R.NS, [txn.put(R.k_question(R.question_id(f"why {n}?")), {"id": R.question_id(f"why {n}?"),
                                                                     "question": f"why {n}?"}) for n in range(3)]
          + [txn.put(R.k_finding(f"f{n}"), {"id": f"f{n}", "status": "kept"}) for n in range(4)])

    r = top_json(broker)["research"]
    assert r["threads"] == dict(dict.fromkeys(X.THREAD_STATUSES, 0), active=2, ready=1, extracted=1)
    assert r["insights"] == {"pending": 1, "blessed": 2, "interesting": 0, "rejected": 1, "duplicate": 1}
    assert (r["sections"], r["document_version"], r["questions"], r["findings"], r["partial"]) == (2, 2, 3, 4, [])

    text = run_fanoctl(broker.config_path, "--timeout", "0.5", "top", "--once")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    start = lines.index("research:")
    panel = [" ".join(line.split()) for line in lines[start + 1:start + 5]]
    assert panel == ["threads 4 active 2, ready 1, extracted 1",
                     "insights 5 pending 1, blessed 2, rejected 1, duplicate 1",
                     "document v2 2 sections",
                     "research 3 questions, 4 findings"]
    c.close()


def test_the_count_is_bounded_and_marked(broker, monkeypatch):
    c = broker.client()
    monkeypatch.setattr(RS, "PAGE", 2)
    monkeypatch.setattr(RS, "MAX_PAGES", 2)
    put_threads(c, ["active"] * 4)
    r = RS.research_summary(c, now=0.0)
    assert sum(r["threads"].values()) == 4 and r["partial"] == []     # exactly PAGE x MAX_PAGES: complete
    c.txn(X.MODULE, [txn.put(X.thread_key("q9.t1"), {"id": "q9.t1", "status": "ready"})])
    r = RS.research_summary(c, now=0.0)
    assert sum(r["threads"].values()) == 4 and r["partial"] == ["threads"]
    from cli.render import research_lines
    assert research_lines(r, 0.0)[1].split()[:2] == ["threads", "4+"]
    c.close()


def test_top_counts_the_research_at_most_every_ten_seconds(broker, monkeypatch):
    calls = []
    real = RS.research_summary
    monkeypatch.setattr(RS, "research_summary", lambda c, now=None: calls.append(now) or real(c, now))
    monkeypatch.setattr(work, "ask_scheduler", lambda what, **kw: None)
    clock = {"t": 0.0, "frames": 0}

    def sleep(seconds):
        clock["frames"] += 1
        if clock["frames"] >= 25:
            raise KeyboardInterrupt
        clock["t"] += seconds
    monkeypatch.setattr(work, "time", types.SimpleNamespace(monotonic=lambda: clock["t"], sleep=sleep))
    res = CliRunner().invoke(main, ["--config", str(broker.config_path), "--json", "top", "--interval", "1"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert res.output.count('"research"') == 25
    assert len(calls) == 3      # frames at t = 0..24 s: counted at 0, 10 and 20
