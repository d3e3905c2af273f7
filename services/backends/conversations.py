"""What an account remembers about the conversations it holds: the provider's handle and the transcript.

A conversation is bound to one account (docs/tasks.md § Conversations), so its worker — and only it —
keeps, under its data directory, one append-only file per conversation:

- the **handle** that reopens it at the provider (a web chat's URL and title), written the moment it
  exists, before the reply is awaited: a crash mid-answer is reconciled by reopening the URL, never by
  re-sending (a scarce request is not spent twice);
- the **transcript**, turn by turn, stored once (API backends replay it; docs/tasks.md § Conversations);
- ``sent`` marks (the prompt left, reply pending) that reconciliation reads;
- ``cut`` marks (an API attempt stopped at its token budget): the task's next attempt asks for more.

A one-shot task (no conversation) is its own conversation keyed ``task-<id>`` (``Turn.turn_key`` minus
the index), so a web ``ask`` cut off by a crash is reopened the same way.

Files are JSON lines, each append flushed and fsync'd before the call returns. A crash can tear the last
line; readers skip a line that does not parse, and the writer starts a new line after a torn one.
The last record for a turn index wins (an answer re-read after reconciliation replaces a partial one).

**Bounded on disk** (docs/storage.md): a file past :data:`COMPACT_MIN_BYTES` whose superseded records (a
``sent`` mark of a completed turn, an earlier answer to the same turn, handle fields set again) make up
at least a quarter of it is rewritten without them when a reply is recorded — each prompt and answer is
then in the file once; the rewrite is atomic (a temporary file, fsync'd, ``os.replace``d, the directory
fsync'd), so a crash leaves the old file or the new one. Files of conversations untouched for
:data:`CONVERSATION_RETENTION` (one-shots: :data:`ONE_SHOT_RETENTION`) are deleted, at worker start and
hourly: the research record of a conversation is the module's (the explorer's exchanges in the broker),
this file is the account's replay and reconciliation aid. A conversation resumed after that starts over
at the provider with what its prompt carries (the explorer quotes the recent exchanges in every turn).

:func:`replay_window` bounds what an API backend replays: the first exchange stays pinned (it carries the
seed and its definitions), then a running summary of what is cut, then as many recent exchanges as fit,
so a definition from turn 2 survives turn 60 without the transcript growing without bound.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from services.backends.base import Provider, Reply, Turn

ONE_SHOT_RETENTION = 30 * 86400   # seconds a one-shot task's record is kept (reconciled long before)
CONVERSATION_RETENTION = 30 * 86400   # seconds an idle conversation's file is kept
COMPACT_MIN_BYTES = 32 * 1024     # smaller files are never rewritten (cheap to read; rewrites cost fsyncs)
PRUNE_INTERVAL = 3600.0           # seconds between pruning passes of a running worker


def conversation_key(turn: Turn) -> str:
    """The conversation a turn belongs to (one-shot tasks are their own)."""
    return turn.conversation or f"task-{turn.task_id}"


class ConversationStore:
    """Durable per-account record of conversations. Single writer: the account's worker process."""

    def __init__(self, root: Path, one_shot_retention: float = ONE_SHOT_RETENTION,
                 conversation_retention: float = CONVERSATION_RETENTION):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.retention = (one_shot_retention, conversation_retention)
        for stale in self.root.glob("*.jsonl.tmp"):   # a rewrite cut off by a crash: the original stands
            stale.unlink(missing_ok=True)
        # opened once per worker start: the natural moment to drop dead records (file mtimes are real
        # time, so this uses the real clock, not the scaled world clock); then hourly (see _append)
        self.prune(time.time())

    def prune(self, now: float) -> int:
        """Delete one-shot and conversation files idle past their retention; returns how many."""
        self._last_prune = now
        return (self.prune_one_shots(self.retention[0], now)
                + self.prune_conversations(self.retention[1], now))

    def prune_conversations(self, max_age: float, now: float) -> int:
        """Delete conversation files untouched for ``max_age`` seconds (see the module docstring)."""
        removed = 0
        for path in self.root.glob("*.jsonl"):
            if path.name.startswith("oneshot-"):
                continue
            try:
                if now - path.stat().st_mtime > max_age:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

    def _path(self, key: str) -> Path:
        digest = hashlib.sha1(key.encode("utf-8")).hexdigest()[:24]
        prefix = "oneshot-" if key.startswith("task-") else ""
        return self.root / f"{prefix}{digest}.jsonl"

    def prune_one_shots(self, max_age: float, now: float) -> int:
        """Delete one-shot records untouched for ``max_age`` seconds (a one-shot task is reconciled within
        its lease's lifetime, so weeks-old ones are dead weight); conversations are kept. Returns the count."""
        removed = 0
        for path in self.root.glob("oneshot-*.jsonl"):
            try:
                if now - path.stat().st_mtime > max_age:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

    def _append(self, key: str, record: dict) -> None:
        if time.time() - self._last_prune >= PRUNE_INTERVAL:
            self.prune(time.time())
        path = self._path(key)
        line = json.dumps(dict(record, key=key), ensure_ascii=False, separators=(",", ":")) + "\n"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            size = os.fstat(fd).st_size
            if size:
                with open(path, "rb") as f:
                    f.seek(size - 1)
                    if f.read(1) != b"\n":   # a torn line from a crash: do not glue onto it
                        line = "\n" + line
            os.write(fd, line.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)

    def _records(self, key: str) -> list[dict]:
        try:
            raw = self._path(key).read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return []
        out = []
        for line in raw.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("key") == key:
                out.append(record)
        return out

    # --- the provider's handle --------------------------------------------------------------------------

    def handle(self, key: str) -> dict:
        """Merged handle fields (``url``, ``title``, ...) recorded for the conversation; {} if none."""
        merged: dict = {}
        for record in self._records(key):
            if record.get("type") == "handle":
                merged.update(record.get("fields") or {})
        return merged

    def set_handle(self, key: str, **fields) -> None:
        """Record handle fields now (durable on return). Unchanged values are not rewritten."""
        current = self.handle(key)
        changed = {k: v for k, v in fields.items() if current.get(k) != v}
        if changed:
            self._append(key, {"type": "handle", "fields": changed})

    # --- the transcript -------------------------------------------------------------------------------

    def mark_sent(self, key: str, index: int, prompt: str, **meta) -> None:
        """The prompt of turn ``index`` has left (or is about to): its reply is pending."""
        self._append(key, {"type": "sent", "index": index, "prompt": prompt, "meta": meta})

    def record_reply(self, key: str, index: int, prompt: str, reply: str, **meta) -> None:
        """Turn ``index`` is complete with ``reply``."""
        self._append(key, {"type": "turn", "index": index, "prompt": prompt, "reply": reply, "meta": meta})
        self.compact(key)

    def note_cut(self, turn: Turn, budget: int) -> None:
        """This attempt of the task's turn was cut at ``budget`` tokens (api_errors.length_cut): the next
        attempt of the same task asks for more (:meth:`cut_at`)."""
        self._append(conversation_key(turn), {"type": "cut", "index": turn.turn_index,
                                              "meta": {"task_id": turn.task_id, "max_tokens": budget}})

    def cut_at(self, turn: Turn) -> int | None:
        """The largest token budget at which an earlier attempt of this task's turn was cut, or None."""
        budgets = [r["meta"]["max_tokens"] for r in self._records(conversation_key(turn))
                   if r.get("type") == "cut" and r.get("index") == turn.turn_index
                   and isinstance(r.get("meta"), dict) and r["meta"].get("task_id") == turn.task_id
                   and isinstance(r["meta"].get("max_tokens"), int)]
        return max(budgets) if budgets else None

    def compact(self, key: str, min_bytes: int = COMPACT_MIN_BYTES, min_saving: float = 0.25) -> bool:
        """Rewrite the conversation's file without superseded records when it is past ``min_bytes`` and
        they are at least ``min_saving`` of it (see the module docstring). Returns whether it was rewritten."""
        path = self._path(key)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return False
        if size < min_bytes:
            return False
        records = self._records(key)
        handle: dict = {}
        turns: dict[int, tuple[int, dict]] = {}
        sent: dict[int, tuple[int, dict]] = {}
        for pos, record in enumerate(records):
            kind, index = record.get("type"), record.get("index")
            if kind == "handle":
                handle.update(record.get("fields") or {})
            elif kind == "turn" and isinstance(index, int):
                turns[index] = (pos, record)
            elif kind == "sent" and isinstance(index, int):
                sent[index] = (pos, record)
        # a sent mark whose turn completed is superseded; one after the last answer (a re-send) is not
        live_sent = [(pos, r) for i, (pos, r) in sent.items() if i not in turns or pos > turns[i][0]]
        kept = ([{"type": "handle", "fields": handle, "key": key}] if handle else [])
        kept += [r for _, r in sorted(list(turns.values()) + live_sent, key=lambda pr: pr[0])]
        lines = "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in kept).encode()
        if len(lines) >= size or len(lines) > (1 - min_saving) * size:
            return False
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(lines)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        dfd = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(dfd)   # the rename itself survives a power cut
        finally:
            os.close(dfd)
        return True

    def turns(self, key: str) -> list[Exchange]:
        """Completed exchanges by turn index (the last record per index wins)."""
        by_index: dict[int, Exchange] = {}
        for record in self._records(key):
            if record.get("type") == "turn" and isinstance(record.get("index"), int):
                by_index[record["index"]] = Exchange(record["index"], str(record.get("prompt", "")),
                                                     str(record.get("reply", "")), record.get("meta") or {})
        return [by_index[i] for i in sorted(by_index)]

    def reply(self, key: str, index: int) -> str | None:
        """The recorded reply of turn ``index``, if any."""
        for exchange in self.turns(key):
            if exchange.index == index:
                return exchange.reply
        return None

    def recorded(self, turn: Turn) -> Exchange | None:
        """The completed exchange of exactly this task's turn, if any: what a stateless API's
        reconciliation returns instead of sending again.

        Same conversation position, same prompt, *and* the same task (``meta.task_id``): a reconcile
        recovers an earlier attempt of this task whose outcome is unknown, never another task's answer.
        A different task with the same conversation, turn index and prompt (a module re-asking after an
        unusable answer, an operator's second ask) is a new question and must be sent; a record without
        a task id (written by an older version) matches nothing, so the turn is re-sent (allowed: the
        API is stateless)."""
        for record in reversed(self._records(conversation_key(turn))):
            meta = _meta(record)
            if (record.get("type") == "turn" and record.get("index") == turn.turn_index
                    and record.get("prompt") == turn.prompt and meta.get("task_id") == turn.task_id):
                return Exchange(turn.turn_index, turn.prompt, str(record.get("reply", "")), meta)
        return None

    def was_sent(self, key: str, index: int) -> bool:
        """Whether turn ``index`` was marked sent (or completed)."""
        return any(r.get("type") in ("sent", "turn") and r.get("index") == index for r in self._records(key))

    def sent_attempt(self, turn: Turn) -> bool:
        """Whether this attempt of this task's turn was marked sent (``mark_sent`` with its ``task_id`` and
        ``attempt``): then the provider may have it, even when no reply was recorded."""
        return any(r.get("type") == "sent" and r.get("index") == turn.turn_index
                   and _meta(r).get("task_id") == turn.task_id and _meta(r).get("attempt") == turn.attempt
                   for r in self._records(conversation_key(turn)))


def _meta(record: dict) -> dict:
    """A stored record's ``meta`` (an empty dict when it has none or it is not a dict)."""
    meta = record.get("meta")
    return meta if isinstance(meta, dict) else {}


def resend_note(store: ConversationStore, turn: Turn) -> str:
    """:meth:`Provider.resend_note` for a stateless API whose only memory is ``store``: whether the
    previous attempt (``turn``) was marked sent decides between "may have reached" and "never left"."""
    if store.sent_attempt(turn):
        return (f"attempt {turn.attempt} may have reached the API (it was sent and no reply was recorded); "
                f"a stateless API keeps nothing to ask about, so the turn is sent again")
    return f"attempt {turn.attempt} never left this worker (no send was recorded)"


class TranscriptProvider(Provider):
    """A provider of a stateless API (Claude, OpenAI-compatible) whose only memory of a turn is the
    account's own transcript (a :class:`ConversationStore` in ``transcripts``): what it answers about an
    earlier attempt — reconcile, the resend note, whether it spent nothing — is read there."""

    transcripts: Path
    store: ConversationStore | None = None

    def transcript(self) -> ConversationStore:
        """The account's transcript, opened on first use."""
        if self.store is None:
            self.store = ConversationStore(self.transcripts)
        return self.store

    def reconcile(self, turn: Turn) -> Reply | None:
        """The reply recorded for this task's earlier attempt before a crash, or None: the API keeps no
        state to ask, so re-sending is the way to get an answer (docs/tasks.md § Unknown turns); another
        task's reply never answers this one."""
        exchange = self.transcript().recorded(turn)
        if exchange is None:
            return None
        meta = {k: v for k, v in exchange.meta.items() if k not in ("task_id", "attempt")}
        return Reply(exchange.reply, dict(meta, reconciled=True))

    def resend_note(self, turn: Turn) -> str:
        return resend_note(self.transcript(), turn)

    def unspent(self, turn: Turn) -> bool:
        """No send of that attempt was recorded (the mark is written before a request leaves): it never
        left this worker, so its unit is refunded."""
        return not self.transcript().sent_attempt(turn)


@dataclass(frozen=True)
class Exchange:
    index: int
    prompt: str
    reply: str
    meta: dict = field(default_factory=dict)


# --- bounded replay ------------------------------------------------------------------------------------

_DEFINING = re.compile(r"^\s*(#+\s|\*\*?(definition|lemma|theorem|claim|conjecture|notation)|"
                       r"(definition|lemma|theorem|claim|conjecture|notation|let|define|we define|denote)\b)|"
                       r":=|≔|\bis defined as\b", re.IGNORECASE)
_SENTENCE = re.compile(r"(.+?[.!?])(\s|$)", re.DOTALL)


def _first_sentence(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    match = _SENTENCE.match(text)
    sentence = match.group(1) if match else text
    return sentence[:limit]


def summarize(exchanges: list[Exchange], limit: int) -> str:
    """An extractive summary of ``exchanges`` (what was asked and what was answered) within ``limit``
    characters.

    Lines that define or state something (definitions, notation, lemmas, headings, ``:=``) are kept
    verbatim (up to 400 characters each), oldest first, from the prompts as well as the replies: a user's
    "Definition: F := the Fano plane" answered by "Understood." must survive its turn being cut. A line or
    sentence repeated by later turns (a prompt template) is kept once. The first sentence of each prompt and reply
    fills what room is left. Deterministic and free: no model call is spent on bookkeeping."""
    defining: list[str] = []
    gists: list[str] = []
    seen: set[str] = set()
    for ex in exchanges:
        for who, text in (("asked", ex.prompt), ("answered", ex.reply)):
            for line in text.splitlines():
                line = line.strip()[:400]
                if line and line not in seen and _DEFINING.search(line):
                    seen.add(line)
                    defining.append(f"[turn {ex.index}, {who}] {line}")
            gist = _first_sentence(text)
            if gist and gist not in seen:
                seen.add(gist)
                gists.append(f"[turn {ex.index}, {who}] {gist}")
    out: list[str] = []
    used = 0
    for line in defining + gists:
        if used + len(line) + 1 > limit:
            continue
        out.append(line)
        used += len(line) + 1
    return "\n".join(out)


@dataclass(frozen=True)
class Replay:
    """What to send: ``pinned`` and ``recent`` exchanges in order, and the summary of those in between."""

    pinned: list[Exchange]
    summary: str
    recent: list[Exchange]
    cut: int                 # how many exchanges the summary stands for

    def messages(self, prompt: str) -> list[dict]:
        """Chat messages (user/assistant alternating, ending with ``prompt``). The summary is not a message:
        callers put :meth:`summary_block` into the system prompt, where it stays pinned."""
        out: list[dict] = []
        for ex in self.pinned + self.recent:
            out.append({"role": "user", "content": ex.prompt})
            out.append({"role": "assistant", "content": ex.reply})
        out.append({"role": "user", "content": prompt})
        return out

    def summary_block(self) -> str:
        if not self.summary:
            return ""
        return (f"Summary of {self.cut} earlier exchange(s) of this conversation that are not repeated "
                f"below (definitions verbatim):\n{self.summary}")


def replay_window(exchanges: list[Exchange], budget_chars: int, pinned: int = 1,
                  summary_chars: int | None = None) -> Replay:
    """Bound a transcript to about ``budget_chars`` characters (prompts plus replies).

    The first ``pinned`` exchanges always stay; the most recent exchanges that fit the rest of the budget
    follow; everything between is replaced by :func:`summarize` (at most ``summary_chars``, default a fifth
    of the budget)."""
    summary_chars = budget_chars // 5 if summary_chars is None else summary_chars

    def size(ex: Exchange) -> int:
        return len(ex.prompt) + len(ex.reply)

    head = exchanges[:pinned]
    rest = exchanges[pinned:]
    room = budget_chars - sum(size(ex) for ex in head) - summary_chars
    recent: list[Exchange] = []
    for ex in reversed(rest):
        if size(ex) > room:
            break
        recent.insert(0, ex)
        room -= size(ex)
    middle = rest[:len(rest) - len(recent)]
    return Replay(head, summarize(middle, summary_chars) if middle else "", recent, len(middle))
