"""shared/txn.py against the real broker core in-process: every builder produces an op the broker's ``txn``
applies as documented, a conditional transaction says whether it applied, and an update retries a race
a bounded number of times."""
from __future__ import annotations

import pytest

from shared import txn
from shared.errors import ErrorCode, FanoError
from tests.unit.corehelp import CoreClient, expect_error

NS = "explorer"


@pytest.fixture
def client(core):
    return CoreClient(core)


class Counting(CoreClient):
    """Counts the transactions sent, and can let "another writer" change a key before each one."""

    def __init__(self, harness, race_key: str | None = None, races: int = 0):
        super().__init__(harness)
        self.sent: list[list[dict]] = []
        self.race_key, self.races = race_key, races

    def txn(self, module, ops, rid=None):
        self.sent.append(list(ops))
        if self.race_key and self.races:
            self.races -= 1
            self.h.call("txn", module=module, ops=[txn.put(self.race_key, "theirs")])
        return super().txn(module, ops, rid)


def settled(core, key: str) -> int:
    tid = core.submit(key)["task"]["id"]
    lease = core.lease(task_id=tid)
    core.call("complete", id=tid, epoch=lease["epoch"], result={"text": key})
    return tid


# --- builders: the broker's own format ---------------------------------------------------------------------

def test_put_delete_check_as_the_broker_applies_them(client):
    assert client.txn(NS, [txn.put("a", {"x": 1})]) == {"applied": True, "results": [{"key": "a", "version": 1}]}
    assert client.txn(NS, [txn.put("a", {"x": 2}, if_version=1), txn.check("a", 2)])["results"] == [
        {"key": "a", "version": 2}, {"key": "a", "version": 2}]
    assert client.kv_get(NS, "a") == {"key": "a", "version": 2, "value": {"x": 2}}
    assert client.txn(NS, [txn.put("b", 1, if_version=0)])["results"] == [{"key": "b", "version": 1}]
    assert client.txn(NS, [txn.delete("a", if_version=2), txn.delete("zz")])["results"] == [
        {"key": "a", "deleted": True}, {"key": "zz", "deleted": False}]
    assert client.kv_get(NS, "a") is None
    exc = expect_error("CONDITION_FAILED", client.txn, NS, [txn.put("b", 2), txn.check("b", 1)])
    assert exc.details == {"index": 1, "key": "b", "version": 2}
    assert client.kv_get(NS, "b")["version"] == 1            # all or nothing


def test_optional_fields_are_left_out_unless_given(client):
    assert txn.put("k", 1) == {"op": "put", "key": "k", "value": 1}
    assert txn.delete("k") == {"op": "delete", "key": "k"}
    assert txn.ack(3) == {"op": "ack", "task_id": 3}
    # the broker refuses a "working" field on anything but a put, and a falsy one would be noise
    assert "working" not in txn.put("k", 1, working=False)
    client.txn(NS, [txn.put("w", {"scratch": True}, working=True)])
    assert client.kv_get(NS, "w")["value"] == {"scratch": True}


def test_working_put_is_deleted_after_the_retention(make_core):
    h = make_core(broker={"working_retention": 60})
    c = CoreClient(h)
    c.txn(NS, [txn.put("scratch", 1, working=True), txn.put("record", 1)])
    h.clock.advance(61)
    h.tick()
    assert c.kv_get(NS, "scratch") is None and c.kv_get(NS, "record") is not None


def test_submit_and_ack(core, client):
    spec = {"key": "t/1", "module": NS, "kind": "explorer.explore", "payload": {"n": 1}}
    res = client.txn(NS, [txn.submit(spec)])["results"][0]
    assert res["created"] is True and res["state"] == "PENDING"
    assert client.txn(NS, [txn.submit(spec)])["results"][0] == dict(res, created=False)   # if absent
    tid = settled(core, "t/2")
    assert client.txn(NS, [txn.put("done/2", 1), txn.ack(tid, unusable="no tags")])["results"][1] == {"acked": tid}
    task = core.get(tid)
    assert task["consumed"] and task["error"]["class"] == "unusable" and task["error"]["message"] == "no tags"
    again = client.txn(NS, [txn.put("done/2", 2), txn.ack(tid)])
    assert again == {"applied": False, "reason": "already consumed", "task_id": tid}
    assert client.kv_get(NS, "done/2")["version"] == 1       # a replay applies nothing


def test_notify_publishes_the_event_only_on_commit(core, client):
    client.txn(NS, [txn.put("n", 1), txn.notify("seed added")])
    assert [e for e in core.events if e["type"] == "module.notify"][-1]["reason"] == "seed added"
    count = len(core.events)
    expect_error("CONDITION_FAILED", client.txn, NS, [txn.put("n", 2, if_version=0), txn.notify("x")])
    assert len(core.events) == count


def test_a_client_that_notifies_its_writes_adds_the_op(core):
    c = CoreClient(core)
    c.name, c.notify_writes = "fanoctl", True
    c.txn(NS, [txn.put("k", 1)])
    assert core.events[-1]["type"] == "module.notify" and core.events[-1]["reason"] == "changed by fanoctl"


def test_every_op_name_has_a_builder():
    built = {txn.put("k", 1)["op"], txn.delete("k")["op"], txn.check("k", 0)["op"], txn.submit({})["op"],
             txn.ack(1)["op"], txn.notify()["op"]}
    assert built == set(txn.OPS)


# --- conditional ----------------------------------------------------------------------------------------------

def test_conditional_says_whether_it_applied(core, client):
    assert txn.conditional(client, NS, [txn.put("c", 1, if_version=0)]) is True
    assert txn.conditional(client, NS, [txn.put("c", 2, if_version=0), txn.put("d", 1)]) is False
    assert client.kv_get(NS, "c")["value"] == 1 and client.kv_get(NS, "d") is None
    tid = settled(core, "c/1")
    assert txn.conditional(client, NS, [txn.ack(tid)]) is True
    assert txn.conditional(client, NS, [txn.ack(tid)]) is False          # already consumed
    with pytest.raises(FanoError) as err:                                # any other error raises
        txn.conditional(client, NS, [txn.put("", 1)])
    assert err.value.code == ErrorCode.BAD_ARGUMENT


# --- update -----------------------------------------------------------------------------------------------------

def _increment(client, key="n"):
    def compute():
        rec = client.kv_get(NS, key)
        version, value = (0, 0) if rec is None else (rec["version"], rec["value"])
        if value == "theirs":
            value = 100
        return [txn.put(key, value + 1, if_version=version)], value + 1
    return compute


def test_update_reads_again_after_a_race(core):
    c = Counting(core, race_key="n", races=2)
    assert txn.update(c, NS, _increment(c)) == txn.Updated(101, True)
    assert len(c.sent) == 3 and c.kv_get(NS, "n")["value"] == 101


def test_update_gives_up_after_its_bound(core):
    c = Counting(core, race_key="n", races=99)
    with pytest.raises(txn.Conflict) as err:
        txn.update(c, NS, _increment(c), what="counter n", retries=3)
    assert len(c.sent) == 3
    assert err.value.code == ErrorCode.CONDITION_FAILED and err.value.details["key"] == "n"
    assert str(err.value) == "CONDITION_FAILED: counter n kept changing under us; try again"


def test_update_raises_other_errors_at_once_and_writes_nothing_for_no_ops(core):
    c = Counting(core)
    assert txn.update(c, NS, lambda: ([], "nothing")) == txn.Updated("nothing", True) and c.sent == []
    with pytest.raises(FanoError) as err:
        txn.update(c, NS, lambda: ([txn.ack(12345)], None))
    assert err.value.code == ErrorCode.NOT_FOUND and len(c.sent) == 1
    tid = settled(core, "u/1")
    assert txn.update(c, NS, lambda: ([txn.ack(tid)], "a")) == txn.Updated("a", True)
    assert txn.update(c, NS, lambda: ([txn.ack(tid)], "b")) == txn.Updated("b", False)   # a replay


def test_update_in_parts(core):
    c = Counting(core)
    ops = [txn.put(f"p/{i}", i, if_version=0) for i in range(5)]
    assert txn.update(c, NS, lambda: (ops, "ok"), max_ops=2).applied
    assert [len(t) for t in c.sent] == [2, 2, 1]
    assert [k for k, _, _ in c.kv_items(NS, "p/")] == [f"p/{i}" for i in range(5)]


# --- one way to build ops ---------------------------------------------------------------------------------------

# where an ``{"op": ...}`` map may be spelled: the builders, the broker that applies them, two maps that only
# look alike (the explorer's pace_check marker, resolved before anything is sent; the chaos journals), and
# the tests of the broker's own reading of the wire (its core, the protocol, roles, the invariant checker's
# journals, the fuzzer), which send malformed and hand-made maps on purpose
OP_LITERALS_ALLOWED = {"shared/txn.py", "services/modules/explorer/pacing.py", "ops/journals.py",
                       "tests/unit/test_txn.py", "tests/unit/test_keys_roles.py", "tests/unit/test_invariants.py"}
OP_LITERALS_ALLOWED_UNDER = ("services/broker/", "tests/unit/test_core_", "tests/unit/test_protocol", "tests/fuzz/")


def test_ops_are_built_only_by_shared_txn():
    """Every writer of module data — the tests that act as one included — builds its ops with shared/txn.py.
    A journal line (``json.dumps({"op": ...})``: the crash tests' record of what a client did) is no op."""
    import re

    from tests.support import REPO
    literal = re.compile(r"""(?<!json\.dumps\(\{)["']op["']\s*:""")
    found = []
    for top in ("shared", "services", "cli", "ops", "tests"):
        for path in sorted((REPO / top).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            if rel in OP_LITERALS_ALLOWED or rel.startswith(OP_LITERALS_ALLOWED_UNDER):
                continue
            found += [f"{rel}:{n}" for n, line in enumerate(path.read_text().splitlines(), 1) if literal.search(line)]
    assert found == [], f"build txn ops with shared/txn.py, not by hand: {found}"
