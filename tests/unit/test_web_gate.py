"""The completion gate (services/backends/web/gate.py), fed synthetic sample sequences."""
from services.backends.web.gate import GateConfig, ProgressWatch, Sample, TurnGate

CFG = GateConfig(bar_confirm_polls=3, min_stable=1.2)


def run(samples, cfg=CFG):
    """Feed (t, text, stop, bar, thinking) tuples; the time of the first terminal sample, or None."""
    gate = TurnGate(cfg)
    for t, text, stop, bar, thinking in samples:
        if gate.feed(Sample(t, text, stop, bar, thinking)):
            return t, gate
    return None, gate


def polls(start, end, step=0.5):
    t = start
    while t < end - 1e-9:
        yield round(t, 3)
        t += step


def test_normal_stream_completes_after_bar_confirmed_and_text_stable():
    seq = [(t, "Hel", True, False, False) for t in polls(0, 1)]
    seq += [(t, "Hello world", True, False, False) for t in polls(1, 2)]
    seq += [(t, "Hello world", False, True, False) for t in polls(2, 5)]
    done, gate = run(seq)
    # text last changed at 1.0; bar seen at 2.0, 2.5, 3.0 -> third confirmation at 3.0 (stable 2.0 s)
    assert done == 3.0 and gate.state == "complete"


def test_settled_pro_preamble_with_a_flash_of_the_bar_is_not_complete():
    """The trap: a preamble settles with no stop button, the bar flashes once, then long thinking."""
    preamble = "Let me restate the problem first."
    answer = "The final answer is 42, because ..."
    seq = [(t, preamble[: int(len(preamble) * t)], True, False, False) for t in polls(0, 1, 0.25)]
    seq += [(t, preamble, False, t in (2.0, 2.25), False) for t in polls(1, 4, 0.25)]   # settled + flash
    seq += [(t, preamble, True, False, True) for t in polls(4, 30, 0.25)]                # long thinking
    seq += [(t, answer[:10], True, False, False) for t in polls(30, 31, 0.25)]
    seq += [(t, answer, False, True, False) for t in polls(31, 40, 0.25)]
    done, _ = run(seq)
    assert done is not None and done >= 31.5, done   # never during the preamble


def test_naive_signals_alone_would_have_stopped_on_the_preamble():
    """The same preamble phase satisfies 'stop gone and text stable' — the gate must not rely on it."""
    preamble = "Let me restate the problem first."
    seq = [(t, preamble, False, False, False) for t in polls(1, 4, 0.25)]
    naive = next(t for t, text, stop, bar, _ in seq if not stop and t - 1 >= 1.2)
    assert naive < 4
    assert run(seq)[0] is None


def test_bar_visible_while_thinking_never_completes():
    seq = [(t, "partial", False, True, True) for t in polls(0, 10)]
    done, gate = run(seq)
    assert done is None and gate.state == "thinking"


def test_stop_button_blocks_completion():
    seq = [(t, "done text", True, True, False) for t in polls(0, 10)]
    assert run(seq)[0] is None


def test_empty_text_is_never_complete():
    seq = [(t, "", False, True, False) for t in polls(0, 10)]
    done, gate = run(seq)
    assert done is None and gate.state == "no reply yet"


def test_a_same_length_rewrite_restarts_the_debounce():
    seq = [(t, "aaaa", False, True, False) for t in (0.0, 0.5)]
    seq += [(t, "bbbb", False, True, False) for t in (1.0, 1.5, 2.0, 2.5, 3.0)]
    done, _ = run(seq, GateConfig(bar_confirm_polls=3, min_stable=1.0))
    # "bbbb" appears at 1.0: three confirmations at 2.0, stable for 1.0 s at 2.0
    assert done == 2.0


def test_bar_must_be_consecutive():
    text = "answer"
    seq = [(0.0, text, False, True, False), (0.5, text, False, True, False), (1.0, text, False, False, False),
           (1.5, text, False, True, False), (2.0, text, False, True, False), (2.5, text, False, True, False)]
    assert run(seq, GateConfig(3, 0.0))[0] == 2.5


def test_min_stable_holds_even_after_enough_bar_polls():
    seq = [(t, "x", False, True, False) for t in (0.0, 0.1, 0.2, 0.3, 1.0, 1.3)]
    assert run(seq, GateConfig(3, 1.2))[0] == 1.3


def test_config_validation():
    import pytest
    with pytest.raises(ValueError):
        GateConfig(0, 1.0)
    with pytest.raises(ValueError):
        GateConfig(3, -1)


# --- signs of progress after sending (a layout change must not wait out the turn timeout) -----------------

def watch(samples, grace=60.0):
    """Feed (t, exists, text, stop, thinking) tuples; (t, description) of the first stall, or None."""
    w = ProgressWatch(grace, 0.0)
    for t, exists, text, stop, thinking in samples:
        stalled = w.feed(t, exists, text, stop, thinking)
        if stalled:
            return t, stalled
    return None


def test_no_turn_stop_or_thinking_within_the_grace_period_is_a_layout_problem():
    got = watch([(t, False, "", False, False) for t in polls(0, 100, 1.0)])
    assert got is not None and got[0] == 60.0 and "no assistant turn, stop control or thinking" in got[1]


def test_any_sign_of_work_keeps_waiting():
    # a stop button alone for the whole period (a long Pro thinking phase with nothing else matched)
    assert watch([(t, False, "", True, False) for t in polls(0, 300, 1.0)]) is None
    # a progress indicator in the turn, then a slowly streamed reply
    seq = [(t, True, "", False, True) for t in polls(0, 200, 1.0)]
    seq += [(t, True, "x" * int(t), False, False) for t in polls(200, 400, 1.0)]
    assert watch(seq) is None


def test_a_short_settled_preamble_is_not_a_stall():
    seq = [(t, True, "Let me restate the problem.", False, False) for t in polls(0, 20, 0.5)]
    seq += [(t, True, "Let me restate the problem.", True, True) for t in polls(20, 400, 1.0)]
    assert watch(seq) is None


def test_a_turn_that_goes_quiet_without_finishing_is_a_layout_problem():
    # the reply selector matches nothing: the turn exists, its text stays empty once the stop control goes
    seq = [(t, True, "", True, False) for t in polls(0, 10, 1.0)]
    seq += [(t, True, "", False, False) for t in polls(10, 100, 1.0)]
    got = watch(seq)
    assert got is not None and got[0] == 69.0 and "no reply text" in got[1]     # the stop control last at 9
    # the finished marker matches nothing: the text is complete and stays put
    seq = [(t, True, "answer"[: int(t) + 1], True, False) for t in polls(0, 6, 1.0)]
    seq += [(t, True, "answer", False, False) for t in polls(6, 100, 1.0)]
    got = watch(seq)
    assert got is not None and got[0] == 65.0 and "no finished marker" in got[1]
