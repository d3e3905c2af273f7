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
    pace/<seed_id>                  Pace: the seed's pause and hourly task budget (:mod:`.pacing`)
    imported/<finding_id>           Imported: a finding the researcher promoted, looked at once (the seed made of it)

Working data is put with ``working`` and deleted by the broker ``broker.working_retention`` after its last
put (docs/storage.md); everything else here is the research record, kept forever.

The record classes below (``TypedDict``: plain maps, as msgpack carries them: :class:`Seed`, :class:`Thread`,
:class:`Exchange`, :class:`Synthesis`, :class:`Proposals`, :class:`Insight`, :class:`Review`, :class:`Pace`,
:class:`Imported`) declare every field; what the fields mean follows.

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
"explore_on": [account] (the accounts the first explore turn may run on; [] = any, :mod:`.load`), "profundity": float,
"ready_reason": str|None, "attempt": int (re-asks of the current step), "panel": [account], "panel_settled": {account:
"done"|"failed"|"skipped"}, "panel_retries": {account: n}, "panel_skipped": {account: task id} (members blocked past
``member_patience``, :mod:`.panels`), "panel_closed": bool (consolidation proposed), "synthesised_at", "insight_ids":
[str], "extraction_note",
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

    {"insight_id", "panel": [{"reviewer", "account", "replaced"?: [{"account", "step", "at"}]}],
     "stage": "round1"|"mathcheck"|"round2"|"round3_minority"|"round3_majority"|"round3_vote"|"done"|"stalled"
              |"stopped",
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
# no ``from __future__ import annotations``: TypedDict reads NotRequired from evaluated annotations
import re
from dataclasses import dataclass
from typing import Any, NotRequired, TypedDict

from services.modules import prompts
from shared import settings
from shared.settings import setting

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


# --- records (the shapes the module docstring describes; tests/unit/test_module_records.py checks that every
# record the module writes has every required field and no undeclared one) ----------------------------------

class Seed(TypedDict):
    id: str
    type: str                       # SEED_TYPES
    text: str
    priority: int                   # 1-10
    tags: list[str]
    images: list[str]
    source: str
    created_at: float
    updated_at: float
    notes: NotRequired[str]         # only when given (never sent to a model)


class Thread(TypedDict):
    id: str
    seed_id: str
    seed_type: str
    seed_text: str
    priority: int
    queued_priority: int | None     # the priority its live tasks were last aligned with (.priorities)
    status: str                     # THREAD_STATUSES
    paused_from: str | None
    exchanges: int
    critiques: int
    explore_account: str | None
    critic_account: str | None
    critic_on: list[str]
    explore_on: list[str]
    profundity: float
    ready_reason: str | None
    attempt: int
    panel: list[str]
    panel_settled: dict[str, str]   # account -> "done" | "failed" | "skipped"
    panel_retries: dict[str, int]
    panel_closed: bool
    synthesised_at: float | None
    insight_ids: list[str]
    extraction_note: str | None
    last_error: str | None
    pause_reason: str | None
    created_at: float
    updated_at: float
    critic_conv: NotRequired[int]           # once the critic moved (.load)
    first_turn_moves: NotRequired[int]      # once the first turn moved off an account (.panels)
    panel_skipped: NotRequired[dict[str, int]]   # account -> the abandoned task (.panels)
    paused_by: NotRequired[str | None]      # "unusable answers" (counted by the seed's pause) or None


class Exchange(TypedDict):
    thread_id: str
    turn: int
    role: str                       # "explore" | "critique"
    backend: str | None
    mode: str | None
    mode_requested: str
    prompt_ref: NotRequired[Any]    # the prompt with quoted exchanges as references (.threads) ...
    prompt: NotRequired[str]        # ... or whole, when that could not be done exactly (and older records)
    response: str
    sections: NotRequired[dict[str, list[str]]]   # only when parsing the response does not give them back
    task_id: int
    at: float


class Synthesis(TypedDict):
    thread_id: str
    title: str
    summary: str
    content: str
    backend: str | None
    mode: str | None
    task_id: int
    at: float


class Proposals(TypedDict):
    thread_id: str
    account: str
    blocks: list[dict[str, Any]]    # {"text", "domains", "scores": {"impact", "intuition", "surprise"}, "note"}
    backend: str | None
    task_id: int
    at: float


class Insight(TypedDict):
    id: str
    text: str
    version: int
    versions: list[dict[str, Any]]
    tags: list[str]
    confidence: str | None
    thread_id: str
    seed_id: str
    proposed_by: list[str]
    depends_on: list[str]
    unresolved_depends: list[str]
    status: str                     # INSIGHT_STATUSES
    disputed: bool
    priority: int
    queued_priority: int | None
    duplicate_of: str | None
    dedup: dict[str, Any]
    outcome: dict[str, Any] | None
    decided_by: str | None
    overrides: list[dict[str, Any]]
    blessed_at: float | None
    last_error: str | None
    created_at: float
    updated_at: float
    task_id: int                    # the consolidation task


class Review(TypedDict):
    insight_id: str
    panel: list[dict[str, Any]]
    stage: str
    rounds: dict[str, dict[str, Any]]
    deliberation: dict[str, Any] | None
    math: dict[str, Any] | None
    math_retries: int
    mind_changes: list[dict[str, Any]]
    rewordings: list[dict[str, Any]]
    outcome: dict[str, Any] | None
    last_error: str | None
    created_at: float
    updated_at: float
    replacements: NotRequired[list[dict[str, Any]]]   # seats moved or left out (.panels)


class Pace(TypedDict):
    seed_id: str
    paused: bool
    pause_reason: str | None
    paused_at: float | None
    window_start: float
    tasks: int
    held: dict[str, float]          # task key -> when it was held
    limit: int
    resumed_at: NotRequired[float]  # fanoctl seeds resume


class Imported(TypedDict):
    finding_id: str
    seed: str | None                # the seed made from it (None: the promotion was not a valid seed)
    at: float


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


def thread_turn_key(thread: dict, k: int) -> str:
    """The key of turn ``k`` of ``thread`` now: its retry suffix, and for a first turn moved off an account
    that lost its room (``first_turn_moves``, :func:`.panels.retarget_first_turns`) a move suffix."""
    key = turn_task_key(thread["id"], k, int(thread.get("attempt", 0)))
    moves = int(thread.get("first_turn_moves") or 0) if k == 1 else 0
    return f"{key}:m{moves}" if moves else key


def task_thread_id(task: dict) -> str | None:
    """The thread a task of a thread belongs to (explore and critique turns, synthesis, extraction,
    consolidation), from its payload or, in a list page without payloads, from its key
    (``explorer:<seed>.t<n>:...``); None for an insight's task (``explorer:<seed>.t<n>.i<m>:...``)."""
    return _owner(task, "thread_id", 1)


def task_insight_id(task: dict) -> str | None:
    """The insight a task of an insight's panel belongs to (dedup, math check, review rounds), from its
    payload or, in a list page without payloads, from its key (``explorer:<seed>.t<n>.i<m>:...``)."""
    return _owner(task, "insight_id", 2)


def _owner(task: dict, field: str, dots: int) -> str | None:
    """``payload[field]``, else the key's id part when it has ``dots`` dots (a thread ``<seed>.t<n>``: 1,
    an insight ``<seed>.t<n>.i<m>``: 2)."""
    ident = (task.get("payload") or {}).get(field)
    if isinstance(ident, str):
        return ident
    parts = str(task.get("key") or "").split(":")
    if len(parts) > 2 and parts[0] == MODULE and parts[1].count(".") == dots:
        return parts[1]
    return None


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


def _weights(table: dict) -> dict:
    if not all(isinstance(w, (int, float)) and not isinstance(w, bool) and w >= 0 for w in table.values()):
        raise settings.Invalid(f"expected a table of account = weight (a number ≥ 0), got {table!r}")
    return table


def _deep(table: dict) -> dict:
    for value in table.values():
        if not (isinstance(value, list) and len(value) == 2 and value[0] in ("standard", "deep")
                and isinstance(value[1], bool)):
            raise settings.Invalid(f'expected a table of step = [mode, fallback], e.g. {{synthesis = ["deep", '
                                   f'true]}}, got {table!r}')
    return table


@dataclass(frozen=True)
class ExplorerSettings:
    """Explorer knobs (docs/research.md § Explorer settings): the ``[modules.explorer]`` table of fano.toml,
    each key declared once below (default, doc line, what it takes; :mod:`shared.settings` validates it).

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
      review panel is ``reviewers`` distinct accounts among those (:meth:`.context.Env.review_panel`).
    * A panel member (an extractor, a reviewer in any round, a round-3 speaker or voter) whose task has
      waited ``member_patience`` world seconds while its account has no room for the mode it needs is
      replaced by an account with room that no other seat counted in the step uses; without one it is left out of that
      step (recorded), as long as two reviewers (one extractor) stay in play; else the step waits (:mod:`.panels`).
      A seat on a *backlogged* account counts as blocked too while another account with room is not
      backlogged; such a reviewer is only moved, never left out.
    """

    max_active_threads: int = setting(3, "open threads that can move now", lo=0)
    max_waiting_threads: int = setting(3, "more open threads, each waiting only on an account without room", lo=0)
    threads_per_account: int = setting(2, "open threads per explorer account with room (load.py); 0 = off", lo=0)
    max_threads: int = setting(12, "open threads that can move, at most, however many accounts have room", lo=0)
    open_threads_per_seed: int = setting(3, "open threads of one seed at once (re-exploration in parallel)", lo=0)
    busy_backlog: int = setting(2, "explorer tasks pinned to an account beyond which it is backlogged (load.py)",
                                lo=0)
    min_exchanges: int = setting(4, "readiness: at least this many exchanges ...", lo=0)
    min_critiques: int = setting(2, "... and this many critiques", lo=0)
    max_exchanges: int = setting(12, "readiness: this many exchanges in any case", lo=0)
    profundity_threshold: float = setting(0.6, "readiness: a profundity score of recent answers above this", lo=0)
    profundity_window: int = setting(4, "recent responses scored for profundity", lo=0)
    profundity_signals: tuple = setting(PROFUNDITY_SIGNALS, "phrases that count for profundity")
    doubt_signals: tuple = setting(DOUBT_SIGNALS, "phrases that count against it (substrings: no overlaps)")
    context_exchanges: int = setting(6, "exchanges quoted in explore / critique prompts", lo=0)
    synthesis_exchanges: int = setting(10, "exchanges quoted in the synthesis prompt", lo=0)
    extraction_exchanges: int = setting(20, "exchanges quoted in the extraction prompts", lo=0)
    max_proposals: int = setting(15, "insights each extraction panel member may propose", lo=0)
    max_final_insights: int = setting(10, "insights the consolidation keeps", lo=0)
    explore_accounts: tuple = setting((), "accounts allowed to explore; empty = all", nonempty=True)
    critique_weights: dict = setting({}, "account -> weight for critiques; empty = any but the explorer's",
                                     kind="table", parse=_weights,
                                     expected="a table of account = weight (a number ≥ 0)")
    panel_accounts: tuple = setting((), "extraction panel and reviewers; empty = all configured accounts",
                                    nonempty=True)
    reviewers: int = setting(3, "reviewers on a review panel", lo=0)
    math_check: bool = setting(True, "check mathematical claims between review rounds 1 and 2")
    math_refute_confidence: float = setting(0.8, "a refutation at least this confident rejects", lo=0)
    math_tags: tuple = setting(MATH_TAGS, "tags that make an insight mathematical")
    max_retries: int = setting(2, "re-asks (with a new key) after an unusable answer or a parked task", lo=0)
    seed_pause_after: int = setting(2, "threads of a seed paused by unusable answers that pause the seed; "
                                       "0 = never", lo=0)
    max_threads_per_seed_hour: int = setting(30, "new threads of one seed per hour (world clock); 0 = no limit",
                                             lo=0)
    max_tasks_per_seed_hour: int = setting(1000, "tasks created for one seed per hour; the rest wait (pacing.py); "
                                                "0 = no limit", lo=0)
    extract_patience: float = setting(3600.0, "world seconds to wait for the last panel member's extraction", lo=0)
    member_patience: float = setting(300.0, "world seconds a panel member's task may wait on a blocked account",
                                     lo=0)
    repair_interval: float = setting(30.0, "real seconds between re-derivations of every open step", lo=0)
    deep: dict = setting({"explore": ["deep", True], "synthesis": ["deep", True], "review2": ["deep", False],
                          "review3": ["deep", False]},
                         "per step: [mode, fallback], the mode asked for and whether it may run in standard "
                         "mode when no deep quota is free", kind="table", parse=_deep,
                         expected='a table of step = [mode, fallback], e.g. {synthesis = ["deep", true]}')

    def deep_for(self, step: str) -> tuple[str, bool]:
        mode, fallback = (self.deep.get(step) or ["standard", False])[:2]
        return ("deep" if mode == "deep" else "standard"), bool(fallback)


SettingsError = settings.SettingsError   # a bad [modules.explorer] table: the module exits with CONFIG


def settings_from_table(table: dict, where: str = "[modules.explorer]") -> ExplorerSettings:
    """Validate a ``[modules.explorer]`` table (unknown keys are errors, like the rest of the config)."""
    return settings.load(ExplorerSettings, table, where)


def load_settings(config) -> ExplorerSettings:
    """The ``[modules.explorer]`` table of the config (``Config.modules``), or the defaults."""
    return settings.module_settings(ExplorerSettings, config, MODULE)
