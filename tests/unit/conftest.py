"""Fixtures shared by the unit tests; pytest finds them here, so test modules never import a fixture.

- ``make_core`` / ``core``: a :class:`tests.unit.corehelp.CoreHarness` (a BrokerCore on a temporary LMDB
  with a FakeClock, no sockets), closed after the test.
- ``rig``: the explorer against the in-process core (:class:`tests.unit.test_explorer_flow.Rig`).
- ``make_researcher``: the researcher service on the modules' rig (tests/unit/modhelp.py).
- ``_close_rigs`` (automatic): closes every module rig a test made (tests/unit/modhelp.py).
"""
from __future__ import annotations

import pytest

from tests.unit import modhelp
from tests.unit.corehelp import CoreHarness


@pytest.fixture(autouse=True)
def _close_rigs():
    """Module rigs (tests/unit/modhelp.py) are made inline, without a fixture: close them after each test."""
    yield
    modhelp.close_all()


@pytest.fixture
def make_core(tmp_path):
    """Factory: ``make_core(broker={...}, quotas={...}, clock=FakeClock(...), scheduler={...})``; each in its
    own directory."""
    made = []

    def factory(broker=None, quotas=None, clock=None, scheduler=None):
        root = tmp_path / f"core{len(made)}"
        root.mkdir()
        h = CoreHarness.make(root, broker, quotas, clock, scheduler)
        made.append(h)
        return h

    yield factory
    for h in made:
        h.close()


@pytest.fixture
def core(make_core):
    return make_core()


@pytest.fixture
def make_researcher(tmp_path):
    """Factory: ``make_researcher(**settings)`` -> a ResearcherService with those ``[modules.researcher]``
    settings (e.g. ``trusted_domains={"a.example": 90}``), its client answered by an in-process broker core."""
    from services.modules.researcher.service import ResearcherService

    made = []

    def factory(**settings):
        rig = modhelp.ModuleRig(ResearcherService, root=tmp_path / f"researcher{len(made)}", accounts=(),
                                table=modhelp.table_text(settings))
        made.append(rig)
        return rig.svc
    return factory


@pytest.fixture
def rig(tmp_path):
    """Factory: ``rig(accounts=..., settings=..., seed=...)`` -> an explorer Rig, each in its own directory."""
    from tests.unit.test_explorer_flow import Rig  # the Rig lives beside the flow tests that define it

    made = []

    def factory(**kw):
        r = Rig(tmp_path / f"rig{len(made)}", **kw)
        made.append(r)
        return r
    yield factory
    for r in made:
        r.h.close()
