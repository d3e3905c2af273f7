"""The site data files and the account settings of web backends (no browser)."""
import copy
import tomllib

import pytest

from services.backends.web import site as site_mod
from services.backends.web.settings import parse_settings
from services.backends.web.site import (REQUIRED_MESSAGES, REQUIRED_MODES, REQUIRED_SELECTORS, SITES_DIR,
                                        SiteError, load_site, parse_site)
from shared.config import ConfigError

SITES = ("chatgpt", "gemini")


@pytest.mark.parametrize("name", SITES)
def test_site_files_load_with_every_required_key(name):
    spec = load_site(name)
    assert spec.name == name and spec.url.startswith("https://")
    for key in REQUIRED_SELECTORS:
        assert spec.selectors[key], key
    for key in REQUIRED_MESSAGES:
        assert spec.messages[key], key
    for mode in REQUIRED_MODES:
        assert spec.modes[mode].label and spec.modes[mode].verify
    # the deep mode is verified by reading something back, never assumed
    assert any(not c.absent for c in spec.modes["deep"].verify)


@pytest.mark.parametrize("name, path, ok", [
    ("chatgpt", "/c/6a1f0c2e-1b2d-4c3e-9f00-123456789abc", True),
    ("chatgpt", "/c/WEB:1a2b3c4d", False),          # the transient route is not a conversation yet
    ("chatgpt", "/", False),
    ("gemini", "/app/8f3c2a1b9e0d7c6f", True),
    ("gemini", "/app", False),
])
def test_conversation_paths(name, path, ok):
    assert load_site(name).is_conversation(path) is ok


@pytest.mark.parametrize("name", SITES)
@pytest.mark.parametrize("section, key", [("selectors", k) for k in REQUIRED_SELECTORS] +
                         [("messages", k) for k in REQUIRED_MESSAGES] + [("modes", m) for m in REQUIRED_MODES])
def test_a_missing_key_is_refused(name, section, key):
    data = tomllib.loads((SITES_DIR / f"{name}.toml").read_text())
    broken = copy.deepcopy(data)
    del broken[section][key]
    with pytest.raises(SiteError, match=key):
        parse_site(broken)


def test_malformed_entries_are_refused():
    data = tomllib.loads((SITES_DIR / "chatgpt.toml").read_text())
    for mutate in (lambda d: d["selectors"].__setitem__("composer", []),
                   lambda d: d["messages"].__setitem__("quota", ["(unclosed"]),
                   lambda d: d["modes"]["deep"].__setitem__("verify", []),
                   lambda d: d["modes"]["deep"]["steps"].append({"click": ["a"], "choose": ["b"]}),
                   lambda d: d["modes"]["deep"]["steps"].append({"choose": ["b"]}),
                   lambda d: d["site"].__setitem__("conversation_path", "(")):
        broken = copy.deepcopy(data)
        mutate(broken)
        with pytest.raises(SiteError):
            parse_site(broken)


def test_optional_reply_notices_turn_error_and_progress_grace():
    data = tomllib.loads((SITES_DIR / "chatgpt.toml").read_text())
    assert set(parse_site(data).reply_notices) == {"quota", "capacity", "transient"} and parse_site(data).progress_grace == 90.0
    bare = copy.deepcopy(data)
    del bare["selectors"]["turn_error"], bare["site"]["progress_grace"], bare["reply_notices"]
    assert parse_site(bare).reply_notices == {}
    assert "turn_error" not in parse_site(bare).selectors and parse_site(bare).progress_grace == 90.0
    assert load_site("gemini").reply_notices["quota"]
    for mutate in (lambda d: d.__setitem__("reply_notices", {"limits": ["x"]}),
                   lambda d: d.__setitem__("reply_notices", {"quota": []}),
                   lambda d: d["site"].__setitem__("progress_grace", 0),
                   lambda d: d["site"].__setitem__("progress_grace", "90")):
        broken = copy.deepcopy(data)
        mutate(broken)
        with pytest.raises(SiteError):
            parse_site(broken)


def test_missing_file(tmp_path):
    with pytest.raises(SiteError, match="no site data file"):
        load_site("nosuch", tmp_path)


# --- settings ------------------------------------------------------------------------------------------

def settings(**kw):
    return parse_settings(dict({"chromium": "/bin/true"}, **kw), site_mod.load_site("chatgpt"))


def test_settings_defaults():
    cfg = settings()
    assert cfg.url == "https://chatgpt.com" and cfg.headless is True and cfg.chromium == "/bin/true"
    assert cfg.timeouts == {"standard": 1200.0, "deep": 3600.0}
    assert cfg.labels == {"standard": "Auto", "deep": "Pro"}
    assert cfg.gate.bar_confirm_polls == 3 and cfg.modes == ("standard",)
    assert cfg.mode_retry == 21600.0 and cfg.progress_grace == 90.0     # the latter from the site file


def test_settings_overrides():
    cfg = settings(url="http://127.0.0.1:8123/", timeout=30, mode_labels={"deep": "GPT-5 Pro"},
                   timezone="Europe/Paris", modes=["standard", "deep"], min_stable=0.5, bar_confirm_polls=2)
    assert cfg.url == "http://127.0.0.1:8123" and cfg.timeouts == {"standard": 30.0, "deep": 30.0}
    assert cfg.labels["deep"] == "GPT-5 Pro" and cfg.timezone_name == "Europe/Paris"
    assert cfg.gate.min_stable == 0.5 and cfg.gate.bar_confirm_polls == 2
    cfg = settings(progress_grace=120, mode_retry=3600)
    assert cfg.progress_grace == 120.0 and cfg.mode_retry == 3600.0


@pytest.mark.parametrize("bad", [
    {"url": "chatgpt.com"}, {"headless": "yes"}, {"chromium": "/nonexistent/chromium"}, {"timezone": "Mars/Base"},
    {"timeout": {"turbo": 5}}, {"timeout": -1}, {"mode_labels": {"deep": ""}}, {"bar_confirm_polls": 0},
    {"poll_interval": 0}, {"launch_args": ["--user-data-dir=/tmp/x"]}, {"launch_args": "x"},
    {"modes": ["fast"]}, {"api_key": "nope"}, {"progress_grace": 0}, {"progress_grace": 7200},
    {"mode_retry": -5},
])
def test_bad_settings_are_config_errors_naming_the_key(bad):
    with pytest.raises(ConfigError, match=rf"^chatgpt settings(:| {next(iter(bad))}[:.])"):
        settings(**bad)
