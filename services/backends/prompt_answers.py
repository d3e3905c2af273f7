"""Research-format answers to a prompt alone: what the stand-ins of the real providers reply.

The simulated backend knows each task's kind and payload and asks :func:`services.backends.sim_answers.answer`
directly. A stand-in of a real provider (``ops/standins``: the Claude and OpenAI-compatible APIs, the chat
site) sees only what the real service would see — the prompt text — so :func:`answer_prompt` first reads
from the prompt what the module asked for, then calls that same generator:

* the **kind**, from the response format the prompt states (``prompts/<module>/*.md`` end with it: "RESPONSE
  FORMAT", "Answer in exactly this format", "Answer with one JSON object", the documenter's plan options).
  Only the text from the first such marker on is read, so the earlier exchanges a prompt quotes (which
  carry the tags of *their* formats) never decide it. :data:`SIGNATURES` lists the tags that tell each kind.
* the **payload** the generator uses for verdicts that several reviewers share: the insight or statement
  under review (the block after ``THE INSIGHT ...:``, ``THE STATEMENT:``, ``NEW:``, ``WRITE A SECTION ABOUT
  THIS INSIGHT:``) as the subject, the candidate ids of numbered ``N. [id] text`` lines (the documenter's
  plan, the dedup check), and the round-3 step.

A prompt none of the formats matches (``fanoctl ask "hello"``) gets None: the stand-in then answers as
it always did. ``account`` is who answers (a model name): reviewers on different accounts draw their own
ratings around the subject's shared latent quality, as the sim's do; ``reviews`` tunes that quality
(``{"good": 1.0, "agree": 1.0}``: every panel blesses).
"""
from __future__ import annotations

import re

from services.backends import sim_answers as A

# where a prompt's own format begins (the first of these; everything before it is context)
# (case-insensitive: "Judge it and answer in exactly this format")
FORMAT_MARKERS = ("response format", "answer in exactly this format", "answer with one json object",
                  "choose exactly one option", "## output format")

#: (kind, tags that must all appear in the prompt's format part), first match wins: more specific first
SIGNATURES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (A.EXPLORER_EXPLORE, ("[NEW_INSIGHTS]",)),
    (A.EXPLORER_CRITIQUE, ("[CRITICAL_ISSUES]",)),
    (A.EXPLORER_REVIEW3, ("STRONGEST_ARGUMENT:",)),
    (A.EXPLORER_REVIEW3, ("ACCEPT_MODIFICATION:",)),
    (A.EXPLORER_REVIEW3, ("FINAL_STANCE:",)),
    (A.EXPLORER_REVIEW2, ("UPDATED_RATING:",)),
    (A.EXPLORER_REVIEW1, ("RATING:", "NATURALNESS_ASSESSMENT:")),
    (A.EXPLORER_DEDUP, ("IS_DUPLICATE:",)),
    (A.EXPLORER_CONSOLIDATE, ("PROPOSED_BY:",)),
    (A.EXPLORER_EXTRACT, ("INTUITION_NOTE:",)),
    (A.EXPLORER_MATHCHECK, ("PRECISE_STATEMENT:", "VERDICT:")),
    (A.EXPLORER_SYNTHESIS, ("TITLE:", "SUMMARY:", "CONTENT:")),
    (A.DOCUMENTER_ADDRESS_COMMENT, ("UNDERSTOOD:",)),
    (A.DOCUMENTER_PLAN, ("INSIGHT_ID:",)),
    (A.DOCUMENTER_EVALUATE, ("INEVITABLE:",)),
    (A.DOCUMENTER_DRAFT, ("DRAFT:", "ESTABLISHES:")),
    (A.DOCUMENTER_EXPOSITION, ("CORRECTNESS:",)),
    (A.DOCUMENTER_REVIEW_SECTION, ("ACCURACY:",)),
    (A.RESEARCHER_GENERATE_QUESTIONS, ('"questions"',)),
    (A.RESEARCHER_EVALUATE_SOURCE, ('"score"',)),
    (A.RESEARCHER_EXTRACT_FINDINGS, ('"findings"',)),
    (A.ADVISOR_WEIGHTS, ("EXPLORER_WEIGHT:",)),
)
_STEPS = {"STRONGEST_ARGUMENT:": "minority", "ACCEPT_MODIFICATION:": "majority", "FINAL_STANCE:": "vote"}
_SUBJECT = re.compile(r"^(?:THE INSIGHT[^\n:]*|WRITE A SECTION ABOUT THIS INSIGHT|THE STATEMENT|NEW):[ \t]*\n"
                      r"(.+?)(?:\n[ \t]*\n|\Z)", re.M | re.S)
_CANDIDATE = re.compile(r"^\s*\d+\.\s*\[([^\]\s]+)\]", re.M)


def format_part(prompt: str) -> str | None:
    """The prompt from its first format marker on (None: it states no format this module knows)."""
    lower = prompt.lower()
    found = [i for i in (lower.find(m) for m in FORMAT_MARKERS) if i >= 0]
    return prompt[min(found):] if found else None


def prompt_kind(prompt: str) -> tuple[str, dict] | None:
    """(kind, payload) a research prompt asks for, read from its text; None for any other prompt."""
    tail = format_part(prompt or "")
    if tail is None:
        return None
    for kind, tags in SIGNATURES:
        if all(tag in tail for tag in tags):
            return kind, _payload(kind, prompt, tags[0])
    return None


def _payload(kind: str, prompt: str, tag: str) -> dict:
    payload: dict = {}
    head = prompt[:len(prompt) - len(format_part(prompt) or "")]
    m = _SUBJECT.search(head)
    if m and m.group(1).strip():
        payload["insight"] = " ".join(m.group(1).split())
    ids = _CANDIDATE.findall(head)
    if ids:
        payload["candidates"] = payload["insight_ids"] = ids
    if kind == A.EXPLORER_REVIEW3:
        payload["step"] = _STEPS[tag]
    return payload


def answer_prompt(prompt: str, mode: str = "standard", *, account: str = "standin", seed=0,
                  reviews: dict | None = None) -> str | None:
    """The research-format answer to ``prompt`` (see the module doc), or None when it asks for no known
    format. Deterministic in (prompt, mode, account, seed): a re-asked prompt (a retry note appended) is a
    new prompt and gets a new draw."""
    found = prompt_kind(prompt)
    if found is None:
        return None
    kind, payload = found
    rng = A.derive_rng(seed, account, mode, prompt)
    return A.answer(kind, payload, prompt, mode, rng, seed=seed, account=account, reviews=reviews)
