"""The scheduler program: matches PENDING tasks to idle backend workers (docs/scheduling.md § Admission).

State, each part with one owner: ``tasks`` (the task table: tracked tasks, their place, assignments,
running tasks), ``conversations`` (binding, turn in flight, waiting and expected turns), ``workers`` (the
workers table), ``accounts`` (pauses, cool-downs, quota blocks). ``view`` hands them, read-only, to the
code that decides or answers from them: ``placement`` (expected finish times), ``responsive`` (deep turns
vs responsive accounts), ``handoff`` (hand-off proposals), ``idle`` and ``queries`` (operator answers).
``priority`` (the formula), ``queue`` (the O(log n) pick), ``classes`` (which workers a task fits),
``core`` (events, messages, the tick and the dispatch; no sockets), ``service`` (sockets, rebuild).
"""
