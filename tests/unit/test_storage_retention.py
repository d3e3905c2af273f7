"""Working data of the research modules expires; the research record and live work never do.

The real explorer module on the real broker core (test_explorer_flow.Rig: sim answers, a fake clock) runs
until threads are consolidated; then world time passes beyond ``broker.working_retention`` and the
broker's housekeeping runs (docs/storage.md lists what is working data)."""
from __future__ import annotations

from services.broker.core import PRUNE_EVERY

RECORD = ("seeds/", "threads/", "exchanges/", "syntheses/", "insights/", "reviews/")


def keys(r, prefix):
    return {k: v for k, _, v in r.svc.store.scan(prefix)}


def test_consolidated_proposals_expire_and_the_record_stays(rig):
    r = rig(settings="max_active_threads = 2\nthreads_per_account = 0\n"
                     "min_exchanges = 2\nmin_critiques = 1\nmax_exchanges = 2\n")
    r.import_seeds()
    r.run_until(lambda: [t for t in r.values("threads/") if t["status"] == "extracted"])
    extracted = {t["id"] for t in r.values("threads/") if t["status"] == "extracted"}
    proposals = keys(r, "proposals/")
    done = {k for k in proposals if k.split("/")[1] in extracted}
    live = set(proposals) - done                 # a thread whose panel has not been consolidated yet
    assert done
    record = {p: keys(r, p) for p in RECORD}
    retention = r.h.cfg.broker.working_retention
    assert retention > 0
    r.clock.advance(retention + PRUNE_EVERY)
    r.h.tick()
    r.h.tick()
    left = keys(r, "proposals/")
    assert not done & set(left), "consolidated proposals outlived working_retention"
    assert live <= set(left)                     # live work is never touched
    assert {p: keys(r, p) for p in RECORD} == record
    # a thread consolidated later counts from its own consolidation
    for k in live:
        assert left[k] == proposals[k]
