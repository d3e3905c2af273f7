"""Trust: ``researcher.evaluate_source`` tasks and applying their answers.

A fetched source gets ``evaluations`` tasks (:func:`evaluation_tasks`, keys ``researcher:evaluate:<sid>``
and ``...:<sid>:<n>`` for the n-th). Each answer is recorded on the source; when all are in, the trust
rule (:mod:`.trust`) scores it from the usable ones: below ``trust_min`` the source is ``ignored``,
otherwise ``trusted`` and ``researcher.extract_findings`` (key ``researcher:extract:<sid>``) is submitted
in the same transaction. No usable evaluation at all ends the source ``evaluation_failed``.
"""
from __future__ import annotations

from typing import Any

from services.modules import prompts
from services.modules.researcher import model as M
from services.modules.researcher import parsers
from services.modules.researcher.context import EVALUATE_SOURCE, EXTRACT_FINDINGS, Env, Task, answer_text, clip, task
from shared import txn


def evaluation_tasks(env: Env, src: dict[str, Any], text: str) -> list[txn.Op]:
    """The submissions of a freshly fetched source's evaluations (``text``: its page text)."""
    n = env.settings.evaluations
    prompt = prompts.render("researcher", "evaluate_source", url=src["url"], domain=src["domain"],
                            title=src["title"] or "(none)", excerpt=clip(text, env.settings.eval_chars))
    return [txn.submit(task(EVALUATE_SOURCE, M.key_evaluate(src["id"], i),
                            {"prompt": prompt, "url": src["url"], "source_id": src["id"], "evaluator": i, "of": n}))
            for i in range(n)]


def handle_evaluation(env: Env, task: Task) -> list[txn.Op]:
    """Apply an ``evaluate_source`` answer (``ParseError`` when it is unusable)."""
    return evaluation_ops(env, task, parsers.parse_evaluation(answer_text(task)))


def unusable_evaluation(env: Env, task: Task, error: str) -> list[txn.Op]:
    """An unusable evaluation counts as one, with its error (left out of the score)."""
    return evaluation_ops(env, task, {"error": error})


def evaluation_ops(env: Env, task: Task, evaluation: dict[str, Any]) -> list[txn.Op]:
    """Record one evaluation; when all are in, score the source and propose the extraction."""
    payload = task.get("payload") or {}
    sid, n, of = payload.get("source_id", ""), int(payload.get("evaluator", 0)), int(payload.get("of", 1))
    sv, src = env.store.get(M.k_source(sid))
    if src is None or src.get("status") != "fetched":
        return []   # already decided (or unknown): nothing to change
    evaluations = dict(src.get("evaluations") or {}, **{str(n): evaluation})
    src = dict(src, evaluations=evaluations)
    ops = []
    if len(evaluations) >= of:
        usable = [e for e in evaluations.values() if "error" not in e]
        if not usable:
            src.update(status="evaluation_failed", evaluated_at=env.now,
                       error={"reason": "unusable", "message": evaluation.get("error", "no usable evaluation")})
        else:
            verdict = env.policy.score(src["domain"], usable)
            trusted = verdict.pop("trusted")
            src.update(verdict, status="trusted" if trusted else "ignored", evaluated_at=env.now)
            if trusted:
                ops.append(txn.submit(extract_task(env, src)))
            else:
                ops += content_done(env, sid)
    return [txn.put(M.k_source(sid), src, if_version=sv), *ops]


def content_done(env: Env, sid: str) -> list[txn.Op]:
    """The page text is working data once its source is decided (extracted or ignored): the findings
    and the source record keep what came of it, the disk cache the page (docs/storage.md)."""
    cv, content = env.store.get(M.k_content(sid))
    return [txn.put(M.k_content(sid), content, if_version=cv, working=True)] if content is not None else []


def extract_task(env: Env, src: dict[str, Any]) -> dict[str, Any]:
    """The ``extract_findings`` task of a trusted source (the page text and the leading questions)."""
    content = env.store.get(M.k_content(src["id"]))[1] or {}
    questions = sorted(env.records("questions/"), key=lambda q: (-q.get("priority", 5), -q.get("created", 0)))[:8]
    prompt = prompts.render("researcher", "extract_findings", url=src["url"], title=src.get("title") or "(none)",
                            questions=("\n".join(f"- ({q['type']}) {q['question']}" for q in questions)
                                       or "none yet"),
                            text=clip(content.get("text", ""), env.settings.extract_chars))
    return task(EXTRACT_FINDINGS, M.key_extract(src["id"]), {"prompt": prompt, "url": src["url"],
                                                              "source_id": src["id"]})
