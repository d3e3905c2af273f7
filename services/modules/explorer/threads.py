"""Threads: which seed to explore next, when a thread is ready to synthesise, and its turn tasks.

Pure functions of stored records (seeds, threads, exchanges) and :class:`ExplorerSettings`; the service
reads the records and commits what these return.

A thread's turns alternate explore (odd k) and critique (even k). Explore turns form the conversation
``explorer:<thread>`` (affinity keeps them on one account). Critique turns form a second conversation
``explorer:<thread>:critic`` restricted (``requires.backends``) to accounts other than the explorer's
when there are any: one conversation would pin the critic to the explorer's account, and a critic keeps
its own line of argument across turns. With ``critique_weights`` set, the critic's account is drawn once
per thread (seeded by the thread id) from those weights. That is a preference: when the preferred
accounts are blocked or backlogged the service routes the critique elsewhere (:func:`.load.route_critic`,
recorded in the thread's ``critic_on`` / ``critic_conv``), and a new thread's first turn may be
restricted to an account with a free share of threads (``explore_on``).
"""
from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Mapping
from typing import Any

from services.modules import prompts
from services.modules.explorer import model as M
from services.modules.explorer import parsers as P

TYPE_ORDER = {"question": 0, "conjecture": 1}


# --- seeds ----------------------------------------------------------------------------------------------

def focus_seeds(seeds: list[dict]) -> list[dict]:
    return [s for s in seeds if s.get("type") in TYPE_ORDER and s.get("text")]


def select_seed(seeds: list[dict], threads: list[dict], per_seed: int = 1) -> dict | None:
    """The next seed to explore: unexplored questions before unexplored conjectures, higher priority first;
    when every one has a thread, re-explore a seed with fewer than ``per_seed`` open threads: the fewest
    open first, then the highest priority (fewest threads first among equals). None when every focus seed
    has ``per_seed`` open threads. (More than one open thread per seed lets the research use more accounts
    than it has seeds; the seed's hourly budget, :mod:`.pacing`, still bounds them; and only a seed one of
    whose threads has an applied exchange gets more than one at a time.)"""
    focus = focus_seeds(seeds)
    explored = {t["seed_id"] for t in threads}
    open_: dict = {}
    for t in threads:
        if t.get("status") in M.OPEN_THREAD:
            open_[t["seed_id"]] = open_.get(t["seed_id"], 0) + 1
    fresh = [s for s in focus if s["id"] not in explored]
    if fresh:
        return min(fresh, key=lambda s: (TYPE_ORDER[s["type"]], -int(s.get("priority", 5)), s["id"]))
    counts: dict[Any, Any] = {}
    for t in threads:
        counts[t["seed_id"]] = counts.get(t["seed_id"], 0) + 1
    # parallel threads only on a seed that has given a usable answer: a seed whose answers are unusable
    # gets one thread at a time, so that seed_pause_after stops it after that many threads (pacing.py)
    proven = {t["seed_id"] for t in threads if int(t.get("exchanges") or 0) > 0}
    again = [s for s in focus if open_.get(s["id"], 0) < (max(1, per_seed) if s["id"] in proven else 1)]
    if not again:
        return None
    return min(again, key=lambda s: (open_.get(s["id"], 0), -int(s.get("priority", 5)), TYPE_ORDER[s["type"]],
                                     counts.get(s["id"], 0), s["id"]))


def new_thread(seed: dict, threads: list[dict], now: float) -> dict:
    n = 1 + sum(1 for t in threads if t["seed_id"] == seed["id"])
    return {"id": M.thread_id(seed["id"], n), "seed_id": seed["id"], "seed_type": seed["type"],
            "seed_text": seed["text"], "priority": int(seed.get("priority", 5)),
            "queued_priority": int(seed.get("priority", 5)), "status": "active",
            "exchanges": 0, "critiques": 0, "explore_account": None, "profundity": 0.0, "ready_reason": None,
            "paused_from": None, "attempt": 0, "panel": [], "panel_settled": {}, "panel_retries": {},
            "panel_closed": False,
            "synthesised_at": None, "insight_ids": [],
            "extraction_note": None, "last_error": None, "pause_reason": None, "created_at": now, "updated_at": now}


# --- readiness ------------------------------------------------------------------------------------------

def profundity(responses: list[str], settings: M.ExplorerSettings) -> float:
    """((P - D) / P + 1) / 2 clamped to 0..1 over the recent responses (P profundity-signal hits, D doubt
    hits); 0 without any profundity signal."""
    text = " ".join(responses).lower()
    p = sum(text.count(s) for s in settings.profundity_signals)
    d = sum(text.count(s) for s in settings.doubt_signals)
    if p == 0:
        return 0.0
    return max(0.0, min(1.0, ((p - d) / p + 1.0) / 2.0))


def readiness(exchanges: list[dict], settings: M.ExplorerSettings) -> str | None:
    """Why the thread is ready to synthesise, or None. Ready after ``min_exchanges`` with
    ``min_critiques``, or at ``max_exchanges``, or when the recent answers' profundity is above the
    threshold (only once a critique has been heard: a lone first answer is never "profound" enough)."""
    n = len(exchanges)
    critiques = sum(1 for e in exchanges if e["role"] == "critique")
    if n >= settings.max_exchanges:
        return f"{n} exchanges (max {settings.max_exchanges})"
    if n >= settings.min_exchanges and critiques >= settings.min_critiques:
        return f"{n} exchanges with {critiques} critiques"
    recent = [e.get("response", "") for e in exchanges[-settings.profundity_window:]]
    score = profundity(recent, settings)
    if critiques >= 1 and score > settings.profundity_threshold:
        return f"profundity {score:.2f} > {settings.profundity_threshold:g}"
    return None


# --- turn tasks -----------------------------------------------------------------------------------------

def axioms_text(seeds: list[dict]) -> str:
    axioms = sorted((s for s in seeds if s.get("type") == "axiom"), key=lambda s: (-int(s.get("priority", 5)), s["id"]))
    return "\n".join(f"- [{s['id']}] {s['text']}" for s in axioms) or "(none given)"


def exchanges_text(exchanges: list[dict], last: int) -> str:
    if not exchanges:
        return "(this is the first turn)"
    return "\n\n".join(exchange_block(e) for e in exchanges[-last:])


def exchange_block(e: dict) -> str:
    """How a prompt quotes an exchange (and how a stored prompt refers back to it, :func:`prompt_ref`)."""
    label = "EXPLORATION" if e["role"] == "explore" else "CRITIQUE"
    return f"=== {label} (turn {e['turn']}, {e.get('backend') or '?'}) ===\n{e.get('response', '')}"


# a quoted exchange in a stored prompt: RS "exchange" turn RS (RS, U+001E, does not occur in prompt text)
_REF = "\x1eexchange:{}\x1e"
_REF_RE = re.compile("\x1eexchange:(\\d+)\x1e")


def prompt_ref(prompt: str, previous: list[dict]) -> str | None:
    """``prompt`` with each exchange it quotes replaced by a reference to it (an exchange record then
    keeps its prompt at the size of its template, axioms and seed); None when that would not give the
    prompt back exactly (the caller keeps the prompt whole)."""
    if "\x1e" in prompt:
        return None
    ref = prompt
    for e in previous:
        block = exchange_block(e)
        if block in ref:
            ref = ref.replace(block, _REF.format(int(e["turn"])))
    return ref if resolve_prompt(ref, {int(e["turn"]): e for e in previous}) == prompt else None


def resolve_prompt(ref: str, by_turn: dict[int, dict]) -> str | None:
    """The prompt a :func:`prompt_ref` stands for, given the thread's exchanges by turn; None when one
    it refers to is missing."""
    try:
        return _REF_RE.sub(lambda m: exchange_block(by_turn[int(m.group(1))]), ref)
    except KeyError:
        return None


def critic_accounts(thread: dict, accounts: list[str], settings: M.ExplorerSettings) -> list[str]:
    """Accounts the critic may use: not the explorer's (when another exists); with weights, one account
    drawn deterministically per thread. The account that served the latest critique (``critic_account``,
    the one holding the critic's conversation) always stays allowed: after the broker handed the explorer's
    conversation to that account, "not the explorer's" alone would exclude it and the turn could run nowhere."""
    others = [a for a in accounts if a != thread.get("explore_account")] or list(accounts)
    weights = {a: float(settings.critique_weights.get(a, 0)) for a in others}
    if settings.critique_weights and any(w > 0 for w in weights.values()):
        rng = random.Random(int.from_bytes(hashlib.sha256(thread["id"].encode()).digest()[:8], "big"))
        names = [a for a in others if weights[a] > 0]
        allowed = [rng.choices(names, [weights[a] for a in names])[0]]
    else:
        allowed = others if len(others) < len(accounts) else []
    held = thread.get("critic_account")
    if allowed and held and held not in allowed:
        allowed.append(held)
    return allowed


def turn_task(thread: dict, k: int, seeds: list[dict], exchanges: list[dict], accounts: list[str],
              settings: M.ExplorerSettings) -> dict:
    """The task of turn ``k`` (explore when odd, critique when even), deterministic in stored state so
    that re-proposing it is harmless."""
    tid = thread["id"]
    retry = int(thread.get("attempt", 0))
    role = "explore" if k % 2 == 1 else "critique"
    values = {"axioms": axioms_text(seeds), "seed_type": thread["seed_type"].upper(), "seed_text": thread["seed_text"],
              "exchanges": exchanges_text(exchanges, settings.context_exchanges), "turn": k}
    payload = {"thread_id": tid, "turn": k, "prompt": prompts.render(M.MODULE, role, **values)}
    if retry:
        payload["retry"] = retry
    if role == "explore":
        requires: dict[str, Any] = {"conversation": M.conversation(tid)}
        if k == 1 and thread.get("explore_on"):
            requires["backends"] = list(thread["explore_on"])   # an account with a free share (load.py)
        elif settings.explore_accounts:
            requires["backends"] = list(settings.explore_accounts)
        recent = [e.get("response", "") for e in exchanges[-settings.profundity_window:]]
        if len(exchanges) >= settings.min_exchanges and profundity(recent, settings) > settings.profundity_threshold:
            mode, fallback = settings.deep_for("explore")
            if mode == "deep":
                requires.update(mode="deep", deep_fallback=fallback)
        kind = M.EXPLORE
    else:
        requires = {"conversation": M.conversation(tid, True, int(thread.get("critic_conv") or 0))}
        allowed = list(thread.get("critic_on") or []) or critic_accounts(thread, accounts, settings)
        if allowed:
            requires["backends"] = allowed
        kind = M.CRITIQUE
    return M.task_spec(M.thread_turn_key(thread, k), kind, payload, thread.get("priority"), requires)


def exchange_record(thread: dict, k: int, parsed: dict, task: Mapping[str, Any], served: dict, now: float,
                    previous: list[dict] | None = None) -> dict:
    """The stored exchange: each text once (docs/storage.md).

    The prompt quotes the thread's recent exchanges (``previous``), which are stored already: it is kept
    as ``prompt_ref``, with each quoted exchange replaced by a reference (:func:`prompt_ref`; read it with
    :func:`exchange_prompt`); a copy made an exchange record several times its answer. A prompt that
    cannot be referenced exactly is kept whole. No ``sections`` when parsing the cleaned ``response``
    gives them back (it is built from them: always, short of a bullet that reads like a tag);
    :func:`exchange_sections` reads them."""
    record = {"thread_id": thread["id"], "turn": k, "role": "explore" if k % 2 == 1 else "critique",
              "backend": served.get("account"), "mode": served.get("mode"),
              "mode_requested": (task.get("requires") or {}).get("mode", "standard"),
              "response": parsed["response"], "task_id": task["id"], "at": now}
    prompt = (task.get("payload") or {}).get("prompt", "")
    ref = prompt_ref(prompt, previous or [])
    if ref is None:
        record["prompt"] = prompt
    else:
        record["prompt_ref"] = ref
    if _reparsed_sections(record) != parsed["sections"]:
        record["sections"] = parsed["sections"]
    return record


def exchange_prompt(exchange: dict, exchanges: list[dict]) -> str | None:
    """An exchange's prompt, given its thread's exchanges: kept whole (older records, or a prompt that
    could not be referenced), or resolved from ``prompt_ref``; None when neither is there."""
    if "prompt" in exchange:
        return exchange["prompt"]
    if "prompt_ref" in exchange:
        return resolve_prompt(exchange["prompt_ref"], {int(e["turn"]): e for e in exchanges})
    return None


def exchange_sections(exchange: dict) -> dict | None:
    """An exchange's ``{NAME: [bullet]}``: stored (older records, or when the response does not give
    them back) or parsed from its response; None when neither is there."""
    if "sections" in exchange:
        return exchange["sections"]
    return _reparsed_sections(exchange)


def _reparsed_sections(exchange: dict) -> dict | None:
    parse = P.parse_explore if exchange.get("role") == "explore" else P.parse_critique
    try:
        return parse(exchange.get("response") or "")["sections"]
    except P.ParseError:
        return None
