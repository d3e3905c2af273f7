"""The researcher end to end: a real broker, scheduler, sim backend workers and the researcher module as
processes, with a local HTTP site as "the web". Insights written into the explorer namespace become
questions; configured and user-given sources are fetched, evaluated and mined for findings; a finding is
promoted with fanoctl; and the module survives repeated kill -9 without losing or duplicating anything."""
from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner

import cli.research_researcher  # noqa: F401  (registers `fanoctl research`)
from cli.fanoctl import main
from services.modules.researcher import crossref
from services.modules.researcher import model as M
from services.modules.researcher.parsers import parse_findings, parse_questions
from services.modules.researcher.service import EVALUATE_SOURCE, EXTRACT_FINDINGS, GENERATE_QUESTIONS
from shared import txn
from shared.records import TaskRecord
from tests.scheduler_support import SchedulerProcess
from tests.support import BrokerProcess, ServiceProcess, short_tmpdir, toml_value, wait_for, write_config
from tests.worker_support import WorkerProcess

pytestmark = pytest.mark.integration

TOPICS = ["The Fano plane has 7 points, 7 lines and 168 collineations.",
          "The Klein quartic has 168 automorphisms and genus 3.",
          "The Heawood graph is the incidence graph of the Fano plane: 14 vertices, 21 edges.",
          "The Hamming code [7,4] corrects one error; its codewords relate to the 7 lines.",
          "Octonion multiplication follows the 7 lines of the Fano plane.",
          "The Steiner system S(2,3,7) is the Fano plane; there are 30 labelled copies.",
          "GL(3,2) is simple of order 168, isomorphic to PSL(2,7).",
          "The 24-cell and the number 24 appear next to 168 = 7 * 24."]


class Web:
    """A few HTML pages plus an image and a dead link, on 127.0.0.1 and localhost (two domains)."""

    def __init__(self):
        self.hits: dict[str, int] = {}
        web = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                web.hits[self.path] = web.hits.get(self.path, 0) + 1
                if self.path.startswith("/page"):
                    n = int(self.path[5:].split(".")[0]) % len(TOPICS)
                    body = (f"<html><head><title>Page {self.path}</title></head><body><h1>Notes</h1>"
                            f"<p>{TOPICS[n]}</p><p>See also the references.</p></body></html>").encode()
                    ctype = "text/html; charset=utf-8"
                elif self.path == "/image.png":
                    body, ctype = b"\x89PNG", "image/png"
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}/{path}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Stack:
    def __init__(self, web: Web, latency: float, sources: list[str], accounts=("sim-a", "sim-b"),
                 garbage: float = 0.0, settings: dict | None = None):
        """``garbage``: the sim workers' share of answers without the expected format; ``settings``: more
        keys of ``[modules.researcher]``."""
        self.root = short_tmpdir("fr")
        cfg = write_config(self.root, broker={"backoff_base": 0.2, "backoff_max": 1.0},
                           scheduler={"lease_ttl": 30.0, "assign_timeout": 5.0},
                           accounts={a: {"backend": "sim", "modes": ["standard"], "seed": i + 1,
                                         "garbage_rate": garbage, "latency": {"dist": "fixed", "value": latency}}
                                     for i, a in enumerate(accounts)})
        researcher = {"plan_interval": 0.3, "observe_interval": 0.5, "questions_batch": 4, "sources": sources,
                      **(settings or {})}
        with open(cfg, "a") as f:
            f.write("[modules.researcher]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in researcher.items()))
            f.write('trusted_domains = { "127.0.0.1" = 90, "localhost" = 90 }\n')
            f.write("[modules.researcher.fetch]\nmin_interval = 0.1\ntimeout = 2.0\nretry_backoff = 0.2\n")
        self.config_path = cfg
        self.broker = BrokerProcess(self.root, cfg).start()
        self.scheduler = SchedulerProcess(self.root, cfg).start()
        self.workers = [WorkerProcess(self.root, cfg, a).start() for a in accounts]
        self.module = ServiceProcess(self.root, cfg, ["researcher"], "researcher.log")
        self.module.spawn()
        self.client = self.broker.client()

    def scan(self, prefix: str, ns: str = "researcher") -> dict:
        return {key: value for key, _, value in self.client.kv_items(ns, prefix)}

    def tasks(self, kind: str) -> list[TaskRecord]:
        return self.client.list(module="researcher", kind=kind, limit=1000, payloads=True)["tasks"]

    def cli(self, *args) -> dict:
        res = CliRunner().invoke(main, ["--config", str(self.config_path), *args, "--json"], catch_exceptions=False)
        assert res.exit_code == 0, f"fanoctl {args}: {res.output}"
        return json.loads(res.stdout)

    def logs(self) -> str:
        return f"--- module ---\n{self.module.log(8000)}\n--- scheduler ---\n{self.scheduler.log(2000)}"

    def close(self):
        self.client.close()
        self.module.kill()
        for w in self.workers:
            w.kill()
        self.scheduler.kill()
        self.broker.cleanup()


@pytest.fixture
def web():
    w = Web()
    yield w
    w.close()


@pytest.fixture
def make_stack():
    made = []

    def factory(*args, **kw):
        made.append(Stack(*args, **kw))
        return made[-1]
    yield factory
    for s in made:
        s.close()


def write_insights(stack: Stack, n: int) -> None:
    ops = [txn.put(f"insights/ins-{i:03d}", {"text": TOPICS[i % len(TOPICS)], "status": "pending",
                                               "tags": ["fano_plane", "symmetry"] if i % 2 else ["klein_quartic"]})
           for i in range(n)]
    ops.append(txn.put("insights/ins-rejected", {"text": "Numerology.", "status": "rejected", "tags": []}))
    stack.client.txn("explorer", ops)


def settled(stack: Stack, n_sources: int):
    sources = stack.scan("sources/")
    done = [s for s in sources.values() if s["status"] in M.TERMINAL_SOURCE]
    unconsumed = stack.client.unconsumed("researcher")["tasks"]
    return len(sources) == n_sources and len(done) == n_sources and not unconsumed and sources


def test_insights_and_sources_become_questions_findings_and_a_promotion(make_stack, web):
    stack = make_stack(web, latency=0.05, sources=[web.url("page0.html"), web.url("page1.html", "localhost")])
    write_insights(stack, 6)
    added = stack.cli("research", "add-source", web.url("page6.html"), "--note", "from a reader")
    assert added["created"] and added["source"]["origin"] == "user" and added["source"]["status"] == "new"
    assert not stack.cli("research", "add-source", web.url("page6.html"))["created"]
    stack.cli("research", "add-source", web.url("image.png"))
    stack.cli("research", "add-source", web.url("gone.html"))
    try:
        sources = wait_for(lambda: settled(stack, 5), 45, interval=0.3, what="every source to settle")
    except AssertionError as exc:
        raise AssertionError(f"sources: {json.dumps(stack.scan('sources/'), indent=1)[:3000]}\n{stack.logs()}") from exc
    by_url = {s["url"]: s for s in sources.values()}
    assert by_url[web.url("image.png")]["status"] == "fetch_failed"
    assert by_url[web.url("image.png")]["error"]["reason"] == "content_type"
    assert by_url[web.url("gone.html")]["error"]["status"] == 404
    pages = [by_url[web.url(p)] for p in ("page0.html", "page6.html")] + [by_url[web.url("page1.html", "localhost")]]
    assert all(s["status"] == "extracted" and s["trust_score"] >= 50 for s in pages), pages
    assert {s["origin"] for s in pages} == {"config", "user"}

    questions = wait_for(lambda: stack.scan("questions/"), 20, what="questions")
    assert all(q["type"] in ("supporting", "challenging", "alternative", "contextual") for q in questions.values())
    wait_for(lambda: len(stack.scan("observed/explorer/")) == 6, 20, what="all insights observed")
    assert "observed/explorer/ins-rejected" not in stack.scan("observed/")

    findings = stack.cli("research", "findings")["findings"]
    assert findings and sum(s["findings"] for s in pages) == len(findings)
    assert {f["domain"] for f in findings} == {f"127.0.0.1:{web.port}", f"localhost:{web.port}"}
    assert stack.cli("research", "questions")["questions"]
    assert len(stack.cli("research", "sources")["sources"]) == 5
    assert web.hits["/page0.html"] == 1                      # fetched once: nothing fetched twice

    fid = findings[0]["id"]
    res = stack.cli("research", "promote", fid[:8], "--type", "question", "--priority", "7")
    assert res["created"] and res["promotion"]["type"] == "question" and res["promotion"]["priority"] == 7
    promo = stack.client.kv_get("researcher", f"promotions/{fid}")["value"]
    assert promo["by"] == "user" and promo["source"] == f"researcher:finding:{fid}" and promo["text"]
    assert not stack.cli("research", "promote", fid)["created"]
    assert next(f for f in stack.cli("research", "findings")["findings"] if f["id"] == fid)["promoted"]
    # the explorer's namespace is only read
    assert set(stack.scan("", ns="explorer")) == {f"insights/ins-{i:03d}" for i in range(6)} | {"insights/ins-rejected"}


def test_question_batches_whose_answers_stay_unusable_are_paused_with_a_visible_reason(make_stack, web):
    """Issue 16 for the researcher: every answer lacks the expected JSON (the sim's garbage_rate 1). Before,
    every new insight was asked about again; now ``pause_after`` unusable batches in a row pause question
    batches, ``research questions`` says why, and ``research resume`` lets them start again."""
    stack = make_stack(web, latency=0.05, sources=[], garbage=1.0, settings={"questions_batch": 1, "pause_after": 2})
    write_insights(stack, 6)

    def paused():
        streak = stack.scan("state/").get(M.K_QUESTION_STREAK)
        return streak if streak and streak.get("paused") else None
    try:
        streak = wait_for(paused, 30, interval=0.2, what="question batches to pause")
    except AssertionError as exc:
        raise AssertionError(stack.logs()) from exc
    assert streak["failures"] == 2 and "2 unusable answers in a row" in streak["pause_reason"], streak
    time.sleep(2.0)                                          # four looks at new insights: no batch starts
    assert len(stack.tasks(GENERATE_QUESTIONS)) == 2
    shown = stack.cli("research", "questions")
    assert shown["waiting"]["questions"].startswith("2 unusable answers in a row to the researcher's question "
                                                    "batches"), shown["waiting"]
    assert stack.cli("research", "resume") == {"resumed": True}
    wait_for(lambda: len(stack.tasks(GENERATE_QUESTIONS)) > 2, 20, interval=0.2, what="a batch after the resume")
    assert stack.module.alive(), stack.logs()


def test_kill_9_of_the_module_mid_flow_loses_and_duplicates_nothing(make_stack, web):
    urls = [web.url(f"page{i}.html", "localhost" if i % 2 else "127.0.0.1") for i in range(10)]
    stack = make_stack(web, latency=0.5, sources=urls[:4])
    write_insights(stack, 12)
    for url in urls[4:]:
        stack.cli("research", "add-source", url)
    rng = random.Random(7)
    mid_flow = 0   # kills that hit while work was still open
    for _ in range(6):
        time.sleep(rng.uniform(0.4, 1.4))
        stack.module.kill()
        open_sources = [s for s in stack.scan("sources/").values() if s["status"] not in M.TERMINAL_SOURCE]
        mid_flow += bool(open_sources or stack.client.unconsumed("researcher")["tasks"])
        stack.module.spawn()
    assert mid_flow >= 3, "the kills came too late to test anything"
    try:
        wait_for(lambda: settled(stack, 10) and not stack.scan("state/")
                 and len(stack.scan("observed/explorer/")) == 12, 60, interval=0.3,
                 what="every source settled and every insight observed")
    except AssertionError as exc:
        raise AssertionError(f"sources: {json.dumps(stack.scan('sources/'), indent=1)[:3000]}\n{stack.logs()}") from exc
    sources = {s["id"]: s for s in stack.scan("sources/").values()}
    findings = stack.scan("findings/")
    evaluations, extractions = stack.tasks(EVALUATE_SOURCE), stack.tasks(EXTRACT_FINDINGS)
    assert sorted(t["payload"]["source_id"] for t in evaluations) == sorted(sources) and len(sources) == 10
    assert all(t["state"] == "DONE" and t["consumed"] for t in evaluations + extractions)
    assert all(s["status"] in ("extracted", "ignored") for s in sources.values()), sources
    assert len({t["payload"]["source_id"] for t in extractions}) == len(extractions)
    # every finding of every extraction answer is recorded exactly once: stored, or counted on the stored
    # finding it duplicates (services.modules.dedup); nothing else is stored
    recorded: Counter = Counter()
    for f in findings.values():
        assert f.get("duplicate_count", 0) == len(f.get("duplicates") or [])
        recorded[f["task_id"]] += 1
        recorded.update(d["task_id"] for d in f.get("duplicates") or [])
    expected = set()
    for t in extractions:
        sid = t["payload"]["source_id"]
        parsed = parse_findings(t["result"]["text"])["findings"]
        assert sources[sid]["findings"] + sources[sid]["duplicates"] == len(parsed) == recorded[t["id"]]
        expected |= {M.finding_id(sid, f["summary"]) for f in parsed}
    assert set(findings) <= {M.k_finding(i) for i in expected}
    # the cross-reference index lists each finding once under each of its numbers and concepts
    index = stack.scan("crossrefs/")
    for rec in index.values():
        assert rec["findings"] == sorted(set(rec["findings"]))
    for f in findings.values():
        if f["status"] == "kept":
            for kind, value in crossref.refs_of(f):
                assert f["id"] in index[M.crossref_key(kind, value)]["findings"]
    # every question batch was applied once: each of its questions is stored or counted (once) on the stored
    # question it duplicates, and its insights are observed
    questions = stack.scan("questions/")
    asked: Counter = Counter()
    for q in questions.values():
        asked[q["batch"]] += 1
        asked.update(d["batch"] for d in q.get("duplicates") or [])
    for t in stack.tasks(GENERATE_QUESTIONS):
        assert t["consumed"]
        parsed = parse_questions(t["result"]["text"])["questions"]
        assert asked[t["key"]] == len(parsed)
        for q in parsed:
            qid = M.question_id(q["question"])
            assert M.k_question(qid) in questions or any(
                d["question"] == q["question"] for v in questions.values() for d in v.get("duplicates") or [])
    assert len(stack.scan("observed/explorer/")) == 12
    assert stack.module.starts == 7
