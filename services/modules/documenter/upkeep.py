"""Keeping the document right: author comments (first) and section reviews (about 30% of the work).

Task kinds, keys and payloads::

    documenter.address_comment   documenter.address_comment/<comment id>/<attempt>
                                 {comment_id, section_id, attempt, topic}
    documenter.review_section    documenter.review_section/<seq>   {section_id, seq}

**Comments** (``comments/<cid>``, written by ``fanoctl comments add``)::

    {"id", "section", "text", "quote": the passage it is about | None, "created",
     "status": "open" | "addressing" | "resolved" | "needs_human",
     "attempts": tasks proposed, "failures": n, "base_rev": the section revision the task was shown,
     "task_key", "understood", "resolution", "changed": bool, "version": document version | None,
     "resolved_at", "last_error", "history"}

The oldest open comment of each section is addressed (one per section at a time, so two revisions of
one section never race). A revision is APPLIED as a new document version and the comment is marked
resolved with that version — never deleted (the original only removed the comment marker and threw
the revision away). ``UNCHANGED`` resolves it without a version. If the section changed while the
model worked, the answer is not applied and the comment is addressed again on the current text. After
``comment_max_failures`` (3) unusable answers it waits for a human.

**Section reviews** (``review/state`` = ``{"seq", "section": sid | None, "base_rev", "key",
"started_at", "last"}``): one at a time, never-reviewed sections first (oldest first), then those
whose last review is older than ``section_stale_days`` (7 days), oldest review first. A review is proposed while
reviews are at most ``review_share`` (0.3) of (plans + reviews) in ``stats/mix``, or whenever there
is nothing else to do. Comment tasks carry ``attrs.comment_boost`` (``comment_boost``), so an author's
comment goes before research work, and carry ``requires.share = "adhoc"``: they may also draw on the
operator's ``adhoc`` quota reserve, so a window the research has used up does not hold them.
CONFIRMED marks the section reviewed and stable; REVISE applies the
revised section as a new version.

Both limits are ``[modules.documenter]`` settings (:mod:`.settings`); the constants below are their defaults.
"""
from __future__ import annotations

from services.modules import pace
from services.modules.documenter import context as C
from services.modules.documenter import model as M
from services.modules.documenter.parsers import parse_comment, parse_review
from services.modules.documenter.planning import bump_mix
from services.modules.documenter.settings import Settings
from shared import txn

MAX_FAILURES = Settings.comment_max_failures   # defaults; [modules.documenter] comment_max_failures
STALE = Settings().section_stale               # and section_stale_days (in world seconds here)
RETRY = 3600.0            # a section whose review failed is not tried again for this long
SHARE = 0.3               # default of [modules.documenter] review_share
# an author waits for a comment: besides the documenter's share of a window it may draw on the operator's
# `adhoc` reserve (shared/quota.py charge_modules), so it is not queued behind the research's used-up windows
COMMENT_REQUIRES = {"share": "adhoc"}


# --- comments -------------------------------------------------------------------------------------------

def read_comments(env: C.Env) -> list[tuple[int, dict]]:
    """Every comment (version, record), read once per Env (:meth:`.context.Env.once`)."""
    return list(env.once("comments", lambda: [(v, c) for _, v, c in env.store.scan("comments/")
                                              if isinstance(c, dict)]))


def propose_comments(env: C.Env) -> list[list[dict]]:
    """One list of ops (a transaction) per comment to address now."""
    comments = read_comments(env)
    busy = {c.get("section") for _, c in comments if c.get("status") == "addressing"}
    doc = None
    out = []
    for cv, c in sorted(comments, key=lambda vc: vc[1].get("id", "")):
        if c.get("status") != "open" or c.get("section") in busy:
            continue
        doc = doc or M.read_doc(env.store)
        sid = c.get("section")
        c = dict(c)
        if sid not in doc.sections:
            c.update(status="needs_human", last_error=f"section {sid} is not in the document", updated=env.now)
            M.note(c, env.now, "section missing")
            out.append([txn.put(M.comment_key(c["id"]), c, if_version=cv)])
            continue
        sec = doc.sections[sid][1]
        attempt = int(c.get("attempts") or 0) + 1
        key = C.task_key(C.ADDRESS_COMMENT, c["id"], attempt)
        prompt = C.render("address_comment", outline=C.outline(doc), section_id=sid, title=sec.get("title", ""),
                          section=sec.get("text", ""), comment=c.get("text", ""),
                          passage=f'"{c["quote"]}"' if c.get("quote") else "the whole section")
        payload = {"prompt": prompt, "comment_id": c["id"], "section_id": sid, "attempt": attempt,
                   "topic": " ".join(str(c.get("text", "")).split())[:80]}
        c.update(status="addressing", attempts=attempt, base_rev=sec.get("rev"), task_key=key, updated=env.now)
        out.append([txn.put(M.comment_key(c["id"]), c, if_version=cv),
                    txn.submit(C.task(C.ADDRESS_COMMENT, key, payload, COMMENT_REQUIRES, env.hints(
                        env.settings.section_priority, comment_boost=env.settings.comment_boost)))])
        busy.add(sid)
    return out


def _current_comment(env: C.Env, task: dict):
    p = task["payload"]
    cv, c = env.store.get(M.comment_key(str(p.get("comment_id"))))
    if not isinstance(c, dict) or c.get("status") != "addressing" or c.get("attempts") != p.get("attempt"):
        return None
    return cv, dict(c)


def handle_comment(env: C.Env, task: dict) -> list[dict]:
    cur = _current_comment(env, task)
    if cur is None:
        return []
    cv, c = cur
    ans = parse_comment(C.answer_text(task))
    sid = c["section"]
    doc = M.read_doc(env.store)
    sec = doc.sections.get(sid, (0, None))[1]
    c.update(understood=ans.understood, resolution=ans.resolution, updated=env.now)
    if sec is None:
        c.update(status="needs_human", last_error=f"section {sid} was removed while the comment was addressed")
        M.note(c, env.now, "section missing")
        return [txn.put(M.comment_key(c["id"]), c, if_version=cv)]
    if sec.get("rev") != c.get("base_rev"):
        c["status"] = "open"   # the answer is about an older text: address it again on the current one
        M.note(c, env.now, "section changed meanwhile", rev=sec.get("rev"))
        return [txn.put(M.comment_key(c["id"]), c, if_version=cv)]
    if ans.revised is None:
        c.update(status="resolved", changed=False, version=None, resolved_at=env.now)
        M.note(c, env.now, "resolved unchanged")
        return [txn.put(M.comment_key(c["id"]), c, if_version=cv)]
    ops, version = M.commit(doc, {sid: {"title": ans.title or sec.get("title"), "text": ans.revised,
                                        "establishes": sec.get("establishes", []),
                                        "requires": sec.get("requires", [])}},
                            {"kind": "comment", "ref": c["id"], "task": task["id"]},
                            f"comment {c['id']} on {sid}: {(ans.resolution or 'revised')[:80]}", env.now)
    c.update(status="resolved", changed=True, version=version, resolved_at=env.now)
    M.note(c, env.now, "resolved", version=version)
    return ops + [txn.put(M.comment_key(c["id"]), c, if_version=cv)]


def unusable_comment(env: C.Env, task: dict, error: str) -> list[dict]:
    cur = _current_comment(env, task)
    if cur is None:
        return []
    cv, c = cur
    c["failures"] = int(c.get("failures") or 0) + 1
    c.update(status="needs_human" if c["failures"] >= env.settings.comment_max_failures else "open",
             last_error=error[:500],
             updated=env.now)
    M.note(c, env.now, "failed", error=error[:300], failures=c["failures"])
    return [txn.put(M.comment_key(c["id"]), c, if_version=cv)]


# --- section reviews ------------------------------------------------------------------------------------

def review_state(env: C.Env) -> tuple[int, dict]:
    v, rs = env.store.get(M.REVIEW_STATE)
    return v, (rs if isinstance(rs, dict) else {"seq": 1, "section": None})


def due_sections(doc: M.Doc, now: float, stale_after: float = STALE) -> list[M.Section]:
    """Sections to review, most urgent first: never reviewed (oldest first), then those last reviewed
    ``stale_after`` world seconds ago or more (oldest review first)."""
    fresh, stale = [], []
    for sec in doc.ordered():
        tried = sec.get("review_attempted_at")
        if isinstance(tried, (int, float)) and now - tried < RETRY:
            continue
        at = sec.get("reviewed_at")
        if not isinstance(at, (int, float)):
            fresh.append(sec)
        elif now - at >= stale_after:
            stale.append(sec)
    fresh.sort(key=lambda s: (s.get("created") or 0, s["id"]))
    stale.sort(key=lambda s: (s["reviewed_at"], s["id"]))
    return fresh + stale


def review_allowed(mix: dict | None, other_work: bool, share: float = SHARE) -> bool:
    if not other_work:
        return True
    mix = mix if isinstance(mix, dict) else {}
    reviews, plans = int(mix.get("reviews", 0)), int(mix.get("plans", 0))
    return reviews <= share * (reviews + plans)


def propose_review(env: C.Env, other_work: bool) -> list[dict]:
    rv, rs = review_state(env)
    if rs.get("section") or pace.paused(rs):
        return []
    if not review_allowed(env.store.get(M.MIX)[1], other_work, env.settings.review_share):
        return []
    doc = M.read_doc(env.store)
    due = due_sections(doc, env.now, env.settings.section_stale)
    if not due:
        return []
    sec, seq = due[0], int(rs.get("seq", 1))
    prompt = C.render("review_section", outline=C.outline(doc), concepts=C.concepts(doc), section_id=sec["id"],
                      title=sec.get("title", ""), section=sec.get("text", ""), written=C.when(sec.get("created")),
                      establishes=", ".join(sec.get("establishes") or []) or "none",
                      requires=", ".join(sec.get("requires") or []) or "none")
    key = C.task_key(C.REVIEW_SECTION, seq)
    payload = {"prompt": prompt, "section_id": sec["id"], "seq": seq}
    new = {**rs, "seq": seq, "section": sec["id"], "base_rev": sec.get("rev"), "key": key, "started_at": env.now}
    return [txn.put(M.REVIEW_STATE, new, if_version=rv),
            txn.submit(C.task(C.REVIEW_SECTION, key, payload, None, env.hints(env.settings.section_priority)))]


def _current_review(env: C.Env, task: dict):
    rv, rs = review_state(env)
    p = task["payload"]
    if not rs.get("section") or rs.get("section") != p.get("section_id") or rs.get("seq") != p.get("seq"):
        return None
    return rv, rs


def handle_review(env: C.Env, task: dict) -> list[dict]:
    cur = _current_review(env, task)
    if cur is None:
        return []
    rv, rs = cur
    review = parse_review(C.answer_text(task))
    sid = rs["section"]
    doc = M.read_doc(env.store)
    sv, sec = doc.sections.get(sid, (0, None))
    last = {"seq": rs["seq"], "section": sid, "decision": review.decision, "at": env.now,
            "notes": (review.notes or "")[:500]}
    ops = []
    if sec is None or sec.get("rev") != rs.get("base_rev"):
        last["outcome"] = "the section changed or was removed meanwhile; not applied"
    elif review.decision == "CONFIRMED":
        last["outcome"] = "confirmed"
        ops.append(txn.put(M.section_key(sid), {**sec, "reviewed_at": env.now, "status": "stable",
                                              "review_count": int(sec.get("review_count") or 0) + 1}, if_version=sv))
    else:
        ops, version = M.commit(doc, {sid: {"title": review.title or sec.get("title"), "text": review.revised,
                                            "establishes": sec.get("establishes", []),
                                            "requires": sec.get("requires", []), "reviewed_at": env.now,
                                            "review_count": int(sec.get("review_count") or 0) + 1}},
                                {"kind": "review", "ref": sid, "task": task["id"]},
                                f"review of {sid}: revised" + (f" ({review.notes[:60]})" if review.notes else ""),
                                env.now)
        last["outcome"] = f"revised (version {version})"
    return [txn.put(M.REVIEW_STATE, {"seq": rs["seq"] + 1, "section": None, "last": last}, if_version=rv),
            bump_mix(env, "reviews")] + ops


def unusable_review(env: C.Env, task: dict, error: str) -> list[dict]:
    cur = _current_review(env, task)
    if cur is None:
        return []
    rv, rs = cur
    sid = rs["section"]
    last = {"seq": rs["seq"], "section": sid, "decision": None, "error": error[:500], "at": env.now}
    # unusable reviews in a row pause section reviews (services/modules/pace.py) until document resume
    streak = pace.failed({k: rs[k] for k in pace.STREAK if k in rs}, error, env.settings.pause_after,
                         "section reviews", "fanoctl document resume", env.now)
    ops = [txn.put(M.REVIEW_STATE, {**streak, "seq": rs["seq"] + 1, "section": None, "last": last}, if_version=rv),
           bump_mix(env, "reviews")]
    sv, sec = env.store.get(M.section_key(sid))
    if isinstance(sec, dict):
        ops.append(txn.put(M.section_key(sid), {**sec, "review_attempted_at": env.now}, if_version=sv))
    return ops
