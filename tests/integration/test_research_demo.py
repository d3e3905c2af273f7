"""The research pipeline end to end, as the demo runs it: seeds in, document sections out.

The whole tree runs under a real supervisord (broker, scheduler, three simulated accounts and the
three module programs: ``module-explorer``, ``module-documenter``, ``module-researcher``), seeded with
``fanoctl seeds import seeds/demo.toml`` as ``ops/up`` does on a fresh installation. Everything is
then read back through ``fanoctl --json`` only, as a user or a script would:

1. threads appear with exchanges whose roles alternate explore, critique, explore, ...;
2. an insight is reviewed by the panel (its rounds are in ``insights show``), and one is blessed;
3. right after the first blessing, each module program is ``kill -9``-ed once through supervisord
   (which restarts it): the explorer and the researcher at once (the explorer with tasks in flight),
   the documenter as soon as it has a task out, before it has written any section from an insight
   (checked with the versions' world times);
4. the pipeline still completes: a document section written from a blessed insight (not only a
   prerequisite/foundation section), in the module's exported Markdown and in ``document export``,
   and research questions from the researcher;
5. nothing was applied twice: exchanges numbered 1..n without gaps or repeats, each insight id once
   per thread, section ids unique, each blessed insight in at most one section and one version.

The pipeline is made fast by configuration, not by shortcuts: short fixed sim latencies on a scaled
world clock (so the documenter's WAIT backoff of 300 world seconds passes in seconds), short threads
(explore, critique, explore make a thread ready), small extraction panels, two evaluators, and sim
reviewers who agree often (so insights are blessed rather than argued over for three rounds). It runs
in about 25-50 s on a 2-core machine (most of it fanoctl start-ups while polling).
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from shared.clock import Clock
from tests.support import REPO, run_fanoctl, running_tree, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.crash, pytest.mark.timeout(420)]

SCALE = 10.0          # world seconds per real second (FANO_CLOCK_SCALE for every program of the tree)
BUDGET = 330.0        # real seconds for the whole pipeline (start to last check), under the timeout
MODULES = ("module-explorer", "module-documenter", "module-researcher")
QUESTION_TYPES = ("supporting", "challenging", "alternative", "contextual")

# latencies are world seconds: 3.0 world = 0.3 s real at SCALE 10 (deep 0.5 s). One seed for every account:
# the simulated reviewers then share each insight's latent quality; good/agree/persuade make panels
# converge (mostly bless) within one or two rounds.
ACCOUNT = """
[accounts.{name}]
backend = "sim"
modes = ["standard", "deep"]
seed = 21
latency = {{ standard = {{ dist = "fixed", value = 3.0 }}, deep = {{ dist = "fixed", value = 5.0 }} }}
sloppy_rate = 0.1
reviews = {{ good = 0.6, bad = 0.15, agree = 0.9, persuade = 0.6 }}
"""
ACCOUNTS = ("sim-a", "sim-b", "sim-c")

CONFIG = """
[broker]
backoff_base = 0.5
backoff_max = 5.0
lease_ttl = 10.0

[scheduler]
lease_ttl = 10.0
assign_timeout = 5.0
module_weights = { explorer = 0, documenter = 20, researcher = 0 }

[modules.explorer]
max_active_threads = 2
threads_per_account = 0   # a fixed thread count (load.py scales it with the accounts)
min_exchanges = 3
min_critiques = 1
max_exchanges = 4
max_proposals = 4
max_final_insights = 3
reviewers = 3
repair_interval = 2.0

[modules.documenter]
evaluators = 2
max_active = 2
review_share = 0.1

[modules.researcher]
plan_interval = 0.5
observe_interval = 1.0
questions_batch = 4
""" + "".join(ACCOUNT.format(name=n) for n in ACCOUNTS)


class Budget:
    """One deadline for the whole pipeline; each wait gets what is left of it (and says which stage ran
    out, with the tails of the module logs)."""

    def __init__(self, tree, seconds: float):
        self.tree = tree
        self.t0 = time.monotonic()
        self.end = self.t0 + seconds
        self.marks: dict[str, float] = {}

    def wait(self, predicate, what: str, interval: float = 0.5):
        left = max(1.0, self.end - time.monotonic())
        try:
            value = wait_for(predicate, left, interval=interval, what=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc} (after {self.elapsed():.0f}s)\n{logs(self.tree)}") from None
        self.marks[what] = round(self.elapsed(), 1)
        return value

    def elapsed(self) -> float:
        return time.monotonic() - self.t0


def logs(tree, tail: int = 2500) -> str:
    out = []
    for name in (*MODULES, "scheduler"):
        path = Path(tree.root) / "var" / "log" / f"{name}.log"
        try:
            out.append(f"--- {name} ---\n{path.read_text(errors='replace')[-tail:]}")
        except OSError:
            out.append(f"--- {name}: no log ---")
    return "\n".join(out)


def ctl(tree, *args):
    """``fanoctl --json ARGS``, parsed; fails with its stderr."""
    res = run_fanoctl(tree, "--json", *args, timeout=60)
    assert res.returncode == 0, f"fanoctl {' '.join(args)} exited {res.returncode}: {res.stderr}{res.stdout}"
    return json.loads(res.stdout)


def insight_sections(doc: dict) -> list[dict]:
    return [s for s in doc["sections"] if (s.get("source") or {}).get("kind") == "insight"]


def check_exchanges(shown: dict, settled: bool = True) -> list[dict]:
    """A thread's transcript: turns 1..n, each once, roles alternating explore/critique; n == the thread's
    count once the module is stopped (while it runs, `threads show` reads the thread before its
    exchanges, so a turn applied in between is in the transcript and not yet in the count)."""
    ex = shown["exchanges"]
    assert [e["turn"] for e in ex] == list(range(1, len(ex) + 1)), [e["turn"] for e in ex]
    assert [e["role"] for e in ex] == [("explore", "critique")[k % 2] for k in range(len(ex))]
    assert all(e["thread_id"] == shown["thread"]["id"] and e["response"].strip() for e in ex)
    count = shown["thread"]["exchanges"]
    assert (count == len(ex)) if settled else (count <= len(ex)), (count, len(ex))
    return ex


def exported_section(tree, text: str, sid: str) -> bool:
    """Whether exported Markdown ``text`` holds section ``sid`` as it is in the version the file names."""
    m = re.match(r"<!-- fano document version (\d+)", text)
    if not m or f"section {sid} " not in text and f"section {sid} -->" not in text:
        return False
    at = ctl(tree, "document", "show", "--version", m.group(1))
    assert at["version"] == int(m.group(1)), at
    sec = next((s for s in at["sections"] if s["id"] == sid), None)
    assert sec is not None, f"the export of version {at['version']} has {sid}, the version has not"
    assert f"## {sec['title']}\n" in text and sec["text"].strip() in text, (sec, text)
    return True


def world_time(tree) -> float:
    """Now on the tree's scaled world clock (what the modules stamp their records with)."""
    return Clock(SCALE, origin=float(tree.env["FANO_CLOCK_ORIGIN"])).world()


def restarted(tree, name: str, before: int):
    info = {p["name"]: p for p in tree.programs()}[name]
    return info["statename"] == "RUNNING" and info["pid"] not in (before, 0)


def test_demo_seeds_become_reviewed_insights_document_sections_and_research_questions():
    with running_tree("fp", CONFIG, scale=SCALE) as tree:
        programs = {p["name"] for p in tree.programs()}
        assert set(MODULES) <= programs and {f"backend-{a}" for a in ACCOUNTS} <= programs, programs
        budget = Budget(tree, BUDGET)

        imported = ctl(tree, "seeds", "import", str(REPO / "seeds" / "demo.toml"))
        assert len(imported["added"]) == 7 and not imported["updated"], imported
        seeds = {s["id"]: s for s in ctl(tree, "seeds", "ls")["seeds"]}
        axioms = {i for i, s in seeds.items() if s["type"] == "axiom"}
        assert len(axioms) == 3

        # 1. threads with exchanges, roles alternating; axioms never get a thread
        def explored():
            rows = [t for t in ctl(tree, "threads", "ls")["threads"] if t["exchanges"] >= 2]
            return rows or None
        thread = budget.wait(explored, "a thread with exchanges")[0]
        assert thread["seed_id"] in seeds and thread["seed_id"] not in axioms
        ex = check_exchanges(ctl(tree, "threads", "show", thread["id"]), settled=False)
        assert len(ex) >= 2 and all(e["backend"] in ACCOUNTS for e in ex)

        # 2. an insight the panel reviewed (rounds visible in `insights show`), then a blessed one
        def reviewed():
            d = ctl(tree, "insights", "ls")
            done = [i for i in d["insights"] if d["stages"].get(i["id"]) == "done"]
            return done or None
        first = budget.wait(reviewed, "an insight whose review is done")[0]
        shown = ctl(tree, "insights", "show", first["id"])
        rounds = shown["review"]["rounds"]
        assert "1" in rounds and len(rounds["1"]["responses"]) >= 2, rounds
        assert shown["review"]["outcome"]["status"] in ("blessed", "interesting", "rejected"), shown["review"]

        def blessed():
            return ctl(tree, "insights", "ls", "--status", "blessed")["insights"] or None
        first_blessed = budget.wait(blessed, "a blessed insight", interval=0.2)[0]

        # 3. kill -9 each module program once, mid-flow: the explorer and the researcher at once, the
        # documenter as soon as it has a task out (its first planning turn or incorporation step), which
        # is before it can have written a section from an insight (checked below by the versions' times)
        questions_before = len(ctl(tree, "research", "questions", "--limit", "10000")["questions"])
        pids = {p["name"]: p["pid"] for p in tree.programs()}
        kills = {}
        for name in ("module-explorer", "module-researcher", "module-documenter"):
            module = name.split("-", 1)[1]

            def work_out(module=module):
                states = ctl(tree, "status")["modules"].get(module, {})
                return {k: v for k, v in states.items() if k in ("PENDING", "RUNNING") and v} or None
            if name == "module-documenter":
                out = budget.wait(work_out, "the documenter to have a task out", interval=0.1)
            else:
                out = work_out()
            tree.kill(name)
            kills[name] = {"world": world_time(tree), "elapsed": round(budget.elapsed(), 1), "in_flight": out}
        assert kills["module-explorer"]["in_flight"], f"the explorer had no work in flight: {kills}"
        for name in MODULES:
            budget.wait(lambda name=name: restarted(tree, name, pids[name]), f"{name} restarted after kill -9",
                        interval=0.2)
        restarted_pids = {p["name"]: p["pid"] for p in tree.programs()}

        shown = ctl(tree, "insights", "show", first_blessed["id"])
        insight, review = shown["insight"], shown["review"]
        assert insight["status"] == "blessed" and insight["decided_by"] == "panel", insight
        assert review["stage"] == "done" and review["outcome"]["status"] == "blessed", review
        assert review["rounds"]["1"]["responses"], review
        assert all(r["rating"] in ("⚡", "?", "✗", "ABANDON")
                   for rd in review["rounds"].values() for r in rd["responses"].values())

        # 4. a section written from a blessed insight, then exported
        def documented():
            doc = ctl(tree, "document", "show")
            good = {i["id"]: i for i in ctl(tree, "insights", "ls", "--status", "blessed")["insights"]}
            hits = [(s, good[s["source"]["ref"]]) for s in insight_sections(doc) if s["source"]["ref"] in good]
            return (doc, hits) if hits else None
        doc, hits = budget.wait(documented, "a document section written from a blessed insight", interval=1.0)
        section, source = hits[0]
        versions = ctl(tree, "document", "versions")["versions"]
        first_insight_version = min((v for v in versions if v["cause"]["kind"] == "insight"),
                                    key=lambda v: v["version"])
        assert first_insight_version["at"] > kills["module-documenter"]["world"], \
            f"a section from an insight was written before the documenter's kill: {first_insight_version} {kills}"
        assert section["text"].strip() and section["title"].strip()
        assert section["status"] in ("provisional", "stable")
        # the section is the insight's (source.ref), and its title is the insight's wording (the simulated
        # draft is headed with the start of the insight text it was given)
        assert " ".join(section["title"].split()) in " ".join(source["text"].split()), (section["title"],
                                                                                        source["text"])

        # the module's own export, and `document export`: each holds the section as it is in the version
        # the file names (a section review may have revised it since we read it)
        export_file = Path(tree.root) / "data" / "document.md"
        budget.wait(lambda: exported_section(tree, export_file.read_text(), section["id"]),
                    "the module's export to hold the section")
        copy = Path(tree.root) / "copy.md"
        res = ctl(tree, "document", "export", str(copy))
        assert res["path"] == str(copy) and res["version"] >= 1
        text = copy.read_text()
        assert text.startswith(f"<!-- fano document version {res['version']}")
        assert exported_section(tree, text, section["id"]), text

        # 5. the researcher turned insights and sections into questions, and kept going after its kill
        def questions():
            qs = ctl(tree, "research", "questions", "--limit", "10000")["questions"]
            return qs if len(qs) > questions_before else None
        qs = budget.wait(questions, "new research questions after the kills")
        assert all(q["type"] in QUESTION_TYPES and q["question"].strip() and 1 <= q["priority"] <= 10 for q in qs)
        assert len({q["id"] for q in qs}) == len(qs)

        # every module program is still the one restarted after its kill (no crash loop since)
        now = {p["name"]: (p["statename"], p["pid"]) for p in tree.programs()}
        assert all(now[m] == ("RUNNING", restarted_pids[m]) for m in MODULES), (now, restarted_pids)

        # 6. nothing duplicated by the kills; the modules are stopped first (SIGTERM through supervisord)
        # so that what fanoctl reads in several calls is one consistent state
        for name in MODULES:
            tree.rpc().supervisor.stopProcess(name)
        check_nothing_twice(tree)
        print(f"\nresearch demo timeline (s): {budget.marks}\nkills: {kills}")


def check_nothing_twice(tree) -> None:
    threads = ctl(tree, "threads", "ls")["threads"]
    assert len({t["id"] for t in threads}) == len(threads)
    ins = ctl(tree, "insights", "ls")["insights"]
    by_id = {i["id"]: i for i in ins}
    assert len(by_id) == len(ins)
    for t in threads:
        shown = ctl(tree, "threads", "show", t["id"])
        check_exchanges(shown)
        ids = shown["thread"].get("insight_ids") or []
        assert len(ids) == len(set(ids)), (t["id"], ids)
        assert all(by_id[i]["thread_id"] == t["id"] for i in ids if i in by_id)
        # one consolidation per thread: its insights and nothing else carry the thread's id
        assert {i["id"] for i in ins if i.get("thread_id") == t["id"]} == set(ids), (t["id"], ids)
    blessed = [i for i in ins if i["status"] == "blessed"]
    texts = [" ".join(i["text"].split()).lower() for i in blessed]
    assert len(texts) == len(set(texts)), "two blessed insights with the same text"

    doc = ctl(tree, "document", "show")
    sids = [s["id"] for s in doc["sections"]]
    assert len(sids) == len(set(sids)), sids
    refs = [s["source"]["ref"] for s in insight_sections(doc)]
    assert len(refs) == len(set(refs)), f"an insight documented twice: {refs}"
    assert all(by_id[r]["status"] == "blessed" for r in refs), [(r, by_id[r]["status"]) for r in refs]
    versions = ctl(tree, "document", "versions")["versions"]
    assert [v["version"] for v in versions] == list(range(1, doc["version"] + 1))
    causes = [(v["cause"]["kind"], str(v["cause"]["ref"]), v["cause"]["task"]) for v in versions]
    assert len(causes) == len(set(causes)), "a change was applied twice"
    incorporations = [v["cause"]["ref"] for v in versions if v["cause"]["kind"] == "insight"]
    assert len(incorporations) == len(set(incorporations)), f"an insight incorporated twice: {incorporations}"
    assert set(refs) <= set(incorporations)
