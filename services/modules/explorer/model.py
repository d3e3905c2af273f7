"""Explorer entities, their key layout in the broker's ``explorer`` namespace, task keys and settings.

Other modules and the CLI read these records; only the explorer module and ``fanoctl`` (human overrides,
always with ``if_version``) write them. Times are world-clock epoch seconds.

Key layout (namespace ``explorer``)::

    seeds/<seed_id>                 Seed
    threads/<thread_id>             Thread
    exchanges/<thread_id>/<k:03d>   Exchange k (1-based; odd k explore, even k critique)
    syntheses/<thread_id>           Synthesis
    proposals/<thread_id>/<account> one panel member's extraction proposals (working data once consolidated)
    insights/<insight_id>           Insight            <- the documenter scans this prefix
    reviews/<insight_id>            Review
    errors/<task_id:012d>           unusable answer / failed task (written by the module framework; working data)
    pace/<seed_id>                  the seed's pause and hourly task budget (:mod:`.pacing`)

Working data is put with ``working`` and deleted by the broker ``broker.working_retention`` after its last
put (docs/storage.md); everything else here is the research record, kept forever.

Ids: seed ids match ``[a-z0-9][a-z0-9_-]{0,47}``; thread id ``<seed_id>.t<n>`` (n-th thread of the seed);
insight id ``<thread_id>.i<n>`` (n-th consolidated insight of the thread).

**Seed** ``{"id", "type": "axiom"|"conjecture"|"question", "text", "priority": 1-10, "tags": [str],
"images": [str], "source": str, "created_at", "updated_at"}``

**Thread** ``{"id", "seed_id", "seed_type", "seed_text", "priority", "queued_priority": the priority its
live tasks were last aligned with (see :mod:`.priorities`), "status": "active"|"ready"|"synthesised"|
"extracted"|"paused"|"archived", "paused_from": the step a paused/archived thread is held in |None,
"exchanges": int (applied turns), "critiques": int, "explore_account": str|None (the account holding the
explore conversation: the one that served its latest explore turn, so it follows a hand-off),
"critic_account": str|None (the one that served the latest critique in the current critic conversation),
"critic_conv": int (the critic conversation's generation, :mod:`.load`), "critic_on": [account] (the
accounts the next critique may run on; [] = the preference of :func:`.threads.critic_accounts`),
"explore_on": [account] (the accounts the first explore turn may run on; [] = any, :mod:`.load`), "profundity": float, "ready_reason": str|None, "attempt": int (re-asks of the current
step), "panel": [account], "panel_settled": {account: "done"|"failed"|"skipped"}, "panel_retries": {account: n},
"panel_skipped": {account: task id} (members blocked past ``member_patience``, :mod:`.panels`),
"panel_closed": bool (consolidation proposed), "synthesised_at", "insight_ids": [str], "extraction_note",
"last_error": str|None, "pause_reason": str|None, "created_at", "updated_at"}``

**Exchange** ``{"thread_id", "turn": k, "role": "explore"|"critique", "backend": account|None, "mode":
"standard"|"deep"|None (None: the broker did not say), "mode_requested", "prompt_ref" (the prompt with
each exchange it quotes replaced by a reference; or "prompt", whole, when that could not be done exactly,
and in records written before), "response" (cleaned), "sections": {NAME: [bullet]} (only when parsing
``response`` does not give them back), "task_id", "at"}``. Read the prompt and the sections with
:func:`.threads.exchange_prompt` and :func:`.threads.exchange_sections`.

**Synthesis** ``{"thread_id", "title", "summary", "content", "backend", "mode", "task_id", "at"}``

**Proposals** ``{"thread_id", "account", "blocks": [{"text", "domains", "scores": {"impact", "intuition",
"surprise"}, "note"}], "backend", "task_id", "at"}``

Conversations (``requires.conversation``): ``explorer:<thread_id>`` for explore turns and
``explorer:<thread_id>:critic`` for critique turns (see :mod:`.threads`).

**Insight** (what the documenter reads; ``status == "blessed"`` means ready to incorporate; other modules
only read these records)::

    {"id", "text" (current wording), "version": int, "versions": [{"version", "text", "by", "round", "at"}],
     "tags": [str], "confidence": "high"|"medium"|"low"|None, "thread_id", "seed_id",
     "proposed_by": [str], "depends_on": [blessed insight ids], "unresolved_depends": [str],
     "status": "pending"|"blessed"|"interesting"|"rejected"|"duplicate", "disputed": bool,
     "priority": 1-10, "queued_priority": 1-10 (live tasks aligned with it, :mod:`.priorities`),
     "duplicate_of": id|None,
     "dedup": {"verdict": "new"|"candidates"|"duplicate", "candidates": [[id, score]], "retries": int,
               "llm": {"duplicate", "of", "confidence", "reason", "task_id"}|{"unresolved": true, ...}|None},
     "outcome": {"rating", "round", "reason", "disputed"}|None, "decided_by": "panel"|"human"|None,
     "overrides": [{"from", "to", "at", "note"}], "blessed_at": float|None, "last_error": str|None,
     "created_at", "updated_at", "task_id" (the consolidation task)}

Corpus ids in ``dedup.candidates`` / ``duplicate_of``: an insight id, ``seed:<seed id>`` or
``section:<documenter section id>``.

**Review** (one per insight that entered the panel; see :mod:`.review` for the stages)::

    {"insight_id", "panel": [{"reviewer", "account", "replaced"?: [{"account", "step", "at"}]}], "stage": "round1"|"mathcheck"|"round2"|
     "round3_minority"|"round3_majority"|"round3_vote"|"done"|"stalled"|"stopped",
     "rounds": {"1"|"2"|"3": {"version", "responses": {reviewer: response}, "retries": {reviewer: n},
                              "dropped": [reviewer], "outcome": {"kind", "rating", "counts"}|None}},
     "deliberation": {"minority", "majority", "majority_rating", "voters": [reviewer],
                      "argument": {...}|None, "answer": {...}|None, "retries": {"minority"|"majority": n}}|None,
     "math": {"verdict", "confidence", "claims": [...], "task_id", ...}|{"verdict": "skipped", "reason"}|None,
     "math_retries": int, "mind_changes": [{"reviewer", "round", "from", "to", "reason"}],
     "rewordings": [{"round", "by", "from_version", "to_version", "text", "rationale"}],
     "outcome": {"rating", "status", "round", "reason", "disputed"}|None, "last_error", "created_at", "updated_at",
     "replacements"?: [{"reviewer", "step", "from", "to": account|None (left out of the step), "why", "task_id", "at"}]}

A seat's ``account`` is the account serving it now; ``replaced`` lists the ones it had (a seat blocked past
``member_patience`` moves to an account no other seat counted in the step uses,
:func:`.review.replace_member`); its task keys
then carry ``@<account>``.

A review response: ``{"rating", "mode", "backend", "task_id", "at", ...the parsed fields of its kind}``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, fields

from shared.config import ConfigError

from services.modules import prompts

MODULE = "explorer"

# task kinds: exactly the names the simulated provider answers (services/backends/sim_answers.py)
EXPLORE = "explorer.explore"
CRITIQUE = "explorer.critique"
SYNTHESIS = "explorer.synthesis"
EXTRACT = "explorer.extract"
CONSOLIDATE = "explorer.consolidate"
DEDUP = "explorer.dedup"
REVIEW1 = "explorer.review1"
MATHCHECK = "explorer.mathcheck"
REVIEW2 = "explorer.review2"
REVIEW3 = "explorer.review3"
KINDS = (EXPLORE, CRITIQUE, SYNTHESIS, EXTRACT, CONSOLIDATE, DEDUP, REVIEW1, MATHCHECK, REVIEW2, REVIEW3)

SEED_TYPES = ("axiom", "conjecture", "question")
THREAD_STATUSES = ("active", "ready", "synthesised", "extracted", "paused", "archived")
OPEN_THREAD = ("active", "ready", "synthesised")   # counted against max_active_threads
INSIGHT_STATUSES = ("pending", "blessed", "interesting", "rejected", "duplicate")
BLESS, MAYBE, REJECT, ABANDON = "⚡", "?", "✗", "ABANDON"
STATUS_OF = {BLESS: "blessed", MAYBE: "interesting", REJECT: "rejected", ABANDON: "rejected"}
RATING_OF = {"blessed": BLESS, "interesting": MAYBE, "rejected": REJECT}

SEED_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,47}$")


# --- keys -------------------------------------------------------------------------------------------------

def seed_key(sid: str) -> str:
    return f"seeds/{sid}"


def thread_key(tid: str) -> str:
    return f"threads/{tid}"


def exchange_key(tid: str, k: int) -> str:
    return f"exchanges/{tid}/{k:03d}"


def synthesis_key(tid: str) -> str:
    return f"syntheses/{tid}"


def proposal_key(tid: str, account: str) -> str:
    return f"proposals/{tid}/{account}"


def insight_key(iid: str) -> str:
    return f"insights/{iid}"


def review_key(iid: str) -> str:
    return f"reviews/{iid}"


def thread_id(seed_id: str, n: int) -> str:
    return f"{seed_id}.t{n}"


def insight_id(tid: str, n: int) -> str:
    return f"{tid}.i{n}"


def conversation(tid: str, critic: bool = False, gen: int = 0) -> str:
    """Explore turns of a thread are one conversation; critiques are a second one (the critic), so that
    conversation affinity does not pin the critic to the explorer's account. A critic moved off a busy or
    blocked account (:mod:`.load`) starts critic conversation ``gen`` (``explorer:<t>:critic.<gen>``)."""
    return f"explorer:{tid}" + (":critic" if critic else "") + (f".{gen}" if critic and gen else "")


# --- task keys (permanent idempotency keys; a retry after an unusable answer gets a new one) ------------

def with_retry(key: str, retry: int) -> str:
    return f"{key}:retry{retry}" if retry else key


def turn_task_key(tid: str, k: int, retry: int = 0) -> str:
    return with_retry(f"explorer:{tid}:turn:{k}", retry)


def thread_task_key(tid: str, step: str, retry: int = 0) -> str:
    """``step``: ``synthesis``, ``consolidate`` or ``extract:<account>``."""
    return with_retry(f"explorer:{tid}:{step}", retry)


def insight_task_key(iid: str, step: str, retry: int = 0) -> str:
    """``step``: ``dedup``, ``mathcheck``, ``review1:<reviewer>``, ``review2:<reviewer>``,
    ``review3:minority``, ``review3:majority``, ``review3:vote:<reviewer>``."""
    return with_retry(f"explorer:{iid}:{step}", retry)


def task_spec(key: str, kind: str, payload: dict, priority, requires: dict | None = None) -> dict:
    """A task to propose. ``priority`` is the seed/insight priority: it goes to ``attrs.seed_priority``
    (the scheduler adds the kind's base itself; the task's own ``priority`` stays at the default).

    A re-ask after an unusable answer (``payload.retry = n``) asks differently: the prompt ends with the
    ``retry`` template (prompts/explorer/retry.md), which says so and why. The request then differs from
    the one whose answer was unusable, so no provider can hand back the stored exchange as a new answer,
    and each re-ask differs from the one before."""
    retry = payload.get("retry")
    if retry and isinstance(payload.get("prompt"), str):
        payload = dict(payload, prompt=payload["prompt"].rstrip("\n") + "\n\n"
                       + prompts.render(MODULE, "retry", retry=retry).strip() + "\n")
    return {"key": key, "kind": kind, "payload": payload, "requires": dict(requires or {}),
            "attrs": {"seed_priority": int(priority or 5)}}


# --- settings -------------------------------------------------------------------------------------------

PROFUNDITY_SIGNALS = ("naturally follows", "inevitable", "this explains", "elegant", "necessarily",
                      "deep reason", "nothing was chosen")
DOUBT_SIGNALS = ("ad hoc", "forcing", "arbitrary", "but wait", "numerology", "coincidence")   # substrings: no overlaps
MATH_TAGS = ("proof", "theorem", "lemma", "corollary", "formula", "equation", "derivation", "group",
             "isomorphism", "automorphism", "geometry", "projective", "incidence", "arithmetic", "number_theory")
MATH_PATTERNS = (r"\d+\s*[-+×x*/]\s*\d+\s*=\s*\d+", r"\bexactly \d+", r"\bproves?\b", r"\btheorem\b",
                 r"\bif and only if\b", r"\bisomorphic\b", r"\bgroup of order \d+", r"\b(?:PSL|PGL|GL|SL|SO|SU)\(",
                 r"\b(?:fano|klein|heawood)\b", r"\|\s*\w+\s*\|\s*=\s*\d+", r"\bcyclic group\b", r"\bpermutation",
                 r"\bcollineation", r"\bautomorphism", r"\bsymmetr(?:y|ies)\b", r"\bincidence\b")
MATH_REQUESTS = ("verify the math", "check the arithmetic", "proof needed", "needs a proof", "verify the claim")


@dataclass(frozen=True)
class ExplorerSettings:
    """Explorer knobs (docs/research.md § Explorer settings). Proposed home: a ``[modules.explorer]`` table in fano.toml;
    until shared.config parses ``[modules]`` :func:`load_settings` reads that table itself.

    ``deep``: per kind, ``[mode, fallback]``: the mode asked for and whether the kind may run in standard
    mode when no deep quota is free (an explicit, recorded choice: never a silent downgrade). Explore
    asks for deep only after ``min_exchanges`` with profundity above the threshold.

    Following capacity (which accounts have room is read from the broker, :mod:`services.modules.capacity`):

    * ``max_active_threads`` counts the open threads that can move now. A thread whose every waiting task
      can only run on accounts without room for it (its conversation's account out of quota, cooling
      down or paused) does not count, so it never keeps a new seed off the accounts that have room; at
      most ``max_waiting_threads`` such threads are held beside the active ones (then no new thread starts).
    * Work for every account with room (:mod:`.load`): the open threads that can move may number
      ``threads_per_account`` per explorer account with standard room (at least ``max_active_threads``,
      at most ``max_threads``), one more per account the scheduler reports idle while the waiting work is
      pinned elsewhere; a new thread's first turn goes to an account exploring fewer than its share. Once
      every focus seed has a thread, a seed may have ``open_threads_per_seed`` open threads at once. A
      critique prefers an account other than the explorer's, but goes to any account with room and at
      most ``busy_backlog`` explorer tasks pinned to it when the preferred ones have none. A thread whose
      waiting tasks can only run on backlogged accounts (more than ``busy_backlog`` pinned) counts as
      waiting (``max_waiting_threads``), not active.
    * A new extraction panel is the accounts with standard room now or within ``member_patience``; a new
      review panel is ``reviewers`` distinct accounts among those (:meth:`StateReader.review_panel`).
    * A panel member (an extractor, a reviewer in any round, a round-3 speaker or voter) whose task has
      waited ``member_patience`` world seconds while its account has no room for the mode it needs is
      replaced by an account with room that no other seat counted in the step uses; without one it is left out of that step
      (recorded), as long as two reviewers (one extractor) stay in play; else the step waits
      (:mod:`.panels`).
    """

    max_active_threads: int = 3           # open threads that can move now (see below)
    max_waiting_threads: int = 3          # more open threads, each waiting only on an account without room
    threads_per_account: int = 2          # open threads per explorer account with room (load.py); 0 = off
    max_threads: int = 12                 # open threads that can move, at most, however many accounts have room
    open_threads_per_seed: int = 3       # open threads of one seed at once (re-exploration in parallel)
    busy_backlog: int = 2                 # explorer tasks pinned to an account beyond which it is backlogged (load.py)
    min_exchanges: int = 4
    min_critiques: int = 2
    max_exchanges: int = 12
    profundity_threshold: float = 0.6
    profundity_window: int = 4            # recent responses scored
    profundity_signals: tuple = PROFUNDITY_SIGNALS
    doubt_signals: tuple = DOUBT_SIGNALS
    context_exchanges: int = 6            # exchanges quoted in explore / critique prompts
    synthesis_exchanges: int = 10
    extraction_exchanges: int = 20
    max_proposals: int = 15               # per panel member
    max_final_insights: int = 10
    explore_accounts: tuple = ()          # accounts allowed to explore; empty = all
    critique_weights: dict = field(default_factory=dict)   # account -> weight; empty = any but the explorer's
    panel_accounts: tuple = ()            # extraction panel and reviewers; empty = all configured accounts
    reviewers: int = 3
    math_check: bool = True
    math_refute_confidence: float = 0.8
    math_tags: tuple = MATH_TAGS
    max_retries: int = 2                  # re-asks (with a new key) after an unusable answer or a parked task
    seed_pause_after: int = 2             # threads of a seed paused by unusable answers that pause the seed; 0 = never
    max_threads_per_seed_hour: int = 30   # new threads of one seed per hour (world clock); 0 = no limit
    max_tasks_per_seed_hour: int = 1000   # tasks created for one seed per hour; the rest wait (pacing.py); 0 = no limit
    extract_patience: float = 3600.0      # world seconds to wait for the last panel member's extraction
    member_patience: float = 300.0        # world seconds a panel member's task may wait on a blocked account
    repair_interval: float = 30.0         # real seconds between re-derivations of every open step
    deep: dict = field(default_factory=lambda: {
        "explore": ["deep", True], "synthesis": ["deep", True], "review2": ["deep", False],
        "review3": ["deep", False]})

    def deep_for(self, step: str) -> tuple[str, bool]:
        mode, fallback = (self.deep.get(step) or ["standard", False])[:2]
        return ("deep" if mode == "deep" else "standard"), bool(fallback)


COUNTS = ("seed_pause_after", "max_threads_per_seed_hour", "max_tasks_per_seed_hour")   # 0 = off
NON_NEGATIVE = ("member_patience", "max_waiting_threads", "max_active_threads", "threads_per_account", "max_threads",
                "busy_backlog", "open_threads_per_seed") + COUNTS


class SettingsError(ConfigError):
    """A bad ``[modules.explorer]`` table: the module exits with the configuration exit code."""


def settings_from_table(table: dict) -> ExplorerSettings:
    """Validate a ``[modules.explorer]`` table (unknown keys are errors, like the rest of the config)."""
    known = {f.name: f for f in fields(ExplorerSettings)}
    defaults = ExplorerSettings()
    kw = {}
    for key, value in (table or {}).items():
        if key not in known:
            raise SettingsError(f"[modules.explorer]: unknown key {key!r}")
        want = type(getattr(defaults, key))
        if want is tuple and isinstance(value, list):
            value = tuple(value)
        elif want is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, want) or (want is int and isinstance(value, bool)):
            raise SettingsError(f"[modules.explorer]: {key} must be {want.__name__}, got {value!r}")
        if key in NON_NEGATIVE and value < 0:
            raise SettingsError(f"[modules.explorer]: {key} must be >= 0, got {value!r}")
        kw[key] = value
    return ExplorerSettings(**kw)


def load_settings(config) -> ExplorerSettings:
    """The ``[modules.explorer]`` table of the config (``Config.modules``), or the defaults."""
    return settings_from_table((getattr(config, "modules", None) or {}).get(MODULE) or {})
