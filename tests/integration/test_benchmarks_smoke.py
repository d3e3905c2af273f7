"""The benchmark scripts at a tiny size: they run end to end under a real supervisord, print pure JSON on
stdout with the documented keys, and report no leftover process."""
import json
import subprocess

import pytest

from shared.config import REPO_ROOT

pytestmark = pytest.mark.integration


def run_script(name: str, *args: str, timeout: float = 90) -> dict:
    proc = subprocess.run([str(REPO_ROOT / "ops" / name), *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{name} exited {proc.returncode}; stderr:\n{proc.stderr[-3000:]}"
    try:
        return json.loads(proc.stdout)   # the whole of stdout: progress goes to stderr
    except ValueError:
        pytest.fail(f"{name} did not print pure JSON on stdout:\n{proc.stdout[:2000]}")


def ms_summary(d: dict) -> None:
    assert {"p50", "p99", "mean", "n"} <= set(d)
    assert d["n"] > 0 and 0 < d["p50"] <= d["p99"]


@pytest.mark.timeout(120)
def test_bench_scheduler_tiny():
    out = run_script("bench-scheduler", "--accounts", "2", "--idle", "5", "--depths", "1000", "--warmup", "0.5",
                     "--window", "2", "--core", "300")
    assert {"params", "machine", "idle", "depths", "core", "problems", "elapsed_s"} <= set(out)
    assert out["core"]["tasks"] == 300 and out["core"]["accounts"] == 2 and out["core"]["cpu_us_per_task"] > 0
    assert out["problems"] == []
    idle = out["idle"]
    assert idle["tasks"] == 5
    for key in ("submit_to_start_ms", "submit_to_done_ms", "client_round_trip_ms"):
        ms_summary(idle[key])
    assert idle["submit_to_start_ms"]["p50"] <= idle["submit_to_done_ms"]["p50"]
    (run,) = out["depths"]
    assert {"depth", "preload_s", "preload_tasks_per_s", "scheduler_rebuild_s", "start_to_synced_s",
            "start_to_first_assign_s", "window_s", "completed", "tasks_per_s", "assigned", "depth_min", "depth_max",
            "sched_cpu_us_per_assign", "sched_cpu_busy", "broker_cpu_busy", "workers_cpu_busy", "worker_gap_ms",
            "sched_rss_mib", "sched_peak_rss_mib", "map_used_mib"} <= set(run)
    assert run["depth"] == 1000 and run["completed"] > 0 and run["tasks_per_s"] > 0
    # the feeder kept the queue deep: it tops up every 0.25 s, in which the tree drains a few hundred at most
    assert run["depth_min"] >= 500


@pytest.mark.timeout(120)
def test_bench_utilization_tiny():
    out = run_script("bench-utilization", "--conversations", "2", "--turns", "2", "--oneshots", "2", "--deep", "1",
                     "--scale", "200", "--jitter", "0")   # fixed latencies: the bound is exact
    assert {"params", "accounts", "machine", "variants"} <= set(out)
    assert [v["variant"] for v in out["variants"]] == ["chains", "independent"]
    for v in out["variants"]:
        assert v["problems"] == [] and v["failed"] == 0
        assert v["tasks"] == 6 and v["deep_tasks"] == 1
        assert {"work_s", "critical_path_s", "bound_s"} <= set(v["bound"])
        assert v["bound"]["bound_s"] == max(v["bound"]["work_s"], v["bound"]["critical_path_s"]) > 0
        assert v["makespan_s"] >= v["bound"]["bound_s"] * 0.99   # a lower bound holds (up to rounding)
        assert v["ratio"] >= 0.99
        assert 0 < v["busy_fraction_overall"] <= 1
        assert set(v["accounts"]) == set(out["accounts"])
        for acct in v["accounts"].values():
            assert {"requests", "busy_s", "available_s", "busy_fraction", "idle_with_work_s",
                    "last_served_s"} <= set(acct)
        assert sum(a["requests"] for a in v["accounts"].values()) >= 6
        assert {"last_start_s", "tail_s", "idle_account_s", "last_task"} <= set(v["tail"])
    assert out["variants"][0]["conversations"]["longest_on"] in out["accounts"]


@pytest.mark.timeout(120)
def test_bench_storage_tiny():
    out = run_script("bench-storage", "--threads", "2", "--turns", "3", "--reviews", "1", "--compact")
    assert {"schema_version", "workload", "texts", "after_run", "after_compaction"} <= set(out)
    run, compacted = out["after_run"], out["after_compaction"]
    assert run["tasks"] == compacted["tasks"] == 2 * (3 + 1)
    assert {"databases", "kv", "live_bytes", "bytes_per_task", "file_bytes"} <= set(run)
    assert set(run["kv"]) == {"explorer/exchanges/", "explorer/reviews/"}
    assert run["kv"]["explorer/exchanges/"]["entries"] == 6
    # large values are stored compressed, and exchanges hold no prompt: far below what the texts weigh
    assert run["kv"]["explorer/exchanges/"]["stored"] < run["kv"]["explorer/exchanges/"]["raw"] / 1.5
    assert run["databases"]["tasks"]["stored"] < out["texts"]["prompt_chars"] + out["texts"]["answer_chars"]
    assert compacted["databases"]["tasks"]["stored"] < run["databases"]["tasks"]["stored"] / 2
    assert 0 < compacted["bytes_per_task"] <= run["bytes_per_task"]


@pytest.mark.timeout(120)
def test_bench_web_tiny():
    proc = subprocess.run([str(REPO_ROOT / "ops" / "bench-web"), "--tasks", "200", "--insights", "30",
                           "--requests", "3"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=110)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines()]   # JSON lines only: progress on stderr
    pages = {row["page"]: row for row in lines if "page" in row}
    for path in ("/", "/queue", "/seeds", "/threads"):
        assert pages[path]["status"] == 200 and 0 < pages[path]["median_ms"] <= pages[path]["p95_ms"], pages[path]
    summary = lines[-1]
    assert summary["ok"] is True and summary["tasks"] == 200 and summary["worst_median_ms"] < summary["target_ms"]


@pytest.mark.timeout(120)
def test_bench_floor_tiny():
    out = run_script("bench-floor", "--samples", "5", "--burst", "200", "--gap", "0.001")
    assert {"params", "machine", "commit", "hop", "floor"} <= set(out)
    commit, hop, floor = out["commit"], out["hop"], out["floor"]
    for key in ("hot_ms", "idle_ms", "fdatasync_hot_ms", "fdatasync_idle_ms"):
        assert commit[key]["n"] == 5 and 0 < commit[key]["p50"] <= commit[key]["p90"]
    assert commit["cpu_us"] > 0
    for key in ("round_trip_hot_ms", "round_trip_idle_ms"):
        assert hop[key]["n"] == 5 and 0 < hop[key]["p50"] <= hop[key]["p90"]
    assert 0 < hop["message_end_cpu_us_pipelined"] and 0 < hop["message_end_cpu_us"]
    # the floor is the documented sum of its parts
    counts, end = floor["counts"], min(hop["message_end_cpu_us"], hop["message_end_cpu_us_pipelined"])
    assert floor["idle_submit_to_start_ms"] == pytest.approx(
        commit["idle_ms"]["p50"] + (counts["hops_to_start"] - 1) * hop["one_way_idle_ms"] + hop["one_way_hot_ms"],
        abs=0.002)
    assert floor["cpu_us_per_task"] == pytest.approx(
        counts["messages_per_task"] * 2 * end + counts["commits_per_task"] * commit["cpu_us"] / counts["accounts"],
        abs=0.2)
    assert floor["scheduler_cpu_us_per_assign"] == pytest.approx(counts["scheduler_ends_per_task"] * end, abs=0.2)
    assert floor["scheduler_cpu_us_per_assign_one_at_a_time"] == pytest.approx(
        counts["scheduler_ends_per_task"] * hop["message_end_cpu_us"], abs=0.2)
    assert floor["drain_tasks_per_s"] == pytest.approx(floor["usable_cpus"] * 1e6 / floor["cpu_us_per_task"], rel=0.01)
