import pytest

from tests.support import BrokerProcess, short_tmpdir, write_config


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
