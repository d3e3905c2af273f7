"""The review panel: the outcome table (every row), and the stage machine over stored records — math check,
rewording between rounds, mind changes, deliberation, dropped reviewers, stalls, stale results."""
from __future__ import annotations

import pytest

from services.modules.explorer import model as M
from services.modules.explorer import review as R
from services.modules.explorer.model import ABANDON as A
from services.modules.explorer.model import BLESS as B
from services.modules.explorer.model import MAYBE as Q
from services.modules.explorer.model import REJECT as X

# --- the outcome table ------------------------------------------------------------------------------------

@pytest.mark.parametrize("ratings,kind,rating", [
    ([A, A, A], "abandoned", X), ([B, B, B], "unanimous", B), ([Q, Q], "unanimous", Q), ([B, B, X], "majority", B),
    ([X, A, B], "majority", X), ([B, Q, X], "split", None), ([B, X], "split", None), ([A, A, B], "majority", X)])
def test_tally(ratings, kind, rating):
    t = R.tally(ratings)
    assert (t["kind"], t["rating"]) == (kind, rating)


@pytest.mark.parametrize("ratings,math_needed,math,expected", [
    ([A, A, A], True, None, R.Decision("decide", X, False, "unanimously abandoned in round 1")),
    ([X, X, X], True, None, R.Decision("decide", X, False, "unanimous ✗ in round 1")),
    ([B, B, B], True, None, R.Decision("mathcheck")),
    ([B, B, B], True, {"verdict": "refuted", "confidence": 0.9}, R.Decision("decide", X, False,
                                                                           "math check refuted it (confidence 0.90)")),
    ([B, Q, X], True, {"verdict": "refuted", "confidence": 0.85}, R.Decision("decide", X, False,
                                                                            "math check refuted it (confidence 0.85)")),
    ([B, B, B], True, {"verdict": "refuted", "confidence": 0.5},
     R.Decision("decide", B, False, "unanimous in round 1")),
    ([B, B, B], True, {"verdict": "skipped", "confidence": None},
     R.Decision("decide", B, False, "unanimous in round 1")),
    ([B, B, B], False, None, R.Decision("decide", B, False, "unanimous in round 1")),
    ([Q, Q, Q], False, None, R.Decision("decide", Q, False, "unanimous in round 1")),
    ([B, B, Q], False, None, R.Decision("round2")),
    ([B, Q, X], True, {"verdict": "verified", "confidence": 0.9}, R.Decision("round2")),
])
def test_after_round1(ratings, math_needed, math, expected):
    assert R.after_round1(ratings, math_needed, math, 0.8) == expected


@pytest.mark.parametrize("ratings,expected", [
    ([B, B, B], R.Decision("decide", B, False, "unanimous in round 2")),
    ([X, X, X], R.Decision("decide", X, False, "unanimous in round 2")),
    ([A, A, A], R.Decision("decide", X, False, "abandoned in round 2")),
    ([B, B, X], R.Decision("round3")),
    ([A, X, B], R.Decision("round3")),
    ([B, Q, X], R.Decision("decide", Q, False, "three-way split in round 2")),
])
def test_after_round2(ratings, expected):
    assert R.after_round2(ratings) == expected


@pytest.mark.parametrize("votes,expected", [
    ([B, B, B], R.Decision("decide", B, False, "resolved in deliberation")),
    ([X, X, X], R.Decision("decide", X, False, "resolved in deliberation")),
    ([B, B, X], R.Decision("decide", B, True, "majority after deliberation (disputed)")),
    ([X, X, Q], R.Decision("decide", X, True, "majority after deliberation (disputed)")),
    ([B, Q, X], R.Decision("decide", Q, True, "three-way split after deliberation")),
])
def test_after_round3(votes, expected):
    assert R.after_round3(votes) == expected


def test_panel_on_distinct_accounts_where_possible():
    assert [p["reviewer"] for p in R.make_panel(["a", "b", "c", "d"])] == ["a", "b", "c"]
    assert R.make_panel(["a", "b"]) == [{"reviewer": "a", "account": "a"}, {"reviewer": "b", "account": "b"},
                                        {"reviewer": "a#2", "account": "a"}]
    assert [p["reviewer"] for p in R.make_panel(["solo"])] == ["solo", "solo#2", "solo#3"]


# --- the stage machine ------------------------------------------------------------------------------------

def ctx(math_check=True, modes=None):
    settings = M.ExplorerSettings(math_check=math_check, max_retries=1)
    return R.Ctx(settings, "- [ax] axiom", modes or {"a": ("standard", "deep"), "b": ("standard", "deep"),
                                                       "c": ("standard",)}, 1000.0)


def fresh(text="A plain claim about nothing in particular.", tags=()):
    insight = {"id": "s.t1.i1", "text": text, "version": 1,
               "versions": [{"version": 1, "text": text, "by": "consolidation",
               "round": 0, "at": 0}], "tags": list(tags), "confidence": "high", "depends_on": [], "status": "pending",
               "priority": 5, "disputed": False, "last_error": None}
    review = R.new_review(insight, R.make_panel(["a", "b", "c"]), 0.0)
    return review, insight


def answer(review, insight, c, reviewer=None, step=None, **parsed):
    """Record an answer to the currently expected task of ``reviewer`` / ``step``."""
    tasks = R.open_tasks(review, insight, c)
    task = next(t for t in tasks if (reviewer is None or t["payload"].get("reviewer") == reviewer)
                and (step is None or t["payload"].get("step") == step))
    task = dict(task, id=hash(task["key"]) % 10**6)
    assert R.expected(review, insight, task, c)
    return R.record(review, insight, task, parsed, {"account": None, "mode": "standard"}, c), task


def r1(rating, mod=None):
    return {"rating": rating, "reasoning": "because", "proposed_modification": mod}


def test_unanimous_round1_without_math_blesses():
    review, insight = fresh()
    c = ctx()
    assert {t["payload"]["reviewer"] for t in R.open_tasks(review, insight, c)} == {"a", "b", "c"}
    for who in ("a", "b", "c"):
        tasks, _ = answer(review, insight, c, who, **r1(B))
    assert tasks == [] and review["stage"] == "done"
    assert insight["status"] == "blessed" and insight["blessed_at"] == 1000.0
    assert review["outcome"]["round"] == 1 and not insight["disputed"]


def test_math_check_runs_before_unanimity_and_a_confident_refutation_rejects():
    review, insight = fresh("The Fano plane has exactly 8 lines.")
    c = ctx()
    for who in ("a", "b", "c"):
        tasks, _ = answer(review, insight, c, who, **r1(B))
    assert review["stage"] == "mathcheck" and [t["kind"] for t in tasks] == [M.MATHCHECK]
    tasks, _ = answer(review, insight, c, **{"verdict": "refuted", "confidence": 0.9, "claims": []})
    assert insight["status"] == "rejected" and "refuted" in review["outcome"]["reason"]


def test_split_goes_to_round2_with_a_rewording_then_deliberation_then_a_disputed_majority():
    review, insight = fresh()
    c = ctx(math_check=False)
    answer(review, insight, c, "a", **r1(B, "A sharper claim."))
    answer(review, insight, c, "b", **r1(X, "A rejected proposal."))   # ✗ raters' rewordings are not adopted
    tasks, _ = answer(review, insight, c, "c", **r1(Q))
    assert review["stage"] == "round2" and insight["text"] == "A sharper claim." and insight["version"] == 2
    assert review["rewordings"][0]["by"] == "a" and review["rounds"]["2"]["version"] == 2
    r2 = {t["payload"]["reviewer"]: t for t in tasks}
    assert r2["a"]["requires"] == {"backends": ["a"], "mode": "deep", "deep_fallback": False}
    assert r2["c"]["requires"] == {"backends": ["c"]}                # no deep mode on c: standard, explicitly
    assert "reworded" in r2["a"]["payload"]["prompt"] and "A sharper claim." in r2["a"]["payload"]["prompt"]
    answer(review, insight, c, "a", **r1(B))
    answer(review, insight, c, "b", **r1(B))                          # b changes its mind
    tasks, _ = answer(review, insight, c, "c", **r1(X))              # c too
    assert [(m["reviewer"], m["from"], m["to"]) for m in review["mind_changes"]] == [("b", X, B), ("c", Q, X)]
    assert review["stage"] == "round3_minority" and review["deliberation"]["minority"] == "c"
    assert tasks[0]["payload"]["step"] == "minority" and tasks[0]["key"].endswith(":review3:minority")
    tasks, _ = answer(review, insight, c, step="minority", argument="numerology", proposed_modification="Weaker.")
    assert review["stage"] == "round3_majority" and review["deliberation"]["majority"] == "a"
    tasks, _ = answer(review, insight, c, step="majority", response="no", rating=B, accept_modification=True)
    assert insight["text"] == "A sharper claim."        # the minority rated ✗: its rewording is not adopted
    assert review["stage"] == "round3_vote" and len(tasks) == 3
    for who, rating in (("a", B), ("b", B), ("c", X)):
        answer(review, insight, c, who, step="vote", rating=rating)
    assert insight["status"] == "blessed" and insight["disputed"] and review["outcome"]["round"] == 3


def test_round3_adopts_the_minoritys_rewording_when_the_majority_accepts():
    review, insight = fresh()
    c = ctx(math_check=False)
    for who, rating in (("a", X), ("b", X), ("c", Q)):
        answer(review, insight, c, who, **r1(rating))
    for who, rating in (("a", X), ("b", X), ("c", Q)):
        answer(review, insight, c, who, **r1(rating))
    answer(review, insight, c, step="minority", argument="fixable", proposed_modification="The fixed claim.")
    answer(review, insight, c, step="majority", response="agreed", rating=Q, accept_modification=True)
    assert insight["text"] == "The fixed claim." and insight["versions"][-1]["round"] == 3
    for who in ("a", "b", "c"):
        answer(review, insight, c, who, step="vote", rating=Q)
    assert insight["status"] == "interesting" and not insight["disputed"]


def test_three_way_split_in_round2_is_interesting():
    review, insight = fresh()
    c = ctx(math_check=False)
    for _round in (1, 2):
        for who, rating in (("a", B), ("b", Q), ("c", X)):
            answer(review, insight, c, who, **r1(rating))
    assert insight["status"] == "interesting" and not insight["disputed"] and review["outcome"]["round"] == 2


def test_retry_then_drop_then_stall():
    review, insight = fresh()
    c = ctx(math_check=False)
    task = next(t for t in R.open_tasks(review, insight, c) if t["payload"]["reviewer"] == "a")
    tasks = R.fail(review, insight, dict(task, id=1), "unusable answer", c)
    assert [t["key"] for t in tasks] == [task["key"] + ":retry1"] and tasks[0]["payload"]["retry"] == 1
    assert not R.expected(review, insight, dict(task, id=1), c)         # the old key is stale now
    assert R.fail(review, insight, dict(tasks[0], id=2), "unusable again", c) == []
    assert review["rounds"]["1"]["dropped"] == ["a"]
    answer(review, insight, c, "b", **r1(B))
    task_c = next(t for t in R.open_tasks(review, insight, c) if t["payload"]["reviewer"] == "c")
    R.fail(review, insight, dict(task_c, id=3), "x", c)
    R.fail(review, insight, dict(task_c, key=task_c["key"] + ":retry1", id=4), "x", c)
    assert review["stage"] == "stalled" and "only 1 usable rating" in insight["last_error"]


def test_a_failed_math_check_is_recorded_as_skipped():
    review, insight = fresh("Exactly 7 points.")
    c = ctx()
    for who in ("a", "b", "c"):
        answer(review, insight, c, who, **r1(Q))
    for n in range(2):
        task = R.open_tasks(review, insight, c)[0]
        R.fail(review, insight, dict(task, id=n), "no VERDICT", c)
    assert review["math"]["verdict"] == "skipped" and insight["status"] == "interesting"


def test_other_tasks_are_not_expected():
    review, insight = fresh()
    c = ctx()
    task = R.open_tasks(review, insight, c)[0]
    answered = dict(task, id=1)
    R.record(review, insight, answered, r1(B), {}, c)
    assert not R.expected(review, insight, answered, c)                  # answered once: a replay is stale
    r2_task = dict(task, kind=M.REVIEW2, key=task["key"].replace("review1", "review2"), id=2)
    assert not R.expected(review, insight, r2_task, c)                   # a round that has not started
