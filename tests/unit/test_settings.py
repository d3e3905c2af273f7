"""shared/settings.py: the one declarative settings validator (types, ranges, defaults, unknown keys, the
one error format), and the docs listing every declared key."""
from __future__ import annotations

from dataclasses import FrozenInstanceError, dataclass

import pytest

from shared.config import ConfigError
from shared.settings import Invalid, SettingsError, describe, load, setting


def _pair(value):
    if not isinstance(value, list) or len(value) != 2:
        raise Invalid(f"expected a pair [low, high], got {value!r}")
    return tuple(value)


@dataclass(frozen=True)
class Demo:
    count: int = setting(3, "how many", lo=1)
    share: float = setting(0.3, "a share", lo=0, hi=1)
    patience: float = setting(300.0, "world seconds", lo=0, lo_open=True)
    enabled: bool = setting(False, "on or off")
    name: str = setting("x", "a name", nonempty=True)
    accounts: tuple = setting((), "account names")
    effort: str = setting("high", "how hard", choices=("low", "high"))
    limit: int = setting(1024, "bytes", kind="size", hi=1 << 20)
    weights: dict = setting({}, "account -> weight")
    span: tuple = setting((1, 2), "low and high", parse=_pair, expected="a pair [low, high]")
    url: str = setting(doc="where", kind="str", required=True, nonempty=True)

    def check(self):
        if self.span[0] > self.span[1]:
            raise Invalid(f"low ({self.span[0]}) must not exceed high ({self.span[1]})", key="span")


W = "[modules.demo]"


def test_defaults_and_a_frozen_object():
    s = load(Demo, {"url": "http://h"}, W)
    assert (s.count, s.share, s.patience, s.enabled, s.name, s.accounts) == (3, 0.3, 300.0, False, "x", ())
    assert (s.effort, s.limit, s.weights, s.span, s.url) == ("high", 1024, {}, (1, 2), "http://h")
    with pytest.raises(FrozenInstanceError):
        s.count = 4
    assert load(Demo, {}, W, defaults={"url": "http://site"}).url == "http://site"   # a context default
    assert load(Demo, {"url": "u"}, W).weights is not load(Demo, {"url": "u"}, W).weights   # not shared


def test_values_are_converted_to_their_kind():
    s = load(Demo, {"url": "u", "share": 1, "patience": 5, "accounts": ["a", "b"], "limit": "64KiB",
                    "weights": {"a": 2}, "span": [3, 4], "effort": "low", "enabled": True}, W)
    assert s.share == 1.0 and isinstance(s.share, float) and isinstance(s.patience, float)
    assert s.accounts == ("a", "b") and s.limit == 65536 and s.weights == {"a": 2} and s.span == (3, 4)
    assert s.effort == "low" and s.enabled is True


@pytest.mark.parametrize("key,value,text", [
    ("count", "x", "count: expected an integer ≥ 1, got 'x'"),
    ("count", 0, "count: expected an integer ≥ 1, got 0"),
    ("count", 2.5, "count: expected an integer ≥ 1, got 2.5"),       # never truncated
    ("count", True, "count: expected an integer ≥ 1, got True"),
    ("share", 1.5, "share: expected a number in [0, 1], got 1.5"),
    ("share", float("nan"), "share: expected a number in [0, 1], got nan"),
    ("patience", 0, "patience: expected a number > 0, got 0"),
    ("patience", "5m", "patience: expected a number > 0, got '5m'"),
    ("enabled", "yes", "enabled: expected true or false, got 'yes'"),
    ("enabled", 1, "enabled: expected true or false, got 1"),
    ("name", " ", "name: expected a non-empty string, got ' '"),
    ("accounts", "a", "accounts: expected a list of strings, got 'a'"),
    ("accounts", ["a", 1], "accounts: expected a list of strings, got ['a', 1]"),
    ("effort", "max", "effort: expected one of \"low\", \"high\", got 'max'"),
    ("limit", "lots", "limit: expected a size (e.g. 2MiB) ≤ 1.0 MiB, got 'lots'"),
    ("limit", "2MiB", "limit: expected a size (e.g. 2MiB) ≤ 1.0 MiB, got '2MiB'"),
    ("weights", [1], "weights: expected a table, got [1]"),
    ("span", 3, "span: expected a pair [low, high], got 3"),
    ("span", [5, 4], "span: low (5) must not exceed high (4)"),               # a check across values
])
def test_bad_values_name_the_table_the_key_what_was_expected_and_what_was_given(key, value, text):
    with pytest.raises(SettingsError) as exc:
        load(Demo, {"url": "u", key: value}, W)
    assert str(exc.value) == f"{W} {text}"
    assert isinstance(exc.value, ConfigError) and exc.value.key == key and exc.value.where == W


def test_unknown_keys_are_refused_with_the_known_ones():
    with pytest.raises(SettingsError) as exc:
        load(Demo, {"url": "u", "cuont": 3, "enable": True}, W)
    assert str(exc.value) == (f"{W}: unknown key(s) cuont, enable (known: accounts, count, effort, enabled, "
                              "limit, name, patience, share, span, url, weights)")


def test_a_required_key_and_a_table_that_is_not_one():
    with pytest.raises(SettingsError, match=r"^\[modules.demo\] url: required: expected a non-empty string$"):
        load(Demo, {}, W)
    with pytest.raises(SettingsError, match=r"^\[modules.demo\]: expected a table, got 3$"):
        load(Demo, 3, W)


def test_describe_gives_every_key_with_its_expectation_default_and_doc():
    rows = {key: (want, default, doc) for key, want, default, doc in describe(Demo)}
    assert list(rows) == ["count", "share", "patience", "enabled", "name", "accounts", "effort", "limit",
                          "weights", "span", "url"]
    assert rows["count"] == ("an integer ≥ 1", "3", "how many")
    assert rows["enabled"][1] == "false" and rows["name"][1] == '"x"' and rows["accounts"][1] == "[]"
    assert rows["span"][0] == "a pair [low, high]" and rows["url"][1] == "required"


@dataclass(frozen=True)
class Inner:
    tries: int = setting(3, "attempts", lo=1)


@dataclass(frozen=True)
class Outer:
    modes: tuple = setting(("standard",), "modes", choices=("standard", "deep"), min_items=1)
    names: tuple = setting(("a", "b"), "names", nonempty=True, min_items=2)
    inner: Inner = setting(doc="a sub-table", nested=Inner)


def test_lists_of_choices_and_nested_tables():
    s = load(Outer, {"modes": ["deep"], "inner": {"tries": 5}}, W)
    assert s.modes == ("deep",) and s.names == ("a", "b") and s.inner == Inner(5)
    assert load(Outer, {}, W).inner == Inner()
    for key, value, text in (
            ("modes", [], 'modes: expected a non-empty list of "standard", "deep", got []'),
            ("modes", ["turbo"], "modes: expected a non-empty list of \"standard\", \"deep\", got ['turbo']"),
            ("names", ["a"], "names: expected a list of at least 2 non-empty strings, got ['a']"),
            ("names", ["a", ""], "names: expected a list of at least 2 non-empty strings, got ['a', '']")):
        with pytest.raises(SettingsError) as exc:
            load(Outer, {key: value}, W)
        assert str(exc.value) == f"{W} {text}"
    with pytest.raises(SettingsError) as exc:
        load(Outer, {"inner": {"tries": 0}}, W)
    assert str(exc.value) == "[modules.demo.inner] tries: expected an integer ≥ 1, got 0"
    with pytest.raises(SettingsError, match=r"^\[modules.demo\] inner: expected a table, got 3$"):
        load(Outer, {"inner": 3}, W)
    assert [row[0] for row in describe(Outer)] == ["modes", "names", "inner.tries"]


def test_module_settings_reads_the_modules_table_and_names_the_file():
    from types import SimpleNamespace

    from shared.settings import module_settings
    assert module_settings(Inner, SimpleNamespace(path=None, modules={}), "demo") == Inner()
    cfg = SimpleNamespace(path="/etc/fano.toml", modules={"demo": {"tries": 2}})
    assert module_settings(Inner, cfg, "demo") == Inner(2)
    with pytest.raises(SettingsError, match=r"^/etc/fano.toml: \[modules.demo\] tries: expected"):
        module_settings(Inner, SimpleNamespace(path="/etc/fano.toml", modules={"demo": {"tries": 0}}), "demo")


def test_the_config_files_own_sections_use_the_same_validator(tmp_path):
    from shared.config import DEFAULT_BASE_PRIORITIES, load_config
    path = tmp_path / "fano.toml"
    for text, error in (
            ("[broker]\nmax_batch = 0\n", "[broker] max_batch: expected an integer ≥ 1, got 0"),
            ("[broker]\nmax_batch = 2.5\n", "[broker] max_batch: expected an integer ≥ 1, got 2.5"),
            ("[broker]\nmap_size = '1MiB'\nheadroom = '2MiB'\n",
             "[broker] headroom: expected less than map_size (1.0 MiB), got 2.0 MiB"),
            ("[scheduler]\naging_cap = -1\n", "[scheduler] aging_cap: expected a number ≥ 0, got -1"),
            ("[scheduler]\nmodule_weights = 3\n", "[scheduler] module_weights: expected a table, got 3"),
            ("[paths]\nrun_dir = 5\n", "[paths] run_dir: expected a non-empty string, got 5"),
            ("[paths]\nrun_dri = 'x'\n",
             "[paths]: unknown key(s) run_dri (known: data_dir, keys_dir, log_dir, run_dir)"),
            ("[accounts.a]\nbackend = 'simm'\n", "[accounts.a] backend: expected one of \"sim\", \"claude\", "
                                                 "\"chatgpt\", \"gemini\", \"openai\", got 'simm'"),
            ("[accounts.a]\nmodes = ['deep']\n", "[accounts.a] backend: required: expected one of \"sim\", \"claude\", "
                                                 "\"chatgpt\", \"gemini\", \"openai\""),
            ("[accounts.a]\nbackend = 'sim'\nmodes = []\n",
             "[accounts.a] modes: expected a non-empty list of \"standard\", \"deep\", got []")):
        path.write_text(text)
        with pytest.raises(SettingsError) as exc:
            load_config(path)
        assert str(exc.value) == f"{path}: {error}"
    path.write_text("[scheduler]\nbase_priorities = { explore = 99 }\n[broker]\nmap_size = '2GiB'\n")
    cfg = load_config(path)
    assert cfg.scheduler.base_priorities == {**DEFAULT_BASE_PRIORITIES, "explore": 99}
    assert cfg.broker.map_size == 2 * 1024**3 and cfg.broker.lease_ttl == 60.0
    path.write_text("[paths]\nrun_dir = 'r'\n[accounts.a]\nbackend = 'sim'\nmodes = ['deep']\nseed = 3\n")
    cfg = load_config(path)
    assert cfg.run_dir == tmp_path / "r" and cfg.data_dir == tmp_path / "var" / "data"
    assert cfg.accounts[0].modes == ("deep",) and cfg.accounts[0].settings == {"seed": 3}


# where a ConfigError may be built by hand: the validator and the loader, and two checks that are not about
# a settings value (where an account's API key lives; whether its backend kind can be loaded at all)
CONFIG_ERRORS_ALLOWED = {"shared/settings.py", "shared/config.py", "services/backends/secrets.py",
                         "services/backends/registry.py"}


def test_no_settings_table_is_validated_by_hand():
    """Every module and backend declares its keys and lets :func:`shared.settings.load` check them, so
    every settings error has the one format (a :class:`SettingsError`, also for a check of several keys);
    a second validator (a ``ConfigError`` of its own wording) is refused here."""
    import re

    from tests.support import REPO
    raised = re.compile(r"\bConfigError\(")
    found = []
    for top in ("shared", "services", "cli"):
        for path in sorted((REPO / top).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            if rel not in CONFIG_ERRORS_ALLOWED:
                found += [f"{rel}:{n}" for n, line in enumerate(path.read_text().splitlines(), 1)
                          if raised.search(line)]
    assert found == [], f"declare keys with shared.settings.setting, load them with shared.settings.load: {found}"
