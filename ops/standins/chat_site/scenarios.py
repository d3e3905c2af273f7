"""What the stand-in chat site shows for a turn, as a pure function of its scenario and age.

The server owns conversation state (so reopening ``/c/<id>`` mid-answer shows the progress and later the
final answer); pages poll :func:`turn_state` through ``GET /api/conversation/<id>``. Times are seconds
since the prompt was submitted, divided by the control's ``speed``.

Scenarios (per request: ``[[scenario:NAME]]`` in the prompt or an ``X-Standin-Scenario`` header; default:
the control endpoint's ``scenario``):

=============  =============================================================================================
normal         thinking, then the answer streams, then the finished marker
pro_long       a short preamble streams and *settles* with no stop button (the finished marker flashes
               once, ~0.12 s), then a long thinking phase ("Pro thinking", progress bar, stop button), then
               the real answer: a gate that trusts silence or one flash returns the preamble
slow           8 s of slow streaming (reopen mid-answer: the worker dies, reconcile finds the answer)
rate_limit     refused with a limit message naming the reset time (ChatGPT: a toast "try again after
               2:56 PM"; Gemini: a reply "You've reached your limit ... until Jan 10, 2:56 PM")
capacity       ChatGPT: "at capacity" toast; Gemini: "A lot of people are using Deep Think right now" reply
error          ChatGPT: inline "Something went wrong" error in the turn; Gemini: "wasn't able to finish"
short          a genuine short answer that mentions "quota" and "an error occurred" (words of the sites'
               notice patterns): it must be delivered as an answer, not taken for a notice
busy           the overload notice *in the reply area*, naming the turn's mode: ChatGPT "A lot of people are
               using Pro right now. Please try again in a few minutes."; Gemini "A lot of people are using
               Fast right now ... This didn't count against your Fast limit."
went_wrong     the failure notice in the reply area (both skins): "Something went wrong. There was an error
               generating a response. Please try again."
limit_in_reply a limit notice in the reply area naming the turn's mode and the reset: ChatGPT "You've reached
               the Pro limit for now. Try again after 2:56 PM."; Gemini "... limit for chats with Fast until ..."
=============  =============================================================================================

Control-only states: ``login_required`` (a login wall), ``deep`` = ``missing`` / ``disabled`` (the Pro /
Deep Think option is absent or greyed out) / ``unapplied`` (the option is offered and clickable, but
choosing it changes nothing: the picker still shows the standard mode), ``layout`` =
``changed-after-send`` (the composer is as before and takes the prompt, but the reply is rendered in
elements the site files' assistant-turn, stop and thinking selectors do not match).
"""
from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo

from services.backends.prompt_answers import answer_prompt

SCENARIOS = ("normal", "pro_long", "slow", "rate_limit", "capacity", "error", "short", "busy", "went_wrong",
             "limit_in_reply")
WENT_WRONG = "Something went wrong. There was an error generating a response. Please try again."
MARKER = re.compile(r"\s*\[\[scenario:([a-z_]+)\]\]\s*")
PREAMBLE = "Let me restate the problem before working through it carefully."
SHORT_ANSWER = ("Short answer: the quota of this group is 7, and an error occurred only in the first draft of "
                "the proof.")


def scenario_of(prompt: str, header: str | None, default: str) -> str:
    m = MARKER.search(prompt)
    name = m.group(1) if m else (header or default)
    return name if name in SCENARIOS else "normal"


def clean(prompt: str) -> str:
    """The prompt without scenario markers (what the answer echoes)."""
    return MARKER.sub(" ", prompt).strip()


DEEP_LABELS = ("Pro", "Deep Think")


def answer_text(skin: str, mode: str, prompt: str, reviews: dict | None = None) -> str:
    """The reply to ``prompt`` served in mode label ``mode``: a research prompt (``prompts/``) is answered in
    its format by the sim's generator (services/backends/prompt_answers.py, as ``skin``; ``reviews`` tunes
    its review verdicts); anything else with the echo tests recognise."""
    research = answer_prompt(clean(prompt), "deep" if mode in DEEP_LABELS else "standard", account=skin,
                             reviews=reviews)
    if research is not None:
        return research
    return (f"Stand-in {skin} answer [{mode}] to: {clean(prompt)}\n\n"
            "Here is a worked reply with **markdown** and $x^2 + y^2 = z^2$.\n\n"
            "- first point\n- second point\n\nThat is all.")


def _partial(text: str, fraction: float) -> str:
    return text[:max(1, int(len(text) * min(1.0, max(0.0, fraction))))]


def _reset_clock(turn: dict, control: dict, with_date: bool) -> str:
    return reset_clock(turn["created"], control, with_date)


def reset_clock(start: float, control: dict, with_date: bool) -> str:
    """The reset time a limit message names: ``reset_in`` seconds after ``start``, in the control's zone."""
    when = dt.datetime.fromtimestamp(start + float(control.get("reset_in", 2100)), ZoneInfo(control.get("tz") or "UTC"))
    clock = when.strftime("%I:%M %p").lstrip("0")
    return f"{when.strftime('%b')} {when.day}, {clock}" if with_date else clock


def _state(**kw) -> dict:
    out = {"reply": True, "text": "", "stop": False, "bar": False, "thinking": None, "progress": False,
           "error": None, "banner": None, "done": False}
    out.update(kw)
    return out


def turn_state(turn: dict, now: float, control: dict) -> dict:
    """The visible state of ``turn`` (a dict with skin, prompt, mode, scenario, created) at ``now``."""
    t = (now - turn["created"]) * float(control.get("speed", 1.0))
    skin, scenario = turn["skin"], turn["scenario"]
    answer = answer_text(skin, turn["mode"], turn["prompt"], control.get("reviews"))
    chatgpt = skin == "chatgpt"
    if scenario == "pro_long":
        if t < 0.4:
            return _state(text=_partial(PREAMBLE, t / 0.4), stop=True)
        if t < 2.0:   # the trap: settled text, no stop button, one short flash of the finished marker
            return _state(text=PREAMBLE, bar=1.0 <= t < 1.12)
        if t < 4.0:
            return _state(text=PREAMBLE if chatgpt else "Generating your response… Check back later.",
                          stop=True, thinking="Pro thinking" if chatgpt else "Deep Think", progress=True)
        if t < 5.0:
            return _state(text=_partial(answer, (t - 4.0) / 1.0), stop=True)
        return _state(text=answer, bar=True, done=True)
    if scenario == "slow":
        if t < 1.0:
            return _state(stop=True, thinking="Thinking", progress=True)
        if t < 9.0:
            return _state(text=_partial(answer, (t - 1.0) / 8.0), stop=True)
        return _state(text=answer, bar=True, done=True)
    if scenario == "rate_limit":
        if t < 0.3:
            return _state(reply=not chatgpt, stop=True)
        if chatgpt:
            return _state(reply=False, banner="You've reached our limit of messages per hour. Please try again "
                                              f"after {_reset_clock(turn, control, False)}.", done=True)
        return _state(text="You've reached your limit for chats with Deep Think until "
                           f"{_reset_clock(turn, control, True)}. Try again then.", bar=True, done=True)
    if scenario == "capacity":
        if t < 0.3:
            return _state(reply=not chatgpt, stop=True)
        if chatgpt:
            return _state(reply=False, banner="ChatGPT is at capacity right now. Please try again later.",
                          done=True)
        return _state(text="A lot of people are using Deep Think right now and I need a moment to catch up. "
                           "Please try again in a bit.", bar=True, done=True)
    if scenario == "error":
        if t < 0.5:
            return _state(stop=True, thinking="Thinking")
        if chatgpt:
            return _state(error="Something went wrong while generating the response. If this issue persists "
                                "please contact us through our help center at help.openai.com.", done=True)
        return _state(text="Sorry, I ran into an issue and wasn't able to finish thinking. This attempt didn't "
                           "count against your Deep Think limit.", bar=True, done=True)
    if scenario == "busy":
        if t < 0.3:
            return _state(stop=True, thinking="Thinking")
        if chatgpt:
            return _state(text=f"A lot of people are using {turn['mode']} right now. Please try again in a few "
                               "minutes.", bar=True, done=True)
        return _state(text=f"A lot of people are using {turn['mode']} right now, so I can't answer at the moment. "
                           f"This didn't count against your {turn['mode']} limit. Please try again in a few minutes.",
                      bar=True, done=True)
    if scenario == "limit_in_reply":
        if t < 0.3:
            return _state(stop=True, thinking="Thinking")
        if chatgpt:
            return _state(text=f"You've reached the {turn['mode']} limit for now. Try again after "
                               f"{_reset_clock(turn, control, False)}.", bar=True, done=True)
        return _state(text=f"You've reached your limit for chats with {turn['mode']} until "
                           f"{_reset_clock(turn, control, True)}. Try again then.", bar=True, done=True)
    if scenario == "went_wrong":
        if t < 0.3:
            return _state(stop=True, thinking="Thinking")
        return _state(text=WENT_WRONG, bar=True, done=True)
    if scenario == "short":
        if t < 0.3:
            return _state(stop=True, thinking="Thinking", progress=not chatgpt)
        return _state(text=SHORT_ANSWER, bar=True, done=True)
    # normal
    if t < 0.3:
        return _state(stop=True, thinking="Thinking", progress=not chatgpt)
    if t < 1.3:
        return _state(text=_partial(answer, (t - 0.3) / 1.0), stop=True)
    return _state(text=answer, bar=True, done=True)
