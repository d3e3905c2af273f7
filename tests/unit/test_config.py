"""The config loader: sizes, defaults, unknown keys and invalid quotas are clear errors."""
import pytest

from shared.config import ConfigError, load_config, parse_size


def write(tmp_path, text):
    path = tmp_path / "fano.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text,expected", [("1GiB", 1024**3), ("512 MiB", 512 * 1024**2), ("64M", 64 * 1024**2),
                                           (4096, 4096), ("10", 10)])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["big", "1XB", "-5MiB", ""])
def test_parse_size_rejects_garbage(text):
    with pytest.raises(ConfigError):
        parse_size(text)


def test_defaults_and_relative_paths(tmp_path):
    cfg = load_config(write(tmp_path, ""))
    assert cfg.run_dir == tmp_path / "var" / "run"
    assert cfg.broker.map_size == 1024**3
    assert cfg.broker.map_ceiling == 64 * 1024**3 and cfg.broker.disk_reserve == 1024**3
    assert cfg.broker_endpoint == f"ipc://{tmp_path}/var/run/broker.sock"


@pytest.mark.parametrize("text,fragment", [
    ("[broker]\nmap_sise = 5\n", "map_sise"),
    ("[brokr]\n", "brokr"),
    ("[broker]\nlease_ttl = 'long'\n", "lease_ttl"),
    ("[broker]\nmap_size = '1MiB'\nheadroom = '2MiB'\n", "headroom"),
    ("[broker]\nmap_size = '2GiB'\nmap_ceiling = '1GiB'\n", "map_ceiling"),
    ("[broker]\nmap_ceiling = '2TiB'\n", "map_ceiling"),
    ("[broker]\ndisk_reserve = 'lots'\n", "[broker] disk_reserve: expected a size (e.g. 2MiB) ≥ 0 B, got 'lots'"),
    ('[quotas.acct.deep]\nwindows = ["20/fortnight"]\n', "quotas.acct.deep"),
    ('[quotas.acct.deep]\nlimit = 5\n', "windows"),
    ("not toml = = =", "fano.toml"),
    ('[accounts.a]\nbackend = "sim"\nunknown_turn_hold = -1\n',
     "[accounts.a] unknown_turn_hold: expected a number in [0, 316224000], got -1"),
    ('[accounts.a]\nbackend = "sim"\nunknown_turn_hold = "1h"\n',
     "[accounts.a] unknown_turn_hold: expected a number in [0, 316224000], got '1h'"),
])
def test_config_errors_name_the_problem(tmp_path, text, fragment):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    assert fragment in str(err.value)


def test_an_accounts_unknown_turn_hold_is_the_brokers_not_its_workers(tmp_path):
    cfg = load_config(write(tmp_path, '[accounts.a]\nbackend = "sim"\nunknown_turn_hold = 60\nseed = 3\n'
                                      '[accounts.b]\nbackend = "sim"\n'))
    a, b = cfg.accounts
    assert (a.unknown_turn_hold, a.settings) == (60.0, {"seed": 3})   # not handed to the sim's validator
    assert b.unknown_turn_hold is None


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")


def test_repository_config_is_valid():
    cfg = load_config()
    assert {(q.account, q.mode) for q in cfg.quotas}


def test_scaled_clock_needs_a_shared_origin_and_agrees_across_instances():
    import time

    from shared.clock import Clock
    with pytest.raises(ValueError):
        Clock(scale=100.0)
    origin = time.time() - 10
    a = Clock(scale=100.0, origin=origin)
    time.sleep(0.05)
    b = Clock(scale=100.0, origin=origin)  # created later, same world time
    assert abs(a.world() - b.world()) < 1.0
    assert a.world() - origin >= 1000  # 10 real seconds since origin = 1000 world seconds


@pytest.mark.parametrize("n, text", [(0, "0 B"), (1023, "1023 B"), (512 * 2**20, "512.0 MiB"),
                                     (3 * 2**30 // 2, "1.5 GiB"), (2**40, "1.0 TiB"), (2**50, "1024.0 TiB")])
def test_format_size_is_what_parse_size_reads(n, text):
    from shared.config import format_size
    assert format_size(n) == text
    assert parse_size(text.replace(" ", "")) == n
