"""The advisor's pure parts: its answer parser, the 5% rate bound, the balance test, weights, settings."""
import random

import pytest

from services.backends import sim_answers
from services.modules.advisor import logic as L
from services.modules.advisor.settings import Settings, settings_from_table
from services.modules.parsing import ParseError
from shared.config import ConfigError

MODS = ("explorer", "documenter", "researcher")


# --- the parser -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, want", [
    ("EXPLORER_WEIGHT: 0.8\nDOCUMENTER_WEIGHT: 1.5\nRESEARCHER_WEIGHT: 1.0\nREASONING: The documenter lags.",
     {"explorer": 0.8, "documenter": 1.5, "researcher": 1.0}),
    # prose around, Markdown bold, CRLF, spaces instead of underscores, '=' and 'x' and '%' and ',' forms
    ("Here is my advice.\r\n\r\n**EXPLORER_WEIGHT:** x0.7\r\n**Documenter weight** = 1,4\r\n"
     "- RESEARCHER_WEIGHT: 90% (slightly less)\r\n**REASONING:** Because.\r\n",
     {"explorer": 0.7, "documenter": 1.4, "researcher": 0.9}),
    ("explorer_weight: .5\ndocumenter_weight: 2x\nresearcher_weight: 1\n",
     {"explorer": 0.5, "documenter": 2.0, "researcher": 1.0}),
])
def test_the_parser_accepts_what_models_write(text, want):
    factors, _ = L.parse_weights(text, MODS)
    assert factors == pytest.approx(want)


def test_the_parser_keeps_the_reasoning_up_to_the_next_tag():
    factors, reasoning = L.parse_weights("REASONING: first line\nsecond line\nEXPLORER_WEIGHT: 1\n"
                                         "DOCUMENTER_WEIGHT: 1.2\nRESEARCHER_WEIGHT: 1", MODS)
    assert reasoning == "first line\nsecond line" and factors["documenter"] == 1.2


@pytest.mark.parametrize("text, error", [
    ("EXPLORER_WEIGHT: 1\nDOCUMENTER_WEIGHT: 1.2\nREASONING: x", "RESEARCHER_WEIGHT"),   # one missing
    ("I would not change anything.", "EXPLORER_WEIGHT"),                                # no format at all
    ("EXPLORER_WEIGHT: more\nDOCUMENTER_WEIGHT: 1\nRESEARCHER_WEIGHT: 1", "expected a number"),
    ("EXPLORER_WEIGHT: -1\nDOCUMENTER_WEIGHT: 1\nRESEARCHER_WEIGHT: 1", "negative"),
    ("EXPLORER_WEIGHT: 0\nDOCUMENTER_WEIGHT: 1\nRESEARCHER_WEIGHT: 1", "not a weight factor"),
    ("EXPLORER_WEIGHT: 50\nDOCUMENTER_WEIGHT: 1\nRESEARCHER_WEIGHT: 1", "not a weight factor"),
    ("EXPLORER_WEIGHT:\nDOCUMENTER_WEIGHT: 1\nRESEARCHER_WEIGHT: 1", "EXPLORER_WEIGHT"),  # empty value
])
def test_an_unusable_answer_is_an_error_not_a_default(text, error):
    with pytest.raises(ParseError, match=error):
        L.parse_weights(text, MODS)


def test_the_simulated_provider_answers_in_a_format_the_parser_reads():
    for n in range(50):
        rng = random.Random(n)
        text = sim_answers.answer(L.KIND, {"seq": n}, "advise", "standard", rng, seed=n, account="sim")
        text = sim_answers.decorate(text, L.KIND, rng, 0.5, 0.0)
        factors, reasoning = L.parse_weights(text, MODS)
        assert set(factors) == set(MODS) and all(0.5 <= f <= 2.0 for f in factors.values()) and reasoning


# --- the rate bound ---------------------------------------------------------------------------------------

def test_one_request_in_twenty_at_most():
    assert not L.may_ask(0, 0, 0.05)        # nothing else yet: even one would be 100%
    assert not L.may_ask(0, 18, 0.05)       # 1 of 19
    assert L.may_ask(0, 19, 0.05)           # 1 of 20 = 5%
    assert not L.may_ask(1, 20, 0.05)       # a second one needs 40 in all
    assert L.may_ask(1, 39, 0.05)


def test_the_bound_holds_whatever_the_traffic():
    rng = random.Random(5)
    mine = total = 0
    for _ in range(5000):
        total += rng.randint(0, 3)           # other modules' tasks
        if L.may_ask(mine, total, 0.05):     # the advisor asks whenever it may
            mine += 1
            total += 1
        assert mine <= 0.05 * total + 1e-9
    assert mine >= 0.05 * total - 1          # and the bound is what limits it, not something else


def test_request_counts_come_from_the_brokers_per_module_counts():
    stats = {"modules": {"explorer": {"DONE": 30, "PENDING": 5}, "advisor": {"DONE": 1, "RUNNING": 1},
                         "documenter": {"PARKED": 2, "bogus": "x"}}}
    assert L.request_counts(stats) == (2, 39)
    assert L.request_counts({}) == (0, 0)


# --- balance, weights, applying ---------------------------------------------------------------------------

def test_backlogs_count_pending_tasks_and_the_documenters_blessed_insights():
    stats = {"modules": {"explorer": {"PENDING": 40, "DONE": 9}, "documenter": {"PENDING": 2}}}
    assert L.backlogs(stats, MODS, documenter_waiting=12) == {"explorer": 40, "documenter": 14, "researcher": 0}


@pytest.mark.parametrize("backlog, out", [
    ({"explorer": 40, "documenter": 2, "researcher": 0}, True),
    ({"explorer": 40, "documenter": 14, "researcher": 0}, False),   # x2.9 < x3
    ({"explorer": 8, "documenter": 1, "researcher": 0}, False),     # below min_backlog
    ({"explorer": 90, "documenter": 0, "researcher": 0}, False),    # alone: nobody competes
])
def test_out_of_balance(backlog, out):
    reason = L.imbalance(backlog, 10, 3.0)
    assert (reason is not None) == out
    if out:
        assert "explorer has 40" in reason and "documenter" in reason


def test_factors_become_symmetric_capped_additive_weights():
    w = L.to_weights({"explorer": 0.5, "documenter": 2.0, "researcher": 1.0}, 20.0, 40.0)
    assert w == {"explorer": -20.0, "documenter": 20.0, "researcher": 0.0}
    assert L.to_weights({"explorer": 16.0}, 20.0, 40.0) == {"explorer": 40.0}


def test_a_users_override_stands():
    cfg = {"explorer": 0, "documenter": 0}
    assert L.may_apply({}, cfg, None, MODS)                                          # configured weights
    assert L.may_apply({"documenter": 20.0}, cfg, {"documenter": 20.0}, MODS)        # its own last ones
    assert not L.may_apply({"documenter": 5.0}, cfg, {"documenter": 20.0}, MODS)     # set by hand since
    assert not L.may_apply({"explorer": 3.0}, cfg, None, MODS)


def test_throughput_over_the_samples_of_the_last_day():
    samples = []
    for h in range(30):
        samples = L.add_sample(samples, h * 3600.0, {"explorer": h * 10}, 900.0)
    assert len(samples) <= 28 and samples[0][0] >= 29 * 3600 - L.SAMPLE_KEEP
    assert L.add_sample(samples, 29 * 3600 + 60, {"explorer": 0}, 900.0) is samples   # too soon
    per, span = L.throughput(samples, 29 * 3600.0, {"explorer": 290})
    assert per == {"explorer": 240} and span == 24 * 3600


def test_settings_default_off_and_validated():
    s = settings_from_table({})
    assert s == Settings() and s.enabled is False and s.auto_apply is False and s.max_share == 0.05
    two = settings_from_table({"enabled": True, "modules": ["explorer", "documenter"]})
    assert two.enabled and two.modules == ("explorer", "documenter")
    for bad in ({"max_share": 0.1}, {"max_share": 0}, {"enabled": "yes"}, {"enable": True},
                {"modules": ["explorer"]}, {"interval": -1}, {"imbalance_ratio": 0.5}):
        with pytest.raises(ConfigError):
            settings_from_table(bad)


# --- the service ------------------------------------------------------------------------------------------

def test_a_refused_weights_query_is_counted_and_logged_and_the_task_still_asks(monkeypatch, caplog):
    """The current weights are optional context in the prompt (every factor 1.0 without them), but a
    failure to read them is counted and logged, not swallowed (issue 12)."""
    from services.modules.advisor.service import AdvisorService
    from services.modules.advisor.settings import load_settings
    from tests.unit.modhelp import ModuleRig, RefusingScheduler
    rig = ModuleRig(AdvisorService)
    svc = rig.svc
    svc.settings = load_settings(svc.config)
    with RefusingScheduler() as sched, caplog.at_level("WARNING"):
        monkeypatch.setenv("FANO_SCHEDULER", sched.endpoint)
        task = svc.weights_task(1, "the explorer lags", {m: 0 for m in MODS}, [], rig.now,
                                {m: 0 for m in MODS}, rig.client.stats())
    assert sched.asked == ["weights"]
    assert task["kind"] == L.KIND and "EXPLORER_WEIGHT: <factor>" in task["payload"]["prompt"]
    assert svc.tolerated["scheduler weights query"] == 1
    assert any("scheduler weights query failed" in rec.getMessage() for rec in caplog.records)


def test_a_tolerated_error_is_logged_the_first_time_and_at_each_power_of_ten(caplog):
    from services.modules.advisor.service import AdvisorService
    from tests.unit.modhelp import ModuleRig
    svc = ModuleRig(AdvisorService).svc
    with caplog.at_level("WARNING"):
        for _ in range(1000):
            svc.tolerate("a peer", TimeoutError("silent"))
    assert svc.tolerated == {"a peer": 1000}
    assert [r.getMessage().split("; ")[-1] for r in caplog.records] == [
        f"going on without it ({n} time(s) so far)" for n in (1, 10, 100, 1000)]
