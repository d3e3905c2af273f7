"""The research pipeline end to end on accounts of each real kind, through the project's stand-ins.

The research has only ever run end to end on sim accounts, so a provider that cannot serve a module's
turn (issue 16: the web provider refused the explorer's first turn, numbered 1) went unnoticed. Here the
whole tree runs under a real supervisord — broker, scheduler, the explorer, documenter and researcher
modules, and two accounts of one real kind with different models:

* ``claude``: the ``anthropic`` SDK against ops/standins' Messages API stand-in;
* ``openai``: the OpenAI-compatible client against its stand-in (two models on one server);
* ``chatgpt``, ``gemini``: real Chromium through Playwright against ops/standins/chat_site (browser).

The stand-ins answer the modules' research prompts in their formats with the sim's generator, read from
the prompt alone (services/backends/prompt_answers.py), tuned so that every insight is good and every
reviewer agrees (panels bless in round 1). One seed question; the test then reads back through
``fanoctl --json`` only: a thread with at least two turns (explore, then critique), an extracted insight,
a review whose panel completed with at least two reviewers on distinct accounts, and a document section
written from a blessed insight. Small settings (a thread is ready after explore + critique, two proposals
per extractor) and a clock scaled x10 keep each run short.
"""
from __future__ import annotations

import json
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support import run_fanoctl, running_tree, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

SCALE = 30.0                       # world seconds per real second: the documenter's WAIT backoff (300) is 10 s
BUDGET = 150.0                     # real seconds from the seed to the section (aim: well under 90)
# every insight good, every reviewer agreeing, every documenter vote favourable: the pipeline, not the
# verdicts, is under test (the web stand-in answers both accounts of a skin alike, so a REVISE would repeat)
SURE = {"good": 1.0, "bad": 0.0, "agree": 1.0, "persuade": 1.0, "favour": 1.0}
KEY = "sk-e2e-research-" + uuid.uuid4().hex

MODULES_TOML = """
[broker]
backoff_base = 0.5
backoff_max = 5.0

[scheduler]
module_weights = { explorer = 0, documenter = 20, researcher = 0 }

[modules.explorer]
max_active_threads = 1
threads_per_account = 0
open_threads_per_seed = 1
max_threads_per_seed_hour = 1      # one thread: the accounts then serve its extraction, reviews and section
min_exchanges = 2
min_critiques = 1
max_exchanges = 2
max_proposals = 2
max_final_insights = 2
reviewers = 2
repair_interval = 2.0

[modules.documenter]
evaluators = 2
max_active = 1
review_share = 0.0

[modules.researcher]
observe_interval = 100000.0
"""

CLAUDE = """
[accounts.{name}]
backend = "claude"
modes = ["standard", "deep"]
base_url = "{url}"
api_key_env = "FANO_TEST_E2E_KEY"
model = "{model}"
deep_model = "{model}-deep"
deep_max_tokens = 4096
thinking_budget = 2048
"""
OPENAI = """
[accounts.{name}]
backend = "openai"
base_url = "{url}"
api_key_env = "FANO_TEST_E2E_KEY"
models = {{ standard = "{model}", deep = "{model}" }}
modes = ["standard", "deep"]
max_concurrency = 2
"""
WEB = """
[accounts.{name}]
backend = "{kind}"
modes = ["standard", "deep"]
url = "{url}"
chromium = "{chromium}"
poll_interval = 0.2
min_stable = 0.5
timeout = 60
"""


@contextmanager
def standin(kind: str):
    """The kind's stand-in, answering research prompts with every panel blessing; yields (url, extra)."""
    if kind == "claude":
        from ops.standins.claude_api import ClaudeStandin
        server = ClaudeStandin(key=KEY, reviews=SURE, requests_limit=1000).start()
    elif kind == "openai":
        from ops.standins.openai_api import OpenAIStandIn
        server = OpenAIStandIn(slots=4, models=("model-a", "model-b"), api_key=KEY, chunk_delay=0.0,
                               reviews=SURE).start()
    else:
        from ops.standins.chat_site import ChatSiteServer
        server = ChatSiteServer(reviews=SURE).start()
    try:
        yield server
    finally:
        server.stop()


def accounts_toml(kind: str, url: str, chromium: str | None) -> str:
    names = [(f"{kind}-a", "model-a"), (f"{kind}-b", "model-b")]
    template = {"claude": CLAUDE, "openai": OPENAI}.get(kind, WEB)
    return "".join(template.format(name=n, model=m, url=url, kind=kind, chromium=chromium) for n, m in names)


def ctl(tree, *args):
    res = run_fanoctl(tree, "--json", *args, timeout=60)
    assert res.returncode == 0, f"fanoctl {' '.join(args)} exited {res.returncode}: {res.stderr}{res.stdout}"
    return json.loads(res.stdout)


def logs(tree, tail: int = 2500) -> str:
    out = []
    for path in sorted((Path(tree.root) / "var" / "log").glob("*.log")):
        if path.name.startswith(("module-", "backend-")):
            out.append(f"--- {path.name} ---\n{path.read_text(errors='replace')[-tail:]}")
    return "\n".join(out)


KINDS = ["claude", "openai", pytest.param("chatgpt", marks=pytest.mark.browser),
         pytest.param("gemini", marks=pytest.mark.browser)]


@pytest.mark.parametrize("kind", KINDS)
def test_a_seed_becomes_a_thread_an_insight_a_review_and_a_section(kind, request):
    chromium = None
    if kind in ("chatgpt", "gemini"):
        from tests.browser_support import require_browser
        chromium = require_browser()
    accounts = (f"{kind}-a", f"{kind}-b")
    with standin(kind) as server:
        url = server.url
        config = MODULES_TOML + accounts_toml(kind, url, chromium)
        with running_tree("fr", config, env={"FANO_TEST_E2E_KEY": KEY}, scale=SCALE) as tree:
            t0 = time.monotonic()
            marks = {}

            def wait(predicate, what, interval=1.0):
                left = max(1.0, t0 + BUDGET - time.monotonic())
                try:
                    value = wait_for(predicate, left, interval=interval, what=what)
                except AssertionError as exc:
                    raise AssertionError(f"{kind}: {exc}\n{logs(tree)}") from None
                marks[what] = round(time.monotonic() - t0, 1)
                return value

            added = ctl(tree, "seeds", "add", "Why does the Fano plane have exactly 168 symmetries?",
                        "--type", "question", "--priority", "8")
            assert added, added

            # a thread with an explore turn and a critique, both answered by this kind's accounts
            def thread():
                rows = [t for t in ctl(tree, "threads", "ls")["threads"] if t["exchanges"] >= 2]
                return rows[0] if rows else None
            row = wait(thread, "a thread with two turns")
            shown = ctl(tree, "threads", "show", row["id"])
            ex = shown["exchanges"]
            assert [e["role"] for e in ex[:2]] == ["explore", "critique"], ex
            assert all(e["backend"] in accounts and e["response"].strip() for e in ex), ex
            assert "[NEW_INSIGHTS]" in ex[0]["response"] or "NEW_INSIGHTS" in ex[0]["response"]

            # an extracted insight, and its review completed by a panel of distinct accounts
            def reviewed():
                d = ctl(tree, "insights", "ls")
                done = [i for i in d["insights"] if d["stages"].get(i["id"]) == "done"]
                return done or None
            first = wait(reviewed, "an insight reviewed by the panel")[0]
            review = ctl(tree, "insights", "show", first["id"])["review"]
            responses = review["rounds"]["1"]["responses"]
            assert len(responses) >= 2, review
            assert {r["backend"] for r in responses.values()} <= set(accounts)
            assert len({r["backend"] for r in responses.values()}) == len(responses), responses
            assert review["outcome"]["status"] == "blessed", review["outcome"]

            # a document section written from a blessed insight
            def section():
                doc = ctl(tree, "document", "show")
                blessed = {i["id"] for i in ctl(tree, "insights", "ls", "--status", "blessed")["insights"]}
                hits = [s for s in doc["sections"] if (s.get("source") or {}).get("kind") == "insight"
                        and s["source"].get("ref") in blessed]
                return hits[0] if hits else None
            sec = wait(section, "a document section from a blessed insight")
            assert sec["text"].strip() and sec["title"].strip()

            # no task of the pipeline ended PARKED (an answer the modules could not use, a turn refused)
            status = ctl(tree, "status")
            assert all(not states.get("PARKED") for states in status["modules"].values()), status["modules"]
            print(f"\n{kind}: {marks} (s since the seed); status modules: {status.get('modules')}")
        if kind in ("chatgpt", "gemini"):
            prompts = server.prompts()
            assert any("[NEW_INSIGHTS]" in p for p in prompts) and any("[CRITICAL_ISSUES]" in p for p in prompts)
