"""claude backend: settings validation, request building, the key's path, and the pre-send cool-down."""
import datetime as dt
import json

import pytest

from services.backends.base import ProviderError, Turn
from services.backends.claude import ClaudeProvider, parse_settings
from services.backends.conversations import Exchange, replay_window
from services.backends.registry import make_provider
from shared.clock import FakeClock
from shared.config import AccountConfig, ConfigError

KEY = "sk-ant-unit-PLANTED-5c1e0d9a7b"
ENV = {"ANTHROPIC_API_KEY": KEY}


def provider(tmp_path, clock=None, **settings):
    settings.setdefault("modes", ["standard", "deep"])
    return ClaudeProvider("c1", settings, clock or FakeClock(), tmp_path, environ=ENV)


def turn(prompt="hello", mode="standard", **kw):
    return Turn(task_id=kw.pop("task_id", 1), epoch=1, attempt=1, account="c1", mode=mode, module="m", kind="ask",
                prompt=prompt, **kw)


def test_defaults():
    cfg = parse_settings({})
    assert cfg.modes == ("standard",) and (cfg.model, cfg.deep_model) == ("claude-sonnet-4-6", "claude-opus-4-5")
    assert cfg.thinking == "enabled" and cfg.thinking_budget < cfg.deep_max_tokens
    assert cfg.transcript_chars == 60000 and cfg.base_url is None and cfg.proactive_cooldown is True
    assert parse_settings({"base_url": "http://127.0.0.1:9/"}).base_url == "http://127.0.0.1:9"


@pytest.mark.parametrize("settings,match", [
    ({"modle": "x"}, r"unknown key\(s\) modle"),
    ({"modes": ["turbo"]}, "modes"),
    ({"modes": []}, "modes"),
    ({"model": ""}, "model"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": True}, "max_tokens"),
    ({"max_tokens": 1.5}, "max_tokens"),
    ({"thinking": "on"}, "thinking"),
    ({"thinking_budget": 512}, "thinking_budget"),
    ({"modes": ["deep"], "thinking_budget": 4000, "deep_max_tokens": 4000}, "below deep_max_tokens"),
    ({"effort": "extreme"}, "effort"),
    ({"base_url": "api.anthropic.com"}, "base_url"),
    ({"transcript_chars": 10}, "transcript_chars"),
    ({"timeout": 0}, "timeout"),
    ({"timeout": float("inf")}, "timeout"),
    ({"billing_retry": 5}, "billing_retry"),
    ({"proactive_cooldown": "yes"}, "proactive_cooldown"),
    ({"system": 3}, "system"),
])
def test_invalid_settings_are_refused_with_the_setting_named(settings, match):
    with pytest.raises(ConfigError, match=match):
        parse_settings(settings)


def test_the_thinking_budget_only_matters_when_deep_mode_uses_it():
    parse_settings({"modes": ["standard"], "thinking_budget": 4000, "deep_max_tokens": 4000})
    parse_settings({"modes": ["deep"], "thinking": "adaptive", "thinking_budget": 4000, "deep_max_tokens": 4000})


def test_registry_turns_bad_settings_into_a_config_error_naming_the_account(tmp_path, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    bad = AccountConfig("claude-x", "claude", ("standard",), {"max_tokens": -1})
    with pytest.raises(ConfigError,
                       match=r"^\[accounts.claude-x\] max_tokens: expected an integer in \[1, 1000000\], got -1$"):
        make_provider(bad, FakeClock(), tmp_path)
    good = make_provider(AccountConfig("claude-y", "claude", ("standard", "deep"), {}), FakeClock(), tmp_path)
    assert isinstance(good, ClaudeProvider) and good.modes == ["standard", "deep"]


def test_the_key_comes_from_env_or_file_never_inline_and_is_never_printed(tmp_path):
    with pytest.raises(ConfigError, match="do not put api_key") as info:
        ClaudeProvider("c1", {"api_key": KEY}, FakeClock(), tmp_path, environ={})
    assert KEY not in str(info.value)
    with pytest.raises(ConfigError, match="MY_CLAUDE_KEY"):
        ClaudeProvider("c1", {"api_key_env": "MY_CLAUDE_KEY"}, FakeClock(), tmp_path, environ={})
    keyfile = tmp_path / "k.key"
    keyfile.write_text(KEY + "\n")
    p = ClaudeProvider("c1", {"api_key_file": str(keyfile)}, FakeClock(), tmp_path, environ={})
    assert p.secret.reveal() == KEY
    assert KEY not in repr(vars(p)) and KEY not in json.dumps(p.config, default=str)


def test_request_params_standard_deep_enabled_and_adaptive(tmp_path):
    p = provider(tmp_path, model="claude-s", deep_model="claude-d", max_tokens=100, deep_max_tokens=5000,
                 thinking_budget=2000, system="You are careful.")
    std = p.request_params(turn("q"), None)
    assert std == {"model": "claude-s", "max_tokens": 100, "messages": [{"role": "user", "content": "q"}],
                   "system": "You are careful."}
    deep = p.request_params(turn("q", mode="deep"), None)
    assert deep["model"] == "claude-d" and deep["max_tokens"] == 5000
    assert deep["thinking"] == {"type": "enabled", "budget_tokens": 2000} and "output_config" not in deep
    q = provider(tmp_path, thinking="adaptive", effort="max")
    adaptive = q.request_params(turn("q", mode="deep"), None)
    assert adaptive["thinking"] == {"type": "adaptive"} and adaptive["output_config"] == {"effort": "max"}
    assert "system" not in q.request_params(turn("q"), None)


def test_the_replay_summary_goes_into_the_system_prompt_after_the_configured_one(tmp_path):
    p = provider(tmp_path, system="Be brief.")
    exchanges = [Exchange(i, f"prompt {i} " + "x" * 400, f"Definition: F{i} := a plane.\n" + "y" * 400)
                 for i in range(6)]
    replay = replay_window(exchanges, 2000)
    assert replay.cut > 0
    params = p.request_params(turn("next", conversation="c", turn_index=6), replay)
    assert params["system"].startswith("Be brief.\n\nSummary of")
    assert "F1 := a plane." in params["system"]
    assert params["messages"][0]["content"] == exchanges[0].prompt          # the pinned first exchange
    assert params["messages"][-1] == {"role": "user", "content": "next"}
    roles = [m["role"] for m in params["messages"]]
    assert roles == ["user", "assistant"] * ((len(roles) - 1) // 2) + ["user"]


def test_an_empty_requests_bucket_is_reported_as_a_cool_down_without_sending(tmp_path):
    clock = FakeClock(world=1_790_000_000.0)
    p = provider(tmp_path, clock=clock, base_url="http://127.0.0.1:9")   # nothing listens: must not be called
    reset = dt.datetime.fromtimestamp(clock.world() + 30, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    p.limits["claude-sonnet-4-6"] = {"requests": {"limit": 50, "remaining": 0, "reset": reset}}
    with pytest.raises(ProviderError) as info:
        p.send(turn(), lambda: False)
    assert (info.value.error_class, info.value.sent) == ("quota", False)
    assert info.value.retry_after == pytest.approx(30, abs=1)
    assert not p.store.was_sent("task-1", 0)
    off = provider(tmp_path, clock=clock, base_url="http://127.0.0.1:9", proactive_cooldown=False)
    off.limits = dict(p.limits)
    with pytest.raises(ProviderError) as info:
        off.send(turn(task_id=2), lambda: False)          # sent, and the closed port answers
    assert (info.value.error_class, info.value.sent) == ("transient", False)


def test_mode_not_offered_and_empty_prompt_are_terminal_and_unsent(tmp_path):
    p = ClaudeProvider("c1", {"modes": ["standard"]}, FakeClock(), tmp_path, environ=ENV)
    with pytest.raises(ProviderError) as info:
        p.send(turn(mode="deep"), lambda: False)
    assert (info.value.error_class, info.value.sent) == ("terminal", False)
    with pytest.raises(ProviderError) as info:
        p.send(turn(prompt="  "), lambda: False)
    assert (info.value.error_class, info.value.sent) == ("terminal", False)


def test_reconcile_returns_a_recorded_reply_and_none_otherwise(tmp_path):
    p = provider(tmp_path)
    p.start()
    t = turn("what?", conversation="conv", turn_index=2)
    assert p.reconcile(t) is None
    assert p.resend_note(t) == "attempt 1 never left this worker (no send was recorded)"
    p.store.mark_sent("conv", 2, "what?", task_id=1, attempt=1)
    assert p.reconcile(t) is None                      # sent, never answered: re-sending is allowed
    assert p.resend_note(t).startswith("attempt 1 may have reached the API")   # never "never got"
    p.store.record_reply("conv", 2, "what?", "this.", model="m", mode="standard", task_id=1, attempt=1)
    fresh = provider(tmp_path)                          # a new worker over the same data directory
    got = fresh.reconcile(t)
    assert got.text == "this." and got.meta == {"model": "m", "mode": "standard", "reconciled": True}
    assert fresh.reconcile(turn("other prompt", conversation="conv", turn_index=2)) is None
    # another task at the same place with the same prompt is a new question, never answered from the file
    assert fresh.reconcile(turn("what?", conversation="conv", turn_index=2, task_id=2)) is None
