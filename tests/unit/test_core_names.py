"""The broker refuses account and module names its configuration does not have, with the known ones, and
lists only configured accounts (issue 14: `backends pause nosuch` answered "paused" and left a phantom row;
`ask --backend nosuch-sim` waited forever; a removed account stayed listed as offline forever)."""
import pytest

from tests.unit.corehelp import CoreHarness, expect_error, write_config

ACCOUNTS = {"gem": ["standard", "deep"], "claude": ["standard"]}


@pytest.fixture
def names(tmp_path):
    h = CoreHarness(tmp_path, write_config(tmp_path, quotas={("gem", "deep"): ["20/day reserve explorer=5"]},
                                           accounts=ACCOUNTS))
    yield h
    h.close()


def _refused(h, cmd, name, **args):
    err = expect_error("BAD_ARGUMENT", h.call, cmd, **args)
    assert f"unknown account {name!r} (known: claude, gem)" in err.message, err.message
    assert err.details["known"] == ["claude", "gem"] and err.details["name"] == name
    return err


def test_operator_commands_on_an_unknown_account_are_refused_and_leave_no_record(names):
    h = names
    _refused(h, "account_pause", "nosuch", account="nosuch", reason="x")
    _refused(h, "account_resume", "nosuch", account="nosuch")
    _refused(h, "quota_set", "nosuch", account="nosuch", mode="deep", windows=["5/day"])
    _refused(h, "quota_reset", "nosuch", account="nosuch", mode=None, usage=True, spec=True)
    _refused(h, "cooldown", "nosuch", account="nosuch", mode=None, until=h.clock.world() + 60, reason="x")
    _refused(h, "quota_show", "nosuch", account="nosuch")
    shown = h.call("quota_show")
    # every configured account is listed, records or not, and no phantom
    assert [(a["account"], a["paused"]) for a in shown["accounts"]] == [("claude", False), ("gem", False)]
    assert [(q["account"], q["mode"]) for q in shown["quotas"]] == [("gem", "deep")]
    h.call("account_pause", account="gem", reason="maintenance")   # a configured one works as before
    assert [(a["account"], a["paused"]) for a in h.call("quota_show")["accounts"]] == [("claude", False),
                                                                                       ("gem", True)]
    assert [a["account"] for a in h.call("quota_show", account="claude")["accounts"]] == ["claude"]


def test_a_quota_for_a_mode_the_account_does_not_offer_is_refused(names):
    err = expect_error("BAD_ARGUMENT", names.call, "quota_set", account="claude", mode="deep", windows=["5/day"])
    assert err.message == "account claude does not offer mode deep (its modes: standard)"
    assert names.call("quota_set", account="claude", mode="standard", windows=["5/day"])["source"] == "operator"


def test_a_reserve_for_an_unknown_module_is_refused(names):
    err = expect_error("BAD_ARGUMENT", names.call, "quota_set", account="gem", mode="deep",
                       windows=["20/day reserve explorr=5"])
    assert "unknown module 'explorr' (known: adhoc, advisor, documenter, explorer, researcher)" in err.message


def test_a_task_for_an_unknown_account_or_backend_is_refused(names):
    h = names
    err = expect_error("BAD_ARGUMENT", h.submit, "k1", module="adhoc", requires={"backends": ["nosuch-sim"]})
    assert "unknown account or backend 'nosuch-sim' (known: claude, gem, sim)" in err.message
    expect_error("BAD_ARGUMENT", h.submit, "k2", requires={"account": "nosuch"})
    assert h.call("stats")["tasks"]["total"] == 0
    # accounts and backend kinds the configuration has are accepted
    assert h.submit("k3", requires={"backends": ["gem", "sim"]})["created"]
    assert h.submit("k4", requires={"account": "claude"})["created"]


def test_a_removed_account_leaves_the_listing_and_comes_back_with_its_records(names, tmp_path):
    h = names
    h.call("account_pause", account="claude", reason="maintenance")
    h.call("cooldown", account="gem", mode="deep", until=h.clock.world() + 3600, reason="429")
    tid = h.submit("k1", requires={"backends": ["claude"]})["task"]["id"]
    assert {a["account"] for a in h.call("quota_show")["accounts"]} == {"gem", "claude"}
    # claude removed from fano.toml: the broker restarts on the new configuration
    h.restart(write_config(tmp_path, quotas={("gem", "deep"): ["20/day reserve explorer=5"]},
                           accounts={"gem": ["standard", "deep"]}))
    assert [a["account"] for a in h.call("quota_show")["accounts"]] == ["gem"]
    assert [a["account"] for a in h.call("stats")["accounts"]] == ["gem"]
    assert h.get(tid)["requires"] == {"backends": ["claude"]}     # its history stays in the task
    assert h.submit("k1", requires={"backends": ["claude"]})["created"] is False  # an existing key still answers
    _refused_one = expect_error("BAD_ARGUMENT", h.call, "account_resume", account="claude")
    assert "known: gem" in _refused_one.message
    # configured again: its pause is still there
    h.restart(write_config(tmp_path, accounts=ACCOUNTS))
    (claude,) = [a for a in h.call("quota_show")["accounts"] if a["account"] == "claude"]
    assert claude["paused"] is True


def test_a_broker_without_accounts_does_not_check_names(make_core):
    h = make_core()   # no [accounts]: scripts and tests lease under names of their own
    h.call("account_pause", account="anyone", reason="x")
    assert h.submit("k", requires={"backends": ["whatever"]})["created"]
