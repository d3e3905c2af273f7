"""services.modules.base.ModuleService.apply: a result is applied with its ack in one transaction; an
effect the broker refuses for good (REFUSED_EFFECT: a follow-up key conflicts or is parked, a bad
argument, a missing or wrong-state task) is recorded visibly as an unusable result and acked, instead of
being retried forever; a version conflict recomputes; anything else propagates."""
import logging
from types import SimpleNamespace

import pytest
import zmq

from services.modules.base import REFUSED_EFFECT, Effect, ModuleService, Store
from services.modules.parsing import ParseError
from shared import txn
from shared.clock import Clock, FakeClock
from shared.errors import ErrorCode, FanoError


class FakeClient:
    """``txn`` answers from a script: an exception to raise or a result, one per call."""

    def __init__(self, *script):
        self.script = list(script)
        self.calls = []

    def txn(self, module, ops):
        self.calls.append((module, ops))
        step = self.script.pop(0) if self.script else {"applied": True}
        if isinstance(step, Exception):
            raise step
        return step


class Mod(ModuleService):
    module = "testmod"

    def __init__(self, client, tmp_path):
        super().__init__(SimpleNamespace(lock_path=lambda name: tmp_path / f"{name}.lock"), Clock())
        self.client = client
        self.store = Store(client, self.module)
        self.handled = 0
        self.marked = []
        self.parse_error = False

    def handle(self, task):
        self.handled += 1
        if self.parse_error:
            raise ParseError("no RATING: in the answer")
        return Effect([txn.put("things/1", {"n": self.handled}),
                       txn.submit({"key": "follow/1", "module": self.module, "kind": "next", "payload": {}})])

    def on_unusable(self, task, error):
        self.marked.append(error)
        return [txn.put("things/1", {"failed": error})]


TASK = {"id": 42, "key": "k/42", "kind": "step", "state": "DONE", "consumed": False, "result": {"text": "answer"}}


def ops_of(call):
    return {op["op"]: op for op in call[1]}, call[1]


@pytest.mark.parametrize("code", sorted(REFUSED_EFFECT))
def test_a_refused_effect_is_recorded_as_unusable_and_acked(code, tmp_path):
    client = FakeClient(FanoError(code, "follow/1 exists with another payload"), {"applied": True})
    mod = Mod(client, tmp_path)
    assert mod.apply(dict(TASK)) is True
    assert len(client.calls) == 2 and mod.handled == 1           # not recomputed, not retried as is
    first, _ = ops_of(client.calls[0])
    assert first["submit"]["task"]["key"] == "follow/1" and first["ack"]["task_id"] == 42
    _, second = ops_of(client.calls[1])
    assert not any(op["op"] == "submit" for op in second)        # the refused effect is dropped
    error_put = next(op for op in second if op["key"] == "errors/000000000042")
    want = f"effect refused by the broker: {code.name}: follow/1 exists with another payload"
    assert error_put["value"]["error"] == want and error_put["value"]["answer"] == "answer"
    assert mod.marked == [want]                                  # the module marks its entity
    assert txn.put("things/1", {"failed": want}) in second
    assert second[-1] == txn.ack(42, want)
    assert (mod.applied, mod.unusable) == (1, 1)


def test_the_refused_codes_are_the_permanent_ones():
    assert REFUSED_EFFECT == {ErrorCode.KEY_CONFLICT, ErrorCode.KEY_PARKED, ErrorCode.BAD_ARGUMENT,
                              ErrorCode.NOT_FOUND, ErrorCode.INVALID_STATE}
    assert ErrorCode.CONDITION_FAILED not in REFUSED_EFFECT and ErrorCode.MAP_FULL not in REFUSED_EFFECT


def test_if_recording_the_refusal_is_refused_too_the_error_propagates(tmp_path):
    client = FakeClient(FanoError(ErrorCode.KEY_CONFLICT, "conflict"), FanoError(ErrorCode.INVALID_STATE, "gone"))
    mod = Mod(client, tmp_path)
    with pytest.raises(FanoError) as exc:
        mod.apply(dict(TASK))
    assert exc.value.code == ErrorCode.INVALID_STATE and len(client.calls) == 2 and mod.applied == 0


def test_a_version_conflict_recomputes_the_effect(tmp_path):
    client = FakeClient(FanoError(ErrorCode.CONDITION_FAILED, "things/1 changed"), {"applied": True})
    mod = Mod(client, tmp_path)
    assert mod.apply(dict(TASK)) is True
    assert mod.handled == 2 and mod.unusable == 0 and mod.marked == []
    _, second = ops_of(client.calls[1])
    assert second[0] == txn.put("things/1", {"n": 2})   # recomputed from a new read


def test_endless_version_conflicts_give_up_without_an_ack(tmp_path):
    client = FakeClient(*[FanoError(ErrorCode.CONDITION_FAILED, "race")] * ModuleService.max_conflict_retries)
    mod = Mod(client, tmp_path)
    assert mod.apply(dict(TASK)) is False
    assert len(client.calls) == ModuleService.max_conflict_retries and mod.applied == 0


@pytest.mark.parametrize("code", [ErrorCode.MAP_FULL, ErrorCode.INTERNAL, ErrorCode.UNAVAILABLE])
def test_a_transient_broker_error_propagates_and_records_nothing(code, tmp_path):
    client = FakeClient(FanoError(code, "try later"))
    mod = Mod(client, tmp_path)
    with pytest.raises(FanoError):
        mod.apply(dict(TASK))
    assert len(client.calls) == 1 and mod.unusable == 0 and mod.marked == []


def test_a_replayed_result_is_a_no_op(tmp_path):
    client = FakeClient({"applied": False})
    mod = Mod(client, tmp_path)
    assert mod.apply(dict(TASK)) is False and mod.applied == 0      # "already consumed": nothing counted
    assert mod.apply(dict(TASK, consumed=True)) is False and len(client.calls) == 1
    assert mod.apply(dict(TASK, state="RUNNING")) is False and len(client.calls) == 1


def test_an_unparsable_answer_is_recorded_with_the_ack(tmp_path):
    client = FakeClient({"applied": True})
    mod = Mod(client, tmp_path)
    mod.parse_error = True
    assert mod.apply(dict(TASK)) is True
    _, ops = ops_of(client.calls[0])
    assert ops[0]["key"] == "errors/000000000042" and "unusable answer: no RATING:" in ops[0]["value"]["error"]
    assert ops[0]["working"] is True     # working data: the broker deletes it after broker.working_retention
    assert ops[-1]["task_id"] == 42 and mod.unusable == 1
    assert ops[-1]["unusable"] == ops[0]["value"]["error"]       # also shown on the task itself


class RefusingClient(FakeClient):
    """The unconsumed index answers ``refusals`` storage refusals first, then one settled task."""

    def __init__(self, refusals):
        super().__init__()
        self.refusals = refusals
        self.sweeps = 0

    def unconsumed(self, module, after=None, limit=100):
        self.sweeps += 1
        if self.refusals:
            self.refusals.pop(0)
            raise FanoError(ErrorCode.DISK_FULL, "the disk is full")
        return {"tasks": [dict(TASK)], "next": None}


def test_a_storage_refusal_backs_the_module_off_instead_of_ending_it(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    client = RefusingClient([1, 2])
    mod = Mod(client, tmp_path)
    mod.clock = FakeClock()
    mod.plan_interval = mod.sweep_interval = 1000.0
    mod._next_plan = mod._next_sweep = mod._backoff_until = 0.0
    mod._refused = None
    ctx = zmq.Context()
    mod.sub = ctx.socket(zmq.SUB)
    try:
        mod.loop()                                   # refused: no exception, the module waits
        assert client.sweeps == 1 and mod.applied == 0
        mod.clock.advance(mod.storage_backoff / 2)
        mod.loop()                                   # still backing off: the broker is left alone
        assert client.sweeps == 1
        mod.clock.advance(mod.storage_backoff / 2)
        mod.loop()                                   # refused again: one more back-off, no second warning
        assert client.sweeps == 2
        mod.clock.advance(mod.storage_backoff)
        mod.loop()                                   # accepted: the missed result is applied from the index
        assert client.sweeps == 3 and mod.applied == 1
        assert caplog.text.count("broker refuses new work (DISK_FULL") == 1
        assert "accepts this module's work again" in caplog.text
    finally:
        mod.sub.close(linger=0)
        ctx.term()


def test_other_broker_errors_still_end_the_loop(tmp_path):
    client = RefusingClient([])
    client.unconsumed = lambda *a, **k: (_ for _ in ()).throw(FanoError(ErrorCode.INTERNAL, "bug"))
    mod = Mod(client, tmp_path)
    mod._next_plan = mod._next_sweep = mod._backoff_until = 0.0
    mod._refused = None
    with pytest.raises(FanoError):
        mod.loop()


def test_a_notify_event_for_the_module_makes_it_plan_at_once(tmp_path):
    """``fanoctl`` wakes a module whose data it changed (the ``notify`` op): the module plans on the event
    instead of at its next planning pass; a notify for another module, or a result event, does not."""
    from shared import protocol

    class Planner(Mod):
        def plan(self):
            self.planned = getattr(self, "planned", 0) + 1

    mod = Planner(FakeClient(), tmp_path)
    mod.client.get = lambda tid, history=False: dict(TASK, id=tid, consumed=True)
    mod.clock = FakeClock()
    mod.plan_interval = mod.sweep_interval = 1e9
    mod._next_sweep = mod._backoff_until = 0.0
    mod._next_plan = 1e9
    mod._refused = None
    mod.sweep = lambda: None
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    endpoint = f"ipc://{tmp_path}/ev.sock"
    pub.bind(endpoint)
    mod.sub = ctx.socket(zmq.SUB)
    for topic in (b"evt.task.done", b"evt.module.notify"):
        mod.sub.setsockopt(zmq.SUBSCRIBE, topic)
    mod.sub.connect(endpoint)
    try:
        def publish(event):
            # a PUB drops what it sends before the subscription arrives: send until the module sees one
            for _ in range(100):
                pub.send_multipart(protocol.encode_event(dict(event, seq=1, ts=0.0)))
                if mod.sub.poll(20):
                    return
            raise AssertionError("the subscription never arrived")
        publish({"type": "module.notify", "module": "other", "reason": "x"})
        mod.loop()
        assert getattr(mod, "planned", 0) == 0
        publish({"type": "module.notify", "module": "testmod", "reason": "changed by fanoctl"})
        mod.loop()
        assert mod.planned == 1 and mod.applied == 0
    finally:
        pub.close(linger=0)
        mod.sub.close(linger=0)
        ctx.term()
