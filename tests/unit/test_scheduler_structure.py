"""The scheduler's state has owners (docs/scheduling.md § Internal state): only the core changes it, and
the code that decides or answers from it reads it through the read-only view, never through the core."""
from __future__ import annotations

import ast

from tests.support import REPO
from tests.unit.test_scheduler_logic import W1, assigns, make_core, ready, submitted

SCHEDULER = REPO / "services" / "scheduler"
DRIVERS = {"core.py", "service.py"}   # the core itself, and the service that owns and drives it
LONGEST = 500   # lines: past this a scheduler module has more than one job (split it, as core.py was)


def _reaches_into_core(path) -> list[str]:
    """Uses of a name ``core`` (parameter, variable, attribute base) or an import of the core module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.arg) and node.arg == "core":
            found.append(f"{path.name}:{node.lineno} parameter core")
        elif isinstance(node, ast.Name) and node.id == "core":
            found.append(f"{path.name}:{node.lineno} name core")
        elif isinstance(node, ast.Attribute) and node.attr == "core":
            found.append(f"{path.name}:{node.lineno} attribute .core")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").endswith("scheduler.core"):
            found.append(f"{path.name}:{node.lineno} imports the core")
    return found


def test_no_scheduler_module_but_the_core_and_its_service_reads_the_core():
    found = []
    for path in sorted(SCHEDULER.glob("*.py")):
        if path.name not in DRIVERS:
            found += _reaches_into_core(path)
    assert found == [], f"read the scheduler's state through services/scheduler/view.py: {found}"


def test_no_scheduler_module_grows_past_one_job():
    long = {p.name: n for p in SCHEDULER.glob("*.py") if (n := len(p.read_text().splitlines())) > LONGEST}
    assert long == {}, f"scheduler modules over {LONGEST} lines: {long}"


def test_the_core_s_message_part_changes_state_only_as_the_core():
    """messages.py is the core's base class (worker and query messages), not a reader: it never imports
    the core, and the core is the only class built on it."""
    from services.scheduler.core import SchedulerCore
    from services.scheduler.messages import WorkerMessages
    assert WorkerMessages in SchedulerCore.__mro__
    assert _reaches_into_core(SCHEDULER / "messages.py") == []


def test_the_view_shows_the_owners_the_core_changes_also_after_a_rebuild():
    core = make_core()
    submitted(core, 1, requires={"conversation": "c"})
    submitted(core, 2, requires={"conversation": "c"})
    ready(core, W1, "a1")
    assert assigns(core) == [(W1, 1)]
    view = core.view
    assert 1 in view.table.assigned and view.convs.inflight == {"c": 1} and view.table.held == {"c": {2}}
    core.reset()   # a rebuild: the owners forget their tasks, and the view sees exactly that
    submitted(core, 3)
    assert view.table.tasks.keys() == {3} and 3 in view.table.queue and view.convs.inflight == {}
