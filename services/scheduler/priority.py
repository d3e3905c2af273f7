"""Dynamic priority (docs/scheduling.md § Priority; docs/research.md § Default priorities). Pure arithmetic, no I/O.

The priority of a PENDING task at world time ``now`` is::

    priority = static(task) + aging(task, now) + module_term(module, waiting)

    static      = base + seed_weight * attrs.seed_priority + attrs.comment_boost
    base        = table[kind] + (task.priority - 50)
    aging       = min(aging_cap, aging_per_hour * hours since task.created)
    module_term = module_weights[module] + backlog_boost(module, waiting)

**The base rule.** ``table[kind]`` is ``SchedulerConfig.base_priorities`` looked up by the whole kind
first (``"explorer.explore"``), then by the part after its last dot (``"explore"``), else
``default_base``. The task's own ``priority`` field (the broker's default is 50, see
``services/broker/ops_tasks.py``) is an *adjustment around 50*: a task submitted without one gets exactly
its kind's base, and ``fanoctl``/``set_priority`` moves it by the difference (priority 60 = +10). So
modules leave ``priority`` alone unless they mean to adjust it; they must not copy the table's base into
it (it would count twice). This keeps one rule for every task and keeps the table in the scheduler's
configuration, where an operator looks for it.

``attrs.seed_priority`` and ``attrs.comment_boost`` are numbers; anything else counts as 0 (a module's
bad hint must not crash the scheduler). ``waiting`` is the module's number of PENDING tasks the scheduler
tracks; a backlog boost applies when it is *above* a threshold (``[[10, 15], [20, 30]]``: +15 above 10,
+30 above 20). Module weights can be changed at run time (:meth:`PriorityModel.set_weights`); the
scheduler keeps such a change in the broker so that it survives a restart.

Ties go to the oldest task (``created``), then the lowest id.
"""
from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

BROKER_DEFAULT_PRIORITY = 50
STANDARD, DEEP = "standard", "deep"
# the requires/attrs of every task that has none (read-only, shared)
EMPTY: MappingProxyType[str, Any] = MappingProxyType({})


def number(value) -> float:
    """A finite int/float, else 0 (bools and strings are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0.0
    value = float(value)
    return value if math.isfinite(value) else 0.0


class _Rare:
    """The fields of a :class:`QTask` that most tasks leave at their defaults, in one object that only the
    tasks which set one of them carry (a deep queue pays one slot for all six)."""

    __slots__ = RARE = ("unknown_account", "unknown_until", "conversation_account", "handoff", "declines",
                        "hold_until")
    DEFAULTS = (None, 0.0, None, None, 0, 0.0)

    def __init__(self) -> None:
        for name, default in zip(self.RARE, self.DEFAULTS, strict=True):
            setattr(self, name, default)


def _rare(name: str, default: Any) -> property:
    """A :class:`QTask` attribute kept in its :class:`_Rare` (created when it is first set otherwise)."""
    def get(self: QTask) -> Any:
        rare = self._rare
        return default if rare is None else getattr(rare, name)

    def set_(self: QTask, value: Any) -> None:
        rare = self._rare
        if rare is None:
            if value == default and type(value) is type(default):
                return
            rare = self._rare = _Rare()
        setattr(rare, name, value)
    return property(get, set_)


class QTask:
    """What the scheduler knows about one PENDING task (from ``task.submitted``/``task.pending`` events,
    a ``list``/``get`` record or a rebuild's row). A plain object with slots: a queue of 10^6 tasks is
    mostly these (docs/scheduling.md § Internal state)."""

    __slots__ = ("id", "module", "kind", "priority", "requires", "attrs", "created", "not_before", "pending_since",
                 "static", "cls", "_rare", "qstate", "qentry")
    #: what a task is made of (its constructor's arguments), for comparisons in tests and ``repr``
    FIELDS = ("id", "module", "kind", "priority", "requires", "attrs", "created", "not_before", "unknown_account",
              "unknown_until", "conversation_account", "pending_since", "handoff", "static", "cls", "declines",
              "hold_until")

    unknown_account = _rare("unknown_account", None)
    unknown_until = _rare("unknown_until", 0.0)              # world time the unknown turn's binding lapses (0: never)
    conversation_account = _rare("conversation_account", None)   # the account holding its conversation, if known
    handoff = _rare("handoff", None)                         # proposed: its conversation leaves this blocked account
    declines = _rare("declines", 0)          # declined leases without a retry time, for the hold backoff
    hold_until = _rare("hold_until", 0.0)    # world time before which the scheduler will not assign it

    def __init__(self, id: int, module: str, kind: str, priority: int = BROKER_DEFAULT_PRIORITY,
                 requires: Mapping[str, Any] | None = None, attrs: Mapping[str, Any] | None = None,
                 created: float = 0.0, not_before: float = 0.0, unknown_account: str | None = None,
                 unknown_until: float = 0.0, conversation_account: str | None = None, pending_since: float = 0.0,
                 handoff: str | None = None, static: float = 0.0, cls: tuple = (), declines: int = 0,
                 hold_until: float = 0.0):
        self.id, self.module, self.kind, self.priority = id, module, kind, priority
        self.requires = {} if requires is None else requires
        self.attrs = {} if attrs is None else attrs
        self.created, self.not_before, self.pending_since = created, not_before, pending_since
        self.static = static
        self.cls = cls               # placement class, see services.scheduler.classes.placement_class
        self._rare: _Rare | None = None
        if unknown_account is not None or unknown_until or conversation_account is not None or \
                handoff is not None or declines or hold_until:
            self.unknown_account, self.unknown_until = unknown_account, unknown_until
            self.conversation_account, self.handoff = conversation_account, handoff
            self.declines, self.hold_until = declines, hold_until
        # where services.scheduler.queue.TaskQueue has it: state and its one live entry (kept on the task
        # rather than in a per-task record of the queue's; None: never filed)
        self.qstate = 0
        self.qentry: Any = None

    def __repr__(self) -> str:
        return "QTask(" + ", ".join(f"{name}={getattr(self, name)!r}" for name in self.FIELDS) + ")"

    @classmethod
    def from_fields(cls, rec: Mapping[str, Any]) -> QTask:
        """From an event body or a task record; tolerant of missing optional fields."""
        unknown, until = rec.get("unknown_account"), rec.get("unknown_until")
        if unknown is None and isinstance(rec.get("unknown_turn"), dict):
            unknown, until = rec["unknown_turn"].get("account"), rec["unknown_turn"].get("until")
        requires, attrs = rec.get("requires"), rec.get("attrs")
        requires = requires if isinstance(requires, dict) and requires else EMPTY
        attrs = attrs if isinstance(attrs, dict) and attrs else EMPTY
        prio = rec.get("priority")
        if not isinstance(prio, int) or isinstance(prio, bool):
            prio = BROKER_DEFAULT_PRIORITY
        conv_account = rec.get("conversation_account")
        not_before = number(rec.get("not_before"))
        # module and kind are interned: a queue of 10^6 tasks holds a few distinct strings, not 2 x 10^6
        return cls(id=int(rec["id"]), module=sys.intern(str(rec.get("module", ""))),
                   kind=sys.intern(str(rec.get("kind", ""))), priority=prio, requires=requires, attrs=attrs,
                   created=number(rec.get("created")), not_before=not_before if not_before else 0.0,
                   unknown_account=unknown if isinstance(unknown, str) else None,
                   unknown_until=number(until) if isinstance(unknown, str) else 0.0,
                   pending_since=number(rec.get("pending_since")),
                   conversation_account=conv_account if isinstance(conv_account, str) and conv_account else None)

    @classmethod
    def from_row(cls, row: list) -> QTask:
        """From a PENDING row (``list`` with ``rows``: :data:`shared.records.PENDING_ROW`, written by the
        broker), without the checks :meth:`from_fields` makes of an event's fields: the rebuild's fast path
        (a row that is not one raises, and the rebuild fails loudly)."""
        tid, module, kind, prio, created, not_before, since, requires, attrs, unknown, until = row
        return cls(tid, sys.intern(module), sys.intern(kind), prio,
                   requires if type(requires) is dict else EMPTY, attrs if type(attrs) is dict else EMPTY,
                   created, not_before or 0.0, unknown, (until or 0.0) if unknown else 0.0, None,
                   created if since is None else since)

    @property
    def conversation(self) -> str | None:
        conv = self.requires.get("conversation")
        return conv if isinstance(conv, str) and conv else None


def clean_weights(changes: dict) -> dict[str, float]:
    """``{module: weight}`` checked and made floats; ValueError on the first bad entry."""
    if not isinstance(changes, dict):
        raise ValueError("weights must be a map {module: weight}")
    clean = {}
    for module, weight in changes.items():
        if not isinstance(module, str) or not module:
            raise ValueError(f"module name must be a non-empty string, got {module!r}")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) \
                or abs(weight) > 1e6:
            raise ValueError(f"weight of {module} must be a finite number (|w| <= 1e6), got {weight!r}")
        clean[module] = float(weight)
    return clean


class PriorityModel:
    """The numbers of :class:`shared.config.SchedulerConfig`, and the formula above."""

    def __init__(self, cfg):
        self.base_priorities = {str(k): number(v) for k, v in dict(cfg.base_priorities).items()}
        self.default_base = number(cfg.default_base)
        self.configured: dict[str, float] = clean_weights(dict(cfg.module_weights))
        self.weights: dict[str, float] = dict(self.configured)
        self.rate = max(0.0, number(cfg.aging_per_hour)) / 3600.0   # per world second
        self.cap = max(0.0, number(cfg.aging_cap))
        self.seed_weight = number(cfg.seed_weight)
        self._bases: dict[tuple[str, int], float] = {}   # static() of tasks without attrs, by (kind, priority)
        self.boosts: dict[str, list[tuple[float, float]]] = {}
        for module, steps in dict(cfg.backlog_boosts).items():
            pairs = [(number(s[0]), number(s[1])) for s in steps if isinstance(s, (list, tuple)) and len(s) == 2]
            self.boosts[str(module)] = sorted(pairs)

    # --- terms ----------------------------------------------------------------------------------------

    def kind_base(self, kind: str) -> float:
        if kind in self.base_priorities:
            return self.base_priorities[kind]
        return self.base_priorities.get(kind.rsplit(".", 1)[-1], self.default_base)

    def base(self, task: QTask) -> float:
        return self.kind_base(task.kind) + (task.priority - BROKER_DEFAULT_PRIORITY)

    def static(self, task: QTask) -> float:
        """The part that does not change while the task waits (computed once per insertion)."""
        if not task.attrs:   # the base alone: one value per (kind, priority), remembered
            key = (task.kind, task.priority)
            value = self._bases.get(key)
            if value is None:
                value = self.base(task)
                if len(self._bases) < 4096:
                    self._bases[key] = value
            return value
        return (self.base(task) + self.seed_weight * number(task.attrs.get("seed_priority"))
                + number(task.attrs.get("comment_boost")))

    def aging(self, created: float, now: float) -> float:
        if self.rate <= 0:
            return 0.0
        return min(self.cap, self.rate * max(0.0, now - created))

    def cap_time(self, created: float) -> float:
        """World time at which a task created at ``created`` stops aging (inf if aging is off)."""
        return created + self.cap / self.rate if self.rate > 0 else math.inf

    def backlog_boost(self, module: str, waiting: int) -> float:
        boost = 0.0
        for threshold, value in self.boosts.get(module, ()):
            if waiting > threshold:
                boost = max(boost, value)
        return boost

    def module_term(self, module: str, waiting: int) -> float:
        return self.weights.get(module, 0.0) + self.backlog_boost(module, waiting)

    def priority(self, task: QTask, now: float, waiting: int) -> float:
        """The reference formula (used by ``why`` and by the tests' brute force)."""
        return self.static(task) + self.aging(task.created, now) + self.module_term(task.module, waiting)

    def explain(self, task: QTask, now: float, waiting: int) -> dict:
        terms = {"base": self.base(task), "seed": self.seed_weight * number(task.attrs.get("seed_priority")),
                 "comment": number(task.attrs.get("comment_boost")), "aging": self.aging(task.created, now),
                 "weight": self.weights.get(task.module, 0.0), "backlog": self.backlog_boost(task.module, waiting)}
        terms["total"] = sum(terms.values())
        return {k: round(v, 3) for k, v in terms.items()}

    # --- run-time changes -----------------------------------------------------------------------------

    def set_weights(self, changes: dict) -> dict:
        """Set module weights (validated first: a bad entry changes nothing). Returns all weights.
        Durability is the scheduler service's business (:func:`services.scheduler.queries.weights`)."""
        self.weights.update(clean_weights(changes))
        return dict(self.weights)

    def reset_weights(self) -> dict:
        """Back to the configured ``module_weights``."""
        self.weights = dict(self.configured)
        return dict(self.weights)
