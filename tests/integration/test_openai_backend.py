"""The openai-compatible provider (its real HTTP client) against the stand-in server on 127.0.0.1: every
scenario, the health probe, cancellation, the cross-process slot cap, and the whole process tree."""
from __future__ import annotations

import dataclasses
import json
import multiprocessing
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid

import pytest

from ops.standins.openai_api import OpenAIStandIn
from services.backends.base import ProviderError, Turn
from services.backends.openai_compat import OpenAIProvider, SlotPool, slot_dir
from shared.clock import Clock
from tests.support import run_fanoctl, running_tree, wait_for

pytestmark = pytest.mark.integration
never = lambda: False  # noqa: E731


@pytest.fixture
def standin():
    servers = []

    def make(**kw):
        server = OpenAIStandIn(**kw).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


def provider(tmp_path, server_or_url, account="acct", **settings):
    url = server_or_url if isinstance(server_or_url, str) else server_or_url.url
    if "models" not in settings:
        settings.setdefault("model", "standin-small")
    p = OpenAIProvider(account, {"base_url": url, **settings}, Clock(), tmp_path)
    p.start()
    return p


def turn(prompt="hello", task_id=1, mode="standard", conversation=None, index=0):
    return Turn(task_id=task_id, epoch=1, attempt=1, account="acct", mode=mode, module="adhoc", kind="ask",
                payload={"prompt": prompt}, prompt=prompt, conversation=conversation, turn_index=index)


def failure(p, t, cancelled=never) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        p.send(t, cancelled)
    return info.value


def cancel_after(seconds: float):
    flag = threading.Event()
    threading.Timer(seconds, flag.set).start()
    return flag.is_set


# --- the normal path ------------------------------------------------------------------------------------

def test_streamed_answer_and_conversation_replay(tmp_path, standin):
    server = standin()
    p = provider(tmp_path, server)
    first = p.send(turn("What is a widget?\nsecond line", conversation="c9"), never)
    assert first.text == "openai stand-in answer to: What is a widget?"
    assert first.meta["finish_reason"] == "stop" and first.meta["usage"]["completion_tokens"] > 0
    second = p.send(turn("And a gadget?", task_id=2, conversation="c9", index=1), never)
    assert second.text == "openai stand-in answer to: And a gadget?"
    sent = server.stats()["requests"][-1]["messages"]
    assert sent == [{"role": "user", "content": "What is a widget?\nsecond line"},
                    {"role": "assistant", "content": first.text},
                    {"role": "user", "content": "And a gadget?"}]
    # a new incarnation of the worker reconciles from the recorded transcript, without asking the server
    before = len(server.stats()["requests"])
    again = provider(tmp_path, server)
    assert again.reconcile(turn("And a gadget?", task_id=2, conversation="c9", index=1)).text == second.text
    assert again.reconcile(turn("unsent", task_id=3, conversation="c9", index=2)) is None
    assert len(server.stats()["requests"]) == before


def test_deep_mode_sends_the_deep_model_and_effort(tmp_path, standin):
    server = standin()
    p = provider(tmp_path, server, models={"standard": "standin-small", "deep": "standin-large"},
                 reasoning_effort="high", modes=["standard", "deep"])
    reply = p.send(turn("think hard", mode="deep"), never)
    assert reply.text == "openai stand-in answer to: think hard"        # the reasoning is not in the answer
    assert reply.meta["model"] == "standin-large" and reply.meta["reasoning_chars"] > 0
    request = server.stats()["requests"][-1]
    assert (request["model"], request["reasoning_effort"]) == ("standin-large", "high")
    p.send(turn("plain", task_id=2), never)
    assert server.stats()["requests"][-1]["reasoning_effort"] is None


def test_standin_answers_without_streaming_too(standin):
    # two slots: the stand-in frees a slot after the reply is sent, so a second request sent the moment
    # the first reply is read may find the one slot still taken (503 busy) on a loaded machine
    server = standin(slots=2)
    body = json.dumps({"model": "standin-small", "messages": [{"role": "user", "content": "hi"}]}).encode()
    req = urllib.request.Request(f"{server.url}/chat/completions", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        data = json.load(resp)
    assert data["choices"][0]["message"]["content"] == "openai stand-in answer to: hi"
    req.add_header("X-Standin-Scenario", "context_overflow")       # the per-request switch
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=10)
    assert info.value.code == 400 and "maximum context length" in info.value.read().decode()


# --- failures, one per scenario -------------------------------------------------------------------------

@pytest.mark.parametrize("scenario,expect", [
    ("loading", ("transient", False, 10.0)),
    ("queue_full", ("transient", False, 5.0)),
    ("context_overflow", ("terminal", False, None)),
    ("cut", ("transient", True, None)),
    ("error500", ("transient", False, None)),
    ("rate_limit", ("quota", False, 30.0)),
    ("malformed", ("transient", True, None)),
    ("thinking_only", ("terminal", True, None)),
    ("length", ("terminal", True, None)),
    ("empty", ("transient", True, None)),
    ("spend_limit", ("quota", False, 21600.0)),
])
def test_each_scenario_is_classified(tmp_path, standin, scenario, expect):
    server = standin()
    p = provider(tmp_path, server)
    p.send(turn("warm up"), never)                      # the probe is done; now the chat request itself fails
    err = failure(p, turn(f"question [standin:{scenario}]", task_id=2))
    assert (err.error_class, err.sent, err.retry_after) == expect, err.message
    if scenario == "context_overflow":
        assert "maximum context length" in err.message
    # the positive acceptance rule: a cut or empty completion is never the answer (nor recorded as one)
    if scenario in ("thinking_only", "length"):
        assert "raise max_tokens" in err.message and "not an answer" in err.message
    if scenario == "thinking_only":
        assert "spent on reasoning" in err.message
    # money is the account's: every mode cools (never the busy-server retry), and the message says why
    assert err.scope == ("account" if scenario == "spend_limit" else "mode")
    if scenario == "spend_limit":
        assert err.message.startswith("billing: spend limit") and "billing details" in err.message
    # nothing was recorded for the failed turn: reconciling it says "never answered"
    assert p.reconcile(turn(task_id=2)) is None
    # the failure makes the next send probe /health first, then it goes through (once the server has
    # noticed the abandoned request: the stand-in, like ollama, refuses what exceeds its one slot)
    wait_for(lambda: server.stats()["in_flight"] == 0, 10, what="the server to drop the failed request")
    health = server.stats()["hits"].get("/health", 0)
    assert p.send(turn("after", task_id=3), never).text == "openai stand-in answer to: after"
    assert server.stats()["hits"]["/health"] == health + 1


def test_a_completion_cut_at_its_budget_is_asked_again_once_with_twice_the_budget(tmp_path, standin):
    """Issue 16: a completion cut at max_tokens is never the answer; the task's next attempt (even by a
    restarted worker) asks for twice the budget, once; cut again, it fails naming the setting to raise."""
    server = standin()
    p = provider(tmp_path, server, max_tokens=4)
    first = turn("hello there my friend")                  # the answer is 8 words (tokens, for the stand-in)
    err = failure(p, first)
    assert (err.error_class, err.sent, err.retry_after) == ("transient", True, 0.0), err.message
    assert "max_tokens 4" in err.message and "retrying once with max_tokens 8" in err.message
    assert p.reconcile(first) is None                      # the half answer was not recorded
    again = provider(tmp_path, server, max_tokens=4)       # a restarted worker remembers the cut
    reply = again.send(dataclasses.replace(first, attempt=2), never)
    assert reply.text == "openai stand-in answer to: hello there my friend"
    assert [r["max_tokens"] for r in server.stats()["requests"][-2:]] == [4, 8]
    # another task starts from the configured budget; a server that cuts whatever the budget: one retry
    cut = turn("[standin:length] say a lot", task_id=2)
    assert failure(again, cut).error_class == "transient"
    final = failure(again, dataclasses.replace(cut, attempt=2))
    assert (final.error_class, final.sent) == ("terminal", True), final.message
    assert "max_tokens 8 again after one retry" in final.message and "raise max_tokens" in final.message
    assert [r["max_tokens"] for r in server.stats()["requests"][-2:]] == [4, 8]


def test_loading_then_ok(tmp_path, standin):
    server = standin(loading_seconds=1.0)
    p = provider(tmp_path, server)
    err = failure(p, turn())
    assert (err.error_class, err.sent) == ("transient", False) and "loading" in err.message.lower()
    assert server.stats()["requests"] == []             # the health probe caught it: no chat request left
    reply = wait_for(lambda: _try(p, turn()), 10, interval=0.2, what="the model to finish loading")
    assert reply.text == "openai stand-in answer to: hello"


def _try(p, t):
    try:
        return p.send(t, never)
    except ProviderError as exc:
        assert exc.error_class == "transient" and not exc.sent
        return None


def test_loading_switched_at_run_time(tmp_path, standin):
    server = standin()
    p = provider(tmp_path, server)
    p.send(turn(), never)
    _control(server, {"health": "loading"})
    err = failure(p, turn(task_id=2))                   # the chat request itself gets the 503
    assert (err.error_class, err.sent, err.retry_after) == ("transient", False, 10.0)
    n = len(server.stats()["requests"])
    err = failure(p, turn(task_id=2))                   # now the probe answers, nothing is sent
    assert (err.error_class, err.sent) == ("transient", False) and len(server.stats()["requests"]) == n
    _control(server, {"health": "ok"})
    assert p.send(turn(task_id=2), never).text.startswith("openai stand-in answer to")


def test_scenario_switched_at_run_time(tmp_path, standin):
    server = standin()
    p = provider(tmp_path, server)
    _control(server, {"scenario": "error500"})
    assert failure(p, turn()).error_class == "transient"
    _control(server, {"scenario": "normal"})
    assert p.send(turn(), never).text == "openai stand-in answer to: hello"


def _control(server, body: dict) -> dict:
    req = urllib.request.Request(f"{server.root}/control", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.load(resp)


def test_server_down_is_transient_and_unsent(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]                       # closed again: nothing listens there
    p = provider(tmp_path, f"http://127.0.0.1:{port}/v1")
    err = failure(p, turn())
    assert (err.error_class, err.sent) == ("transient", False) and err.retry_after
    assert p.check()["ok"] is False


def test_api_key_is_sent_as_bearer_and_a_wrong_one_is_auth(tmp_path, standin, monkeypatch):
    server = standin(api_key="sk-right-0123456789")
    monkeypatch.setenv("FANO_IT_OPENAI_KEY", "sk-right-0123456789")
    monkeypatch.setenv("FANO_IT_WRONG_KEY", "sk-wrong-0123456789")
    good = provider(tmp_path, server, api_key_env="FANO_IT_OPENAI_KEY")
    assert good.send(turn(), never).text.startswith("openai stand-in answer to")
    assert server.stats()["requests"][-1]["authorized"] is True
    assert good.check()["ok"] is True
    bad = provider(tmp_path, server, api_key_env="FANO_IT_WRONG_KEY")
    err = failure(bad, turn(task_id=2))
    assert (err.error_class, err.sent) == ("auth", False) and "sk-" not in err.message
    with pytest.raises(ProviderError) as info:
        bad.check()
    assert info.value.error_class == "auth"


def test_a_corrected_key_file_is_read_again_without_a_restart(tmp_path, standin):
    server = standin(api_key="sk-right-0123456789")
    keyfile = tmp_path / "openai.key"
    keyfile.write_text("sk-wrong-0123456789\n")
    p = provider(tmp_path, server, api_key_file=str(keyfile))
    assert failure(p, turn(task_id=1)).error_class == "auth"
    keyfile.write_text("sk-right-0123456789\n")     # fixed; then `fanoctl backends resume`
    assert p.send(turn(task_id=2), never).text.startswith("openai stand-in answer to")
    assert [r["authorized"] for r in server.stats()["requests"]] == [False, True]
    keyfile.unlink()            # unreadable: an auth failure per request, nothing sent; building never fails
    err = failure(p, turn(task_id=3))
    assert (err.error_class, err.sent) == ("auth", False) and "api_key_file" in err.message
    later = provider(tmp_path, server, api_key_file=str(keyfile))
    assert failure(later, turn(task_id=4)).error_class == "auth" and len(server.stats()["requests"]) == 2


def test_reconcile_recovers_only_this_tasks_answer_and_says_whether_a_lost_attempt_left(tmp_path, standin):
    server = standin()
    p = provider(tmp_path, server)
    first = turn("explore", task_id=5, conversation="explorer:s.t1", index=1)
    assert p.resend_note(first).endswith("never left this worker (no send was recorded)")
    assert p.unspent(first)             # its unit is refunded when the turn is sent again
    answer = p.send(first, never)
    assert p.reconcile(first).text == answer.text
    again = turn("explore", task_id=6, conversation="explorer:s.t1", index=1)   # a module's re-ask
    assert p.reconcile(again) is None
    p.send(again, never)
    assert len(server.stats()["requests"]) == 2
    # a request marked sent whose answer never came back (a kill -9 mid-answer) may have reached the server
    cut = turn("cut", task_id=7)
    p.store.mark_sent("task-7", 0, "cut", task_id=7, attempt=1)
    assert p.reconcile(cut) is None and p.resend_note(cut).startswith("attempt 1 may have reached the API")
    assert not p.unspent(cut)           # its unit stays counted


def test_unknown_model_is_terminal_and_says_what_to_fix(tmp_path, standin):
    server = standin()
    p = provider(tmp_path, server, account="local", model="llama-nine")
    err = failure(p, turn())
    assert (err.error_class, err.sent) == ("terminal", False)
    assert "llama-nine" in err.message and "accounts.local" in err.message and "fano.toml" in err.message
    check = p.check()
    assert check["ok"] is False and "llama-nine" in check["detail"] and "standin-small" in check["models"]


def test_check_lists_models(tmp_path, standin):
    server = standin()
    check = provider(tmp_path, server).check()
    assert check["ok"] is True and check["models"] == ["standin-small", "standin-large"]


# --- cancellation ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("scenario", ["slow", "hang"])
def test_cancel_closes_the_connection_promptly(tmp_path, standin, scenario):
    server = standin(slow_delay=0.2)
    p = provider(tmp_path, server)
    p.send(turn("warm up"), never)
    t0 = time.monotonic()
    err = failure(p, turn(f"long [standin:{scenario}]", task_id=2), cancel_after(0.4))
    assert time.monotonic() - t0 < 1.5
    assert (err.error_class, err.sent) == ("unknown", True)
    wait_for(lambda: server.stats()["in_flight"] == 0 and server.stats()["aborted"] == 1, 10,
             what="the server to see the client go away")
    assert p.reconcile(turn(task_id=2)) is None          # nothing recorded: may be re-sent


def test_cancel_before_sending_is_unsent(tmp_path, standin):
    server = standin()
    err = failure(provider(tmp_path, server), turn(), lambda: True)
    assert (err.error_class, err.sent) == ("transient", False) and server.stats()["requests"] == []


# --- capacity -------------------------------------------------------------------------------------------

def test_slots_discovered_from_props_and_ollama_has_none(tmp_path, standin):
    llama = standin(slots=3)
    p = provider(tmp_path, llama)
    p.send(turn(), never)
    assert p.slots.count == 3
    ollama = standin(flavor="ollama")
    q = provider(tmp_path, ollama)
    assert q.send(turn(), never).text.startswith("openai stand-in answer to")   # probe fell back to /models
    assert q.slots.count == 1 and ollama.stats()["hits"].get("/v1/models") == 1


def test_no_free_slot_gives_the_task_back_unsent(tmp_path, standin):
    server = standin()
    held = SlotPool(slot_dir(tmp_path, server.url), 1).try_acquire()      # "another worker" holds the slot
    try:
        p = provider(tmp_path, server, max_concurrency=1, slot_wait=0.3)
        err = failure(p, turn())
        assert (err.error_class, err.sent) == ("transient", False) and err.retry_after
        assert server.stats()["requests"] == []
    finally:
        SlotPool.release(held)
    assert p.send(turn(), never).text.startswith("openai stand-in answer to")


def test_queue_full_when_the_cap_exceeds_the_server(tmp_path, standin):
    server = standin(slots=1, chunk_delay=0.1)
    results = []

    def run(i):
        p = provider(tmp_path, server, account=f"a{i}", max_concurrency=2)   # a cap above the server's slots
        try:
            results.append(p.send(turn(f"q{i}", task_id=i), never).text)
        except ProviderError as exc:
            results.append(exc)
    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    errors = [r for r in results if isinstance(r, ProviderError)]
    assert len(results) == 2 and len(errors) == 1 and server.stats()["max_concurrent"] == 2
    assert (errors[0].error_class, errors[0].sent) == ("transient", False) and "busy" in errors[0].message


def _child_send(url: str, data_dir: str, account: str, ready, go, out) -> None:
    """One worker process: its own provider instance sending one turn when ``go`` is set."""
    p = OpenAIProvider(account, {"base_url": url, "model": "standin-small", "max_concurrency": 1,
                                 "slot_wait": 30}, Clock(), data_dir)
    p.start()
    ready.put(account)
    go.wait(30)
    try:
        out.put((account, "ok", p.send(turn(f"from {account}"), never).text))
    except ProviderError as exc:
        out.put((account, exc.error_class, exc.message))


def _two_processes(server, dirs) -> list:
    ctx = multiprocessing.get_context("spawn")
    ready, go, out = ctx.Queue(), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_child_send, args=(server.url, str(d), f"acct{i}", ready, go, out))
             for i, d in enumerate(dirs)]
    for proc in procs:
        proc.start()
    try:
        for _ in procs:
            ready.get(timeout=60)       # both imported and built: the sends start together
        go.set()
        results = [out.get(timeout=60) for _ in procs]
    finally:
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
    return sorted(results)


def test_two_processes_never_exceed_max_concurrency(tmp_path, standin):
    server = standin(slots=2, chunk_delay=0.15)       # the server would accept 2: only the locks stop it
    results = _two_processes(server, [tmp_path, tmp_path])
    assert results == [("acct0", "ok", "openai stand-in answer to: from acct0"),
                       ("acct1", "ok", "openai stand-in answer to: from acct1")]
    assert server.stats()["max_concurrent"] == 1


def test_without_a_shared_slot_directory_they_do_overlap(tmp_path, standin):
    # the control for the test above: the measurement does see two at once when nothing caps them
    server = standin(slots=2, chunk_delay=0.15)
    results = _two_processes(server, [tmp_path / "one", tmp_path / "two"])
    assert [r[1] for r in results] == ["ok", "ok"]
    assert server.stats()["max_concurrent"] == 2


# --- the whole tree -------------------------------------------------------------------------------------

PLANTED = f"sk-planted-{uuid.uuid4().hex}"
TREE_ACCOUNTS = """
[accounts.local-llm]
backend = "openai"
base_url = "{url}"
model = "standin-small"
api_key_env = "FANO_TEST_OPENAI_KEY"
max_concurrency = 1
"""


@pytest.fixture(scope="module")
def tree():
    server = OpenAIStandIn(api_key=PLANTED).start()
    try:
        with running_tree("fo", TREE_ACCOUNTS.format(url=server.url), env={"FANO_TEST_OPENAI_KEY": PLANTED}) as t:
            t.server = server
            yield t
    finally:
        server.stop()


def test_tree_ask_is_answered_by_the_openai_account(tree):
    res = run_fanoctl(tree, "ask", "hello", "--backend", "local-llm", "--wait")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("openai stand-in answer to: hello")
    assert tree.server.stats()["requests"][-1]["authorized"] is True   # the key went out as Bearer


def test_tree_planted_key_never_leaks(tree):
    ok = run_fanoctl(tree, "--json", "ask", "is it secret?", "--backend", "local-llm", "--wait")
    assert ok.returncode == 0, ok.stderr
    done = json.loads(ok.stdout)
    assert done["state"] == "DONE" and done["result"]["text"] == "openai stand-in answer to: is it secret?"
    parked = run_fanoctl(tree, "--json", "ask", "too long [standin:context_overflow]", "--backend", "local-llm",
                     "--wait")
    task = json.loads(parked.stdout)
    assert task["state"] == "PARKED" and "context overflow" in json.dumps(task)
    outputs = [ok.stdout, ok.stderr, parked.stdout, parked.stderr]
    for tid in (done["id"], task["id"]):
        shown = run_fanoctl(tree, "--json", "queue", "show", str(tid))
        assert shown.returncode == 0, shown.stderr
        outputs += [shown.stdout, shown.stderr]
    for text in outputs:
        assert PLANTED not in text
    wait_for(lambda: any((tree.root / "var/log").glob("backend-local-llm*.log")), 10, what="the worker log")
    leaks = []
    for path in tree.root.rglob("*"):          # logs, broker data (task records), transcripts, configs
        if path.is_file() and PLANTED.encode() in path.read_bytes():
            leaks.append(str(path))
    assert leaks == []
