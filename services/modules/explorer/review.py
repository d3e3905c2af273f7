"""The three-round review panel (docs/research.md § Review panel) as pure functions over stored records.

Every review step is its own task, so reviews of many insights interleave with exploration, and a review
is resumable after any step: its whole state is the ``reviews/<insight>`` record (shape in :mod:`.model`).

Stages and their tasks (keys ``explorer:<insight>:<step>``, plus ``:retry<n>`` after an unusable answer):

=================  =====================================  =========================================
stage              tasks                                  next
=================  =====================================  =========================================
round1             review1:<reviewer> x panel (standard)  :func:`after_round1`
mathcheck          mathcheck (one task, all claims)       :func:`after_round1` with the verdict
round2             review2:<reviewer> (deep, no fallback)  :func:`after_round2`
round3_minority    review3:minority (step=minority)       round3_majority
round3_majority    review3:majority (step=majority)       round3_vote
round3_vote        review3:vote:<reviewer> (step=vote)    :func:`after_round3`
done / stalled / stopped (a human decided meanwhile)
=================  =====================================  =========================================

Outcome table (ABANDON counts as ✗ when looking for a majority; "all ABANDON" is its own row):

=====================================  ==========================================================
R1 all ABANDON                         ✗ rejected ("unanimously abandoned")
R1 unanimous ✗                         ✗ rejected (no math check needed)
R1 math check refuted, conf >= 0.8     ✗ rejected (the check runs before R1 unanimity counts)
R1 unanimous ⚡ / ?                     blessed / interesting
R1 anything else                       round 2 (after adopting a rewording, if any)
R2 unanimous (all ABANDON: ✗)          that rating
R2 2-1 (a strict majority)             round 3 (after adopting a rewording, if any)
R2 no majority (three-way)             ? interesting, not disputed
R3 final votes unanimous               that rating, not disputed ("resolved")
R3 final votes with a majority         the majority's rating, disputed
R3 final votes without a majority      ? interesting, disputed
=====================================  ==========================================================

A rewording proposed by a reviewer who rated ⚡ or ? in the round just finished is adopted between rounds
(⚡ proposers first, then panel order); in round 3, the minority's proposal when the majority member
accepts it. Each adoption is a new insight version; later rounds review the new text.
A reviewer whose answers stay unusable after ``max_retries`` re-asks is dropped from that round (recorded);
a round with fewer than two ratings stalls the review for a human (``fanoctl insights bless|reject|...``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from services.modules import prompts
from services.modules.explorer import model as M
from services.modules.explorer.parsers import is_math_request

RANK = {M.BLESS: 0, M.MAYBE: 1, M.REJECT: 2, M.ABANDON: 3}


@dataclass(frozen=True)
class Decision:
    action: str                 # "decide" | "mathcheck" | "round2" | "round3"
    rating: str | None = None   # ⚡ ? ✗ when deciding
    disputed: bool = False
    reason: str = ""


def tally(ratings: list[str]) -> dict:
    """``{"kind": "abandoned"|"unanimous"|"majority"|"split", "rating", "counts"}``."""
    counts: dict[Any, Any] = {}
    for r in ratings:
        counts[r] = counts.get(r, 0) + 1
    if ratings and all(r == M.ABANDON for r in ratings):
        return {"kind": "abandoned", "rating": M.REJECT, "counts": counts}
    if ratings and len(counts) == 1:
        return {"kind": "unanimous", "rating": ratings[0], "counts": counts}
    votes: dict[Any, Any] = {}
    for r in ratings:
        r = M.REJECT if r == M.ABANDON else r
        votes[r] = votes.get(r, 0) + 1
    top = max(votes.items(), key=lambda kv: (kv[1], -RANK[kv[0]]), default=(None, 0))
    if top[1] * 2 > len(ratings):
        return {"kind": "majority", "rating": top[0], "counts": counts}
    return {"kind": "split", "rating": None, "counts": counts}


def after_round1(ratings: list[str], math_needed: bool, math: dict | None, refute_confidence: float) -> Decision:
    t = tally(ratings)
    if t["kind"] == "abandoned":
        return Decision("decide", M.REJECT, False, "unanimously abandoned in round 1")
    if t["kind"] == "unanimous" and t["rating"] == M.REJECT:
        return Decision("decide", M.REJECT, False, "unanimous ✗ in round 1")
    if math_needed and math is None:
        return Decision("mathcheck")
    if math and math.get("verdict") == "refuted" and (math.get("confidence") or 0.0) >= refute_confidence:
        return Decision("decide", M.REJECT, False, f"math check refuted it (confidence {math['confidence']:.2f})")
    if t["kind"] == "unanimous":
        return Decision("decide", t["rating"], False, "unanimous in round 1")
    return Decision("round2")


def after_round2(ratings: list[str]) -> Decision:
    t = tally(ratings)
    if t["kind"] in ("abandoned", "unanimous"):
        return Decision("decide", t["rating"], False, f"{t['kind']} in round 2")
    if t["kind"] == "majority":
        return Decision("round3")
    return Decision("decide", M.MAYBE, False, "three-way split in round 2")


def after_round3(votes: list[str]) -> Decision:
    t = tally(votes)
    if t["kind"] in ("abandoned", "unanimous"):
        return Decision("decide", t["rating"], False, "resolved in deliberation")
    if t["kind"] == "majority":
        return Decision("decide", t["rating"], True, "majority after deliberation (disputed)")
    return Decision("decide", M.MAYBE, True, "three-way split after deliberation")


# --- records and tasks ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Ctx:
    settings: M.ExplorerSettings
    axioms: str
    modes: dict          # account -> modes it offers
    now: float


def make_panel(accounts: list[str], n: int = 3) -> list[dict]:
    """``n`` reviewers on distinct accounts where possible (``acct#2`` when an account serves twice)."""
    panel: list[Any] = []
    used: dict[Any, Any] = {}
    for i in range(n if accounts else 0):
        acct = accounts[i % len(accounts)]
        used[acct] = used.get(acct, 0) + 1
        panel.append({"reviewer": acct if used[acct] == 1 else f"{acct}#{used[acct]}", "account": acct})
    return panel


def _round(version: int) -> dict:
    return {"version": version, "responses": {}, "retries": {}, "dropped": [], "outcome": None}


def new_review(insight: dict, panel: list[dict], now: float) -> dict:
    return {"insight_id": insight["id"], "panel": panel, "stage": "round1", "rounds": {"1": _round(insight["version"])},
            "deliberation": None, "math": None, "math_retries": 0, "mind_changes": [], "rewordings": [],
            "outcome": None, "last_error": None, "created_at": now, "updated_at": now}


def math_needed(insight: dict, responses: dict, settings: M.ExplorerSettings) -> bool:
    if not settings.math_check:
        return False
    if set(insight.get("tags") or []) & set(settings.math_tags):
        return True
    if any(re.search(p, insight["text"], re.IGNORECASE) for p in M.MATH_PATTERNS):
        return True
    return any(is_math_request(r.get("reasoning"), r.get("mathematical_verification")) for r in responses.values())


def _account(review: dict, reviewer: str) -> str:
    return next(p["account"] for p in review["panel"] if p["reviewer"] == reviewer)


def _seat_step(review: dict, reviewer: str, step: str) -> str:
    """A seat's task key step; once the seat was given to another account (:func:`replace_member`) the
    account is part of it, so the new task is a new key and a late answer to the old one is stale."""
    seat = next(p for p in review["panel"] if p["reviewer"] == reviewer)
    return f"{step}@{seat['account']}" if seat.get("replaced") else step


def _deep(ctx: Ctx, account: str, step: str) -> dict:
    mode, fallback = ctx.settings.deep_for(step)
    if mode != "deep" or "deep" not in ctx.modes.get(account, ("standard", "deep")):
        return {}   # an account without a deep mode reviews in standard mode (recorded on the response)
    return {"mode": "deep", "deep_fallback": fallback}


def _views(rd: dict, with_mods: bool = True) -> str:
    out = []
    for reviewer, r in rd["responses"].items():
        mod = (f"\n  proposed modification: {r['proposed_modification'][:200]}"
               if with_mods and r.get("proposed_modification") else "")
        out.append(f"- {reviewer}: {r['rating']}\n  reasoning: {(r.get('reasoning') or '-')[:600]}{mod}")
    return "\n".join(out) or "(none)"


def _math_summary(review: dict) -> str:
    m = review.get("math")
    if not m:
        return "No math check was run."
    conf = f" (confidence {m['confidence']:.2f})" if isinstance(m.get("confidence"), (int, float)) else ""
    return f"Math check: {m['verdict']}{conf}."


def _base(insight: dict, ctx: Ctx) -> dict:
    return {"axioms": ctx.axioms, "insight": insight["text"], "tags": ", ".join(insight.get("tags") or []) or "-",
            "confidence": insight.get("confidence") or "-", "depends_on": ", ".join(insight.get("depends_on") or [])
            or "none"}


def round_task(review: dict, insight: dict, r: int, reviewer: str, ctx: Ctx) -> dict:
    rd = review["rounds"][str(r)]
    retry = rd["retries"].get(reviewer, 0)
    account = _account(review, reviewer)
    values = _base(insight, ctx)
    requires = {"backends": [account]}
    if r == 1:
        kind, template = M.REVIEW1, "review1"
    else:
        kind, template = M.REVIEW2, "review2"
        own = review["rounds"]["1"]["responses"].get(reviewer, {})
        reworded = [w for w in review["rewordings"] if w["round"] == 1]
        values.update(views=_views(review["rounds"]["1"]), own_rating=own.get("rating", "(none)"),
                      math=_math_summary(review), modification=(
                          f"NOTE: after round 1 the insight was reworded (proposed by {reworded[-1]['by']})."
                          if reworded else "The wording is unchanged since round 1."))
        requires.update(_deep(ctx, account, "review2"))
    payload = {"insight_id": insight["id"], "reviewer": reviewer, "round": r, "version": rd["version"],
               "prompt": prompts.render(M.MODULE, template, **values)}
    if retry:
        payload["retry"] = retry
    return M.task_spec(M.insight_task_key(insight["id"], _seat_step(review, reviewer, f"review{r}:{reviewer}"), retry),
                       kind, payload,
                       insight.get("priority"), requires)


def math_task(review: dict, insight: dict, ctx: Ctx) -> dict:
    retry = review.get("math_retries", 0)
    payload = {"insight_id": insight["id"], "version": insight["version"],
               "prompt": prompts.render(M.MODULE, "mathcheck", insight=insight["text"])}
    if retry:
        payload["retry"] = retry
    return M.task_spec(M.insight_task_key(insight["id"], "mathcheck", retry), M.MATHCHECK, payload,
                       insight.get("priority"))


def step_task(review: dict, insight: dict, step: str, ctx: Ctx, reviewer: str | None = None) -> dict:
    """A round-3 task: ``minority``, ``majority`` or ``vote`` (for ``reviewer``)."""
    d = review["deliberation"]
    if step == "vote":
        if reviewer is None:
            raise ValueError("a round-3 vote task names its voter")
        retry = review["rounds"]["3"]["retries"].get(reviewer, 0)
        key_step = _seat_step(review, reviewer, f"review3:vote:{reviewer}")
    else:
        reviewer = d[step]
        retry = d["retries"].get(step, 0)
        key_step = _seat_step(review, reviewer, f"review3:{step}")
    account = _account(review, reviewer)
    r2 = review["rounds"]["2"]["responses"]
    arg, ans = d.get("argument") or {}, d.get("answer") or {}
    values = dict(_base(insight, ctx), views=_views(review["rounds"]["2"]),
                  own_rating=r2.get(reviewer, {}).get("rating", "?"),
                  majority_rating=d["majority_rating"],
                  argument=arg.get("argument") or "(the minority gave no argument)",
                  proposed=arg.get("proposed_modification") or "NONE", response=ans.get("response") or "(no response)",
                  role="minority" if reviewer == d["minority"] else "majority", math=_math_summary(review))
    payload = {"insight_id": insight["id"], "reviewer": reviewer, "round": 3, "step": step,
               "version": insight["version"], "prompt": prompts.render(M.MODULE, f"review3_{step}", **values)}
    if retry:
        payload["retry"] = retry
    requires = dict({"backends": [account]}, **_deep(ctx, account, "review3"))
    return M.task_spec(M.insight_task_key(insight["id"], key_step, retry), M.REVIEW3, payload,
                       insight.get("priority"), requires)


def open_tasks(review: dict, insight: dict, ctx: Ctx) -> list[dict]:
    """Every task the current stage still waits for (used to propose and to re-derive after a restart)."""
    stage = review["stage"]
    if stage in ("round1", "round2"):
        r = int(stage[-1])
        rd = review["rounds"][str(r)]
        waiting = [p["reviewer"] for p in review["panel"] if p["reviewer"] not in rd["responses"]
                   and p["reviewer"] not in rd["dropped"]
                   and (r == 1 or p["reviewer"] in review["rounds"]["1"]["responses"])]
        return [round_task(review, insight, r, who, ctx) for who in waiting]
    if stage == "mathcheck":
        return [math_task(review, insight, ctx)]
    if stage in ("round3_minority", "round3_majority"):
        return [step_task(review, insight, stage.split("_")[1], ctx)]
    if stage == "round3_vote":
        rd = review["rounds"]["3"]
        return [step_task(review, insight, "vote", ctx, who) for who in review["deliberation"]["voters"]
                if who not in rd["responses"] and who not in rd["dropped"]]
    return []


# --- transitions ----------------------------------------------------------------------------------------

def decide(review: dict, insight: dict, d: Decision, round_no: int, now: float) -> None:
    if d.rating is None:
        raise ValueError(f"a decision without a rating: {d}")
    status = M.STATUS_OF[d.rating]
    review["stage"] = "done"
    review["outcome"] = {"rating": d.rating, "status": status, "round": round_no, "reason": d.reason,
                         "disputed": d.disputed}
    insight.update(status=status, disputed=d.disputed, decided_by="panel", updated_at=now,
                   outcome={"rating": d.rating, "round": round_no, "reason": d.reason, "disputed": d.disputed})
    if status == "blessed":
        insight["blessed_at"] = now


def adopt(review: dict, insight: dict, round_no: int, reviewer: str, text: str, rationale, now: float) -> None:
    old = insight["version"]
    insight["version"] = old + 1
    insight["text"] = text
    insight["versions"].append({"version": old + 1, "text": text, "by": reviewer, "round": round_no, "at": now})
    insight["updated_at"] = now
    review["rewordings"].append({"round": round_no, "by": reviewer, "from_version": old, "to_version": old + 1,
                                 "text": text, "rationale": rationale})


def adopt_best(review: dict, insight: dict, round_no: int, now: float) -> None:
    """Adopt the best rewording proposed in ``round_no`` by a ⚡ or ? reviewer, if any."""
    order = {p["reviewer"]: i for i, p in enumerate(review["panel"])}
    norm = " ".join(insight["text"].lower().split())
    cands = sorted((RANK[r["rating"]], order.get(who, 99), who, r)
                   for who, r in review["rounds"][str(round_no)]["responses"].items()
                   if r["rating"] in (M.BLESS, M.MAYBE) and r.get("proposed_modification")
                   and " ".join(r["proposed_modification"].lower().split()) != norm)
    if cands:
        _, _, who, r = cands[0]
        adopt(review, insight, round_no, who, r["proposed_modification"], r.get("modification_rationale"), now)


def _ratings(rd: dict) -> list[str]:
    return [r["rating"] for r in rd["responses"].values()]


def _complete(review: dict, r: int) -> bool:
    rd = review["rounds"][str(r)]
    expected = [p["reviewer"] for p in review["panel"]] if r == 1 else (
        [p["reviewer"] for p in review["panel"] if p["reviewer"] in review["rounds"]["1"]["responses"]] if r == 2
        else review["deliberation"]["voters"])
    return all(w in rd["responses"] or w in rd["dropped"] for w in expected)


def _stall(review: dict, insight: dict, why: str, now: float) -> list:
    review["stage"] = "stalled"
    review["last_error"] = insight["last_error"] = f"review stalled: {why}; a human decides (fanoctl insights ...)"
    insight["updated_at"] = now
    return []


def advance(review: dict, insight: dict, ctx: Ctx) -> list[dict]:
    """Move the review on as far as the recorded answers allow; returns the tasks to submit. Mutates both."""
    now, s = ctx.now, ctx.settings
    stage = review["stage"]
    if stage in ("round1", "mathcheck"):
        if not _complete(review, 1):
            return []
        rd = review["rounds"]["1"]
        ratings = _ratings(rd)
        if len(ratings) < 2:
            return _stall(review, insight, f"only {len(ratings)} usable rating(s) in round 1", now)
        rd["outcome"] = tally(ratings)
        d = after_round1(ratings, math_needed(insight, rd["responses"], s), review["math"], s.math_refute_confidence)
        if d.action == "decide":
            decide(review, insight, d, 1, now)
            return []
        if d.action == "mathcheck":
            review["stage"] = "mathcheck"
            return open_tasks(review, insight, ctx)
        adopt_best(review, insight, 1, now)
        review["stage"] = "round2"
        review["rounds"]["2"] = _round(insight["version"])
        return open_tasks(review, insight, ctx)
    if stage == "round2":
        if not _complete(review, 2):
            return []
        rd = review["rounds"]["2"]
        ratings = _ratings(rd)
        if len(ratings) < 2:
            return _stall(review, insight, f"only {len(ratings)} usable rating(s) in round 2", now)
        t = rd["outcome"] = tally(ratings)
        d = after_round2(ratings)
        if d.action == "decide":
            decide(review, insight, d, 2, now)
            return []
        adopt_best(review, insight, 2, now)
        order = [p["reviewer"] for p in review["panel"] if p["reviewer"] in rd["responses"]]
        norm = {w: (M.REJECT if rd["responses"][w]["rating"] == M.ABANDON else rd["responses"][w]["rating"])
                for w in order}
        review["deliberation"] = {"minority": next(w for w in order if norm[w] != t["rating"]),
                                  "majority": next(w for w in order if norm[w] == t["rating"]),
                                  "majority_rating": t["rating"], "voters": order, "argument": None, "answer": None,
                                  "retries": {}}
        review["stage"] = "round3_minority"
        return open_tasks(review, insight, ctx)
    if stage == "round3_minority":
        review["stage"] = "round3_majority"
        return open_tasks(review, insight, ctx)
    if stage == "round3_majority":
        d = review["deliberation"]
        arg, ans = d.get("argument") or {}, d.get("answer") or {}
        minority_r2 = review["rounds"]["2"]["responses"].get(d["minority"], {}).get("rating")
        if arg.get("proposed_modification") and ans.get("accept_modification") and minority_r2 in (M.BLESS, M.MAYBE):
            adopt(review, insight, 3, d["minority"], arg["proposed_modification"], arg.get("modification_rationale"),
                  now)
        review["rounds"]["3"] = _round(insight["version"])
        review["stage"] = "round3_vote"
        return open_tasks(review, insight, ctx)
    if stage == "round3_vote":
        if not _complete(review, 3):
            return []
        votes = _ratings(review["rounds"]["3"])
        if len(votes) < 2:
            return _stall(review, insight, f"only {len(votes)} usable vote(s) in round 3", now)
        review["rounds"]["3"]["outcome"] = tally(votes)
        decide(review, insight, after_round3(votes), 3, now)
    return []


def seat_of(review: dict, task: dict) -> tuple[str, str | None]:
    """(step, reviewer holding the seat) of a review task; round-3 speakers from the deliberation."""
    step, reviewer = locate(task)
    if step in ("round3_minority", "round3_majority") and review.get("deliberation"):
        reviewer = review["deliberation"][step.split("_")[1]]
    return step, reviewer


def in_play(review: dict, step: str) -> list[str]:
    """The reviewers a step still counts on: expected in it and not dropped."""
    if step in ("round3_minority", "round3_majority"):
        return [review["deliberation"][step.split("_")[1]]]
    r = {"round1": 1, "round2": 2, "round3_vote": 3}[step]
    rd = review["rounds"][str(r)]
    expected = [p["reviewer"] for p in review["panel"]] if r == 1 else (
        [p["reviewer"] for p in review["panel"] if p["reviewer"] in review["rounds"]["1"]["responses"]] if r == 2
        else review["deliberation"]["voters"])
    return [w for w in expected if w not in rd["dropped"]]


def replace_member(review: dict, insight: dict, task: dict, candidates: list[str], why: str, ctx: Ctx) -> list | None:
    """A seat whose task waited too long on an account without room: give the seat to the first of
    ``candidates`` (accounts with room for the step) that no other seat counted in this step uses
    (distinct models; the account of a seat left out of the round is free), and
    return its new task; without one, leave the seat out of this step (recorded) when the step keeps at
    least two reviewers (a round-3 speaker: the deliberation goes on without the statement), and advance;
    else None (the step waits). Mutates both records; every change is logged in ``replacements``."""
    step, reviewer = seat_of(review, task)
    if step == "mathcheck" or reviewer is None:
        return None
    seat = next(p for p in review["panel"] if p["reviewer"] == reviewer)
    # distinct models among the seats this step counts on; a seat left out earlier frees its account
    counted = review["deliberation"]["voters"] if step.startswith("round3") else in_play(review, step)
    taken = {p["account"] for p in review["panel"] if p["reviewer"] in counted or p["reviewer"] == reviewer}
    new = next((a for a in candidates if a not in taken), None)
    entry = {"reviewer": reviewer, "step": step, "from": seat["account"], "to": new, "why": why[:300],
             "task_id": task.get("id"), "at": ctx.now}
    if new is not None:
        seat["replaced"] = (list(seat.get("replaced") or [])
                            + [{"account": seat["account"], "step": step, "at": ctx.now}])
        seat["account"] = new
        review.setdefault("replacements", []).append(entry)
        review["updated_at"] = ctx.now
        return [t for t in open_tasks(review, insight, ctx) if t["payload"].get("reviewer") == reviewer]
    if step in ("round3_minority", "round3_majority"):
        review["deliberation"]["argument" if step == "round3_minority" else "answer"] = {"dropped": True, "error": why}
    else:
        if len(in_play(review, step)) <= 2:
            return None
        review["rounds"][{"round1": "1", "round2": "2", "round3_vote": "3"}[step]]["dropped"].append(reviewer)
    review.setdefault("replacements", []).append(entry)
    review["updated_at"] = ctx.now
    return advance(review, insight, ctx)


def locate(task: dict) -> tuple[str, str | None]:
    """(step, reviewer) of a review-panel task: step is ``round1``, ``round2``, ``mathcheck``,
    ``round3_minority``, ``round3_majority`` or ``round3_vote``."""
    p = task.get("payload") or {}
    if task["kind"] == M.MATHCHECK:
        return "mathcheck", None
    if task["kind"] == M.REVIEW3:
        return f"round3_{p.get('step')}", p.get("reviewer")
    return f"round{1 if task['kind'] == M.REVIEW1 else 2}", p.get("reviewer")


def expected(review: dict, insight: dict, task: dict, ctx: Ctx) -> bool:
    """Whether ``task`` is one the review waits for right now (anything else is a stale result)."""
    step, _ = locate(task)
    if review["stage"] != step:
        return False
    return any(t["key"] == task["key"] for t in open_tasks(review, insight, ctx))


def record(review: dict, insight: dict, task: dict, parsed: dict, served: dict, ctx: Ctx) -> list[dict]:
    """Store a usable answer of an expected task and advance; returns the tasks to submit."""
    step, reviewer = locate(task)
    meta = {"mode": served.get("mode"), "backend": served.get("account"), "task_id": task["id"], "at": ctx.now}
    if step == "mathcheck":
        review["math"] = dict(parsed, **meta)
    elif step in ("round1", "round2", "round3_vote"):
        r = {"round1": 1, "round2": 2, "round3_vote": 3}[step]
        review["rounds"][str(r)]["responses"][reviewer] = dict(parsed, **meta)
        prev = review["rounds"][str(r - 1)]["responses"].get(reviewer, {}).get("rating") if r > 1 else None
        if prev and prev != parsed["rating"]:
            review["mind_changes"].append({"reviewer": reviewer, "round": r, "from": prev, "to": parsed["rating"],
                                           "reason": (parsed.get("reasoning") or parsed.get("reason") or "")[:500]})
    else:
        review["deliberation"]["argument" if step == "round3_minority" else "answer"] = dict(parsed, **meta)
    review["updated_at"] = ctx.now
    return advance(review, insight, ctx)


def fail(review: dict, insight: dict, task: dict, error: str, ctx: Ctx) -> list[dict]:
    """An expected task ended unusable (or parked/cancelled): re-ask up to ``max_retries`` times with a new
    key, then drop that reviewer from the step (recorded) and advance."""
    step, reviewer = locate(task)
    review["last_error"] = error
    review["updated_at"] = ctx.now
    if step == "mathcheck":
        review["math_retries"] = review.get("math_retries", 0) + 1
        if review["math_retries"] <= ctx.settings.max_retries:
            return open_tasks(review, insight, ctx)
        review["math"] = {"verdict": "skipped", "confidence": None, "claims": [], "reason": error}
        return advance(review, insight, ctx)
    if step in ("round3_minority", "round3_majority"):
        which = step.split("_")[1]
        d = review["deliberation"]
        d["retries"][which] = d["retries"].get(which, 0) + 1
        if d["retries"][which] <= ctx.settings.max_retries:
            return open_tasks(review, insight, ctx)
        d["argument" if which == "minority" else "answer"] = {"dropped": True, "error": error}
        return advance(review, insight, ctx)
    rd = review["rounds"][{"round1": "1", "round2": "2", "round3_vote": "3"}[step]]
    rd["retries"][reviewer] = rd["retries"].get(reviewer, 0) + 1
    if rd["retries"][reviewer] <= ctx.settings.max_retries:
        return [t for t in open_tasks(review, insight, ctx) if t["payload"].get("reviewer") == reviewer]
    rd["dropped"].append(reviewer)
    return advance(review, insight, ctx)
