"""The simulated provider's durable request log: "the provider's view" of every request it saw.

One append-only JSON-lines file per account (``<data_dir>/sim/<account>/requests.jsonl``). It is what a
real provider remembers: the simulated provider re-reads it at start to enforce its rate limits across
worker restarts and to answer :meth:`SimProvider.reconcile`, and the chaos checker reads it to verify
the invariants from the provider's side (:func:`check_log`).

Records (one JSON object per line; common fields ``seq`` (1, 2, ...), ``ts`` (world seconds),
``event``, ``task_id``, ``epoch``, ``attempt``, ``turn_key``, ``mode``, ``kind``, ``key``):

===========  =========================================================================================
received     the provider accepted the request and started generating. It counts against the
             provider's rate limits from ``ts`` on, unless a ``failed`` record cancels it.
served       the reply was produced: ``reply``, ``latency``, ``recv_seq`` (the received record),
             ``reconciled`` (true when it was completed by reconciliation after the client vanished)
failed       the request failed inside the provider (an injected 500 or 400): ``error``, ``recv_seq``;
             such a request does not count ("this attempt didn't count against your limit")
refused      refused at the door, before any processing: ``reason`` (``quota`` | ``overload`` | ``error``,
             an injected 500 before any output), ``retry_after``; never counts
===========  =========================================================================================

Crash safety: the file is opened ``O_APPEND`` and each record is one ``os.write`` of a complete line,
so a kill -9 cannot interleave or half-write a record in the middle. The only possible damage is a
torn *last* line (a short write on a full disk, a power cut): readers ignore it, and the writer cuts it
off when it reopens the file so the next record starts on a fresh line. A bad line anywhere else is
corruption and raises :class:`LogCorrupt` — it is never skipped silently.

Records are not fsynced by default: the log models the provider's memory, and a killed process never
loses what it wrote to the page cache. ``fsync=True`` (setting ``fsync``) adds power-loss durability.
"""
from __future__ import annotations

import bisect
import json
import os
import threading
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from shared.errors import ExitCode, StartupError
from shared.quota import describe, next_reset, normalize_windows, period_start

EVENTS = ("received", "served", "failed", "refused")


class LogCorrupt(StartupError):
    """A line other than the last one cannot be decoded."""

    exit_code = ExitCode.STORAGE


def _parse_lines(data: bytes, path) -> tuple[list[tuple[dict, int, int]], int]:
    """Parse complete lines -> ([(record, offset, length)], end offset of the last complete line)."""
    out, offset = [], 0
    end = data.rfind(b"\n") + 1          # everything after the last newline is a torn tail
    for lineno, raw in enumerate(data[:end].split(b"\n")[:-1], 1):
        try:
            rec = json.loads(raw)
            if not isinstance(rec, dict) or rec.get("event") not in EVENTS:
                raise ValueError("not a log record")
        except ValueError as exc:
            raise LogCorrupt(f"{path}:{lineno}: {exc}") from None
        out.append((rec, offset, len(raw)))
        offset += len(raw) + 1
    return out, end


def read_log(path) -> list[dict]:
    """Every complete record of the log, in order; a torn last line is ignored, a missing file is empty."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    return [rec for rec, _, _ in _parse_lines(data, path)[0]]


def served_requests(path) -> list[dict]:
    """The ``served`` records (with their replies)."""
    return [r for r in read_log(path) if r["event"] == "served"]


def counted_requests(records: list[dict], count: str = "served") -> list[dict]:
    """The ``received`` records that count against rate limits.

    ``count="served"`` is the provider's own accounting (a request that failed inside the provider does
    not count); ``count="received"`` counts every request that reached the provider (the strict reading
    for "requests sent to a provider never exceed the limit").
    """
    if count not in ("served", "received"):
        raise ValueError("count must be 'served' or 'received'")
    failed = {r.get("recv_seq") for r in records if r["event"] == "failed"} if count == "served" else set()
    return [r for r in records if r["event"] == "received" and r["seq"] not in failed]


# --- window arithmetic, shared by the provider's enforcement and the checker ----------------------------

def window_count(times: list[float], window: dict, now: float) -> int:
    """How many of the sorted ``times`` fall in the window that contains ``now``. Times after ``now``
    count too: a world clock that moved backwards must not open room that was already used."""
    start = period_start(window, now)
    lo = bisect.bisect_right(times, start) if window["kind"] == "rolling" else bisect.bisect_left(times, start)
    return len(times) - lo


def window_frees_at(times: list[float], window: dict, now: float) -> float:
    """World time at which the window, full at ``now``, admits one more request (nothing new is added
    meanwhile, since refused requests do not count)."""
    if window["kind"] != "rolling":
        return next_reset(window, now)
    if window["limit"] <= 0:
        return now + window["seconds"]      # never admits; ask again after a full window
    inside = times[bisect.bisect_right(times, period_start(window, now)):]
    k = len(inside) - window["limit"]       # the k+1 oldest must leave the window
    return now if k < 0 else inside[k] + window["seconds"]


def _window_violations(mode: str, times: list[float], window: dict) -> list[str]:
    out = []
    if window["kind"] == "rolling":
        lo, reported_until = 0, -1.0
        for hi, t in enumerate(times):
            while times[lo] <= t - window["seconds"]:
                lo += 1
            n = hi - lo + 1
            if n > window["limit"] and times[lo] > reported_until:
                out.append(f"mode {mode}: window {describe(window)} exceeded: {n} requests in "
                           f"({t - window['seconds']:.3f}, {t:.3f}] (limit {window['limit']})")
                reported_until = t          # one message per overrun, not one per request in it
    else:
        periods: dict[float, int] = defaultdict(int)
        for t in times:
            periods[period_start(window, t)] += 1
        for start, n in sorted(periods.items()):
            if n > window["limit"]:
                out.append(f"mode {mode}: window {describe(window)} exceeded: {n} requests in the period "
                           f"starting {start:.3f} (limit {window['limit']})")
    return out


def check_log(path, rate_limits: dict, count: str = "served") -> list[str]:
    """Violations seen from the provider's side; an empty list means none.

    * a turn sent (``received``) or served more than once for one attempt of one task;
    * more requests than ``rate_limits`` allows in some window: ``rate_limits`` maps mode -> windows
      (compact strings or dicts, as in ``shared.quota``), e.g. the configured quotas of this account.
    """
    records = read_log(path)
    problems = []
    for event in ("received", "served"):
        seen: dict[tuple, int] = defaultdict(int)
        for r in records:
            if r["event"] == event:
                seen[(r["task_id"], r["turn_key"], r["attempt"])] += 1
        problems += [f"turn {tk} of task {tid}, attempt {a}: {event} {n} times" for (tid, tk, a), n in
                     seen.items() if n > 1]
    by_mode: dict[str, list[float]] = defaultdict(list)
    for r in counted_requests(records, count):
        by_mode[r["mode"]].append(r["ts"])
    for mode, windows in (rate_limits or {}).items():
        times = sorted(by_mode.get(mode, []))
        for window in normalize_windows(list(windows) if not isinstance(windows, str) else windows):
            problems += _window_violations(mode, times, window)
    return problems


def resent_turns(path) -> dict[tuple, list[int]]:
    """Turns served in more than one attempt: ``{(task_id, turn_key): [attempts]}``. Not a violation of
    "once per attempt", but each entry is a request spent twice — worth a look when it is a scarce one."""
    attempts: dict[tuple, set[int]] = defaultdict(set)
    for r in served_requests(path):
        attempts[(r["task_id"], r["turn_key"])].add(r["attempt"])
    return {k: sorted(v) for k, v in attempts.items() if len(v) > 1}


# --- the writer with its in-memory index -------------------------------------------------------------------

@dataclass(slots=True)
class Received:
    """Index entry of one ``received`` record (slotted and small: there is one per request ever seen)."""

    seq: int
    ts: float
    attempt: int
    epoch: int
    mode: str
    failed: bool = False
    served: tuple | None = None     # (seq, offset, length) of the served record


class SimLog:
    """The log of one account, opened for appending, with an index rebuilt from the file at open.

    One writer per file (one backend worker per account, guarded by its lock file). Replies are not
    kept in memory — only their file offsets — so a week-long run does not grow the worker much.
    """

    def __init__(self, path, fsync: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self._lock = threading.Lock()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._next_seq = 1
        self._size = 0
        self._turns: dict[tuple, list[Received]] = defaultdict(list)   # (task_id, turn_key) -> requests
        self._counted: dict[str, list[float]] = defaultdict(list)       # mode -> sorted ts of counting ones
        self._recv: dict[int, Received] = {}                             # received seq -> entry
        self._load()

    def _load(self) -> None:
        # streamed line by line: reading the whole file (every reply text of a week) at once would leave a
        # restarted worker holding the peak of that in its heap for the rest of its life
        offset = 0
        with open(self.path, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                if not raw.endswith(b"\n"):
                    break                   # a torn tail: cut below
                line = raw[:-1]
                try:
                    rec = json.loads(line)
                    if not isinstance(rec, dict) or rec.get("event") not in EVENTS:
                        raise ValueError("not a log record")
                except ValueError as exc:
                    raise LogCorrupt(f"{self.path}:{lineno}: {exc}") from None
                self._index(rec, offset, len(line))
                self._next_seq = max(self._next_seq, rec["seq"] + 1)
                offset += len(raw)
        if offset < self.path.stat().st_size:
            # cut the torn tail off so the next record starts on its own line; it was never acknowledged
            os.ftruncate(self._fd, offset)
        self._size = offset

    def _index(self, rec: dict, offset: int, length: int) -> None:
        event = rec["event"]
        if event == "received":
            entry = Received(rec["seq"], rec["ts"], rec["attempt"], rec["epoch"], rec["mode"])
            self._recv[entry.seq] = entry
            self._turns[(rec["task_id"], rec["turn_key"])].append(entry)
            bisect.insort(self._counted[entry.mode], entry.ts)
            return
        recv_seq = rec.get("recv_seq")
        found = self._recv.get(recv_seq) if isinstance(recv_seq, int) else None
        if found is None:
            return
        entry = found
        if event == "served":
            entry.served = (rec["seq"], offset, length)
        elif event == "failed" and not entry.failed:
            entry.failed = True
            times = self._counted[entry.mode]
            i = bisect.bisect_left(times, entry.ts)
            if i < len(times) and times[i] == entry.ts:
                del times[i]

    def append(self, rec: dict) -> dict:
        """Write one record (``seq`` is assigned here) and index it; returns the record."""
        with self._lock:
            rec = {"seq": self._next_seq, **{k: v for k, v in rec.items() if k != "seq"}}
            data = (json.dumps(rec, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
            written = os.write(self._fd, data)     # one call: a record is whole or (at the tail) torn
            if written != len(data):
                raise OSError(f"{self.path}: short write ({written} of {len(data)} bytes)")
            if self.fsync:
                os.fsync(self._fd)
            self._index(rec, self._size, len(data) - 1)
            self._size += len(data)
            self._next_seq += 1
            return rec

    def times(self, mode: str) -> list[float]:
        """Sorted world times of the requests of ``mode`` that count against rate limits (read-only)."""
        return self._counted.get(mode, [])

    def turn(self, task_id: int, turn_key: str) -> list[Received]:
        """The requests the provider received for one turn of one task, oldest first."""
        return list(self._turns.get((task_id, turn_key), []))

    def served_record(self, entry: Received) -> dict | None:
        """The full ``served`` record (with ``reply``) of a received request, or None."""
        if entry.served is None:
            return None
        _, offset, length = entry.served
        with open(self.path, "rb") as f:
            f.seek(offset)
            return json.loads(f.read(length))

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
