"""Opt-in checks against the REAL services (never in CI: there is no internet there, and they cost quota).

Run them on your own machine, with your own fano.toml and keys::

    FANO_LIVE=1 FANO_CONFIG=~/fano/fano.toml .venv/bin/python -m pytest tests/live -v
    FANO_LIVE=1 FANO_LIVE_SEND=1 ...   # also send one short standard-mode prompt per account

Each non-sim account gets its provider's cheap ``check()`` (key valid, server up; web: profile logged in,
no limit notice, and the composer and each configured mode's first control — the model picker, Tools —
still found on the idle live page; the selectors used while answering are not checked); with
``FANO_LIVE_SEND=1`` one tiny prompt in standard mode, never a scarce deep request.
"""
import os

import pytest

pytestmark = [pytest.mark.live,
              pytest.mark.skipif(os.environ.get("FANO_LIVE") != "1",
                                 reason="live checks against real services are opt-in: FANO_LIVE=1")]


def _accounts():
    if os.environ.get("FANO_LIVE") != "1":
        return []
    from shared.config import load_config
    config = load_config(os.environ.get("FANO_CONFIG"))
    return [a for a in config.accounts if a.backend != "sim"]


@pytest.fixture(scope="module")
def config():
    from shared.config import load_config
    return load_config(os.environ.get("FANO_CONFIG"))


@pytest.mark.parametrize("account", _accounts(), ids=lambda a: a.name)
def test_live_check(account, config):
    from services.backends.registry import make_provider
    from shared.clock import Clock
    provider = make_provider(account, Clock.from_env(), config.data_dir)
    try:
        provider.start()
        result = provider.check()
    finally:
        provider.close()
    assert result.get("ok"), result


@pytest.mark.skipif(os.environ.get("FANO_LIVE_SEND") != "1", reason="sending a prompt is opt-in: FANO_LIVE_SEND=1")
@pytest.mark.parametrize("account", _accounts(), ids=lambda a: a.name)
def test_live_one_short_prompt(account, config):
    from services.backends.base import Turn
    from services.backends.registry import make_provider
    from shared.clock import Clock
    provider = make_provider(account, Clock.from_env(), config.data_dir)
    try:
        provider.start()
        turn = Turn(task_id=int.from_bytes(os.urandom(4), "big"), epoch=1, attempt=1, account=account.name,
                    mode="standard", module="live", kind="ask", payload={}, prompt="Reply with the word: pong")
        reply = provider.send(turn, lambda: False)
    finally:
        provider.close()
    assert "pong" in reply.text.lower()
