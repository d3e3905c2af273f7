"""The chaos run at a CI size: real supervisord, kill -9 of random programs, invariants checked after."""
import os

import pytest

from ops.chaos import run

pytestmark = [pytest.mark.crash]


@pytest.mark.timeout(600)
def test_chaos_small_run_has_no_violations():
    seed = int(os.environ.get("FANO_CHAOS_SEED", "0")) or 4242
    summary = run(kills=int(os.environ.get("FANO_CHAOS_KILLS", "25")), seed=seed, keep=False,
                  conversations=6, turns=4, asks=60, kill_gap=(0.3, 1.2), drain_timeout=240)
    context = f"seed {seed}, deployment kept in {summary['root']}" if summary["violations"] else f"seed {seed}"
    assert summary["drained"], f"work did not drain ({context}): {summary}"
    assert summary["violations"] == [], f"{context}: {summary['violations'][:20]}"
    assert summary["kills"] >= 20
    assert {"broker", "scheduler"} <= set(summary["kills_by_program"]) or summary["kills"] < 25
    assert summary["tasks"].get("DONE", 0) > 50
