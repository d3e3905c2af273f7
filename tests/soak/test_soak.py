"""One simulated day of the whole research tree (ops/soak.py at a small size): the invariants hold.

Real supervisord, broker, scheduler, the research modules on the demo seeds, three sim accounts with
subscription-like windows (a quarter of the full soak's limits), 2-60 KB answers, injected faults (5xx,
overloads, 429s with reset times, hangs), a seed and comments added on the way, kill -9 of random
programs. Then: no program ended FATAL, nothing lost, nothing served twice, no window overrun, storage
bounded, and no account idle with quota left while work waits at the end.
"""
import os

import pytest

from ops.soak import run

pytestmark = [pytest.mark.soak, pytest.mark.crash]

SCALE = 720.0      # a simulated day in two real minutes


@pytest.fixture(scope="module")
def day():
    seed = int(os.environ.get("FANO_SOAK_SEED", "0")) or 1107
    total = run(days=1.0, scale=SCALE, seed=seed, kills=4, size="small", comments_per_day=8.0)
    total["context"] = f"seed {seed}" + (f", deployment kept in {total['root']}" if total["violations"] else "")
    return total


@pytest.mark.timeout(420)
def test_a_simulated_day_keeps_every_invariant(day):
    ctx = day["context"]
    assert day["violations"] == [], f"{ctx}: {day['violations'][:20]}"
    assert (day["fatal"], day["lost"], day["duplicated"], day["over_quota"]) == (0, 0, 0, 0), ctx
    assert sum(day["kills"].values()) >= 3, f"{ctx}: the kill -9s did not happen: {day['kills']}"
    # the research really ran on every account, with the faults the sim injects
    done = day["accounts"]
    assert all(sum(done.get(a, {}).values()) >= 10 for a in ("chatgpt-sim", "gemini-sim", "claude-sim")), done
    assert day["research"]["insights"] > 0 and day["driver"].get("seed") == 1, (ctx, day["research"], day["driver"])


@pytest.mark.timeout(420)
def test_storage_stays_bounded(day):
    st = day["storage"]
    assert 0 < st["lmdb_used"] < st["lmdb_map"] // 4, st
    assert st["bytes_per_task"] is not None and st["bytes_per_task"] < 512 * 1024, st
    assert st["days_until_full"] is None or st["days_until_full"] > 30, st


@pytest.mark.timeout(420)
def test_no_account_idles_with_quota_while_work_waits_at_the_end(day):
    assert day["idle_with_quota_and_work_at_end"] == {}, (day["context"], day["busy"])
