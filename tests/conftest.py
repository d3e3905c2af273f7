from pathlib import Path

import pytest

from tests.support import BrokerProcess, remove_short_tmpdirs, short_tmpdir, write_config


@pytest.fixture
def make_broker():
    """Factory: ``make_broker(broker={...}, quotas={(account, mode): [windows]})`` -> started BrokerProcess."""
    made = []

    def factory(broker=None, quotas=None, start=True):
        root = short_tmpdir()
        proc = BrokerProcess(root, write_config(root, broker, quotas))
        made.append(proc)
        return proc.start() if start else proc

    yield factory
    for proc in made:
        proc.cleanup()


@pytest.fixture
def broker(make_broker):
    return make_broker()


@pytest.fixture
def client(broker):
    c = broker.client()
    yield c
    c.close()


# the tiers that start processes, trees, browsers or run for minutes: `ops/test -m "not slow"` leaves
# them out (a few minutes for the rest); CI runs everything. A unit test slower than about 2 s is
# marked `slow` where it is defined (README, "Tests").
SLOW_TIERS = frozenset({"integration", "crash", "chaos", "fuzz", "soak", "live"})
SLOW_MARKERS = frozenset({"integration", "crash", "soak", "browser", "live"})


def pytest_sessionfinish(session, exitstatus):
    remove_short_tmpdirs()   # the ipc:// roots the tests made under /tmp (tests/support.py)


def pytest_collection_modifyitems(config, items):
    tests_dir = Path(__file__).parent
    for item in items:
        tier = Path(item.path).relative_to(tests_dir).parts[0] if Path(item.path).is_relative_to(tests_dir) else ""
        if tier in SLOW_TIERS or any(item.get_closest_marker(m) for m in SLOW_MARKERS):
            item.add_marker(pytest.mark.slow)
