"""Deterministic answers of the simulated provider, one generator per task kind, in that kind's format.

Kind names are ``<module>.<step>``; modules import the constants below so that a renamed kind fails at
import time instead of silently falling through to the generic answer. :data:`KINDS` documents each
format; :data:`REQUIRED_TAGS` lists what every (well-formed) answer of a kind contains.

Randomness has two sources, on purpose:

* ``rng`` (given by the caller, derived from the task) drives the *wording*: which claims, how many
  bullets, which scores.
* :func:`derive_rng` of ``(seed, subject)`` drives the *verdicts* that several reviewers must share:
  every insight has a latent class (good / bad / mixed) and each reviewer's rating is drawn around it,
  so that across many insights some are unanimous ⚡, some unanimous ✗, some split 2–1 and some 3-way,
  and later rounds converge (mind changes) without any reviewer seeing another's answer.

:func:`decorate` adds the realistic format deviations a tolerant parser must handle (Markdown bold on
tag names, prose around the tags, CRLF) and, only when ``garbage_rate`` > 0, unusable answers.
"""
from __future__ import annotations

import hashlib
import json
import random
import re
from typing import Any

ASK = "ask"
EXPLORER_EXPLORE = "explorer.explore"
EXPLORER_CRITIQUE = "explorer.critique"
EXPLORER_SYNTHESIS = "explorer.synthesis"
EXPLORER_EXTRACT = "explorer.extract"
EXPLORER_CONSOLIDATE = "explorer.consolidate"
EXPLORER_DEDUP = "explorer.dedup"
EXPLORER_REVIEW1 = "explorer.review1"
EXPLORER_MATHCHECK = "explorer.mathcheck"
EXPLORER_REVIEW2 = "explorer.review2"
EXPLORER_REVIEW3 = "explorer.review3"
DOCUMENTER_ADDRESS_COMMENT = "documenter.address_comment"
DOCUMENTER_PLAN = "documenter.plan"
DOCUMENTER_EVALUATE = "documenter.evaluate"
DOCUMENTER_DRAFT = "documenter.draft"
DOCUMENTER_EXPOSITION = "documenter.exposition"
DOCUMENTER_REVIEW_SECTION = "documenter.review_section"
RESEARCHER_GENERATE_QUESTIONS = "researcher.generate_questions"
RESEARCHER_EVALUATE_SOURCE = "researcher.evaluate_source"
RESEARCHER_EXTRACT_FINDINGS = "researcher.extract_findings"
ADVISOR_WEIGHTS = "advisor.weights"

#: kind -> the format of its answer (what a prompt of that kind asks for; tags in order)
KINDS: dict[str, str] = {
    ASK: "free text: 'sim answer to: <first 80 chars of the prompt>' + a digest line (never decorated)",
    EXPLORER_EXPLORE: "[NEW_INSIGHTS], [CONNECTIONS], [QUESTIONS] sections of '- ' bullets",
    EXPLORER_CRITIQUE: "[CRITICAL_ISSUES], [PROMISING_DIRECTIONS], [PROBING_QUESTIONS] sections of bullets",
    EXPLORER_SYNTHESIS: "TITLE: line, SUMMARY: line, CONTENT: multi-paragraph Markdown to the end",
    EXPLORER_EXTRACT: "blocks separated by '===' lines: INSIGHT:, DOMAINS:, SCORES: impact=N, intuition=N, "
                      "surprise=N, total=N (1-10 each), INTUITION_NOTE:",
    EXPLORER_CONSOLIDATE: "'==='-separated blocks (<= 10): INSIGHT:, CONFIDENCE: high|medium|low, TAGS: a, b, "
                          "PROPOSED_BY:, DEPENDS_ON: ids|none; merges INSIGHT: lines found in the prompt",
    EXPLORER_DEDUP: "IS_DUPLICATE: yes|no, DUPLICATE_OF: <candidate id or 1-based index>|none, CONFIDENCE:, REASON:",
    EXPLORER_REVIEW1: "RATING: ⚡|?|✗, MATHEMATICAL_VERIFICATION:, STRUCTURAL_ANALYSIS:, NATURALNESS_ASSESSMENT:, "
                      "REASONING:, CONFIDENCE: high|medium|low, PROPOSED_MODIFICATION: text|NONE, "
                      "MODIFICATION_RATIONALE:",
    EXPLORER_MATHCHECK: "CLAIM:, PRECISE_STATEMENT:, PROOF_OR_COUNTEREXAMPLE:, VERDICT: VERIFIED|REFUTED|UNCLEAR, "
                        "CONFIDENCE: 0.00-1.00, CONCERNS:",
    EXPLORER_REVIEW2: "NEW_INFORMATION:, REASSESSMENT:, DOES_THIS_CHANGE_THINGS: yes|no, UPDATED_RATING: ⚡|?|✗, "
                      "UPDATED_REASONING:, CONFIDENCE:, PROPOSED_MODIFICATION: text|NONE",
    EXPLORER_REVIEW3: "by payload['step']: minority -> STRONGEST_ARGUMENT:, PROPOSED_MODIFICATION:; majority -> "
                      "RESPONSE:, ACCEPT_MODIFICATION: yes|no, DOES_THIS_CHANGE_YOUR_RATING: yes|no, "
                      "UPDATED_RATING:; vote (default) -> FINAL_STANCE: CONCEDE|MAINTAIN, REASON:, FINAL_RATING:",
    DOCUMENTER_ADDRESS_COMMENT: "UNDERSTOOD:, RESOLUTION:, REVISED_SECTION: text to the end | UNCHANGED",
    DOCUMENTER_PLAN: "DECISION: INCORPORATE + INSIGHT_ID: + REASON: | DECISION: PREREQUISITE + NEEDED: + "
                     "ESTABLISHES: + CONTENT: | DECISION: WAIT + REASON:",
    DOCUMENTER_EVALUATE: "DECISION: INCLUDE|EXCLUDE, NATURAL:, ELEGANT:, BEAUTIFUL:, INTERESTING:, INEVITABLE:, "
                         "REASONING:",
    DOCUMENTER_DRAFT: "ESTABLISHES: a, b, REQUIRES: a|none, DIAGRAM_NEEDED: no, DRAFT: Markdown to the end",
    DOCUMENTER_EXPOSITION: "DECISION: APPROVE|REVISE|REJECT, CLARITY:, CORRECTNESS:, FLOW:, DEPENDENCIES:, "
                           "REVISION_NOTES:",
    DOCUMENTER_REVIEW_SECTION: "DECISION: CONFIRMED|REVISE, ACCURACY:, CLARITY:, CONNECTIONS:, REVISION_NOTES:, "
                               "and when REVISE: REVISED_SECTION: text to the end",
    RESEARCHER_GENERATE_QUESTIONS: 'JSON {"questions": [{"question", "type": supporting|challenging|alternative|'
                                   'contextual, "concepts": [..], "numbers": [..], "priority": 1-10}]}',
    RESEARCHER_EVALUATE_SOURCE: 'JSON {"score": 0-100, "scholarly_tone": bool, "cites_primary": bool, '
                                '"reasons": [str, ...]}',
    RESEARCHER_EXTRACT_FINDINGS: 'JSON {"findings": [{"summary", "quote", "type", "confidence": 0-1, "concepts", '
                                 '"numbers"}], "numbers": [{"value", "context", "significance", "mention_type"}]}',
    ADVISOR_WEIGHTS: "EXPLORER_WEIGHT:, DOCUMENTER_WEIGHT:, RESEARCHER_WEIGHT: (floats 0.5-2.0), REASONING:",
}

REQUIRED_TAGS: dict[str, tuple[str, ...]] = {
    EXPLORER_EXPLORE: ("[NEW_INSIGHTS]", "[CONNECTIONS]", "[QUESTIONS]"),
    EXPLORER_CRITIQUE: ("[CRITICAL_ISSUES]", "[PROMISING_DIRECTIONS]", "[PROBING_QUESTIONS]"),
    EXPLORER_SYNTHESIS: ("TITLE:", "SUMMARY:", "CONTENT:"),
    EXPLORER_EXTRACT: ("INSIGHT:", "SCORES:", "impact=", "intuition=", "surprise="),
    EXPLORER_CONSOLIDATE: ("INSIGHT:", "CONFIDENCE:", "TAGS:", "PROPOSED_BY:", "DEPENDS_ON:"),
    EXPLORER_DEDUP: ("IS_DUPLICATE:", "DUPLICATE_OF:"),
    EXPLORER_REVIEW1: ("RATING:", "MATHEMATICAL_VERIFICATION:", "STRUCTURAL_ANALYSIS:", "NATURALNESS_ASSESSMENT:",
                       "REASONING:", "CONFIDENCE:", "PROPOSED_MODIFICATION:"),
    EXPLORER_MATHCHECK: ("VERDICT:", "CONFIDENCE:"),
    EXPLORER_REVIEW2: ("UPDATED_RATING:", "UPDATED_REASONING:", "CONFIDENCE:"),
    EXPLORER_REVIEW3: ("FINAL_RATING:",),        # default step "vote"; see KINDS for the other steps
    DOCUMENTER_ADDRESS_COMMENT: ("UNDERSTOOD:", "RESOLUTION:", "REVISED_SECTION:"),
    DOCUMENTER_PLAN: ("DECISION:",),
    DOCUMENTER_EVALUATE: ("DECISION:", "NATURAL:", "ELEGANT:", "BEAUTIFUL:", "INTERESTING:", "INEVITABLE:"),
    DOCUMENTER_DRAFT: ("DRAFT:", "ESTABLISHES:", "REQUIRES:"),
    DOCUMENTER_EXPOSITION: ("DECISION:", "REVISION_NOTES:"),
    DOCUMENTER_REVIEW_SECTION: ("DECISION:",),
    RESEARCHER_GENERATE_QUESTIONS: ('"questions"',),
    RESEARCHER_EVALUATE_SOURCE: ('"score"', '"reasons"'),
    RESEARCHER_EXTRACT_FINDINGS: ('"findings"', '"numbers"'),
    ADVISOR_WEIGHTS: ("EXPLORER_WEIGHT:", "DOCUMENTER_WEIGHT:", "RESEARCHER_WEIGHT:", "REASONING:"),
}

JSON_KINDS = frozenset({RESEARCHER_GENERATE_QUESTIONS, RESEARCHER_EVALUATE_SOURCE, RESEARCHER_EXTRACT_FINDINGS})
RESEARCH_KINDS = tuple(REQUIRED_TAGS)
RATINGS = ("⚡", "?", "✗")
# favour: the share of subjects on which the documenter's shared votes (evaluate, exposition, section
# review) are the favourable word outright (0: drawn as usual; the stand-ins' end-to-end tests set 1)
DEFAULT_REVIEWS = {"good": 0.35, "bad": 0.2, "agree": 0.85, "persuade": 0.4, "favour": 0.0}


def derive_rng(*parts) -> random.Random:
    """A Random seeded by a hash of ``parts``: the same parts give the same stream in every process
    (``hash()`` is salted per process, so it cannot be used here)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


# --- the latent verdicts that several reviewers share ----------------------------------------------------

def subject_of(payload: dict, prompt: str) -> str:
    """What a review or evaluation is about: the id the module put in the payload, else the prompt."""
    for key in ("insight_id", "section_id", "subject", "item_id", "insight", "text", "url"):
        if payload.get(key) not in (None, ""):
            return f"{key}={payload[key]}"
    return "prompt=" + hashlib.sha256(prompt.encode()).hexdigest()[:16]


# The latent truth about a subject (an insight's quality, an evaluation's consensus) is the same for every
# simulated account -- it is a property of the subject, not of the model asked -- so panels of reviewers
# on different accounts agree as often as real ones would. Per-reviewer noise keeps the account's seed.
WORLD_SEED = "fano-sim-world"


def review_class(seed, subject: str, reviews: dict | None = None) -> str:
    """The latent quality of an insight: ``good`` (mostly ⚡), ``bad`` (mostly ✗) or ``mixed``."""
    r = {**DEFAULT_REVIEWS, **(reviews or {})}
    u = derive_rng(WORLD_SEED, "class", subject).random()
    return "good" if u < r["good"] else "bad" if u < r["good"] + r["bad"] else "mixed"


def review_rating(seed, subject: str, reviewer: str, round_no: int, reviews: dict | None = None) -> str:
    """One reviewer's rating in a round. Round 1 is independent; in each later round the reviewer moves
    to the insight's lean with probability ``persuade`` (a mind change), so rounds converge."""
    r = {**DEFAULT_REVIEWS, **(reviews or {})}
    cls = review_class(seed, subject, r)
    rng = derive_rng(seed, "r1", subject, reviewer)
    if cls == "mixed":
        rating = rng.choice(RATINGS)
        lean = derive_rng(WORLD_SEED, "lean", subject).choice(RATINGS)
    else:
        lean = "⚡" if cls == "good" else "✗"
        rating = lean if rng.random() < r["agree"] else rng.choice([x for x in RATINGS if x != lean])
    for k in range(2, max(1, round_no) + 1):
        if derive_rng(seed, f"r{k}", subject, reviewer).random() < r["persuade"]:
            rating = lean
    return rating


# --- text material --------------------------------------------------------------------------------------

_OBJECTS = ("the Fano plane", "PG(2,2)", "the Klein quartic", "the Heawood graph", "the Hamming [7,4] code",
            "the octonion multiplication table", "the Steiner system S(2,3,7)", "GL(3,2)", "the complete graph K7",
            "the dual plane", "the 7-cycle of difference sets", "the projective line over F_7")
_RELATIONS = ("is dual to", "embeds in", "is a quotient of", "acts transitively on", "shares its automorphism "
              "group with", "encodes", "is the incidence graph of", "is a double cover of")
_REASONS = ("the incidence structure", "a counting argument", "the orbit-stabiliser theorem", "the uniqueness "
            "of the projective plane of order 2", "the difference set {1, 2, 4} mod 7", "Desargues' theorem")
_NUMBERS = (3, 7, 14, 21, 24, 28, 42, 84, 168, 12, 72, 112)
_CONCEPTS = ("incidence structure", "projective plane of order 2", "collineation group", "difference set",
             "Steiner triple system", "automorphism group", "perfect code", "duality", "orbit", "stabiliser")
_DOMAINS = ("projective geometry", "group theory", "coding theory", "graph theory", "algebra", "music theory",
            "combinatorics", "number theory")
_PROFUND = ("This naturally follows from the structure.", "The correspondence feels inevitable.",
            "This explains why the number appears at all.", "The elegant part is that nothing was chosen.")
_DOUBT = ("But wait: this seems ad hoc.", "The identification is forcing the numbers.",
          "The choice of labels looks arbitrary.", "It is unclear this is more than numerology.")
_NOTES = ("natural", "elegant", "clear", "somewhat forced", "convincing", "surprising", "routine")
_STRUCTURE = ("A genuine structural connection.", "Partly surface numerology.", "The structure is real but thin.")
_SAME, _NEW = ("The core idea is the same as the existing item.",
               "The new claim adds structure not present in any existing item.")
_REWROTE, _ALREADY = "Rewrote the passage to state the claim precisely.", "The section already answers the comment."


def _topic(payload: dict, prompt: str) -> str:
    for key in ("topic", "seed", "question", "insight", "text", "title"):
        value = payload.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip().splitlines()[0][:80]
    for line in prompt.splitlines():
        if line.strip():
            return line.strip()[:80]
    return "the seed question"


def _claim(rng: random.Random) -> str:
    a, b = rng.sample(_OBJECTS, 2)
    n = rng.choice(_NUMBERS)
    return rng.choice((
        f"{a[0].upper() + a[1:]} {rng.choice(_RELATIONS)} {b}, and {rng.choice(_REASONS)} forces this.",
        f"The {n} symmetries of {a} act on {b} without fixed points, by {rng.choice(_REASONS)}.",
        f"Counting flags of {a} gives {n}, which matches {b} because of {rng.choice(_REASONS)}.",
        f"{a[0].upper() + a[1:]} and {b} are two readings of one {rng.choice(_CONCEPTS)}.",
    ))


def _sentences(rng: random.Random, n: int) -> str:
    return " ".join(_claim(rng) for _ in range(n))


def _bullets(rng: random.Random, n: int, make) -> str:
    return "\n".join(f"- {make()}" for _ in range(n))


def _depth(ctx: _Ctx) -> int:
    """Deep mode answers are a bit longer and more considered."""
    return 2 if ctx.deep else 1


class _Ctx:
    def __init__(self, payload, prompt, mode, rng, seed, account, reviews):
        self.payload, self.prompt, self.mode, self.rng = payload, prompt, mode, rng
        self.seed, self.account, self.reviews = seed, account, reviews
        self.deep = mode == "deep"
        self.topic = _topic(payload, prompt)
        self.subject = subject_of(payload, prompt)
        self.reviewer = str(payload.get("reviewer") or payload.get("evaluator") or account)

    def considered(self) -> str:
        """An extra sentence that deep mode adds to reasoning fields."""
        return (" On reflection, " + _claim(self.rng)[0].lower() + _claim(self.rng)[1:]) if self.deep else ""


# --- generators, one per kind -----------------------------------------------------------------------------

def _explore(c: _Ctx) -> str:
    r, d = c.rng, _depth(c)
    flavour = r.choice(_PROFUND) if r.random() < 0.6 else r.choice(_DOUBT)
    return (f"[NEW_INSIGHTS]\n{_bullets(r, r.randint(2, 3) * d, lambda: _claim(r))}\n- {flavour}\n\n"
            f"[CONNECTIONS]\n{_bullets(r, r.randint(1, 2) * d, lambda: _claim(r))}\n\n"
            f"[QUESTIONS]\n{_bullets(r, r.randint(1, 3), lambda: _why(r))}\n")


def _why(r) -> str:
    return f"Why does {r.choice(_OBJECTS)} need exactly {r.choice(_NUMBERS)} elements here?"


def _critique(c: _Ctx) -> str:
    r, d = c.rng, _depth(c)
    return (f"[CRITICAL_ISSUES]\n{_bullets(r, r.randint(1, 3) * d, lambda: r.choice(_DOUBT) + ' ' + _claim(r))}\n\n"
            f"[PROMISING_DIRECTIONS]\n{_bullets(r, r.randint(1, 2) * d, lambda: _claim(r))}\n\n"
            f"[PROBING_QUESTIONS]\n"
            f"{_bullets(r, r.randint(1, 3), lambda: f'Is the role of {r.choice(_NUMBERS)} discovered or invented?')}\n")


def _synthesis(c: _Ctx) -> str:
    r = c.rng
    paras = "\n\n".join(_sentences(r, 3) for _ in range(r.randint(2, 3) * _depth(c)))
    obj = r.choice(_OBJECTS)
    return (f"TITLE: {obj[0].upper()}{obj[1:]} and {c.topic[:50]}\n"
            f"SUMMARY: {_claim(r)}\n"
            f"CONTENT:\n## What feels inevitable\n\n{paras}\n\n## What remains speculative\n\n{_claim(r)}\n")


def _extract(c: _Ctx) -> str:
    r, blocks = c.rng, []
    for _ in range(r.randint(2, 5) * _depth(c)):
        s = [r.randint(1, 10) for _ in range(3)]
        blocks.append(f"INSIGHT: {_claim(r)}\nDOMAINS: {', '.join(r.sample(_DOMAINS, 2))}\n"
                      f"SCORES: impact={s[0]}, intuition={s[1]}, surprise={s[2]}, total={sum(s)}\n"
                      f"INTUITION_NOTE: {r.choice(_PROFUND)}")
    return "\n===\n".join(blocks) + "\n"


def _consolidate(c: _Ctx) -> str:
    r = c.rng
    found: list[Any] = []  # merge the proposals quoted in the prompt, keeping the first wording of each
    for m in re.finditer(r"^\W*INSIGHT\W*:\**\s*(.+)$", c.prompt, re.M):
        text = m.group(1).strip()
        if text and text.lower() not in {f.lower() for f in found}:
            found.append(text)
    if not found:
        found = [_claim(r) for _ in range(r.randint(2, 5))]
    known = [str(x) for x in c.payload.get("blessed_ids") or []]
    blocks = []
    for text in found[:10]:
        deps = ", ".join(r.sample(known, min(len(known), r.randint(0, 2)))) if known else ""
        blocks.append(f"INSIGHT: {text}\nCONFIDENCE: {r.choice(('high', 'medium', 'low'))}\n"
                      f"TAGS: {', '.join(t.replace(' ', '_') for t in r.sample(_CONCEPTS, 2))}\n"
                      f"PROPOSED_BY: {r.choice(('gemini', 'chatgpt', 'claude', 'multiple'))}\n"
                      f"DEPENDS_ON: {deps or 'none'}")
    return "\n===\n".join(blocks) + "\n"


def _candidates(c: _Ctx) -> list[str]:
    """Candidate references: ids from the payload, else 1-based indexes of numbered lines in the prompt."""
    items = c.payload.get("candidates") or c.payload.get("insight_ids") or []
    ids = [str(x.get("id")) if isinstance(x, dict) else str(x) for x in items]
    if ids and all(" " not in i for i in ids):
        return ids
    if ids:
        return [str(i + 1) for i in range(len(ids))]
    numbered = re.findall(r"^\s*\[?(\d+)[\].)]", c.prompt, re.M)
    return numbered or ["1"]


def _dedup(c: _Ctx) -> str:
    r = derive_rng(c.seed, "dup", c.subject)   # same verdict whoever is asked
    dup = r.random() < 0.2
    of = r.choice(_candidates(c)) if dup else "none"
    return (f"IS_DUPLICATE: {'yes' if dup else 'no'}\nDUPLICATE_OF: {of}\n"
            f"CONFIDENCE: {c.rng.choice(('high', 'medium'))}\n"
            f"REASON: {_SAME if dup else _NEW}\n")


def _modification(c: _Ctx, rating: str) -> str:
    if rating in ("?", "⚡") and c.rng.random() < 0.3:
        return f"PROPOSED_MODIFICATION: {_claim(c.rng)}\nMODIFICATION_RATIONALE: States only what is forced."
    return "PROPOSED_MODIFICATION: NONE\nMODIFICATION_RATIONALE: NONE"


def _review1(c: _Ctx) -> str:
    r, rating = c.rng, review_rating(c.seed, c.subject, c.reviewer, 1, c.reviews)
    return (f"RATING: {rating}\nMATHEMATICAL_VERIFICATION: {_claim(r)}\n"
            f"STRUCTURAL_ANALYSIS: {r.choice(_STRUCTURE)} {_claim(r)}\n"
            f"NATURALNESS_ASSESSMENT: {r.choice(_PROFUND + _DOUBT)}\n"
            f"REASONING: {_sentences(r, 2)}{c.considered()}\nCONFIDENCE: {r.choice(('high', 'medium', 'low'))}\n"
            f"{_modification(c, rating)}\n")


def _mathcheck(c: _Ctx) -> str:
    r, cls = c.rng, review_class(c.seed, c.subject, c.reviews)
    weights = {"good": (70, 25, 5), "bad": (25, 30, 45), "mixed": (45, 40, 15)}[cls]
    verdict = derive_rng(c.seed, "math", c.subject).choices(("VERIFIED", "UNCLEAR", "REFUTED"), weights)[0]
    conf = r.uniform(0.8, 0.97) if verdict != "UNCLEAR" else r.uniform(0.3, 0.6)
    proof = f"Counterexample: {_claim(r)}" if verdict == "REFUTED" else _sentences(r, _depth(c))
    return (f"CLAIM: {_claim(r)}\nPRECISE_STATEMENT: {_claim(r)}\nPROOF_OR_COUNTEREXAMPLE: {proof}\n"
            f"VERDICT: {verdict}\nCONFIDENCE: {conf:.2f}\nCONCERNS: {r.choice(('none', 'notation is ambiguous'))}\n")


def _review2(c: _Ctx) -> str:
    r = c.rng
    before = review_rating(c.seed, c.subject, c.reviewer, 1, c.reviews)
    after = review_rating(c.seed, c.subject, c.reviewer, 2, c.reviews)
    return (f"NEW_INFORMATION: {_claim(r)}\nREASSESSMENT: {_sentences(r, _depth(c))}\n"
            f"DOES_THIS_CHANGE_THINGS: {'yes' if before != after else 'no'}\nUPDATED_RATING: {after}\n"
            f"UPDATED_REASONING: {_sentences(r, 2)}{c.considered()}\n"
            f"CONFIDENCE: {r.choice(('high', 'medium'))}\n{_modification(c, after)}\n")


def _review3(c: _Ctx) -> str:
    r, step = c.rng, str(c.payload.get("step") or c.payload.get("role") or "vote")
    before = review_rating(c.seed, c.subject, c.reviewer, 2, c.reviews)
    after = review_rating(c.seed, c.subject, c.reviewer, 3, c.reviews)
    if step == "minority":
        return (f"STRONGEST_ARGUMENT: {_sentences(r, 2)}{c.considered()}\n{_modification(c, '?')}\n")
    if step == "majority":
        return (f"RESPONSE: {_sentences(r, 2)}{c.considered()}\nACCEPT_MODIFICATION: {r.choice(('yes', 'no'))}\n"
                f"MODIFICATION_ASSESSMENT: {_claim(r)}\n"
                f"DOES_THIS_CHANGE_YOUR_RATING: {'yes' if before != after else 'no'}\nUPDATED_RATING: {after}\n")
    return (f"FINAL_STANCE: {'MAINTAIN' if before == after else 'CONCEDE'}\nREASON: {_claim(r)}{c.considered()}\n"
            f"FINAL_RATING: {after}\n")


def _section(c: _Ctx, n: int) -> str:
    return "\n\n".join(_sentences(c.rng, 2) for _ in range(n))


def _address_comment(c: _Ctx) -> str:
    r = c.rng
    revised = _section(c, 2 * _depth(c)) if r.random() < 0.8 else "UNCHANGED"
    return (f"UNDERSTOOD: The author asks to clarify {c.topic[:60]}.\n"
            f"RESOLUTION: {_REWROTE if revised != 'UNCHANGED' else _ALREADY}\n"
            f"REVISED_SECTION:\n{revised}\n")


def _plan(c: _Ctx) -> str:
    r = c.rng
    ids = c.payload.get("insight_ids") or c.payload.get("candidates") or \
        re.findall(r"\[([A-Za-z][\w.-]*\d[\w.-]*)\]", c.prompt)
    u = r.random()
    if ids and u < 0.75:
        pick = ids[0] if r.random() < 0.6 else r.choice(ids)
        pick = pick.get("id") if isinstance(pick, dict) else pick
        return f"DECISION: INCORPORATE\nINSIGHT_ID: {pick}\nREASON: Its prerequisites are established.\n"
    if u < 0.92:
        concept = r.choice(_CONCEPTS)
        return (f"DECISION: PREREQUISITE\nNEEDED: a definition of {concept}\nESTABLISHES: {concept}\n"
                f"CONTENT:\n{_section(c, _depth(c))}\n")
    return "DECISION: WAIT\nREASON: Nothing can be incorporated before the pending reviews finish.\n"


def _vote(c: _Ctx, tag: str, words: tuple[str, ...], weights: tuple[int, ...]) -> str:
    """A decision shared by evaluators of one subject, with some per-evaluator noise (so consensus
    usually, but not always, forms). ``reviews.favour`` of the subjects get the favourable word
    (``words[0]``) from every evaluator."""
    favour = {**DEFAULT_REVIEWS, **(c.reviews or {})}["favour"]
    if favour and derive_rng(WORLD_SEED, tag, "favour", c.subject).random() < favour:
        return words[0]
    shared = derive_rng(WORLD_SEED, tag, c.subject).choices(words, weights)[0]
    own = derive_rng(c.seed, tag, c.subject, c.reviewer)
    return shared if own.random() < 0.85 else own.choice(words)


def _evaluate(c: _Ctx) -> str:
    r = c.rng
    decision = _vote(c, "eval", ("INCLUDE", "EXCLUDE"), (80, 20))
    notes = "".join(f"{k}: {r.choice(_NOTES)}\n"
                    for k in ("NATURAL", "ELEGANT", "BEAUTIFUL", "INTERESTING", "INEVITABLE"))
    return f"DECISION: {decision}\n{notes}REASONING: {_sentences(r, _depth(c))}{c.considered()}\n"


def _draft(c: _Ctx) -> str:
    r = c.rng
    est = ", ".join(r.sample(_CONCEPTS, r.randint(1, 2)))
    req = ", ".join(r.sample(_CONCEPTS, r.randint(0, 2))) or "none"
    body = _section(c, 2 * _depth(c)) + f"\n\n$$|\\mathrm{{Aut}}| = {r.choice(_NUMBERS)}$$"
    return f"ESTABLISHES: {est}\nREQUIRES: {req}\nDIAGRAM_NEEDED: no\nDRAFT:\n## {c.topic[:60]}\n\n{body}\n"


def _exposition(c: _Ctx) -> str:
    r = c.rng
    decision = _vote(c, "expo", ("APPROVE", "REVISE", "REJECT"), (70, 20, 10))
    notes = "none" if decision == "APPROVE" else _claim(r)
    return (f"DECISION: {decision}\nCLARITY: {r.choice(_NOTES)}\nCORRECTNESS: {r.choice(_NOTES)}\n"
            f"FLOW: {r.choice(_NOTES)}\nDEPENDENCIES: {r.choice(('all established', 'uses an undefined term'))}\n"
            f"REVISION_NOTES: {notes}\n")


def _review_section(c: _Ctx) -> str:
    r = c.rng
    decision = _vote(c, "secrev", ("CONFIRMED", "REVISE"), (70, 30))
    text = (f"DECISION: {decision}\nACCURACY: {r.choice(_NOTES)}\nCLARITY: {r.choice(_NOTES)}\n"
            f"CONNECTIONS: {_claim(r)}\nREVISION_NOTES: {'none' if decision == 'CONFIRMED' else _claim(r)}\n")
    return text + (f"REVISED_SECTION:\n{_section(c, 2)}\n" if decision == "REVISE" else "")


def _questions(c: _Ctx) -> str:
    r = c.rng
    qs = [{"question": f"Where else does {n} appear alongside {r.choice(_CONCEPTS)}?",
           "type": r.choice(("supporting", "challenging", "alternative", "contextual")),
           "concepts": r.sample(_CONCEPTS, 2), "numbers": [n], "priority": r.randint(1, 10)}
          for n in (r.choice(_NUMBERS) for _ in range(r.randint(3, 6)))]
    return json.dumps({"questions": qs}, ensure_ascii=False, indent=2) + "\n"


def _evaluate_source(c: _Ctx) -> str:
    r = derive_rng(c.seed, "source", c.subject)   # a source's trust does not depend on who is asked
    score = r.randint(15, 98)
    reasons = ["cites primary texts" if score >= 60 else "no citations",
               "scholarly tone" if score >= 50 else "promotional tone"]
    return json.dumps({"score": score, "scholarly_tone": score >= 50, "cites_primary": score >= 60,
                       "reasons": reasons}, indent=2) + "\n"


def _extract_findings(c: _Ctx) -> str:
    r = c.rng
    findings = [{"summary": _claim(r), "quote": _claim(r), "type": r.choice(("supporting", "challenging",
                 "alternative", "contextual")), "confidence": round(r.uniform(0.4, 0.95), 2),
                 "concepts": r.sample(_CONCEPTS, 2), "numbers": [r.choice(_NUMBERS)]}
                for _ in range(r.randint(1, 4))]
    numbers = [{"value": n, "context": f"{n} in {r.choice(_OBJECTS)}", "significance": r.choice(_NOTES),
                "mention_type": r.choice(("explicit", "derived"))} for n in r.sample(_NUMBERS, 2)]
    return json.dumps({"findings": findings, "numbers": numbers}, ensure_ascii=False, indent=2) + "\n"


def _advisor(c: _Ctx) -> str:
    r = c.rng
    w = [round(r.uniform(0.5, 2.0), 1) for _ in range(3)]
    return (f"EXPLORER_WEIGHT: {w[0]}\nDOCUMENTER_WEIGHT: {w[1]}\nRESEARCHER_WEIGHT: {w[2]}\n"
            f"REASONING: The documenter backlog {r.choice(('grows', 'shrinks'))}; shift weight accordingly.\n")


def _ask(c: _Ctx) -> str:
    head = " ".join(c.prompt.split())[:80]
    return f"sim answer to: {head}\n[sim-{c.mode}] digest {hashlib.sha256(c.prompt.encode()).hexdigest()[:12]}\n"


_GENERATORS = {
    ASK: _ask, EXPLORER_EXPLORE: _explore, EXPLORER_CRITIQUE: _critique, EXPLORER_SYNTHESIS: _synthesis,
    EXPLORER_EXTRACT: _extract, EXPLORER_CONSOLIDATE: _consolidate, EXPLORER_DEDUP: _dedup,
    EXPLORER_REVIEW1: _review1, EXPLORER_MATHCHECK: _mathcheck, EXPLORER_REVIEW2: _review2,
    EXPLORER_REVIEW3: _review3, DOCUMENTER_ADDRESS_COMMENT: _address_comment, DOCUMENTER_PLAN: _plan,
    DOCUMENTER_EVALUATE: _evaluate, DOCUMENTER_DRAFT: _draft, DOCUMENTER_EXPOSITION: _exposition,
    DOCUMENTER_REVIEW_SECTION: _review_section, RESEARCHER_GENERATE_QUESTIONS: _questions,
    RESEARCHER_EVALUATE_SOURCE: _evaluate_source, RESEARCHER_EXTRACT_FINDINGS: _extract_findings,
    ADVISOR_WEIGHTS: _advisor,
}
assert set(_GENERATORS) == set(KINDS) and set(REQUIRED_TAGS) <= set(KINDS)


def answer(kind: str, payload: dict, prompt: str, mode: str, rng: random.Random, *, seed=0,
           account: str = "sim", reviews: dict | None = None) -> str:
    """The well-formed answer to a task of ``kind``; a pure function of the arguments.

    ``rng`` drives wording; ``seed`` (with ids in ``payload``: ``insight_id``/``section_id``/...,
    ``reviewer``/``evaluator``, ``candidates``/``insight_ids``, ``blessed_ids``, ``step``) drives the
    verdicts that must agree across reviewers. Unknown kinds get a generic deterministic answer.
    """
    c = _Ctx(payload or {}, prompt or "", mode, rng, seed, account, reviews)
    gen = _GENERATORS.get(kind)
    if gen is None:
        return f"sim generic answer (kind {kind}): {_sentences(rng, 2 * _depth(c))}\n"
    return gen(c)


_NOTES_HEAD = ("Working notes.", "Before answering, some context.", "Let me think this through first.",
               "Some background that bears on the answer.")


def pad(text: str, kind: str, size: int, rng: random.Random) -> str:
    """``text`` grown to about ``size`` bytes (UTF-8) with plausible working notes, where the kind's
    parser ignores text: before the first tag of a formatted answer (as a model that thinks aloud
    writes it; JSON answers then come fenced, as decorate's prose does), after an unformatted one.
    The notes are claim sentences in paragraphs with no tag-like line (no ``WORD:`` or ``[WORD]``
    at a line start), so no field gains or loses a value. A text already that long is returned as is."""
    missing = size - len(text.encode())
    if missing <= 0:
        return text
    fenced = kind in JSON_KINDS and not text.lstrip().startswith("```")
    if fenced:
        text = f"```json\n{text}```\n"
        missing = size - len(text.encode())
    paragraphs, used = [rng.choice(_NOTES_HEAD)], len(_NOTES_HEAD[0])
    while used < missing:
        para = _sentences(rng, rng.randint(3, 6))
        paragraphs.append(para)
        used += len(para.encode()) + 2
    notes = "\n\n".join(paragraphs)
    notes = notes.encode()[:max(0, missing - 2)].decode(errors="ignore").rstrip()
    if kind in REQUIRED_TAGS:
        return notes + "\n\n" + text
    return text + "\n\n" + notes


_PREFIXES = ("Sure! Here is my assessment.\n\n", "Thank you for the detailed context. After careful thought:\n\n",
             "Below is my response in the requested format.\n\n")
_SUFFIXES = ("\n\nLet me know if you would like me to expand on any point.", "\n\nI hope this helps.",
             "\n\n*Note: the above reflects my best judgement.*")
_GARBAGE = ("I'm sorry, but I can't help with that request.",
            "<!DOCTYPE html><html><body><h1>Something went wrong</h1></body></html>",
            "Thinking...\n\nThe user wants an analysis. Let me consider the structure first, then")


def decorate(text: str, kind: str, rng: random.Random, sloppy_rate: float = 0.05,
             garbage_rate: float = 0.0) -> str:
    """Apply realistic format deviations. Only formatted kinds are touched (``ask`` and unknown kinds
    have no format to deviate from). With probability ``sloppy_rate`` one to three of: Markdown bold on
    tag names, prose before and after the tags, CRLF line endings — all of which a tolerant parser
    accepts. With probability ``garbage_rate``, an answer with none of the kind's tags."""
    if kind not in REQUIRED_TAGS:
        return text
    if rng.random() < garbage_rate:
        return rng.choice(_GARBAGE)
    if rng.random() >= sloppy_rate:
        return text
    picked = rng.sample(("bold", "prose", "crlf"), rng.randint(1, 3))
    for how in ("bold", "prose", "crlf"):   # fixed order: CRLF last, so line endings stay uniform
        if how not in picked:
            continue
        if how == "bold" and kind not in JSON_KINDS:
            style = rng.choice((r"**\1:**", r"**\1**:"))
            text = re.sub(r"^([A-Z][A-Z_]+):", style, text, flags=re.M)
            text = re.sub(r"^(\[[A-Z_]+\])", r"**\1**", text, flags=re.M)
        elif how == "prose":
            body = f"```json\n{text}```" if kind in JSON_KINDS else text
            text = rng.choice(_PREFIXES) + body + rng.choice(_SUFFIXES) + "\n"
        elif how == "crlf":
            text = text.replace("\r\n", "\n").replace("\n", "\r\n")
    return text
