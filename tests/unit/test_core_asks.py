"""Operator asks against research in the broker's quota gate: the default fano.toml keeps asks a share."""
from __future__ import annotations

from shared.config import DEFAULT_CONFIG, load_config


def default_windows(account: str, mode: str) -> list:
    [q] = [q for q in load_config(DEFAULT_CONFIG).quotas if (q.account, q.mode) == (account, mode)]
    return list(q.windows)


def drain(core, module: str, account: str) -> int:
    """Lease and complete deep tasks of ``module`` on ``account`` until the quota refuses; how many ran."""
    n = 0
    while True:
        core.submit(f"{module}-{n}", module=module, kind="explore", requires={"mode": "deep"})
        got = core.lease(worker=f"backend-{account}", account=account, modes=["standard", "deep"])
        if got["task"] is None:
            assert "quota" in got["reason"], got
            return n
        core.call("complete", id=got["task"]["id"], epoch=got["epoch"], result="x")
        n += 1


def test_research_cannot_take_the_deep_units_kept_for_asks_in_the_default_config(make_core):
    windows = default_windows("gemini-sim", "deep")
    core = make_core(quotas={("gemini-sim", "deep"): windows})
    explored = drain(core, "explorer", "gemini-sim")       # its reserve and the whole shared buffer
    documented = drain(core, "documenter", "gemini-sim")   # its own reserve
    core.submit("the-ask", module="adhoc", kind="ask", requires={"mode": "deep", "backends": ["gemini-sim"]})
    got = core.lease(worker="backend-gemini-sim", account="gemini-sim", modes=["standard", "deep"])
    assert got["task"] is not None and got["task"]["key"] == "the-ask", got
    assert explored + documented + 1 <= 20 and explored >= 10 and documented >= 5


def test_every_scarce_default_window_keeps_units_for_asks():
    for q in load_config(DEFAULT_CONFIG).quotas:
        assert any("adhoc=" in str(w) for w in q.windows), (q.account, q.mode, q.windows)
