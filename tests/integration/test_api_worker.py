"""The API accounts tell the truth through the whole worker runtime (issue 16, items 5, 8, 9, 10).

A real broker process, a backend worker process on a ``claude`` account, the ``anthropic`` SDK and the
Messages API stand-in (ops/standins/claude_api.py), and a fake scheduler (tests/worker_support.py): what
reaches the stand-in, what the broker charges and cools, and what the worker's log says.
"""
from __future__ import annotations

import time
import uuid

import pytest

from ops.standins.claude_api import ClaudeStandin
from tests.support import wait_for
from tests.worker_support import WorkerEnv

pytestmark = pytest.mark.integration

KEY = "sk-ant-worker-PLANTED-" + uuid.uuid4().hex


@pytest.fixture
def standin():
    s = ClaudeStandin(key=KEY, slow_interval=0.1, slow_events=600).start()
    yield s
    s.stop()


@pytest.fixture
def make_env():
    made = []

    def factory(url, keyfile, quotas=None, **settings):
        account = {"backend": "claude", "base_url": url, "api_key_file": str(keyfile),
                   "modes": ["standard", "deep"], "deep_max_tokens": 4096, "thinking_budget": 1024, **settings}
        env = WorkerEnv({"c": account}, broker={"backoff_base": 0.2, "backoff_max": 1.0}, quotas=quotas)
        made.append(env)
        return env

    yield factory
    for env in made:
        env.close()


def keyfile_with(env_root, key: str):
    path = env_root / "claude.key"
    path.write_text(key + "\n")
    return path


def ready(env, after=0) -> bytes:
    return env.scheduler.wait_type("ready", 20, after=after, worker="backend-c")["_from"]


def run(env, task_id: int, ttl: float = 10.0, timeout: float = 20.0) -> dict:
    ident = [m for m in env.scheduler.messages if m["type"] == "ready"][-1]["_from"]
    mark = env.scheduler.mark()
    env.scheduler.send(ident, "assign", task_id=task_id, ttl=ttl)
    return env.wait_end(task_id, timeout, after=mark)


def used(env, mode="standard") -> int:
    rows = [q for q in env.client.quota_show("c")["quotas"] if q["mode"] == mode]
    return rows[0]["windows"][0]["used"] if rows else 0


def cooldowns(env) -> dict:
    for acct in env.client.quota_show("c")["accounts"]:
        if acct["account"] == "c":
            return acct["cooldowns"]
    return {}


def submit(env, key, prompt, conversation=None, turn=0, mode=None):
    requires = {}
    if conversation:
        requires["conversation"] = conversation
    if mode:
        requires["mode"] = mode
    return env.client.submit(key, "explorer", "explorer.explore", {"prompt": prompt, "turn": turn},
                             requires=requires)["task"]


QUOTAS = {("c", "standard"): ["100/day@00:00 UTC"], ("c", "deep"): ["100/day@00:00 UTC"]}


def test_two_tasks_at_the_same_turn_with_the_same_prompt_are_both_sent_and_each_charged_once(standin,
                                                                                             make_env, tmp_path):
    env = make_env(standin.url, keyfile_with(tmp_path, KEY), quotas=QUOTAS)
    env.worker("c")
    ready(env)
    first = submit(env, "k1", "explore the seed", conversation="explorer:s.t1", turn=1)
    assert run(env, first["id"])["outcome"] == "done"
    again = submit(env, "k1:retry1", "explore the seed", conversation="explorer:s.t1", turn=1)
    assert run(env, again["id"])["outcome"] == "done"
    got = env.client.get(again["id"])
    assert "reconciled" not in got["result"]["meta"], "the second task was answered from the transcript"
    assert len(standin.requests) == 2 and used(env) == 2       # two requests, two units: nothing for nothing


def test_an_answer_recovered_by_reconciliation_sends_nothing_and_is_not_charged_again(standin, make_env, tmp_path):
    """The previous attempt's reply was recorded but never reported (the worker died in between): the next
    lease reconciles it without a request, and its own unit is given back (only the first stays)."""
    from services.backends.base import Turn
    from services.backends.claude import ClaudeProvider
    from shared.clock import Clock

    env = make_env(standin.url, keyfile_with(tmp_path, KEY), quotas=QUOTAS)
    task = submit(env, "k1", "one question", conversation="explorer:s.t2", turn=1)
    # a worker of account c that leases, records its intent, gets the answer, then dies before reporting
    lease = env.client.lease("backend-c", "c", backend="claude", modes=["standard"], ttl=1.0, task_id=task["id"])
    env.client.turn_begin(task["id"], lease["epoch"])
    settings = {"base_url": standin.url, "api_key_file": str(tmp_path / "claude.key")}
    dying = ClaudeProvider("c", settings, Clock(), env.data_dir)
    dying.send(Turn(task_id=task["id"], epoch=lease["epoch"], attempt=1, account="c", mode="standard",
                    module="explorer", kind="explorer.explore", prompt="one question",
                    conversation="explorer:s.t2", turn_index=1), lambda: False)
    wait_for(lambda: env.client.get(task["id"])["state"] == "PENDING", 10, what="the lease to expire")
    env.worker("c")
    ready(env)
    done = run(env, task["id"])
    assert done["outcome"] == "done", done
    got = env.client.get(task["id"])
    assert got["result"]["meta"]["reconciled"] is True and got["attempts"] == 2
    assert len(standin.requests) == 1 and used(env) == 1


def test_an_attempt_that_died_before_its_request_left_is_not_charged_when_sent_again(standin, make_env, tmp_path):
    """Issue 16 ("charged for sends that did not happen"): a worker recorded its intent with the broker and
    died before the request left (no send mark in the account's files). The next worker finds nothing to
    recover, sends the turn, and the broker gives the dead attempt's unit back: one request, one unit."""
    env = make_env(standin.url, keyfile_with(tmp_path, KEY), quotas=QUOTAS)
    task = submit(env, "k1", "one question", conversation="explorer:s.t3", turn=1)
    lease = env.client.lease("backend-c", "c", backend="claude", modes=["standard"], ttl=1.0, task_id=task["id"])
    env.client.turn_begin(task["id"], lease["epoch"])      # the intent, then the worker died
    assert used(env) == 1
    wait_for(lambda: env.client.get(task["id"])["state"] == "PENDING", 10, what="the lease to expire")
    assert env.client.get(task["id"])["unknown_turn"]["attempt"] == 1
    proc = env.worker("c")
    ready(env)
    done = run(env, task["id"])
    assert done["outcome"] == "done", done
    got = env.client.get(task["id"])
    assert "reconciled" not in got["result"]["meta"] and got["attempts"] == 2
    assert len(standin.requests) == 1 and used(env) == 1 and got["charged"] == 1
    assert "attempt 1 never left this worker" in proc.log()


def test_after_a_kill_9_the_log_never_claims_the_api_did_not_get_the_request(standin, make_env, tmp_path):
    env = make_env(standin.url, keyfile_with(tmp_path, KEY))
    proc = env.worker("c")
    ident = ready(env)
    standin.set_scenario("slow_stream", count=1)     # the first request only: the re-send is answered
    task = submit(env, "k1", "a long one")
    env.scheduler.send(ident, "assign", task_id=task["id"], ttl=1.5)
    wait_for(lambda: standin.requests, 10, what="the stand-in to get the request")
    proc.kill()
    wait_for(lambda: env.client.get(task["id"])["state"] == "PENDING", 10, what="the lease to expire")
    mark = env.scheduler.mark()
    second = env.worker("c")
    ready(env, after=mark)
    wait_for(lambda: run(env, task["id"])["outcome"] != "declined", 20, interval=0.3,
             what="the task to be leased again")
    log = second.log()
    assert "never got attempt 1" not in log
    assert "attempt 1 may have reached the API" in log, log[-3000:]
    assert len(standin.requests) == 2        # stateless: the re-send is allowed, and it says so


def test_a_corrected_key_file_and_backends_resume_are_enough(standin, make_env, tmp_path):
    keyfile = keyfile_with(tmp_path, "sk-ant-WRONG-" + uuid.uuid4().hex)
    env = make_env(standin.url, keyfile)
    env.worker("c")
    ready(env)
    task = submit(env, "k1", "who am I")
    assert run(env, task["id"])["outcome"] == "failed"
    acct = [a for a in env.client.quota_show("c")["accounts"] if a["account"] == "c"][0]
    assert acct["paused"] and "auth" in acct["pause_reason"]
    keyfile.write_text(KEY + "\n")
    env.client.call("account_resume", account="c")
    done = wait_for(lambda: (d := run(env, task["id"]))["outcome"] != "declined" and d, 20, interval=0.3,
                    what="the task to be leased after the resume")
    assert done["outcome"] == "done", done
    assert [r["key_ok"] for r in standin.requests] == [False, True]


def test_a_worker_started_before_its_key_file_exists_waits_for_it_instead_of_crash_looping(standin, make_env,
                                                                                           tmp_path):
    keyfile = tmp_path / "later.key"                 # not there yet
    env = make_env(standin.url, keyfile)
    proc = env.worker("c")
    ready(env)
    task = submit(env, "k1", "hello")
    done = run(env, task["id"])
    assert done["outcome"] == "failed" and "api_key_file" in done["message"], done
    acct = [a for a in env.client.quota_show("c")["accounts"] if a["account"] == "c"][0]
    assert acct["paused"] and "api_key_file" in acct["pause_reason"] and not standin.requests
    keyfile.write_text(KEY + "\n")
    env.client.call("account_resume", account="c")
    done = wait_for(lambda: (d := run(env, task["id"]))["outcome"] != "declined" and d, 20, interval=0.3,
                    what="the task to be leased after the resume")
    assert done["outcome"] == "done", done
    assert proc.alive() and [r["key_ok"] for r in standin.requests] == [True]


def test_quota_reset_on_a_claude_account_is_not_undone_by_cached_headers(make_env, tmp_path):
    tight = ClaudeStandin(key=KEY, requests_limit=1).start()
    try:
        env = make_env(tight.url, keyfile_with(tmp_path, KEY))
        env.worker("c")
        ready(env)
        assert run(env, submit(env, "k1", "one")["id"])["outcome"] == "done"      # bucket now empty
        second = submit(env, "k2", "two")
        assert run(env, second["id"])["outcome"] == "refused"                     # reported, not sent
        assert "standard" in cooldowns(env) and len(tight.requests) == 1
        tight.reset()                                   # the provider's limit was lifted ...
        env.client.quota_reset("c")                     # ... and the operator says so (fanoctl quota reset c)
        assert cooldowns(env) == {}
        done = wait_for(lambda: (d := run(env, second["id"]))["outcome"] != "declined" and d, 20, interval=0.3,
                        what="the task to be leased after the reset")
        assert done["outcome"] == "done", done
        assert cooldowns(env) == {} and [r["messages"][-1]["content"] for r in tight.requests] == ["two"]
    finally:
        tight.stop()


def test_an_organisation_spend_limit_cools_every_mode_of_the_account(standin, make_env, tmp_path):
    env = make_env(standin.url, keyfile_with(tmp_path, KEY))
    env.worker("c")
    ready(env)
    task = submit(env, "k1", "deep one [[standin:org_spend_limit]]", mode="deep")
    assert run(env, task["id"])["outcome"] == "refused"
    cds = cooldowns(env)
    assert set(cds) == {"*"}, cds
    assert cds["*"]["until"] > time.time() + 86400 * 0.5 and "usage limits" in cds["*"]["reason"]
    from cli.render import _cooling  # what `fanoctl backends ls` prints for it
    shown = _cooling({"cooldowns": cds}, time.time())
    assert shown.startswith("every mode until ") and "(in " in shown, shown
    assert "): billing: spend limit or credit exhausted" in shown, shown      # and why, after its time
    # the other mode does not spend a request to learn the same thing
    other = submit(env, "k2", "standard one")
    assert run(env, other["id"])["outcome"] == "declined" and len(standin.requests) == 1


@pytest.fixture
def openai_env():
    from ops.standins.openai_api import OpenAIStandIn
    server = OpenAIStandIn().start()
    made = []

    def factory(**settings):
        account = {"backend": "openai", "base_url": server.url, "model": "standin-small",
                   "modes": ["standard", "deep"], **settings}
        env = WorkerEnv({"c": account}, broker={"backoff_base": 0.2, "backoff_max": 1.0}, quotas=QUOTAS)
        made.append(env)
        return env

    yield server, factory
    for env in made:
        env.close()
    server.stop()


def test_openai_a_spend_limit_cools_every_mode_and_a_cut_completion_is_never_an_answer(openai_env):
    """The OpenAI-compatible account through the worker runtime: a 429 about money (no Retry-After) is not a
    busy server retried every few seconds but quota for the whole account; a completion cut at the token
    limit with nothing but reasoning fails the task and is delivered as nothing."""
    server, factory = openai_env
    env = factory()
    env.worker("c")
    ready(env)
    cut = submit(env, "k0", "think forever [standin:thinking_only]")
    assert run(env, cut["id"])["outcome"] == "failed"
    got = env.client.get(cut["id"])
    assert got["state"] == "PARKED" and not got.get("result"), got
    assert got["error"]["class"] == "terminal" and "spent on reasoning" in got["error"]["message"], got["error"]
    task = submit(env, "k1", "deep one [standin:spend_limit]", mode="deep")
    assert run(env, task["id"])["outcome"] == "refused"
    cds = cooldowns(env)
    assert set(cds) == {"*"}, cds
    assert cds["*"]["until"] > time.time() + 5 * 3600 and cds["*"]["reason"].startswith("billing: "), cds
    assert used(env, "deep") == 0                                 # refused before any token: refunded
    # the other mode does not spend a request to learn the same thing
    asked = len(server.stats()["requests"])
    other = submit(env, "k2", "standard one")
    assert run(env, other["id"])["outcome"] == "declined" and len(server.stats()["requests"]) == asked
