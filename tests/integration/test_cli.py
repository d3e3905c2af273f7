"""fanoctl against a real broker process: table and --json output, stable JSON shapes, exit codes."""
from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.fanoctl import main
from shared import txn
from shared.errors import ExitCode
from tests.support import REPO

pytestmark = pytest.mark.integration

# the stable shapes documented in docs/cli.md
TASK_KEYS = {"id", "key", "module", "kind", "payload", "priority", "max_attempts", "not_before", "requires",
             "attrs", "state", "attempts", "epoch", "created", "updated", "lease", "result", "error", "consumed",
             "parked_at", "pending_since"}
STATS_KEYS = {"now", "tasks", "modules", "oldest_pending_age", "ready", "delayed", "leases", "next_due_in",
              "quota", "accounts", "broker", "idle"}
BROKER_KEYS = {"pid", "uptime", "requests", "batches", "mean_batch", "errors", "map_size", "map_used", "map_full",
               "last_event_seq", "dropped_replies", "storage"}
STORAGE_KEYS = {"map_size", "map_used", "map_ceiling", "disk_free", "disk_total", "refusing", "since",
                "growth_per_day", "days_until_full"}
WINDOW_KEYS = {"spec", "kind", "limit", "used", "remaining", "by_module", "reserves", "period_start", "resets_at"}


def run(broker, *args, code: int = 0, env: dict | None = None):
    """Invoke fanoctl in-process on the broker's config; assert the exit code; return the result."""
    result = CliRunner().invoke(main, ["--config", str(broker.config_path), *map(str, args)], env=env,
                                catch_exceptions=False)
    assert result.exit_code == code, (f"fanoctl {' '.join(map(str, args))} exited {result.exit_code}, "
                                      f"wanted {code}\nstdout: {result.stdout}\nstderr: {result.stderr}")
    return result


def run_json(broker, *args):
    return json.loads(run(broker, *args, "--json").stdout)


def one_line_error(result, prefix: str) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got: {result.stderr!r}"
    assert lines[0].startswith(prefix), lines[0]
    assert "Traceback" not in result.output
    return lines[0]


def submit_n(client, n: int, module: str = "explorer", start: int = 0) -> list[int]:
    return [client.submit(f"{module}-{i}", module, f"{module}.explore", {"i": i})["task"]["id"]
            for i in range(start, start + n)]


# --- status ------------------------------------------------------------------------------------------------

def test_status_table_and_json(make_broker):
    broker = make_broker(quotas={("gem", "deep"): ["20/day@04:00 Europe/Berlin reserve explorer=10"]})
    client = broker.client()
    submit_n(client, 2)
    submit_n(client, 1, module="documenter")
    client.lease("w1", "acct", modes=["standard"])

    text = run(broker, "status").stdout
    assert "PENDING 2" in text and "RUNNING 1" in text and "total 3" in text
    assert "explorer" in text and "documenter" in text
    assert "20/day@04:00 Europe/Berlin reserve explorer=10" in text and "0/20" in text

    assert "scheduler not answering" in text          # only a broker here: the idle part says so

    s = run_json(broker, "status")
    assert set(s) == STATS_KEYS and s["idle"] is None
    assert set(s["broker"]) == BROKER_KEYS
    assert set(s["broker"]["storage"]) == STORAGE_KEYS and s["broker"]["storage"]["refusing"] is None
    assert s["tasks"]["PENDING"] == 2 and s["tasks"]["RUNNING"] == 1 and s["tasks"]["total"] == 3
    assert s["modules"]["explorer"] == {"PENDING": 1, "RUNNING": 1}
    assert s["modules"]["documenter"] == {"PENDING": 1}
    assert s["ready"] == 2 and s["leases"] == 1 and s["delayed"] == 0
    assert s["oldest_pending_age"] is not None and s["oldest_pending_age"] >= 0
    assert s["quota"] == [{"account": "gem", "mode": "deep", "window": "20/day@04:00 Europe/Berlin reserve explorer=10",
                           "used": 0, "limit": 20, "remaining": 20, "cooldown_until": None}]
    client.close()


def test_status_shows_paused_and_cooling_accounts(broker, client):
    client.call("account_pause", account="acct-p", reason="login expired")
    client.cooldown("acct-c", time.time() + 5400, mode="deep", reason="429")
    text = run(broker, "status").stdout
    assert "account acct-p: paused (login expired)" in text
    assert "account acct-c: deep cooling until" in text and "(in 1h29m" in text and ": 429" in text
    accounts = {a["account"]: a for a in run_json(broker, "status")["accounts"]}
    assert accounts["acct-p"]["paused"] is True
    assert set(accounts["acct-p"]) == {"account", "paused", "pause_reason", "cooldowns"}
    assert set(accounts["acct-c"]["cooldowns"]["deep"]) == {"until", "reason", "set_at"}
    assert accounts["acct-c"]["cooldowns"]["deep"]["reason"] == "429"


# --- submit --------------------------------------------------------------------------------------------------

def test_submit_created_existing_and_fields(broker, client):
    out = run(broker, "submit", "--key", "k1", "--module", "explorer", "--kind", "explorer.explore",
              "--payload", '{"seed": 7}').stdout
    assert out.strip() == "1 created (PENDING, key k1)"
    again = run(broker, "submit", "--key", "k1", "--module", "explorer", "--kind", "explorer.explore",
                "--payload", '{"seed": 7}').stdout
    assert again.strip() == "1 existing (PENDING, key k1)"

    d = run_json(broker, "submit", "--key", "k2", "--module", "documenter", "--kind", "doc.write",
                 "--payload", "[1, 2]", "--priority", "80", "--max-attempts", "5", "--mode", "deep",
                 "--backend", "gem", "--backend", "claude")
    assert set(d) == {"task", "created", "requeued"} and d["created"] is True
    t = client.get(d["task"]["id"])
    assert (t["payload"], t["priority"], t["max_attempts"]) == ([1, 2], 80, 5)
    assert t["requires"] == {"mode": "deep", "backends": ["gem", "claude"]}


def test_submit_errors(broker, client):
    bad = run(broker, "submit", "--key", "k", "--module", "explorer", "--kind", "x", "--payload", "{bad", code=2)
    assert "Invalid value for '--payload': not valid JSON" in bad.stderr and "Traceback" not in bad.output
    assert client.list()["tasks"] == []

    run(broker, "submit", "--key", "k", "--module", "explorer", "--kind", "x", "--payload", "1")
    conflict = run(broker, "submit", "--key", "k", "--module", "explorer", "--kind", "x", "--payload", "2",
                   code=ExitCode.FAILURE)
    one_line_error(conflict, "fanoctl: KEY_CONFLICT: key 'k' belongs to task 1")
    mode = run(broker, "submit", "--key", "k3", "--module", "explorer", "--kind", "x", "--mode", "turbo",
               code=ExitCode.FAILURE)
    one_line_error(mode, "fanoctl: BAD_ARGUMENT: requires.mode")


# --- queue ---------------------------------------------------------------------------------------------------------

def test_queue_ls_table_json_and_filters(broker, client):
    submit_n(client, 3)
    submit_n(client, 2, module="documenter")
    client.lease("w1", "acct-a", modes=["standard"])  # takes task 1 (same priority: oldest first)

    text = run(broker, "queue", "ls").stdout.splitlines()
    assert text[0].split() == ["ID", "STATE", "MODULE", "KIND", "PRIO", "ATT", "AGE", "INFO", "KEY"]
    assert len(text) == 6
    assert text[1].split()[:6] == ["1", "RUNNING", "explorer", "explorer.explore", "50", "1/3"]
    assert "w1 acct-a/standard lease" in text[1]
    assert text[5].split()[:3] == ["5", "PENDING", "documenter"] and text[5].endswith("documenter-1")

    d = run_json(broker, "queue", "ls", "--module", "documenter")
    assert set(d) == {"tasks", "next"} and d["next"] is None
    assert [t["id"] for t in d["tasks"]] == [4, 5]
    # pages leave out payload and result unless asked for (--payloads)
    assert all(set(t) == TASK_KEYS - {"payload", "result"} for t in d["tasks"]), d["tasks"][0].keys()
    full = run_json(broker, "queue", "ls", "--module", "documenter", "--payloads")
    assert all(set(t) == TASK_KEYS for t in full["tasks"]), full["tasks"][0].keys()
    running = run_json(broker, "queue", "ls", "--state", "running")["tasks"]
    assert [t["id"] for t in running] == [1]
    assert set(running[0]["lease"]) >= {"worker", "account", "mode", "deadline_in", "granted_at"}
    assert [t["id"] for t in run_json(broker, "queue", "ls", "--kind", "explorer.explore", "--state", "PENDING")
            ["tasks"]] == [2, 3]
    assert run(broker, "queue", "ls", "--module", "nobody").stdout.strip() == "no tasks"
    run(broker, "queue", "ls", "--state", "BOGUS", code=2)


def test_queue_ls_paging_and_all(broker, client):
    submit_n(client, 7)
    page = run_json(broker, "queue", "ls", "--limit", "3")
    assert [t["id"] for t in page["tasks"]] == [1, 2, 3] and page["next"] == 3
    page2 = run_json(broker, "queue", "ls", "--limit", "3", "--after", "3")
    assert [t["id"] for t in page2["tasks"]] == [4, 5, 6] and page2["next"] == 6
    assert "(more: --after 3, or --all)" in run(broker, "queue", "ls", "--limit", "3").stdout

    everything = run_json(broker, "queue", "ls", "--limit", "3", "--all")
    assert [t["id"] for t in everything["tasks"]] == list(range(1, 8)) and everything["next"] is None
    table = run(broker, "queue", "ls", "--limit", "2", "--all").stdout.splitlines()
    assert [line.split()[0] for line in table[1:]] == [str(i) for i in range(1, 8)]
    assert "more:" not in "\n".join(table)
    # newest first: the broker's descending pages, continued below the footer's id
    newest = run_json(broker, "queue", "ls", "--limit", "3", "--newest")
    assert [t["id"] for t in newest["tasks"]] == [7, 6, 5] and newest["next"] == 5
    below = run_json(broker, "queue", "ls", "--limit", "3", "--newest", "--after", "5")
    assert [t["id"] for t in below["tasks"]] == [4, 3, 2]
    assert [t["id"] for t in run_json(broker, "queue", "ls", "--newest", "--all", "--limit", "2")["tasks"]] == \
        list(range(7, 0, -1))


def test_queue_show_table_and_json(broker, client):
    (tid,) = submit_n(client, 1)
    lease = client.lease("w1", "acct-a", modes=["standard"])
    client.complete(tid, lease["epoch"], {"text": "a finding", "tokens": 12})

    text = run(broker, "queue", "show", tid).stdout
    assert re.search(r"^state: +DONE$", text, re.M) and re.search(r"^key: +explorer-0$", text, re.M)
    assert re.search(r"^attempts: +1/3$", text, re.M)
    assert 'result:\n  {\n    "text": "a finding",\n    "tokens": 12\n  }' in text
    assert 'payload:\n  {\n    "i": 0\n  }' in text
    history = text.split("history:\n")[1].splitlines()
    assert history[0].split() == ["AT", "FROM", "TO", "ATT", "EPOCH", "WHY"]
    assert [h.split()[3:5] for h in history[1:4]] == [["-", "PENDING"], ["PENDING", "RUNNING"], ["RUNNING", "DONE"]]

    t = run_json(broker, "queue", "show", tid)
    assert set(t) == TASK_KEYS | {"history", "charged", "turn", "unknown_turn", "served"}
    assert t["result"] == {"text": "a finding", "tokens": 12} and t["state"] == "DONE"
    assert [(h["from"], h["to"]) for h in t["history"]] == [(None, "PENDING"), ("PENDING", "RUNNING"),
                                                            ("RUNNING", "DONE")]
    assert set(t["history"][0]) == {"at", "from", "to", "why", "epoch", "attempts"}


def test_unknown_task_is_one_line_exit_1(broker):
    for cmd in (["queue", "show", "99"], ["queue", "cancel", "99"], ["queue", "priority", "99", "5"]):
        res = run(broker, *cmd, code=ExitCode.FAILURE)
        assert one_line_error(res, "fanoctl: NOT_FOUND") == "fanoctl: NOT_FOUND: no such task: 99"
        assert res.stdout == ""
    run(broker, "queue", "show", "abc", code=2)


def test_task_operations(broker, client):
    a, b, c = submit_n(client, 3)
    assert run(broker, "queue", "pause", a).stdout.strip() == f"task {a}: PAUSED, priority 50, attempts 0/3"
    assert run_json(broker, "queue", "resume", a)["state"] == "PENDING"
    assert run(broker, "queue", "priority", a, 90).stdout.strip() == f"task {a}: PENDING, priority 90, attempts 0/3"
    assert client.get(a)["priority"] == 90

    cancelled = run_json(broker, "queue", "cancel", b, "--reason", "not needed")
    assert cancelled["state"] == "CANCELLED" and cancelled["history"][-1]["why"] == "not needed"
    one_line_error(run(broker, "queue", "cancel", b, code=ExitCode.FAILURE), "fanoctl: INVALID_STATE: task")

    lease = client.lease("w1", "acct-a", modes=["standard"], task_id=c)
    assert "pause requested" in run(broker, "queue", "pause", c).stdout
    assert run_json(broker, "queue", "resume", c)["pause_requested"] is False
    client.fail(c, lease["epoch"], "terminal", "bad prompt", sent=False)
    assert "terminal: bad prompt" in run(broker, "queue", "ls", "--state", "PARKED").stdout
    one_line_error(run(broker, "queue", "resume", c, code=ExitCode.FAILURE), "fanoctl: INVALID_STATE")

    kept = run_json(broker, "queue", "retry", c, "--keep-attempts")
    assert kept["state"] == "PENDING" and kept["attempts"] == 1
    lease = client.lease("w1", "acct-a", modes=["standard"], task_id=c)
    client.fail(c, lease["epoch"], "terminal", "again", sent=False)
    assert run(broker, "queue", "retry", c).stdout.strip() == f"task {c}: PENDING, priority 50, attempts 0/3"


# --- quota -----------------------------------------------------------------------------------------------------------

def test_quota_set_show_reset_round_trip_with_reserves(broker, client):
    out = run(broker, "quota", "set", "gem", "deep", "20/day@04:00 Europe/Berlin", "10/3h",
              "--reserve", "explorer=5", "--reserve", "documenter=2").stdout
    assert "gem deep (from operator)" in out
    assert "20/day@04:00 Europe/Berlin reserve documenter=2,explorer=5" in out
    assert "10/3h reserve documenter=2,explorer=5" in out

    as_json = run_json(broker, "quota", "set", "gem", "deep",
                       "20/day@04:00 Europe/Berlin reserve explorer=5,documenter=2",
                       "10/3h reserve documenter=2,explorer=5")
    assert set(as_json) == {"account", "mode", "source", "windows", "cooldown"}
    assert [w["spec"] for w in as_json["windows"]] == ["20/day@04:00 Europe/Berlin reserve documenter=2,explorer=5",
                                                       "10/3h reserve documenter=2,explorer=5"]
    client.submit("t1", "explorer", "explorer.explore", {}, requires={"mode": "deep"})
    assert client.lease("w1", "gem", modes=["deep"])["task"] is not None

    d = run_json(broker, "quota", "show", "gem")
    assert set(d) == {"now", "quotas", "accounts"}
    (q,) = d["quotas"]
    assert set(q) == {"account", "mode", "source", "windows", "cooldown"}
    assert (q["account"], q["mode"], q["source"], q["cooldown"]) == ("gem", "deep", "operator", None)
    daily, rolling = q["windows"]
    assert set(daily) == WINDOW_KEYS
    assert (daily["kind"], daily["limit"], daily["used"], daily["remaining"]) == ("daily", 20, 1, 19)
    assert daily["by_module"] == {"explorer": 1} and daily["reserves"] == {"explorer": 5, "documenter": 2}
    assert d["now"] < daily["resets_at"] <= d["now"] + 86400 + 3600
    assert rolling["kind"] == "rolling" and rolling["used"] == 1
    assert d["now"] < rolling["resets_at"] <= d["now"] + 3 * 3600

    text = run(broker, "quota", "show").stdout
    row = next(line for line in text.splitlines() if "20/day@04:00" in line)
    assert "1/20" in row and "19" in row and "explorer=1" in row and "documenter=2,explorer=5" in row
    assert "(in " in row

    reset = run(broker, "quota", "reset", "gem", "deep").stdout
    assert reset.startswith("gem deep: usage and cool-downs cleared")
    (q,) = run_json(broker, "quota", "show", "gem")["quotas"]
    assert [w["used"] for w in q["windows"]] == [0, 0]

    r = run_json(broker, "quota", "reset", "gem", "--spec")
    assert set(r) == {"account", "modes", "cleared_records", "spec_removed"}
    assert r["spec_removed"] is True and r["modes"] == ["standard", "deep"]
    assert run_json(broker, "quota", "show", "gem")["quotas"] == []
    assert run(broker, "quota", "show").stdout.strip() == "no quotas set"


def test_quota_show_config_quota_and_cooldown(make_broker):
    broker = make_broker(quotas={("gem", "deep"): ["100/week@mon 09:00 UTC"]})
    client = broker.client()
    client.cooldown("gem", time.time() + 7200, mode="deep", reason="limit reached until 2:56 PM")
    text = run(broker, "quota", "show").stdout
    assert "gem deep (from config)  COOLING DOWN until" in text and "limit reached until 2:56 PM" in text
    (q,) = run_json(broker, "quota", "show")["quotas"]
    assert q["source"] == "config" and q["windows"][0]["spec"] == "100/week@mon 09:00 UTC"
    assert q["cooldown"]["reason"] == "limit reached until 2:56 PM"
    run(broker, "quota", "reset", "gem")
    assert run_json(broker, "quota", "show")["quotas"][0]["cooldown"] is None
    client.close()


def test_invalid_quota_input(broker, client):
    res = run(broker, "quota", "set", "gem", "deep", "50/3x", code=ExitCode.FAILURE)
    one_line_error(res, "fanoctl: INVALID_QUOTA: period must be day, week or a duration")
    res = run(broker, "quota", "set", "gem", "deep", "5/3h", "--reserve", "explorer=10", code=ExitCode.FAILURE)
    one_line_error(res, "fanoctl: INVALID_QUOTA: reserves (10) exceed the window limit (5)")
    one_line_error(run(broker, "quota", "set", "gem", "turbo", "5/3h", code=ExitCode.FAILURE),
                   "fanoctl: BAD_ARGUMENT: mode must be one of")
    bad = run(broker, "quota", "set", "gem", "deep", "5/3h", "--reserve", "explorer", code=2)
    assert "use module=N" in bad.stderr
    both = run(broker, "quota", "set", "gem", "deep", "5/3h reserve a=1", "--reserve", "b=1", code=2)
    assert "not both" in both.stderr
    run(broker, "quota", "set", "gem", "deep", code=2)  # no window
    assert client.quota_show()["quotas"] == []


# --- admin, events -------------------------------------------------------------------------------------------------

def test_grow_map(broker, client):
    out = run(broker, "admin", "grow-map", "2GiB").stdout
    assert out.startswith("map grown from 1.0 GiB to 2.0 GiB")
    assert client.stats()["broker"]["map_size"] == 2 * 1024**3
    d = run_json(broker, "admin", "grow-map", "3GiB")
    assert d["map_size"] == 3 * 1024**3 and d["previous"] == 2 * 1024**3
    one_line_error(run(broker, "admin", "grow-map", "1GiB", code=ExitCode.FAILURE),
                   "fanoctl: BAD_ARGUMENT: new map size")
    assert "not a size" in run(broker, "admin", "grow-map", "lots", code=2).stderr


def test_admin_compact(broker, client):
    ids = submit_n(client, 3)
    for tid in ids:
        lease = client.lease("w1", "acct-a", modes=["standard"], task_id=tid)
        # incompressible: the broker compresses large values, and the bodies must fill pages to be freed
        client.complete(tid, lease["epoch"], {"text": random.Random(tid).randbytes(4000).hex()})
    client.txn("explorer", [txn.ack(tid) for tid in ids[:2]])  # the third is not acked yet

    d = run_json(broker, "admin", "compact", "--older-than", "0s")
    assert set(d) == {"compacted", "more", "passes", "older_than", "map_used_before", "map_used_after"}
    assert d["compacted"] == 2 and d["more"] is False and d["older_than"] == 0
    assert 0 < d["map_used_after"] < d["map_used_before"]
    t = client.get(ids[0])
    assert t["compacted"] is True and t["payload"] is None and t["result"] is None and t["state"] == "DONE"
    assert len(t["history"]) == 1 and not client.get(ids[2]).get("compacted")
    # a resubmitted key returns the compacted task; counts are unchanged
    again = client.submit("explorer-0", "explorer", "explorer.explore", {"i": 0})
    assert again["created"] is False and again["task"]["id"] == ids[0]
    assert client.stats()["tasks"]["DONE"] == 3

    text = run(broker, "queue", "show", ids[0]).stdout
    assert re.search(r"^compacted: +.* by task retention", text, re.M) and re.search(r"^state: +DONE$", text, re.M)
    assert "payload:\n(dropped by task retention)" in text
    out = run(broker, "admin", "compact", "--older-than", "1d").stdout
    assert out.startswith("compacted 0 task(s) settled over 1d00h ago; live data ")
    assert "not a duration" in run(broker, "admin", "compact", "--older-than", "lots", code=2).stderr
    assert "out of range" in run(broker, "admin", "compact", "--older-than", "-5s", code=2).stderr


def test_admin_compact_with_retention_off(make_broker):
    broker = make_broker(broker={"task_retention": 0})
    out = run(broker, "admin", "compact").stdout
    assert out.startswith("task retention is off (broker.task_retention = 0): nothing compacted")
    assert run_json(broker, "admin", "compact")["older_than"] is None


def test_events(broker, client):
    submit_n(client, 2)
    client.cancel(1, "x")
    d = run_json(broker, "events", "--after", "0")
    assert set(d) == {"events", "last_seq", "truncated"} and d["truncated"] is False
    assert [e["type"] for e in d["events"]] == ["task.submitted", "task.submitted", "task.cancelled"]
    assert [e["seq"] for e in d["events"]] == [1, 2, 3] and d["last_seq"] == 3
    assert [e["seq"] for e in run_json(broker, "events", "--after", "1", "--limit", "1")["events"]] == [2]
    text = run(broker, "events").stdout.splitlines()
    assert text[0].split() == ["SEQ", "AT", "TYPE", "FIELDS"]
    assert "task.cancelled" in text[3] and "id=1" in text[3] and text[-1] == "(last seq 3)"


# --- connection, config, entry point -------------------------------------------------------------------------------

def test_broker_down_exits_3_quickly(broker):
    broker.kill()
    start = time.monotonic()
    res = run(broker, "--timeout", "0.3", "status", code=ExitCode.UNAVAILABLE)
    assert time.monotonic() - start < 2.0
    assert one_line_error(res, "fanoctl: broker unavailable") == \
        f"fanoctl: broker unavailable at {broker.endpoint}: is it running? (ops/up starts it)"
    start = time.monotonic()
    run(broker, "queue", "ls", code=ExitCode.UNAVAILABLE)  # the default timeout fails in a few seconds
    assert time.monotonic() - start < 6.0


def test_config_and_endpoint_selection(broker, tmp_path):
    missing = tmp_path / "nope.toml"
    res = CliRunner().invoke(main, ["--config", str(missing), "status"], catch_exceptions=False)
    assert res.exit_code == ExitCode.CONFIG
    one_line_error(res, f"fanoctl: config error: config file not found: {missing}")

    # --broker wins over a config that does not even load
    res = CliRunner().invoke(main, ["--config", str(missing), "--broker", broker.endpoint, "--json", "status"],
                             catch_exceptions=False)
    assert res.exit_code == 0 and json.loads(res.stdout)["tasks"]["total"] == 0

    res = CliRunner().invoke(main, ["status"], env={"FANO_CONFIG": str(broker.config_path), "FANO_BROKER": None},
                             catch_exceptions=False)
    assert res.exit_code == 0 and "tasks    PENDING 0" in res.stdout

    res = CliRunner().invoke(main, ["--broker", "not-an-endpoint", "status"], catch_exceptions=False)
    assert res.exit_code == ExitCode.CONFIG
    one_line_error(res, "fanoctl: cannot connect to not-an-endpoint")


def test_installed_entry_point_subprocess(broker, client):
    script = Path(sys.executable).parent / "fanoctl"
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "cli.fanoctl"]
    env = dict(os.environ, FANO_CONFIG=str(broker.config_path))
    env.pop("FANO_BROKER", None)
    submit_n(client, 1)

    def fanoctl(*args):
        return subprocess.run(argv + list(args), cwd="/", env=env, capture_output=True, text=True, timeout=30)

    ok = fanoctl("queue", "ls", "--json")
    assert ok.returncode == 0, ok.stderr
    assert [t["key"] for t in json.loads(ok.stdout)["tasks"]] == ["explorer-0"]
    missing = fanoctl("queue", "show", "42")
    assert missing.returncode == ExitCode.FAILURE
    assert missing.stderr == "fanoctl: NOT_FOUND: no such task: 42\n" and missing.stdout == ""
    module = subprocess.run([sys.executable, "-m", "cli.fanoctl", "--json", "status"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=30)
    assert module.returncode == 0 and json.loads(module.stdout)["tasks"]["PENDING"] == 1, module.stderr


def test_every_command_has_help():
    runner = CliRunner()
    commands = [[], ["status"], ["queue"], ["queue", "ls"], ["queue", "show"], ["queue", "cancel"],
                ["queue", "pause"], ["queue", "resume"], ["queue", "retry"], ["queue", "priority"], ["quota"],
                ["quota", "show"], ["quota", "set"], ["quota", "reset"], ["submit"], ["admin"],
                ["admin", "grow-map"], ["admin", "compact"], ["events"]]
    for cmd in commands:
        res = runner.invoke(main, cmd + ["--help"], catch_exceptions=False)
        assert res.exit_code == 0, (cmd, res.output)
        doc = res.stdout.split("\n\n")[1].strip()
        assert doc and not doc.startswith("Options"), (cmd, res.stdout)
        if cmd and cmd[-1] not in ("queue", "quota", "admin"):
            assert "--json" in res.stdout, cmd
