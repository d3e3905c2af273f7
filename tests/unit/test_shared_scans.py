"""SharedScans: another module's namespace read through scans reused for a short while (the documenter's
view of the explorer's insights); get is never cached. Over the in-process broker core."""
from services.modules.store import SharedScans, Store
from shared import txn
from tests.unit.corehelp import CoreClient


def test_a_scan_is_reused_until_its_time_is_up_and_get_is_always_fresh(core):
    client = CoreClient(core)
    client.txn("explorer", [txn.put("insights/a", {"text": "one"})])
    now = [100.0]
    view = SharedScans(client, "explorer", lambda: 0.5, lambda: now[0])
    assert [k for k, _, _ in view.scan("insights/")] == ["insights/a"]
    client.txn("explorer", [txn.put("insights/b", {"text": "two"})])
    assert [k for k, _, _ in view.scan("insights/")] == ["insights/a"]        # reused
    assert view.get("insights/b")[1] == {"text": "two"}                       # never cached
    now[0] += 0.5
    assert [k for k, _, _ in view.scan("insights/")] == ["insights/a", "insights/b"]
    assert [k for k, _, _ in view.scan("insights/b")] == ["insights/b"]        # per prefix


def test_one_env_reads_each_prefix_once(core):
    """A planning pass asks for the jobs, comments and insights from several places: one read each."""
    from services.modules.documenter import flow, service, upkeep
    from services.modules.documenter.context import Env
    client = CoreClient(core)
    store, explorer = Store(client, "documenter"), Store(client, "explorer")
    reads: list[str] = []
    for s in (store, explorer):
        real = s.scan
        s.scan = lambda prefix, real=real: reads.append(prefix) or real(prefix)   # type: ignore[method-assign]
    env = Env(store, explorer, 1.0)
    service.proposals(env)
    assert flow.read_jobs(env) == {} and upkeep.read_comments(env) == [] and env.incorporated() == set()
    assert sorted(reads) == sorted(set(reads)), reads


def test_a_shaped_scan_keeps_only_what_the_reader_uses(core):
    """The documenter keeps the blessed insights' planning fields, nothing of the others: its memory follows
    its backlog, not the explorer's history."""
    from services.modules.documenter.context import INSIGHT_FIELDS, Env, blessed_shape
    client = CoreClient(core)
    client.txn("explorer", [txn.put("insights/a", {"text": "one", "status": "blessed", "priority": 7,
                                                   "versions": [{"text": "one"}] * 50, "dedup": {"x": 1}}),
                            txn.put("insights/b", {"text": "two", "status": "pending", "versions": []}),
                            txn.put("insights/c", "not a record")])
    view = SharedScans(client, "explorer", lambda: 60.0, lambda: 0.0, shapes={"insights/": blessed_shape})
    assert [(k, v) for k, _, v in view.scan("insights/")] == [("insights/a", {"text": "one", "status": "blessed",
                                                                              "priority": 7})]
    assert set(INSIGHT_FIELDS) >= {"text", "status", "priority", "depends_on", "tags"}
    assert view.get("insights/b")[1]["status"] == "pending"                   # get is whole and fresh
    env = Env(Store(client, "documenter"), view, 1.0)
    assert list(env.blessed()) == ["a"] and env.waiting() == 1
    # once its time is up, a shaped prefix reads again only what changed (its versions tell)
    kept = view._kept["insights/"]
    before = kept.reads
    client.txn("explorer", [txn.put("insights/b", {"text": "two", "status": "blessed"}, if_version=1)])
    view._scans.clear()   # the time is up
    assert [k for k, _, _ in view.scan("insights/")] == ["insights/a", "insights/b"] and kept.reads == before + 1


def test_a_kept_prefix_reads_again_only_what_changed_and_stays_exact(core):
    """KeptPrefix (the explorer's insights): the first read scans the prefix whole; later reads learn the
    versions and read again only the records that changed; removed ones go, new ones come; many changes
    at once are one scan again."""
    from services.modules.store import KeptPrefix
    client = CoreClient(core)
    client.txn("explorer", [txn.put(f"insights/{i:03d}", {"n": i, "big": "x" * 2000}) for i in range(10)]
               + [txn.put("other/1", {"n": -1})])
    kept = KeptPrefix(Store(client, "explorer"), "insights/", lambda _k, v: {"n": v["n"]})
    assert [v["n"] for v in kept.values()] == list(range(10)) and kept.reads == 10
    assert [v["n"] for v in kept.values()] == list(range(10)) and kept.reads == 10   # nothing changed
    client.txn("explorer", [txn.put("insights/003", {"n": 33}, if_version=1), txn.delete("insights/005"),
                            txn.put("insights/0045", {"n": 45})])
    assert [v["n"] for v in kept.values()] == [0, 1, 2, 33, 4, 45, 6, 7, 8, 9] and kept.reads == 12
    client.txn("explorer", [txn.put(f"insights/{i:03d}", {"n": 100 + i}, if_version=None) for i in range(100)])
    assert [v["n"] for v in kept.values()] == [100 + i for i in range(5)] + [45] + [100 + i for i in range(5, 100)]
    assert kept.reads == 12 + 101   # over KeptPrefix.REREAD changed: one scan of the prefix
