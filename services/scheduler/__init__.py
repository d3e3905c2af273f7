"""The scheduler program: matches PENDING tasks to idle backend workers (docs/scheduling.md § Admission).

``priority`` (the formula), ``queue`` (the O(log n) pick), ``workers`` (registry, placement, account
view), ``placement`` (which idle worker should take a task: expected finish times), ``core`` (decisions,
no sockets), ``queries`` (operator answers), ``service`` (sockets, rebuild).
"""
