"""The simulated provider: determinism, latency on the (scaled) world clock, rate limits from the durable
log, fault injection, cancel, reconciliation, and the log's crash safety and checker."""
from __future__ import annotations

import datetime as dt
import json
import math
import re
import statistics
import threading
import time
from itertools import pairwise

import pytest

from services.backends import sim_answers as A
from services.backends.base import ProviderError, Turn
from services.backends.sim import SimProvider, parse_settings
from services.backends.sim_log import LogCorrupt, SimLog, check_log, read_log, resent_turns, served_requests
from shared.clock import Clock, FakeClock
from shared.config import ConfigError, load_config

T0 = dt.datetime(2024, 1, 10, 13, 0, tzinfo=dt.UTC).timestamp()   # a Wednesday, 13:00 UTC
never = lambda: False  # noqa: E731


def turn(task_id=1, attempt=1, mode="standard", kind="ask", payload=None, prompt=None, epoch=1, **kw) -> Turn:
    return Turn(task_id=task_id, epoch=epoch, attempt=attempt, account="acct", mode=mode, module="explorer",
                kind=kind, payload=payload if payload is not None else {"n": task_id},
                prompt=prompt if prompt is not None else f"question {task_id}", **kw)


def make(tmp_path, clock=None, sub="d", **settings) -> SimProvider:
    settings.setdefault("latency", "zero")
    clock = clock or FakeClock(world=T0)
    p = SimProvider("acct", settings, clock, tmp_path / sub)   # a FakeClock advances instead of sleeping
    p.start()
    return p


def outcome(p, t) -> str:
    try:
        p.send(t, never)
        return "ok"
    except ProviderError as exc:
        return exc.error_class + ("/overload" if "A lot of people" in exc.message else "")


# --- settings -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("settings,match", [
    ({"sede": 1}, r"unknown key\(s\) sede"),
    ({"seed": "x"}, "seed"),
    ({"latency": {"standard": {"dist": "gamma"}}}, "dist"),
    ({"latency": {"standard": {"dist": "uniform", "low": 5}}}, "exactly"),
    ({"latency": {"standard": {"dist": "uniform", "low": 5, "high": 1}}}, "low must be"),
    ({"latency": {"turbo": 1.0}}, "mode"),
    ({"latency": {"dist": "lognormal", "median": 0, "sigma": 1}}, "median"),
    ({"rate_limits": {"deep": ["20/fortnight"]}}, "rate_limits.deep"),
    ({"rate_limits": {"deep": ["20/day reserve explorer=5"]}}, "reserves"),
    ({"transient_rate": 1.5}, "transient_rate"),
    ({"transient_rate": 0.6, "hang_rate": 0.6}, "add up"),
    ({"auth_fail": "yes"}, "auth_fail"),
    ({"reviews": {"good": 0.8, "bad": 0.5}}, "reviews"),
    ({"reviews": {"great": 0.1}}, "reviews"),
    ({"timeout": 0}, "timeout"),
    ({"timeout": {"turbo": 5}}, "timeout.turbo"),
    ({"timeout": {"deep": "long"}}, "timeout.deep"),
    ({"answer_size": {"deep": {"low": 5}}}, "answer_size.deep"),
    ({"answer_size": {"low": 9, "high": 2}}, "low must be"),
    ({"answer_size": {"turbo": 5}}, "answer_size"),
    ({"answer_size": -1}, "answer_size"),
    ({"ratelimit_rate": 2}, "ratelimit_rate"),
])
def test_bad_settings_are_refused_with_a_clear_message(tmp_path, settings, match):
    with pytest.raises(ConfigError, match=match):
        SimProvider("acct", settings, FakeClock(), tmp_path)


def test_documented_three_account_example_loads(tmp_path):
    (tmp_path / "fano.toml").write_text('''
[accounts.fast]
backend = "sim"
modes = ["standard"]
seed = 1
latency = "zero"

[accounts.slow]
backend = "sim"
modes = ["standard", "deep"]
seed = 2
latency.standard = {dist = "lognormal", median = 20.0, sigma = 0.6}
latency.deep = {dist = "uniform", low = 300, high = 900}
rate_limits = {standard = ["80/3h"]}
transient_rate = 0.02
overload_rate = 0.02
hang_rate = 0.005

[accounts.gemini-sim]
backend = "sim"
modes = ["standard", "deep"]
seed = 3
latency = {standard = {dist = "lognormal", median = 4.0, sigma = 0.5}, deep = {dist = "uniform", low = 120, high = 600}}
rate_limits = {deep = ["20/day@00:00 America/Los_Angeles"], standard = ["50/3h"]}
overload_rate = 0.05
''')
    cfg = load_config(tmp_path / "fano.toml")
    got = {a.name: parse_settings(a.settings) for a in cfg.accounts}
    assert got["fast"].latency["deep"] == {"dist": "zero"}
    assert got["slow"].latency["deep"] == {"dist": "uniform", "low": 300.0, "high": 900.0}
    assert got["gemini-sim"].rate_limits["deep"][0]["tz"] == "America/Los_Angeles"
    assert got["gemini-sim"].sloppy_rate == 0.05 and got["fast"].garbage_rate == 0.0


def test_a_mode_the_account_lacks_is_terminal_and_unsent(tmp_path):
    p = make(tmp_path, modes=["standard"])
    with pytest.raises(ProviderError) as exc:
        p.send(turn(mode="deep"), never)
    assert exc.value.error_class == "terminal" and exc.value.sent is False
    assert read_log(p.log_path) == []


# --- determinism ----------------------------------------------------------------------------------------

def test_replies_are_deterministic_in_seed_and_turn(tmp_path):
    kinds = [A.EXPLORER_EXPLORE, A.EXPLORER_REVIEW1, A.DOCUMENTER_DRAFT, A.ASK]
    a, b = make(tmp_path, sub="a", seed=4), make(tmp_path, sub="b", seed=4)
    other = make(tmp_path, sub="c", seed=5)
    texts = []
    for i, kind in enumerate(kinds):
        t = turn(task_id=i, kind=kind, payload={"insight_id": f"i{i}"})
        texts.append(a.send(t, never).text)
        assert b.send(t, never).text == texts[-1]
    assert [other.send(turn(task_id=i, kind=k, payload={"insight_id": f"i{i}"}), never).text
            for i, k in enumerate(kinds)] != texts
    # content, not the broker's task id, decides the answer: same payload, other id, same text
    assert a.send(turn(task_id=99, kind=kinds[0], payload={"insight_id": "i0"}), never).text == texts[0]


def test_leases_change_faults_but_not_the_content(tmp_path):
    # faults are drawn per lease (epoch): a refused request gives its attempt back, and the next lease
    # (same attempt number) must get a fresh draw
    p = make(tmp_path, seed=1, sloppy_rate=0.0, transient_rate=0.5)
    results = {}
    for epoch in range(1, 9):
        try:
            results[epoch] = p.send(turn(kind=A.EXPLORER_SYNTHESIS, attempt=1, epoch=epoch), never).text
        except ProviderError as exc:
            assert exc.error_class == "transient" and not exc.sent   # a 500 before any output: not served
    assert 1 <= len(results) < 8                       # some attempts fail, some succeed
    assert len(set(results.values())) == 1


# --- latency -------------------------------------------------------------------------------------------

def test_latency_distributions_are_respected(tmp_path):
    p = make(tmp_path, latency={"standard": {"dist": "lognormal", "median": 2.0, "sigma": 0.5},
                                "deep": {"dist": "uniform", "low": 30, "high": 90}})
    std = [p.latency("standard", f"k{i}", 1) for i in range(3000)]
    assert 1.85 < statistics.median(std) < 2.15
    assert 0.45 < statistics.stdev(math.log(x) for x in std) < 0.55
    deep = [p.latency("deep", f"k{i}", 1) for i in range(3000)]
    assert 30 <= min(deep) and max(deep) <= 90 and 58 < statistics.mean(deep) < 62
    assert p.latency("deep", "k1", 1) == deep[1] and p.latency("deep", "k1", 2) != deep[1]
    fixed = make(tmp_path, sub="f", latency={"standard": 5})
    assert {fixed.latency("standard", f"k{i}", 1) for i in range(10)} == {5.0}
    assert make(tmp_path, sub="z").latency("deep", "k", 1) == 0.0


def test_latency_passes_on_the_world_clock_scaled_to_real_time(tmp_path):
    clock = Clock(scale=400.0, origin=time.time())
    p = make(tmp_path, clock=clock, latency={"standard": 20})
    w0, r0 = clock.world(), time.monotonic()
    reply = p.send(turn(), never)
    real, world = time.monotonic() - r0, clock.world() - w0
    assert world >= 20 and 0.045 <= real < 1.0            # 20 world s = 50 ms real at scale 400
    assert reply.meta["latency"] == 20 and reply.meta["model"] == "sim-standard"


def test_fake_clock_latency_advances_world_time_only(tmp_path):
    clock = FakeClock(world=T0)
    p = make(tmp_path, clock=clock, latency={"deep": {"dist": "uniform", "low": 30, "high": 90}})
    r0 = time.monotonic()
    reply = p.send(turn(mode="deep"), never)
    assert 30 <= reply.meta["latency"] <= 90
    assert reply.meta["latency"] <= clock.world() - T0 < reply.meta["latency"] + 0.06
    assert time.monotonic() - r0 < 0.5


# --- rate limits -----------------------------------------------------------------------------------------

def test_daily_limit_refuses_until_reset_and_survives_restart(tmp_path):
    clock = FakeClock(world=T0)
    p = make(tmp_path, clock=clock, rate_limits={"deep": ["2/day@00:00 UTC"]})
    assert [outcome(p, turn(task_id=i, mode="deep")) for i in (1, 2)] == ["ok", "ok"]
    assert outcome(p, turn(task_id=100, mode="standard")) == "ok"        # other mode, other limit
    with pytest.raises(ProviderError) as exc:
        p.send(turn(task_id=3, mode="deep"), never)
    e = exc.value
    assert e.error_class == "quota" and e.sent is False and e.retry_after == 11 * 3600   # refused: not served
    assert re.search(r"You've reached your limit .* until 00:00 UTC", e.message)
    clock.advance(3600)
    p2 = make(tmp_path, clock=clock, rate_limits={"deep": ["2/day@00:00 UTC"]})   # a restarted worker
    for _ in range(3):                                                    # refusals do not count...
        with pytest.raises(ProviderError) as exc:
            p2.send(turn(task_id=3, mode="deep"), never)
        assert exc.value.retry_after == 10 * 3600
    clock.advance(10 * 3600)                                              # ...so after the reset: 2 more
    assert [outcome(p2, turn(task_id=i, mode="deep")) for i in (3, 4, 5)] == ["ok", "ok", "quota"]
    assert sum(r["event"] == "refused" for r in read_log(p.log_path)) == 5
    assert check_log(p.log_path, {"deep": ["2/day@00:00 UTC"]}) == []


def test_rolling_limit_frees_a_unit_when_the_oldest_leaves_the_window(tmp_path):
    clock = FakeClock(world=T0)
    p = make(tmp_path, clock=clock, rate_limits={"standard": ["2/1h"]})
    assert outcome(p, turn(task_id=1)) == "ok"
    clock.advance(600)
    assert outcome(p, turn(task_id=2)) == "ok"
    clock.advance(600)
    with pytest.raises(ProviderError) as exc:
        p.send(turn(task_id=3), never)
    assert exc.value.retry_after == pytest.approx(2400)
    clock.advance(2399)
    with pytest.raises(ProviderError) as exc:
        p.send(turn(task_id=3), never)
    assert exc.value.retry_after == pytest.approx(1)
    clock.advance(1)                                   # the first request is now exactly 1 h old: out
    assert outcome(p, turn(task_id=3)) == "ok"
    with pytest.raises(ProviderError) as exc:
        p.send(turn(task_id=4), never)
    assert exc.value.retry_after == pytest.approx(600)


def test_failed_requests_do_not_count_but_hung_ones_do(tmp_path):
    clock = FakeClock(world=T0)
    failing = make(tmp_path, clock=clock, transient_rate=1.0, rate_limits={"standard": ["2/1h"]})
    assert [outcome(failing, turn(task_id=i)) for i in range(5)] == ["transient"] * 5
    failing.close()
    hanging = make(tmp_path, clock=clock, hang_rate=1.0, rate_limits={"standard": ["2/1h"]})
    with pytest.raises(ProviderError) as exc:
        hanging.send(turn(task_id=10), lambda: True)
    assert exc.value.error_class == "unknown"
    hanging.close()
    fine = make(tmp_path, clock=clock, rate_limits={"standard": ["2/1h"]})
    assert [outcome(fine, turn(task_id=i)) for i in (11, 12)] == ["ok", "quota"]


# --- faults ---------------------------------------------------------------------------------------------

def test_faults_are_deterministic_per_task_and_attempt(tmp_path):
    rates = {"transient_rate": 0.1, "overload_rate": 0.1, "terminal_rate": 0.1}
    a, b = make(tmp_path, sub="a", seed=3, **rates), make(tmp_path, sub="b", seed=3, **rates)
    turns = [turn(task_id=i, attempt=at) for i in range(150) for at in (1, 2)]
    got = [outcome(a, t) for t in turns]
    assert got == [outcome(b, t) for t in turns]
    counts = {k: got.count(k) for k in ("ok", "transient", "transient/overload", "terminal")}
    assert all(15 <= counts[k] <= 50 for k in ("transient", "transient/overload", "terminal")), counts
    c = make(tmp_path, sub="c", seed=4, **rates)
    assert [outcome(c, t) for t in turns] != got


def test_fault_details(tmp_path):
    p = make(tmp_path, overload_rate=1.0)
    with pytest.raises(ProviderError) as exc:
        p.send(turn(), never)
    assert exc.value.error_class == "transient" and 2 <= exc.value.retry_after <= 10
    assert "A lot of people are using" in exc.value.message
    assert [r["event"] for r in read_log(p.log_path)] == ["refused"]
    q = make(tmp_path, sub="t", terminal_rate=1.0)
    with pytest.raises(ProviderError) as exc:
        q.send(turn(), never)
    assert exc.value.error_class == "terminal" and exc.value.sent
    assert [r["event"] for r in read_log(q.log_path)] == ["received", "failed"]
    auth = make(tmp_path, sub="x", auth_fail=True)
    with pytest.raises(ProviderError) as exc:
        auth.send(turn(), never)
    assert exc.value.error_class == "auth" and exc.value.sent is False
    assert read_log(auth.log_path) == []


def test_an_injected_429_names_its_reset_time_and_counts_nothing(tmp_path):
    clock = FakeClock(world=T0)
    p = make(tmp_path, clock=clock, ratelimit_rate=1.0, rate_limits={"standard": ["1/1h"]})
    waits = []
    for i in range(20):
        with pytest.raises(ProviderError) as exc:
            p.send(turn(task_id=i), never)
        assert exc.value.error_class == "quota" and exc.value.sent is False
        assert exc.value.message.startswith("429 Too Many Requests") and "try again at" in exc.value.message
        waits.append(exc.value.retry_after)
    assert all(60 <= w <= 900 for w in waits) and len(set(waits)) > 10     # a reset time, drawn per lease
    assert {(r["event"], r["reason"]) for r in read_log(p.log_path)} == {("refused", "ratelimit")}
    assert p.log.times("standard") == [] and p.reconcile(turn(task_id=1)) is None


def test_answer_size_pads_replies_per_mode_and_keeps_the_content(tmp_path):
    sizes = {"standard": {"low": 2000, "high": 20000}, "deep": 40000}
    p = make(tmp_path, sub="p", seed=5, answer_size=sizes)
    bare = make(tmp_path, sub="b", seed=5)
    got = {"standard": [], "deep": []}
    for i in range(30):
        for mode in ("standard", "deep"):
            t = turn(task_id=i, mode=mode, kind=A.EXPLORER_REVIEW1, payload={"insight_id": f"i{i}", "reviewer": "r"})
            text, plain = p.send(t, never).text, bare.send(t, never).text
            got[mode].append(len(text.encode()))
            assert text.endswith(plain) and "RATING:" in text      # the template answer, whole, after notes
    assert all(1800 <= n <= 20000 for n in got["standard"]) and max(got["standard"]) - min(got["standard"]) > 5000
    assert all(39800 <= n <= 40000 for n in got["deep"])
    assert parse_settings({}).answer_size == {}                  # the default: bare templates


def test_refusals_are_reported_not_served_and_never_count(tmp_path):
    """Overload, the injected 500 and a quota refusal are refused at the door: sent=False (the broker
    refunds the unit, nothing to reconcile), logged ``refused``, and they never count against a limit."""
    clock = FakeClock(world=T0)
    for sub, fault, reason in (("o", "overload_rate", "overload"), ("t", "transient_rate", "error")):
        p = make(tmp_path, clock=clock, sub=sub, rate_limits={"standard": ["1/1h"]}, latency=4.0, **{fault: 1.0})
        for i in range(3):
            with pytest.raises(ProviderError) as exc:
                p.send(turn(task_id=i), never)
            assert exc.value.error_class == "transient" and exc.value.sent is False, fault
            assert p.reconcile(turn(task_id=i)) is None            # nothing to reconcile: safe to send
        log = read_log(p.log_path)
        assert [(r["event"], r["reason"]) for r in log] == [("refused", reason)] * 3
        assert p.log.times("standard") == []
        p.close()
        fine = make(tmp_path, clock=clock, sub=sub, rate_limits={"standard": ["1/1h"]})
        assert [outcome(fine, turn(task_id=i)) for i in (10, 11)] == ["ok", "quota"]   # the window was intact
        with pytest.raises(ProviderError) as exc:
            fine.send(turn(task_id=12), never)
        assert exc.value.error_class == "quota" and exc.value.sent is False
        assert check_log(fine.log_path, {"standard": ["1/1h"]}, count="received") == []


def test_request_timeout_defaults_to_several_times_the_slowest_latency(tmp_path):
    p = make(tmp_path, latency={"standard": {"dist": "uniform", "low": 1, "high": 20},
                                "deep": {"dist": "lognormal", "median": 60, "sigma": 0.5}})
    assert p.request_timeout("standard") == pytest.approx(5 * 20)
    assert p.request_timeout("deep") == pytest.approx(5 * 60 * math.exp(1.5))
    assert make(tmp_path, sub="z").request_timeout("standard") == 30.0      # zero latency: the floor
    q = make(tmp_path, sub="q", timeout={"deep": 7.5})
    assert (q.request_timeout("standard"), q.request_timeout("deep")) == (30.0, 7.5)
    assert make(tmp_path, sub="n", timeout=2).request_timeout("deep") == 2.0
    # the worker's deadline is monotonic: world seconds of a scaled clock pass faster
    scaled = SimProvider("acct", {"latency": "zero", "timeout": 60}, Clock(scale=20.0, origin=T0), tmp_path / "s")
    assert scaled.request_timeout("standard") == pytest.approx(3.0)


def test_a_hung_request_ends_promptly_when_cancelled(tmp_path):
    p = make(tmp_path, clock=Clock(), hang_rate=1.0)
    stop = threading.Event()
    threading.Timer(0.15, stop.set).start()
    t0 = time.monotonic()
    with pytest.raises(ProviderError) as exc:
        p.send(turn(), stop.is_set)
    assert 0.15 <= time.monotonic() - t0 < 0.15 + 0.3
    assert exc.value.error_class == "unknown" and exc.value.sent
    assert [r["event"] for r in read_log(p.log_path)] == ["received"]


def test_cancel_during_latency_is_seen_within_a_slice(tmp_path):
    p = make(tmp_path, clock=Clock(), latency={"standard": 3600})
    calls = []

    def cancelled():
        calls.append(time.monotonic())
        return len(calls) > 3
    with pytest.raises(ProviderError) as exc:
        p.send(turn(), cancelled)
    assert exc.value.error_class == "unknown" and len(calls) == 4
    assert max(b - a for a, b in pairwise(calls)) < 0.09


# --- reconciliation ---------------------------------------------------------------------------------------

def test_reconcile_returns_the_served_reply_or_none(tmp_path):
    p = make(tmp_path)
    t = turn(kind=A.EXPLORER_CRITIQUE, conversation="thread-9", turn_index=3)
    reply = p.send(t, never)
    again = p.reconcile(t)
    assert again.text == reply.text and again.meta["served_seq"] == reply.meta["served_seq"]
    assert again.meta["reconciled"] is True
    later = p.reconcile(turn(kind=A.EXPLORER_CRITIQUE, conversation="thread-9", turn_index=3, attempt=2))
    assert later.text == reply.text                       # found whatever the current attempt is
    assert p.reconcile(turn(task_id=2)) is None           # never seen
    assert p.reconcile(turn(kind=A.EXPLORER_CRITIQUE, conversation="thread-9", turn_index=4)) is None
    assert read_log(p.log_path)[0]["turn_key"] == "thread-9#3"
    f = make(tmp_path, sub="f", transient_rate=1.0)
    outcome(f, turn())
    assert f.reconcile(turn()) is None                    # failed inside the provider: safe to send


def test_an_attempt_that_never_reached_the_sim_is_unspent(tmp_path):
    """Issue 16: a worker that recorded its intent and died before sending charged a unit for nothing; the
    sim's log says whether that attempt arrived (then it keeps its unit, even if it failed inside the sim)."""
    p = make(tmp_path)
    assert p.unspent(turn()) is True                       # never seen
    p.send(turn(), never)
    assert p.unspent(turn()) is False                      # it arrived: it was spent
    assert p.unspent(turn(attempt=2)) is True              # another attempt of the turn did not arrive
    busy = make(tmp_path, sub="b", transient_rate=1.0)
    outcome(busy, turn())
    assert busy.unspent(turn()) is True                    # a 500 before any output: refused, counted nothing
    bad = make(tmp_path, sub="t", terminal_rate=1.0)
    outcome(bad, turn())
    assert bad.reconcile(turn()) is None and bad.unspent(turn()) is False   # it arrived, then failed there

def test_reconcile_completes_a_request_the_dead_worker_left_behind(tmp_path):
    clock = FakeClock(world=T0)
    t = turn(kind=A.EXPLORER_REVIEW1, payload={"insight_id": "i3", "reviewer": "a"}, mode="deep", epoch=7)
    first = make(tmp_path, clock=clock, hang_rate=1.0, sloppy_rate=0.0)
    with pytest.raises(ProviderError):
        first.send(t, lambda: True)
    first.close()                                          # the worker died with the request in flight
    clock.advance(120)
    second = make(tmp_path, clock=clock, sloppy_rate=0.0)
    retry = turn(kind=A.EXPLORER_REVIEW1, payload={"insight_id": "i3", "reviewer": "a"}, mode="deep",
                 epoch=8, attempt=2)
    reply = second.reconcile(retry)
    assert reply is not None and reply.meta["attempt"] == 1 and reply.meta["reconciled"]
    normal = make(tmp_path, sub="other", sloppy_rate=0.0).send(t, never)
    assert reply.text == normal.text                       # what the provider would have answered anyway
    assert second.reconcile(retry).meta["served_seq"] == reply.meta["served_seq"]   # served once
    served = served_requests(second.log_path)
    assert len(served) == 1 and served[0]["epoch"] == 7 and served[0]["attempt"] == 1
    assert check_log(second.log_path, {"deep": ["1/day"]}) == []


# --- the log ----------------------------------------------------------------------------------------------

def rec(seq, event, ts=T0, task_id=1, attempt=1, turn_key="task-1", mode="deep", **extra):
    return {"seq": seq, "ts": ts, "event": event, "task_id": task_id, "epoch": 1, "attempt": attempt,
            "turn_key": turn_key, "mode": mode, "kind": "ask", **extra}


def write(path, records, tail=b""):
    path.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in records) + tail)


def test_a_torn_last_line_is_ignored_and_cut_off_before_appending(tmp_path):
    path = tmp_path / "log.jsonl"
    write(path, [rec(1, "received"), rec(2, "served", recv_seq=1, reply="x")], tail=b'{"seq": 3, "ev')
    assert [r["seq"] for r in read_log(path)] == [1, 2]
    log = SimLog(path)
    assert log.append(rec(0, "received", task_id=2, turn_key="task-2"))["seq"] == 3
    assert [r["seq"] for r in read_log(path)] == [1, 2, 3]
    assert log.served_record(log.turn(1, "task-1")[0])["reply"] == "x"
    write(path, [rec(1, "received")], tail=b"garbage\n" + json.dumps(rec(2, "received")).encode() + b"\n")
    with pytest.raises(LogCorrupt, match=":2:"):
        read_log(path)
    assert read_log(tmp_path / "missing.jsonl") == []


def test_the_log_is_reread_at_start(tmp_path):
    p = make(tmp_path)
    for i in range(3):
        p.send(turn(task_id=i), never)
    p.close()
    q = make(tmp_path)
    assert q.send(turn(task_id=5), never).meta["served_seq"] == 8
    assert q.reconcile(turn(task_id=1)).text == "sim answer to: question 1\n" + \
        f"[sim-standard] digest {__import__('hashlib').sha256(b'question 1').hexdigest()[:12]}\n"


def test_check_log_finds_double_service_and_window_overruns(tmp_path):
    path = tmp_path / "log.jsonl"
    write(path, [
        rec(1, "received"), rec(2, "served", recv_seq=1),
        rec(3, "received", ts=T0 + 10), rec(4, "served", ts=T0 + 10, recv_seq=3),          # same attempt again
        rec(5, "received", ts=T0 + 20, task_id=2, turn_key="task-2"),
        rec(6, "failed", ts=T0 + 21, task_id=2, turn_key="task-2", recv_seq=5),          # does not count
        rec(7, "refused", ts=T0 + 30, task_id=3, turn_key="task-3"),                     # does not count
        rec(8, "received", ts=T0 + 4000, task_id=4, turn_key="task-4", attempt=2),
        rec(9, "received", ts=T0 + 4100, task_id=4, turn_key="task-4", attempt=3),
    ])
    problems = check_log(path, {"deep": ["2/1h"]})
    assert any("task-1 of task 1, attempt 1: received 2 times" in p for p in problems)
    assert any("task-1 of task 1, attempt 1: served 2 times" in p for p in problems)
    assert not any("exceeded" in p for p in problems)              # 2 in the first hour, 2 in the next
    over = check_log(path, {"deep": ["1/1h"]})
    assert sum("exceeded" in p for p in over) == 2                 # two separate overruns
    strict = check_log(path, {"deep": ["2/1h"]}, count="received")  # the failed one counts here
    assert any("3 requests" in p for p in strict)
    assert [p for p in check_log(path, {"deep": ["3/day@00:00 UTC"]}) if "exceeded" in p] == \
        [p for p in check_log(path, {"deep": ["3/day@00:00 UTC"]}) if "4 requests" in p and "day" in p]
    assert resent_turns(path) == {}
    clean = tmp_path / "clean.jsonl"
    write(clean, [rec(1, "received"), rec(2, "served", recv_seq=1)])
    assert check_log(clean, {"deep": ["1/day"]}) == []
