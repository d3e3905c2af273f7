"""The claude backend with the real ``anthropic`` SDK against the Messages API stand-in, and the whole tree.

Every scenario of ops/standins/claude_api.py is driven through ClaudeProvider.send; each test also checks
what reached the stand-in (the SDK's own retries are off: one request per send, never two).
"""
import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from ops.standins.claude_api import ClaudeStandin
from services.backends.base import ProviderError, Turn
from services.backends.claude import ClaudeProvider
from shared.clock import Clock
from tests.support import REPO, run_fanoctl, running_tree, wait_for, wait_paused_for_auth

pytestmark = pytest.mark.integration

KEY = "sk-ant-integ-PLANTED-" + uuid.uuid4().hex


@pytest.fixture
def standin():
    s = ClaudeStandin(key=KEY, slow_interval=0.05, slow_events=2000).start()
    yield s
    s.stop()


def make(standin_or_url, tmp_path, key=KEY, **settings):
    url = standin_or_url if isinstance(standin_or_url, str) else standin_or_url.url
    settings = {"base_url": url, "modes": ["standard", "deep"], "deep_max_tokens": 4096,
                "thinking_budget": 1024, **settings}
    p = ClaudeProvider("claude-t", settings, Clock(), tmp_path, environ={"ANTHROPIC_API_KEY": key})
    p.start()
    return p


def turn(prompt, task_id=1, mode="standard", **kw):
    return Turn(task_id=task_id, epoch=1, attempt=kw.pop("attempt", 1), account="claude-t", mode=mode,
                module="m", kind="ask", prompt=prompt, **kw)


def never():
    return False


def send_error(p, t, cancelled=never) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        p.send(t, cancelled)
    return info.value


# --- answers --------------------------------------------------------------------------------------------

def test_a_streamed_answer_with_meta_and_rate_limit_snapshot(standin, tmp_path):
    p = make(standin, tmp_path)
    reply = p.send(turn("hello\nsecond line"), never)
    assert reply.text == "claude stand-in answer to: hello"
    meta = reply.meta
    assert meta["model"] == "claude-sonnet-4-6" and meta["mode"] == "standard" and meta["stop_reason"] == "end_turn"
    assert meta["usage"]["output_tokens"] > 0 and meta["request_id"].startswith("req_")
    assert meta["ratelimit"]["requests"]["limit"] == 50 and meta["ratelimit"]["requests"]["remaining"] == 49
    assert KEY not in json.dumps(meta)
    [rec] = standin.requests
    assert rec["stream"] is True and rec["key_ok"] is True and rec["outcome"] == "served"
    assert rec["messages"] == [{"role": "user", "content": "hello\nsecond line"}] and rec["thinking"] is None


def test_a_reply_cut_at_max_tokens_is_asked_again_once_with_twice_the_budget(standin, tmp_path):
    """Issue 16: ``stop_reason: "max_tokens"`` is never the answer (it was delivered, half written); the
    task's next attempt — by a restarted worker too — asks for twice the budget, once; cut again, it fails
    naming the setting to raise. Another task starts from the configured budget."""
    p = make(standin, tmp_path, max_tokens=4)
    first = turn("hello there my friend")                 # the answer is 8 words (tokens, for the stand-in)
    err = send_error(p, first)
    assert (err.error_class, err.sent, err.retry_after) == ("transient", True, 0.0), err.message
    assert "max_tokens 4" in err.message and "retrying once with max_tokens 8" in err.message
    assert p.reconcile(first) is None                     # the half answer was not recorded
    again = make(standin, tmp_path, max_tokens=4)
    reply = again.send(turn("hello there my friend", attempt=2), never)
    assert reply.text == "claude stand-in answer to: hello there my friend"
    assert [r["max_tokens"] for r in standin.requests] == [4, 8]
    long = "a question whose answer is far longer than eight words"
    assert send_error(again, turn(long, task_id=2)).error_class == "transient"
    final = send_error(again, turn(long, task_id=2, attempt=2))
    assert (final.error_class, final.sent) == ("terminal", True), final.message
    assert "max_tokens 8 again after one retry" in final.message and "raise max_tokens of accounts.claude-t" \
        in final.message
    assert [r["max_tokens"] for r in standin.requests] == [4, 8, 4, 8]


def test_many_small_deltas_and_pings_accumulate(standin, tmp_path):
    p = make(standin, tmp_path)
    reply = p.send(turn("streamed [[standin:streaming]]"), never)
    assert reply.text == "claude stand-in answer to: streamed"
    assert standin.requests[0]["scenario"] == "streaming"


def test_deep_mode_uses_extended_thinking_and_returns_only_the_text(standin, tmp_path):
    p = make(standin, tmp_path, deep_model="claude-opus-4-5")
    reply = p.send(turn("think hard", mode="deep"), never)
    assert reply.text == "claude stand-in answer to: think hard" and "step by step" not in reply.text
    assert reply.meta["model"] == "claude-opus-4-5" and reply.meta["mode"] == "deep"
    rec = standin.requests[0]
    assert rec["thinking"] == {"type": "enabled", "budget_tokens": 1024} and rec["max_tokens"] == 4096


def test_deep_mode_adaptive_thinking(standin, tmp_path):
    p = make(standin, tmp_path, thinking="adaptive", effort="low")
    assert p.send(turn("adapt", mode="deep"), never).text == "claude stand-in answer to: adapt"
    assert standin.requests[0]["thinking"] == {"type": "adaptive"}


# --- every failure, classified, sent once -----------------------------------------------------------------

def _next_month_start(now: float) -> float:
    first = dt.datetime.fromtimestamp(now, dt.UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return (first + dt.timedelta(days=32)).replace(day=1).timestamp()


@pytest.mark.parametrize("scenario,cls,retry_after,sent,words", [
    ("rate_limit_short", "quota", 5.0, False, "rate limited"),
    ("rate_limit_long", "quota", 900.0, False, "rate limited"),
    ("spend_limit", "quota", "next month", False, "no quick retry"),
    ("credit_balance", "quota", 21600.0, False, "no quick retry"),
    ("overloaded", "transient", None, False, "not a cool-down"),
    ("server_error", "transient", None, False, "500 api_error"),
    ("midstream_error", "transient", None, True, "mid-stream"),
    ("bad_key", "auth", None, False, "authentication_error"),
    ("prompt_too_long", "terminal", None, False, "prompt is too long"),
    ("too_large", "terminal", None, False, "413"),
    ("disconnect", "transient", None, True, "connection lost"),
    ("empty_reply", "transient", None, True, "no answer text"),
])
def test_each_scenario_is_classified_and_the_sdk_never_retries(standin, tmp_path, scenario, cls, retry_after,
                                                                sent, words):
    p = make(standin, tmp_path)
    err = send_error(p, turn(f"question [[standin:{scenario}]]"))
    assert (err.error_class, err.sent) == (cls, sent), err.message
    if retry_after == "next month":
        assert err.retry_after == pytest.approx(_next_month_start(time.time()) - time.time(), abs=5)
    else:
        assert err.retry_after == retry_after
    assert words in err.message and KEY not in err.message
    assert len(standin.requests) == 1, "the SDK retried on its own"
    assert p.store.was_sent("task-1", 0) and p.reconcile(turn(f"question [[standin:{scenario}]]")) is None


def test_scenarios_switched_at_run_time_through_the_control_endpoint(standin, tmp_path):
    p = make(standin, tmp_path)
    req = urllib.request.Request(standin.url + "/__scenario", method="POST",
                                 data=json.dumps({"scenario": "overloaded", "count": 1}).encode())
    with urllib.request.urlopen(req, timeout=5) as res:
        assert json.load(res) == {"scenario": "overloaded"}
    assert send_error(p, turn("first", task_id=1)).error_class == "transient"
    assert p.send(turn("second", task_id=2), never).text == "claude stand-in answer to: second"
    with urllib.request.urlopen(standin.url + "/__requests", timeout=5) as res:
        served = json.load(res)
    assert [r["scenario"] for r in served] == ["overloaded", "normal"]


def test_a_wrong_key_is_auth_and_the_key_is_in_no_message(standin, tmp_path):
    wrong = "sk-ant-WRONG-" + uuid.uuid4().hex
    p = make(standin, tmp_path, key=wrong)
    err = send_error(p, turn("hi"))
    assert (err.error_class, err.sent) == ("auth", False)
    assert wrong not in err.message and KEY not in err.message
    assert standin.requests[0]["key_ok"] is False
    with pytest.raises(ProviderError) as info:
        p.check()
    assert info.value.error_class == "auth"


def test_connection_refused_is_transient_and_not_sent(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = make(f"http://127.0.0.1:{port}", tmp_path)
    err = send_error(p, turn("anyone?"))
    assert (err.error_class, err.sent) == ("transient", False)


def test_a_read_timeout_after_sending_is_transient_and_sent(tmp_path):
    slow = ClaudeStandin(key=KEY, slow_interval=1.0).start()
    try:
        p = make(slow, tmp_path, timeout=0.3)
        t0 = time.monotonic()
        err = send_error(p, turn("slow [[standin:slow_stream]]"))
        assert (err.error_class, err.sent) == ("transient", True) and "timed out" in err.message
        assert time.monotonic() - t0 < 5
    finally:
        slow.stop()


def test_cancel_mid_stream_returns_promptly_and_aborts_the_stream(standin, tmp_path):
    p = make(standin, tmp_path)
    cancel = threading.Event()
    threading.Timer(0.4, cancel.set).start()
    t0 = time.monotonic()
    err = send_error(p, turn("long one [[standin:slow_stream]]"), cancel.is_set)
    took = time.monotonic() - t0
    assert (err.error_class, err.sent) == ("unknown", True)
    assert 0.35 < took < 0.4 + 1.0, took     # the stream itself would last 100 s
    wait_for(lambda: standin.requests[0]["outcome"] == "aborted", 10, what="the stand-in to see the stream aborted")
    # nothing was recorded as answered: the next attempt re-sends (a stateless API allows it)
    again = turn("long one", attempt=2)
    assert p.reconcile(again) is None and p.send(again, never).text == "claude stand-in answer to: long one"


def test_an_empty_requests_bucket_is_a_cool_down_reported_before_sending(tmp_path):
    tight = ClaudeStandin(key=KEY, requests_limit=2).start()
    try:
        p = make(tight, tmp_path)
        p.send(turn("one", task_id=1), never)
        p.send(turn("two", task_id=2), never)
        err = send_error(p, turn("three", task_id=3))
        assert (err.error_class, err.sent) == ("quota", False)
        assert 0 < err.retry_after <= 61
        assert len(tight.requests) == 2 and not p.store.was_sent("task-3", 0)
    finally:
        tight.stop()


# --- conversations ----------------------------------------------------------------------------------------

def test_a_conversation_replays_its_transcript_and_pins_a_summary_once_over_budget(standin, tmp_path):
    p = make(standin, tmp_path, transcript_chars=1000, system="You are a careful mathematician.")
    prompts = ["Seed: study the Fano plane " + "a" * 120,
               "Definition: F := the Fano plane PG(2,2)",
               *[f"Question {i} about lines " + "z" * 150 for i in range(2, 8)]]
    replies = []
    for i, prompt in enumerate(prompts):
        reply = p.send(turn(prompt, task_id=100 + i, conversation="explorer:fano", turn_index=i), never)
        replies.append(reply.text)
        assert reply.meta["replay"]["exchanges"] + reply.meta["replay"]["summarized"] == i
    requests = standin.requests
    assert len(requests) == len(prompts)
    # each prompt went out exactly once, as the last message of its own request
    assert [r["messages"][-1]["content"] for r in requests] == prompts
    assert requests[1]["messages"] == [{"role": "user", "content": prompts[0]},
                                       {"role": "assistant", "content": replies[0]},
                                       {"role": "user", "content": prompts[1]}]
    assert requests[1]["system"] == "You are a careful mathematician."
    summarized = [i for i, r in enumerate(requests) if "Summary of" in (r["system"] or "")]
    assert summarized and summarized == list(range(summarized[0], len(prompts))) and summarized[0] <= 4
    for i in summarized:
        r = requests[i]
        assert r["system"].startswith("You are a careful mathematician.\n\nSummary of")
        assert "F := the Fano plane PG(2,2)" in r["system"]               # the definition survives the cut
        assert r["messages"][0]["content"] == prompts[0]                  # the first exchange stays pinned
        assert r["messages"][1]["content"] == replies[0]
        assert all("Definition: F" not in m["content"] for m in r["messages"])
        assert len(r["messages"]) < 2 * i + 1
        roles = [m["role"] for m in r["messages"]]
        assert roles == ["user", "assistant"] * (len(roles) // 2) + ["user"]
    # the transcript is durable: a new worker reconciles the last turn of the same task without a request
    fresh = make(standin, tmp_path)
    last = turn(prompts[-1], task_id=107, conversation="explorer:fano", turn_index=7)
    assert fresh.reconcile(last).text == replies[-1] and len(standin.requests) == len(prompts)


def test_a_new_task_at_the_same_turn_with_the_same_prompt_is_sent_not_answered_from_the_transcript(standin,
                                                                                                      tmp_path):
    """Issue 16, item 5: a module re-asking (a new task: same conversation, turn index and prompt) got the
    first task's stored reply without a request, marked reconciled; an unusable answer came back forever."""
    p = make(standin, tmp_path)
    first = p.send(turn("explore the seed", task_id=31, conversation="explorer:s.t1", turn_index=1), never)
    again = turn("explore the seed", task_id=32, conversation="explorer:s.t1", turn_index=1)
    assert p.reconcile(again) is None                     # not this task's answer
    second = p.send(again, never)
    assert len(standin.requests) == 2, "the second task was answered from the transcript"
    assert "reconciled" not in second.meta and second.meta["request_id"] != first.meta["request_id"]
    # each request carries no earlier exchange of that index: the re-ask replaces, it does not replay
    assert standin.requests[1]["messages"] == [{"role": "user", "content": "explore the seed"}]


def test_a_corrected_key_file_is_read_again_without_a_restart(tmp_path):
    keyfile = tmp_path / "claude.key"
    keyfile.write_text("sk-ant-WRONG-" + uuid.uuid4().hex + "\n")
    s = ClaudeStandin(key=KEY).start()
    try:
        p = ClaudeProvider("claude-t", {"base_url": s.url, "api_key_file": str(keyfile)}, Clock(), tmp_path)
        p.start()
        assert send_error(p, turn("hi", task_id=1)).error_class == "auth"
        keyfile.write_text(KEY + "\n")          # the operator fixes the file, then `backends resume`
        assert p.send(turn("hi again", task_id=2), never).text == "claude stand-in answer to: hi again"
        assert [r["key_ok"] for r in s.requests] == [False, True]
        keyfile.unlink()                         # an unreadable file pauses the account; nothing is sent
        err = send_error(p, turn("gone", task_id=3))
        assert (err.error_class, err.sent) == ("auth", False) and "api_key_file" in err.message
        assert len(s.requests) == 2 and KEY not in err.message
    finally:
        s.stop()


def test_a_quota_reset_is_not_undone_by_the_last_rate_limit_headers(tmp_path):
    """Issue 16, item 9: the bucket snapshot refused requests again after `fanoctl quota reset`."""
    tight = ClaudeStandin(key=KEY, requests_limit=1).start()
    try:
        p = make(tight, tmp_path)
        p.send(turn("one", task_id=1), never)                       # remaining 0, reset a minute ahead
        err = send_error(p, turn("two", task_id=2))
        assert (err.error_class, err.sent) == ("quota", False) and len(tight.requests) == 1
        tight.reset()                                               # the limit really was lifted
        # the operator reset the cool-down: the next lease is sent, and the API itself answers
        assert p.send(turn("three", task_id=3), never).text == "claude stand-in answer to: three"
        assert len(tight.requests) == 1 and tight.requests[0]["messages"][-1]["content"] == "three"
    finally:
        tight.stop()


def test_a_429_is_its_own_report_and_its_empty_bucket_does_not_refuse_the_next_lease(standin, tmp_path):
    p = make(standin, tmp_path)
    err = send_error(p, turn("four [[standin:rate_limit_long]]", task_id=4))   # remaining 0 for 900 s
    assert (err.error_class, err.retry_after) == ("quota", 900.0)
    # the broker cools the account for it; a lease after an operator's quota reset is sent
    assert p.send(turn("five", task_id=5), never).text == "claude stand-in answer to: five"
    assert [r["outcome"] for r in standin.requests] == ["refused", "served"]


def test_the_organisations_usage_limit_is_a_cool_down_of_every_mode(standin, tmp_path):
    p = make(standin, tmp_path)
    err = send_error(p, turn("q [[standin:org_spend_limit]]", mode="deep"))
    assert (err.error_class, err.scope, err.sent) == ("quota", "account", False)
    assert err.retry_after == pytest.approx(_next_month_start(time.time()) - time.time(), abs=5)
    assert "usage limits" in err.message and "no quick retry" in err.message


def test_check_reports_models_and_refuses_an_unknown_one(tmp_path):
    s = ClaudeStandin(key=KEY, models=["claude-sonnet-4-6", "claude-opus-4-5"]).start()
    try:
        got = make(s, tmp_path).check()
        assert got["ok"] is True and got["model"] == "claude-sonnet-4-6"
        assert got["models"] == {"standard": "claude-sonnet-4-6", "deep": "claude-opus-4-5"}
        assert KEY not in json.dumps(got) and s.requests == []          # no message was generated
        # a model the API does not know is a model problem, reported as such, never as a refused key
        bad = make(s, tmp_path, deep_model="claude-nope").check()
        assert bad["ok"] is False and bad["missing_models"] == ["claude-nope"]
        assert "key accepted" in bad["detail"] and "deep_model" in bad["detail"] and "claude-nope" in bad["detail"]
    finally:
        s.stop()


def test_the_stand_in_runs_as_a_program(tmp_path):
    env = dict(os.environ, STANDIN_KEY=KEY)
    proc = subprocess.Popen([sys.executable, "-m", "ops.standins", "claude", "--key-env", "STANDIN_KEY"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        assert make(url, tmp_path).send(turn("over a pipe"), never).text == "claude stand-in answer to: over a pipe"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# --- the whole tree ---------------------------------------------------------------------------------------

E2E_KEY = "sk-ant-e2e-PLANTED-" + uuid.uuid4().hex
BAD_KEY = "sk-ant-e2e-WRONG-" + uuid.uuid4().hex

TREE_ACCOUNTS = """
[accounts.claude-e2e]
backend = "claude"
modes = ["standard", "deep"]
base_url = "{url}"
api_key_env = "FANO_TEST_CLAUDE_KEY"
deep_model = "claude-opus-4-5"
deep_max_tokens = 4096
thinking_budget = 2048

[accounts.claude-badkey]
backend = "claude"
modes = ["standard"]
base_url = "{url}"
api_key_env = "FANO_TEST_CLAUDE_BAD_KEY"

[accounts.claude-keyfile]
backend = "claude"
modes = ["standard"]
base_url = "{url}"
api_key_file = "{keyfile}"

[accounts.claude-nomodel]
backend = "claude"
modes = ["standard", "deep"]
base_url = "{url}"
api_key_env = "FANO_TEST_CLAUDE_KEY"
deep_model = "claude-nope"
"""
TREE_MODELS = ["claude-sonnet-4-6", "claude-opus-4-5"]     # what the stand-in's Models API knows


@pytest.fixture(scope="module")
def tree():
    standin = ClaudeStandin(key=E2E_KEY, models=TREE_MODELS).start()
    keydir = Path(tempfile.mkdtemp(dir="/tmp", prefix="fk"))
    keyfile = keydir / "claude.key"
    keyfile.write_text(BAD_KEY + "\n")        # wrong at first: the operator corrects it while the tree runs
    keyfile.chmod(0o600)
    try:
        with running_tree("fc", TREE_ACCOUNTS.format(url=standin.url, keyfile=keyfile),
                          env={"FANO_TEST_CLAUDE_KEY": E2E_KEY, "FANO_TEST_CLAUDE_BAD_KEY": BAD_KEY}) as t:
            t.standin = standin
            t.keyfile = keyfile
            yield t
    finally:
        standin.stop()
        shutil.rmtree(keydir, ignore_errors=True)


def test_tree_ask_is_answered_by_the_claude_account(tree):
    res = run_fanoctl(tree, "ask", "hello", "--backend", "claude-e2e", "--wait")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("claude stand-in answer to: hello")
    served = [r for r in tree.standin.requests if r["messages"][-1]["content"] == "hello"]
    assert len(served) == 1 and served[0]["key_ok"] is True


def test_tree_deep_ask_uses_the_deep_model_with_thinking(tree):
    res = run_fanoctl(tree, "--json", "ask", "deep thought", "--deep", "--backend", "claude-e2e", "--wait")
    assert res.returncode == 0, res.stderr
    task = json.loads(res.stdout)
    assert task["state"] == "DONE" and task["result"]["text"] == "claude stand-in answer to: deep thought"
    assert task["result"]["meta"]["model"] == "claude-opus-4-5" and task["result"]["meta"]["mode"] == "deep"
    [rec] = [r for r in tree.standin.requests if r["messages"][-1]["content"] == "deep thought"]
    assert rec["thinking"] == {"type": "enabled", "budget_tokens": 2048}


def test_tree_a_bad_key_pauses_the_account_and_no_planted_key_leaks(tree):
    res = run_fanoctl(tree, "--json", "ask", "who am I", "--backend", "claude-badkey")
    assert res.returncode == 0, res.stderr
    tid = json.loads(res.stdout)["task"]["id"]
    row = wait_paused_for_auth(tree, "claude-badkey")
    outputs = [json.dumps(row), run_fanoctl(tree, "--json", "queue", "show", str(tid)).stdout,
               run_fanoctl(tree, "--json", "backends", "ls").stdout, run_fanoctl(tree, "--json", "queue", "ls").stdout]
    done = run_fanoctl(tree, "--json", "ask", "hello", "--backend", "claude-e2e", "--wait")
    keys = {"FANO_TEST_CLAUDE_KEY": E2E_KEY, "FANO_TEST_CLAUDE_BAD_KEY": BAD_KEY}
    good = run_fanoctl(tree, "--json", "backends", "check", "claude-e2e", env=keys)
    bad = run_fanoctl(tree, "--json", "backends", "check", "claude-badkey", env=keys)
    assert good.returncode == 0 and json.loads(good.stdout)["ok"] is True, good.stderr
    assert bad.returncode == 1 and "auth" in bad.stdout + bad.stderr
    outputs += [done.stdout, good.stdout, good.stderr, bad.stdout, bad.stderr]
    assert json.loads(outputs[1])["error"]["class"] == "auth"
    for text in outputs:
        assert E2E_KEY not in text and BAD_KEY not in text
    # every file of the deployment: logs, supervisord output, the broker's LMDB (task records), transcripts
    for path in tree.root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert E2E_KEY.encode() not in data and BAD_KEY.encode() not in data, f"a key leaked into {path}"
    logs = list((tree.root / "var/log").glob("backend-claude-*.log"))
    assert logs and any("claude-badkey" in p.name for p in logs)
    assert run_fanoctl(tree, "queue", "cancel", str(tid)).returncode == 0


def test_tree_a_corrected_key_file_and_fanoctl_backends_resume_are_enough(tree):
    """Issue 16, item 9 as the operator meets it: a wrong key in ``api_key_file`` pauses the account; the
    file is corrected and ``fanoctl backends resume`` given — the worker, never restarted, sends the new key
    and the same task is answered (the README: a key file needs no restart)."""
    res = run_fanoctl(tree, "--json", "ask", "key file first", "--backend", "claude-keyfile")
    assert res.returncode == 0, res.stderr
    tid = json.loads(res.stdout)["task"]["id"]
    row = wait_paused_for_auth(tree, "claude-keyfile")
    assert "api_key_file" in row["pause_reason"] or "auth" in row["pause_reason"], row
    pid = tree.rpc().supervisor.getProcessInfo("backend-claude-keyfile")["pid"]
    tree.keyfile.write_text(E2E_KEY + "\n")
    assert run_fanoctl(tree, "backends", "resume", "claude-keyfile").returncode == 0
    wait_for(lambda: json.loads(run_fanoctl(tree, "--json", "queue", "show", str(tid)).stdout)["state"] == "DONE",
             60, interval=0.5, what="the ask to be answered after the key file was corrected")
    task = json.loads(run_fanoctl(tree, "--json", "queue", "show", str(tid)).stdout)
    assert task["result"]["text"] == "claude stand-in answer to: key file first"
    sent = [r["key_ok"] for r in tree.standin.requests if r["messages"][-1]["content"] == "key file first"]
    assert sent == [False, True], sent
    assert tree.rpc().supervisor.getProcessInfo("backend-claude-keyfile")["pid"] == pid, "the worker was restarted"


def test_tree_backends_check_reports_an_unknown_model_as_a_model_problem(tree):
    """Issue 16, item 10: ``fanoctl backends check`` on an account whose deep_model the API does not know
    (a 404 from the Models API) says so and which setting to fix — never "check the API key"."""
    res = run_fanoctl(tree, "--json", "backends", "check", "claude-nomodel", env={"FANO_TEST_CLAUDE_KEY": E2E_KEY})
    assert res.returncode == 1 and res.stdout.startswith("{"), res.stderr + res.stdout   # a report, not an error
    report = json.loads(res.stdout)
    assert report["ok"] is False and report["missing_models"] == ["claude-nope"], report
    assert "claude-nope" in report["detail"] and "deep_model" in report["detail"], report
    assert "key" not in res.stderr.lower() and "check the API key" not in res.stdout, res.stdout + res.stderr
    text = run_fanoctl(tree, "backends", "check", "claude-nomodel", env={"FANO_TEST_CLAUDE_KEY": E2E_KEY})
    assert text.returncode == 1 and "NOT OK" in text.stdout and "no model claude-nope" in text.stdout, text.stdout
