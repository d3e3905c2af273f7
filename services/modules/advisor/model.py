"""The advisor's records (namespace ``advisor``; the key layout is in :mod:`.service`).

``TypedDict`` s, as the other modules' model.py: plain maps, as msgpack carries them, with each key's value
typed; tests/unit/test_module_records.py checks that what a run writes is exactly these shapes.
"""
# no ``from __future__ import annotations``: TypedDict reads NotRequired from evaluated annotations
from typing import NotRequired, TypedDict


class Check(TypedDict):
    """``state.last_check``: the last look at the backlogs."""

    at: float                     # world time
    backlogs: dict[str, int]      # module -> waiting work (:func:`.logic.backlogs`)
    reason: str | None            # why they are out of balance (:func:`.logic.imbalance`), None: in balance
    skipped: str | None           # why no task was asked for although they are (the rate bound), else None


class State(TypedDict):
    """``state``: the advisor's one mutable record."""

    seq: int                      # the last advice task's number
    pending: bool                 # an advice task is in flight
    key: str | None               # its task key
    next_check: float             # world time of the next look
    last_check: Check | None
    last_applied: dict[str, float] | None   # module -> the weight the advisor itself last set
    to_apply: int | None          # the seq of a recorded proposal still to apply (auto_apply)


class Proposal(TypedDict):
    """``proposals/<seq:06d>``: one answer, what became of it (``status``: proposed | to_apply | applied |
    not_applied | unusable). An unusable answer records no backlogs, reasoning or applying fields."""

    seq: int
    at: float
    task_id: int
    reason: str | None
    factors: dict[str, float] | None
    weights: dict[str, float] | None
    status: str
    note: str | None
    backlogs: NotRequired[dict[str, int] | None]
    reasoning: NotRequired[str]
    previous: NotRequired[dict[str, float] | None]   # the weights in force before it was applied
    applied_at: NotRequired[float | None]


def empty_state() -> State:
    return {"seq": 0, "pending": False, "key": None, "next_check": 0.0, "last_check": None,
            "last_applied": None, "to_apply": None}
