"""The openai-compatible provider's pure parts: settings, SSE parsing, failure classification, slot locks,
request bodies (transcript replay) and reconciliation from the recorded transcript."""
from __future__ import annotations

import datetime as dt
import email.utils
import time

import pytest

from services.backends.base import Turn
from services.backends.openai_compat import OpenAIProvider, SlotPool, slot_dir
from services.backends.openai_wire import (
    Answer,
    SSEDecoder,
    StreamError,
    classify_http,
    classify_stream_error,
    error_message,
    parse_data,
    parse_retry_after,
    parse_settings,
    server_root,
    unusable_completion,
)
from shared.clock import FakeClock
from shared.config import ConfigError

BASE = {"base_url": "http://127.0.0.1:8080/v1", "model": "m"}
VLLM_OVERFLOW = ('{"object":"error","message":"This model\'s maximum context length is 4096 tokens. However, '
                 'you requested 5120 tokens.","type":"BadRequestError","code":400}')


def settings(**kw):
    return {**BASE, **kw}


# --- settings -------------------------------------------------------------------------------------------

def test_minimal_settings_and_defaults():
    s = parse_settings(settings())
    assert s.base_url == "http://127.0.0.1:8080/v1" and s.models == {"standard": "m"}
    assert s.max_concurrency is None and s.slot_wait == 30 and s.timeout == 600 and s.efforts == {}


def test_deep_mode_is_a_model_and_or_an_effort():
    same = parse_settings(settings(modes=["standard", "deep"]))
    assert same.models == {"standard": "m", "deep": "m"} and same.efforts == {"deep": "high"}
    own = parse_settings({"base_url": "http://h/v1", "models": {"standard": "s", "deep": "d"},
                          "modes": ["standard", "deep"]})
    assert own.models == {"standard": "s", "deep": "d"} and own.efforts == {}
    both = parse_settings({"base_url": "http://h/v1", "models": {"standard": "s", "deep": "d"},
                           "modes": ["standard", "deep"], "reasoning_effort": "medium"})
    assert both.efforts == {"deep": "medium"}
    table = parse_settings(settings(reasoning_effort={"standard": "low"}, max_tokens={"deep": 9000},
                                    modes=["standard", "deep"]))
    assert table.efforts == {"standard": "low", "deep": "high"} and table.max_tokens == {"deep": 9000}
    assert parse_settings(settings(reasoning_effort="low")).efforts == {}     # deep is not offered
    assert parse_settings(settings(max_tokens=100)).max_tokens == {"standard": 100, "deep": 100}


@pytest.mark.parametrize("bad,match", [
    ({"model": "m"}, "base_url: required"),
    ({"base_url": "127.0.0.1:8080/v1", "model": "m"}, "base_url"),
    ({"base_url": "ftp://h/v1", "model": "m"}, "base_url"),
    (settings(models={"standard": "x"}), "exactly one of"),
    ({"base_url": "http://h/v1"}, "exactly one of"),
    ({"base_url": "http://h/v1", "models": {"deep": "d"}}, "no model for mode 'standard'"),
    ({"base_url": "http://h/v1", "models": {"turbo": "d"}}, "keys are modes"),
    (settings(model=""), "non-empty model"),
    (settings(reasoning_effort="max"), "reasoning_effort"),
    (settings(max_tokens=0), "max_tokens"),
    (settings(max_tokens=1.5), "max_tokens"),
    (settings(timeout=-1), "timeout"),
    (settings(max_concurrency=0), "max_concurrency"),
    (settings(max_concurrency=True), "max_concurrency"),
    (settings(slot_wait="30"), "slot_wait"),
    (settings(transcript_chars=10), "transcript_chars"),
    (settings(temperature=5), "temperature"),
    (settings(modes=["pro"]), "modes"),
    (settings(base_uri="typo"), r"unknown key\(s\) base_uri"),
    (settings(api_key_env=""), "api_key_env"),
])
def test_invalid_settings_are_config_errors(bad, match):
    with pytest.raises(ConfigError, match=match):
        parse_settings(bad)


def test_an_inline_key_is_refused_and_an_env_key_is_loaded(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="api_key"):
        OpenAIProvider("a", settings(api_key="sk-inline-12345678"), FakeClock(), tmp_path)
    monkeypatch.setenv("FANO_UNIT_OPENAI_KEY", "sk-unit-abcdefgh")
    p = OpenAIProvider("a", settings(api_key_env="FANO_UNIT_OPENAI_KEY"), FakeClock(), tmp_path)
    assert p._headers()["Authorization"] == "Bearer sk-unit-abcdefgh"
    assert "sk-unit" not in repr(p.key)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert "Authorization" not in OpenAIProvider("a", settings(), FakeClock(), tmp_path)._headers()


def test_server_root_strips_the_openai_prefix():
    assert server_root("http://h:8080/v1") == "http://h:8080"
    assert server_root("http://h:8080/v1/") == "http://h:8080"
    assert server_root("http://h/api/openai") == "http://h/api/openai"


# --- SSE ------------------------------------------------------------------------------------------------

def feed(lines):
    dec, out = SSEDecoder(), []
    for line in lines:
        out += dec.feed(line)
    return out + dec.flush()


def test_sse_events_comments_crlf_and_multiline_data():
    assert feed([": keep-alive\n", "\n", 'data: {"a":1}\r\n', "\r\n", "data: [DONE]\n", "\n"]) == \
        [("data", '{"a":1}'), ("data", "[DONE]")]
    assert feed(["data: {\"a\":\n", "data: 1}\n", "\n"]) == [("data", '{"a":\n1}')]
    assert feed(["event: message\n", "id: 3\n", "data:{}\n"]) == [("data", "{}")]   # no space, no blank line
    assert feed(['error: {"message":"boom"}\n']) == [("error", '{"message":"boom"}')]
    assert feed(["garbage without a colon\n", "\n"]) == []


def test_parse_data_done_json_joined_and_malformed():
    assert parse_data("[DONE]") == ["[DONE]"]
    assert parse_data(' {"a": 1} ') == [{"a": 1}]
    assert parse_data("") == []
    assert parse_data('{"a": 1}\n{"b": 2}\n[DONE]') == [{"a": 1}, {"b": 2}, "[DONE]"]   # blank lines omitted
    with pytest.raises(StreamError, match="malformed"):
        parse_data('{"choices": [{"delta": {"content": "bro')
    with pytest.raises(StreamError):
        parse_data('{"a": 1}\nnot json')


def chunk(content=None, finish=None, **delta):
    if content is not None:
        delta["content"] = content
    return {"model": "m1", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def test_answer_collects_content_but_not_reasoning():
    a = Answer()
    for obj in (chunk(role="assistant", reasoning_content="hmm "), chunk("Hello"), chunk(reasoning="more"),
                chunk(" world"), chunk(None, "stop"), {"choices": [], "usage": {"completion_tokens": 2}},
                {"choices": [{"delta": {"content": None}}]}, {"unexpected": True}, "[DONE]"):
        assert a.add(obj) is None
    assert (a.text, a.reasoning_chars, a.finish_reason, a.model, a.usage, a.done) == \
        ("Hello world", 8, "stop", "m1", {"completion_tokens": 2}, True)


def test_answer_whole_message_errors_and_odd_chunks():
    a = Answer()
    a.add({"choices": [{"message": {"role": "assistant", "content": "whole"}, "finish_reason": "stop"}]})
    assert a.text == "whole"
    assert Answer().add({"error": {"message": "boom"}}) == {"message": "boom"}
    assert Answer().add({"error": "plain"}) == {"message": "plain"}
    with pytest.raises(StreamError):
        Answer().add([1, 2])


# --- classification -------------------------------------------------------------------------------------

def test_error_message_shapes():
    assert error_message(b'{"error": {"code": 503, "message": "Loading model"}}') == "Loading model"
    assert error_message(VLLM_OVERFLOW).startswith("This model's maximum context length")
    assert error_message('{"error": "model \\"x\\" not found"}') == 'model "x" not found'
    assert error_message(b'{"detail": "Not Found"}') == "Not Found"
    assert error_message(b"<html>\n  Bad   Gateway</html>") == "<html> Bad Gateway</html>"


def test_retry_after_seconds_and_dates():
    now = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC).timestamp()
    assert parse_retry_after("30", now) == 30
    assert parse_retry_after("-4", now) is None
    assert parse_retry_after(email.utils.formatdate(now + 90, usegmt=True), now) == 90
    assert parse_retry_after("soon", now) is None and parse_retry_after(None, now) is None
    assert parse_retry_after("inf", now) is None


@pytest.mark.parametrize("status,body,retry,expect", [
    (400, VLLM_OVERFLOW, None, ("terminal", False, None)),
    (400, '{"error":{"message":"the request exceeds the available context size, try increasing it",'
          '"type":"exceed_context_size_error"}}', None, ("terminal", False, None)),
    (429, '{"error":{"message":"Request too large: too many tokens"}}', 5.0, ("terminal", False, None)),
    (413, '{"error":{"message":"prompt is too long for the context window"}}', None, ("terminal", False, None)),
    (401, '{"error":{"message":"Invalid API Key"}}', None, ("auth", False, None)),
    (403, "forbidden", None, ("auth", False, None)),
    (404, '{"error":{"message":"model \\"llama9\\" not found, try pulling it first"}}', None,
     ("terminal", False, None)),
    (429, '{"error":{"message":"rate limit"}}', 30.0, ("quota", False, 30.0)),
    (429, '{"error":{"message":"rate limit"}}', None, ("transient", False, 5.0)),
    (503, '{"error":{"code":503,"message":"Loading model"}}', None, ("transient", False, 10.0)),
    (503, '{"error":{"message":"server busy, please try again.  maximum pending requests exceeded"}}', None,
     ("transient", False, 5.0)),
    (503, "busy", 20.0, ("transient", False, 20.0)),
    (500, '{"error":{"message":"internal"}}', None, ("transient", False, None)),
    (502, "Bad Gateway", None, ("transient", False, None)),
    (400, '{"error":{"message":"invalid value for temperature"}}', None, ("terminal", False, None)),
    (422, '{"detail":"field required"}', None, ("terminal", False, None)),
    # about money: quota for the whole account, never a busy-server retry
    (429, '{"error":{"message":"You exceeded your current quota, please check your plan and billing details.",'
          '"type":"insufficient_quota","code":"insufficient_quota"}}', None, ("quota", False, 21600.0)),
    (429, '{"error":{"message":"over your spend limit"}}', 60.0, ("quota", False, 21600.0)),
    (402, "payment required", None, ("quota", False, 21600.0)),
    # a token rate limit that links the billing page is still a rate limit
    (429, '{"error":{"message":"Rate limit reached; add a payment method at /account/billing",'
          '"code":"rate_limit_exceeded"}}', 2.0, ("quota", False, 2.0)),
])
def test_classify_http(status, body, retry, expect):
    # a status answered before any token is a refusal: never served (sent=False), whatever the class
    err = classify_http(status, body, retry, model="llama9", url="http://h/v1", account="acct")
    assert (err.error_class, err.sent, err.retry_after) == expect
    assert err.scope == ("account" if err.message.startswith("billing:") else "mode")


def test_404_messages_name_what_to_fix():
    model = classify_http(404, '{"error":"model \\"llama9\\" not found"}', model="llama9", url="http://h/v1",
                          account="acct")
    assert "llama9" in model.message and "fano.toml" in model.message and "accounts.acct" in model.message
    path = classify_http(404, "404 page not found", url="http://h", account="acct")
    assert "base_url" in path.message and "/v1" in path.message


def test_only_a_finished_completion_with_text_is_an_answer():
    assert unusable_completion("the answer", "stop", 0, None) is None
    assert unusable_completion("the answer", None, 0, None) is None      # servers that send no finish_reason
    thought = unusable_completion("", "length", 900, None, "acct")
    assert (thought.error_class, thought.sent) == ("terminal", True)
    assert "spent on reasoning (900 characters)" in thought.message and "accounts.acct" in thought.message
    cut = unusable_completion("half an answ", "length", 0, 512)
    assert cut.error_class == "terminal" and "max_tokens 512" in cut.message and "cut after 12" in cut.message
    empty = unusable_completion("  \n", "stop", 0, None)
    assert (empty.error_class, empty.sent) == ("transient", True) and "no answer text" in empty.message


def test_stream_errors():
    assert classify_stream_error({"message": "context length exceeded"}).error_class == "terminal"
    err = classify_stream_error({"code": 500, "message": "slot died"})
    assert (err.error_class, err.sent) == ("transient", True)


# --- slots ----------------------------------------------------------------------------------------------

def test_slot_locks_exclude_across_instances(tmp_path):
    a, b = SlotPool(tmp_path / "s", 1), SlotPool(tmp_path / "s", 1)
    fd = a.try_acquire()
    assert fd is not None and b.try_acquire() is None
    SlotPool.release(fd)
    fd2 = b.try_acquire()
    assert fd2 is not None
    wide = SlotPool(tmp_path / "s", 2)      # another account allowing 2 takes the second slot only
    fd3 = wide.try_acquire()
    assert fd3 is not None and wide.try_acquire() is None
    for fd in (fd2, fd3):
        SlotPool.release(fd)


def test_slot_acquire_waits_then_gives_up_or_stops_on_cancel(tmp_path):
    a, b = SlotPool(tmp_path, 1), SlotPool(tmp_path, 1)
    held = a.try_acquire()
    t0 = time.monotonic()
    assert b.acquire(0.3, lambda: False) is None
    assert 0.25 <= time.monotonic() - t0 < 2
    t0 = time.monotonic()
    assert b.acquire(30, lambda: True) is None and time.monotonic() - t0 < 0.5
    SlotPool.release(held)
    fd = b.acquire(1, lambda: False)
    assert fd is not None
    SlotPool.release(fd)


def test_slot_dir_is_per_server(tmp_path):
    assert slot_dir(tmp_path, "http://h:1/v1") == slot_dir(tmp_path, "http://h:1/v1/")
    assert slot_dir(tmp_path, "http://h:1/v1") != slot_dir(tmp_path, "http://h:2/v1")
    assert slot_dir(tmp_path, "http://h:1/v1").parent == tmp_path / "backends" / "openai-slots"


# --- request bodies and reconciliation ------------------------------------------------------------------

def turn(index=0, prompt="question", mode="standard", conversation="c1", task_id=7):
    return Turn(task_id=task_id, epoch=1, attempt=1, account="acct", mode=mode, module="explorer",
                kind="explorer.explore", payload={"prompt": prompt}, prompt=prompt, conversation=conversation,
                turn_index=index)


def provider(tmp_path, **kw):
    p = OpenAIProvider("acct", settings(**kw), FakeClock(), tmp_path)
    p.start()
    return p


def test_request_body_replays_the_transcript_with_a_pinned_summary(tmp_path):
    p = provider(tmp_path, transcript_chars=600, system_prompt="Be rigorous.", modes=["standard", "deep"],
                 max_tokens={"deep": 2048}, temperature=0.2)
    p.store.record_reply("c1", 0, "seed question", "The seed answer.")
    for i in range(1, 12):
        extra = "\nDefinition: a widget is a thing." if i == 2 else ""
        p.store.record_reply("c1", i, f"prompt {i} " + "x" * 40, f"Reply {i}. " + "y" * 40 + extra)
    p.store.record_reply("c1", 12, "a later turn that must not be replayed", "no")
    body = p.request_body(turn(12, "now this", mode="deep"))
    msgs = body["messages"]
    assert msgs[0]["role"] == "system" and msgs[0]["content"].startswith("Be rigorous.")
    assert "Definition: a widget is a thing." in msgs[0]["content"]          # cut, but summarised verbatim
    assert msgs[1] == {"role": "user", "content": "seed question"}           # the pinned first exchange
    assert [m["role"] for m in msgs[1:]] == ["user", "assistant"] * ((len(msgs) - 2) // 2) + ["user"]
    assert msgs[-1] == {"role": "user", "content": "now this"}
    assert msgs[-2]["content"].startswith("Reply 11.")                       # the most recent exchange
    assert all("must not be replayed" not in m["content"] for m in msgs)
    assert sum(len(m["content"]) for m in msgs[1:-1]) <= 600
    assert (body["model"], body["reasoning_effort"], body["max_tokens"], body["temperature"], body["stream"]) == \
        ("m", "high", 2048, 0.2, True)


def test_one_shot_body_has_no_system_message(tmp_path):
    body = provider(tmp_path).request_body(turn(conversation=None, prompt="hi"))
    assert body["messages"] == [{"role": "user", "content": "hi"}]
    assert "reasoning_effort" not in body and "max_tokens" not in body


def test_reconcile_returns_the_recorded_reply_or_none(tmp_path):
    p = provider(tmp_path)
    assert p.reconcile(turn(3)) is None
    assert p.resend_note(turn(3)) == "attempt 1 never left this worker (no send was recorded)"
    p.store.mark_sent("c1", 3, "question", task_id=7, attempt=1)
    assert p.resend_note(turn(3)).startswith("attempt 1 may have reached the API")
    p.store.record_reply("c1", 3, "question", "the answer", model="m", mode="standard", task_id=7, attempt=1)
    again = provider(tmp_path)                 # a new worker incarnation reads the same files
    reply = again.reconcile(turn(3))
    assert reply.text == "the answer" and reply.meta["reconciled"] is True and reply.meta["model"] == "m"
    assert "task_id" not in reply.meta
    assert again.reconcile(turn(3, prompt="a different question")) is None   # not this turn's reply
    assert again.reconcile(turn(3, task_id=8)) is None                       # not this task's reply
    assert again.reconcile(turn(conversation=None, task_id=99)) is None
