"""Finding a turn again whose conversation URL was never recorded: the site's history list (pure decisions
plus one page walk).

ChatGPT first shows a transient ``/c/WEB:<request id>`` route and the conversation's real ``/c/<id>`` only
seconds later (≈ 15 s on the real site); a worker killed in between leaves a turn marked sent with no URL
to reopen. The site did get it: the new conversation is in the history list (the sidebar, newest first).
So, before the worker sends a new chat's first prompt, it records the history list as it was
(``history_before``); reconciling such a turn then looks at the conversations that appeared since
(``history_before`` unknown: the newest few), opens each and compares its first prompt with the turn's
(the title only orders the candidates: real titles are generated, not the prompt). The verdict:

* ``found``: the conversation holding the prompt (its URL is then recorded and the reply read as usual);
* ``absent``: no new conversation holds the prompt, the list was known before sending and the turn was
  sent at least ``HISTORY_GRACE`` seconds ago (a younger send is looked for again until then): the site
  never got it, and it may be sent;
* ``unknown``: anything less certain (no history list, the list before sending or the sending time not
  recorded): not re-sent blindly.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

HISTORY_SETTLE = 5.0      # seconds a freshly loaded page may take to fill its history list
HISTORY_GRACE = 60.0      # seconds after sending before a prompt missing from the history counts as lost
HISTORY_CANDIDATES = 6    # new conversations opened at most per look, newest (and best title match) first
HISTORY_POLL = 5.0        # seconds between two looks at the list while the send is younger than HISTORY_GRACE
PROMPT_CHARS = 200        # how much of the first prompt must agree


@dataclass(frozen=True)
class Verdict:
    kind: str                  # found | absent | unknown
    url: str | None = None
    title: str | None = None
    detail: str = ""


def folded(text: str) -> str:
    """A prompt as compared: whitespace folded, case kept, the first PROMPT_CHARS characters."""
    return " ".join((text or "").split())[:PROMPT_CHARS]


def candidates(items: list[dict], before: list[str] | None, prompt: str) -> list[dict]:
    """The history entries to open, best first: those not listed before sending (all of the newest when
    ``before`` is unknown), a title that starts the prompt (or that the prompt starts) first, then the
    list's own order (newest first)."""
    known = set(before or ())
    fresh = [item for item in items if item["url"] not in known]
    want = folded(prompt).lower()

    def titled(item: dict) -> bool:
        title = folded(item.get("title") or "").lower().rstrip(".… ")
        return bool(title) and (want.startswith(title) or title.startswith(want))

    ranked = sorted(enumerate(fresh), key=lambda pair: (not titled(pair[1]), pair[0]))
    return [item for _, item in ranked][:HISTORY_CANDIDATES]


def search(chat, prompt: str, before: list[str] | None, sent_at: float | None, ready_timeout: float,
           now=time.time) -> Verdict:
    """Walk the history list of ``chat`` (a :class:`~.page.ChatPage` on a loaded page of the site) for the
    conversation whose first prompt is ``prompt``. While the send is younger than HISTORY_GRACE the list is
    read again (it may lag) rather than answering unknown: an unknown reconcile costs the task an attempt.
    Page problems (SiteProblem, Playwright errors) propagate to the caller, who knows what they mean while
    reconciling."""
    settle = time.monotonic() + HISTORY_SETTLE
    while True:
        items = chat.history()
        if items or time.monotonic() > settle:
            break
        time.sleep(0.2)
    if items is None:
        return Verdict("unknown", detail="the page shows no history list (check history_item in the site file)")
    want = folded(prompt)
    opened: list[str] = []
    home = chat.new_chat_url
    while True:
        for item in candidates(items, list(before or ()) + opened if before is not None else opened, prompt):
            chat.goto(item["url"], ready_timeout)
            s = chat.wait_ready(ready_timeout, min_users=1)
            opened.append(item["url"])
            if s.users >= 1 and folded(s.first_user) == want:
                return Verdict("found", item["url"], item.get("title") or s.title,
                               f"its first prompt is in {item['url']} of the history list")
        waited = None if sent_at is None else now() - sent_at
        if before is None or waited is None or waited >= HISTORY_GRACE:
            break
        # too early to call it lost: look again once the list may have caught up
        time.sleep(min(HISTORY_POLL, HISTORY_GRACE - waited))
        chat.goto(home, ready_timeout)
        chat.wait_ready(ready_timeout)
        items = chat.history() or []
    if before is not None and waited is not None:
        return Verdict("absent", detail=f"none of the {len(opened)} conversation(s) new in the history list since "
                                        f"it was sent {waited:.0f}s ago holds the prompt")
    why = "the history list before sending is unknown" if before is None else "its sending time is unknown"
    return Verdict("unknown", detail=f"no conversation in the history list holds the prompt ({len(opened)} "
                                     f"opened), and {why}")
