"""The scheduler's ``weights`` query refuses a module the tree does not have (issue 14: `modules weights
--set explorr=5` was stored and kept across restarts)."""
from tests.unit.test_scheduler_logic import ask, make_core


def test_weights_for_an_unknown_module_are_refused_and_nothing_changes():
    core = make_core(module_weights={"explorer": 1})
    stored = []
    core.weights_store = stored.append
    err = ask(core, "weights", set={"documenter": 4, "explorr": 5})["error"]
    assert err["name"] == "BAD_ARGUMENT"
    assert "unknown module 'explorr' (known: adhoc, advisor, documenter, explorer, researcher)" in err["message"]
    assert stored == []   # nothing written to the broker: all-or-nothing
    assert ask(core, "weights")["result"]["weights"] == {"explorer": 1.0}
    assert ask(core, "weights", set={"documenter": 4, "adhoc": 2})["result"]["weights"] == \
        {"explorer": 1.0, "documenter": 4.0, "adhoc": 2.0}


def test_a_scheduler_without_accounts_does_not_check_module_names():
    core = make_core(accounts=())
    assert ask(core, "weights", set={"bench": 3})["result"]["weights"] == {"bench": 3.0}
