"""The broker's storage capacity: the map grows by itself, disk blocks are held ahead of use, and when
room runs out the broker refuses new work instead of stopping.

Three limits, checked after every batch (:meth:`Capacity.after_batch`, no transaction open):

* **the map** (LMDB's ``map_size``): once the data file's high-water mark passes :data:`GROW_AT` of the
  map, the map doubles, up to ``broker.map_ceiling`` and to what the disk can back (the data file plus
  the free space, minus ``broker.disk_reserve`` left to everything else). Growing a map costs address
  space, not disk. When it can grow no more and less than ``broker.headroom`` of it is free, new work
  is refused: ``MAP_FULL`` at the ceiling, ``DISK_FULL`` when the disk stopped the growth.
* **the disk**: LMDB (without ``writemap``) writes pages with ``pwrite`` and extends ``data.mdb`` as it
  goes; on a full disk that fails at commit (LMDB reports ENOSPC as EIO). So the data file's blocks are
  allocated ahead of use with ``posix_fallocate``: between 2 and 3 x ``headroom`` past the high-water
  mark (never past the map), as long as that leaves ``broker.disk_reserve`` free for everything else
  (logs, transcripts, the exported document). Commits that land in allocated blocks cannot hit ENOSPC (on filesystems
  that allocate in place: ext4, xfs, tmpfs; not on copy-on-write ones such as btrfs or ZFS). When
  the allocation cannot be topped up, or a commit fails with a write error anyway, new work is refused
  with ``DISK_FULL`` while what remains of the allocation serves running work.
* **refusing** (``refusing`` is ``None``, ``"MAP_FULL"`` or ``"DISK_FULL"``): submissions, retries, quota
  changes, leases of new work and module transactions that submit, or put without acking a result
  are refused (``services/broker/core.py`` decides per request); reads, acks, completions, failures,
  refusals and cancels go on. Every :data:`RECHECK` seconds the limits are checked again (the map
  re-measured, growth and the allocation retried), so the broker resumes by itself when space appears.
  One log line says when refusing starts and one when it stops.

Storage samples: every :data:`SAMPLE_EVERY` world seconds the live bytes of the map are recorded in
``meta`` (key ``storage_samples``: a msgpack list of ``[world time, bytes]``, at most
:data:`MAX_SAMPLES`), so that ``stats`` can report the growth per day and the days until full.
"""
from __future__ import annotations

import errno
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from services.broker import schema as S
from shared.config import BrokerConfig, format_size
from shared.protocol import unpack_value

if TYPE_CHECKING:   # they import this module
    from services.broker.core import BrokerCore
    from services.broker.tx import Tx

log = logging.getLogger("broker")

GROW_AT = 0.75            # grow the map when the data file's high-water mark passes this fraction of it
RECHECK = 5.0             # monotonic seconds between re-checks of the limits while refusing
SAMPLE_EVERY = 3600.0     # world seconds between storage samples
MAX_SAMPLES = 24 * 8      # hourly samples kept: eight days
RATE_WINDOW = 7 * 86400.0  # growth per day is measured over (at most) the last week of samples
MIN_RATE_SPAN = 3600.0    # and only once the samples span at least an hour
MIB = 1 << 20
SAMPLES_KEY = b"storage_samples"


def disk_space(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(bytes an unprivileged writer may still use, total bytes) on the filesystem holding ``path``."""
    fs = os.statvfs(path)
    return fs.f_bavail * fs.f_frsize, fs.f_blocks * fs.f_frsize


def _valid_samples(packed: bytes | None) -> list[list[float]]:
    """The stored samples, or none if what ``meta`` holds is not a list of [time, bytes] (figures only:
    a damaged value must not stop the broker from starting)."""
    try:
        raw = unpack_value(packed) if packed is not None else None
    except Exception:  # noqa: BLE001 - msgpack raises several kinds for damaged bytes
        raw = False
    if not isinstance(raw, list):
        if raw is not None:
            log.warning("storage: ignoring unreadable storage samples in meta")
        return []
    out = []
    for s in raw:
        if (isinstance(s, (list, tuple)) and len(s) == 2
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in s)):
            out.append([float(s[0]), int(s[1])])
    return out


class Capacity:
    """The storage limits of one broker core (``core``: a :class:`services.broker.core.BrokerCore`)."""

    def __init__(self, core: BrokerCore):
        self.core = core
        self.bcfg: BrokerConfig = core.bcfg
        self.refusing: str | None = None     # None, "MAP_FULL" or "DISK_FULL"
        self.since: float | None = None      # world time refusing started
        self.detail = ""                     # why, for the refusal message and the log
        self.write_error: str | None = None  # a commit failed with a write error; cleared by a re-check
        self.allocated = 0                   # bytes of data.mdb allocated ahead by this process
        self.can_allocate = True             # False on filesystems without fallocate
        self.samples: list[list[float]] = []
        self._next_check = 0.0
        self._disk_limited_logged = False

    # --- figures ------------------------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self.core.storage.path

    def high_water(self) -> int:
        """Bytes of the data file LMDB has ever used (it allocates past this only when no free page fits)."""
        pages: int = self.core.env.info()["last_pgno"] + 1
        return pages * self.core.env.stat()["psize"]

    def file_size(self) -> int:
        try:
            size: int = (self.path / "data.mdb").stat().st_size
            return size
        except FileNotFoundError:
            return 0

    def disk_allows(self) -> int:
        """The largest map the disk can back: the data file, plus the free space, minus disk_reserve."""
        free, _ = disk_space(self.path)
        return self.file_size() + max(0, free - self.bcfg.disk_reserve)

    # --- start --------------------------------------------------------------------------------------------

    def at_start(self, samples: bytes | None) -> None:
        """Check the map against the disk, allocate ahead, say what the limits are (``samples``: the
        packed ``storage_samples`` value from ``meta``)."""
        self.samples = _valid_samples(samples)[-MAX_SAMPLES:]
        free, total = disk_space(self.path)
        size, allows = self.core.map_size, self.disk_allows()
        log.info("storage: map %s (grows by itself up to %s), data.mdb %s, disk %s free of %s in %s "
                 "(%s kept free for others)", format_size(size), format_size(self.bcfg.map_ceiling),
                 format_size(self.file_size()), format_size(free), format_size(total), self.path,
                 format_size(self.bcfg.disk_reserve))
        if allows < min(size, self.bcfg.map_ceiling):
            log.warning("storage: the map (%s) is larger than the disk can hold (%s): new work will be "
                        "refused with DISK_FULL before the disk fills; free space on %s to go on",
                        format_size(size), format_size(allows), self.path)
        self.after_batch(force=True)

    # --- after every batch --------------------------------------------------------------------------------

    def after_batch(self, force: bool = False) -> None:
        """Grow the map, top up the allocation, and decide whether new work is refused.

        Called with no transaction open. While refusing, the slower steps (statvfs, fallocate after a
        failure) run at most every :data:`RECHECK` seconds.
        """
        core = self.core
        mono = core.clock.mono()
        due = force or mono >= self._next_check
        if due:
            self._next_check = mono + RECHECK
        hw = self.high_water()
        grown = False
        if hw > GROW_AT * core.map_size or (core.map_full and due):
            grown = self._grow(hw, due)
        if grown or (core.map_full and due) or (self.refusing == "MAP_FULL" and due):
            core._measure_map()
            if core.map_full and due and core.map_used <= core.map_size - 2 * self.bcfg.headroom:
                # an MDB_MAP_FULL at the ceiling, and pages have been freed since (deletes, compaction):
                # let new work try again (a request that still does not fit is refused on its own)
                core.map_full = False
        disk_ok = self._allocate(hw, retry=due)
        if due and self.write_error is not None and disk_ok:
            log.info("storage: the disk accepts writes again (%s allocated ahead)",
                     format_size(self.allocated - hw))
            self.write_error = None
        # hysteresis: once refusing for the map, resume only when twice the headroom is free again, so
        # that freeing a page or two does not flip the broker between taking and refusing new work
        keep = self.bcfg.headroom * (2 if self.refusing is not None and self.write_error is None else 1)
        map_short = core.map_full or core.map_used > core.map_size - keep
        if self.write_error is not None or not disk_ok:
            free, _ = disk_space(self.path)
            self._refuse("DISK_FULL", self.write_error or
                         f"the disk holding {self.path} has {format_size(free)} free, too little to keep "
                         f"{format_size(2 * self.bcfg.headroom)} allocated ahead for running work and leave "
                         f"{format_size(self.bcfg.disk_reserve)} to others (broker.disk_reserve)")
        elif map_short and core.map_size >= self.bcfg.map_ceiling:
            self._refuse("MAP_FULL", f"the map is at its ceiling (broker.map_ceiling = "
                         f"{format_size(self.bcfg.map_ceiling)})")
        elif map_short:
            free, _ = disk_space(self.path)
            self._refuse("DISK_FULL", f"the map cannot grow past {format_size(core.map_size)}: the disk "
                         f"holding {self.path} has {format_size(free)} free and "
                         f"{format_size(self.bcfg.disk_reserve)} of it is left to others "
                         "(broker.disk_reserve)")
        else:
            self._resume()

    def commit_failed(self, exc: Exception) -> None:
        """A batch's commit failed with a write error (ENOSPC shows up as EIO): refuse until a re-check."""
        free, _ = disk_space(self.path)
        self.write_error = (f"writing to {self.path} failed at commit ({exc}; {format_size(free)} free on "
                            "its disk)")
        self._next_check = self.core.clock.mono() + RECHECK
        self._refuse("DISK_FULL", self.write_error)

    def _refuse(self, code: str, detail: str) -> None:
        self.detail = detail
        if self.refusing == code:
            return
        if self.refusing is None:
            self.since = self.core.clock.world()
        self.refusing = code
        log.error("storage: refusing new work (%s): %s; running work goes on; %s", code, detail, self.advice())

    def _resume(self) -> None:
        if self.refusing is None:
            return
        log.warning("storage: accepting new work again (was %s for %.0fs): map %s used of %s, %s free on disk",
                    self.refusing, self.core.clock.world() - (self.since or 0), format_size(self.core.map_used),
                    format_size(self.core.map_size), format_size(disk_space(self.path)[0]))
        self.refusing, self.since, self.detail = None, None, ""

    def advice(self) -> str:
        """What the operator can do; the broker also resumes by itself when space appears."""
        if self.refusing == "MAP_FULL":
            return ("raise broker.map_ceiling in fano.toml and restart the broker, or `fanoctl admin grow-map "
                    "SIZE`; `fanoctl admin compact --older-than DURATION` frees old acked tasks")
        return (f"free space on the disk holding {self.path} (the broker resumes by itself within "
                f"{RECHECK:.0f}s), or lower broker.disk_reserve; `fanoctl admin compact --older-than DURATION` "
                "frees old acked tasks")

    def message(self) -> str:
        """The refusal message sent to clients."""
        return (f"{self.detail or 'storage is full'} ({format_size(self.core.map_used)} used of a "
                f"{format_size(self.core.map_size)} map): new work is refused, running work goes on; "
                f"{self.advice()}")

    # --- growth and allocation ----------------------------------------------------------------------------

    def _grow(self, hw: int, due: bool) -> bool:
        core = self.core
        current = core.map_size
        if current >= self.bcfg.map_ceiling:
            return False
        if not due and self._disk_limited_logged:
            return False  # the disk stopped the last attempt: try again at the next re-check only
        target = min(self.bcfg.map_ceiling, max(current * 2, hw + 4 * self.bcfg.headroom))
        allows = self.disk_allows()
        new = min(target, allows) // MIB * MIB
        if new <= current:
            if not self._disk_limited_logged:
                log.warning("storage: the map cannot grow past %s: %s free on the disk holding %s, %s of it "
                            "left to others (broker.disk_reserve)", format_size(current),
                            format_size(disk_space(self.path)[0]), self.path, format_size(self.bcfg.disk_reserve))
                self._disk_limited_logged = True
            return False
        try:
            core.set_map_size(new)
        except Exception as exc:  # the core reopened the environment at the old size
            log.error("storage: growing the map to %s failed: %s", format_size(new), exc)
            return False
        self._disk_limited_logged = False
        log.info("storage: map grown by itself from %s to %s (data file high-water %s, ceiling %s, %s the disk "
                 "allows)", format_size(current), format_size(new), format_size(hw),
                 format_size(self.bcfg.map_ceiling), format_size(allows))
        return True

    def _allocate(self, hw: int, retry: bool) -> bool:
        """Keep 2..3 x headroom of data.mdb allocated past the high-water mark (capped by the map).

        False when that room cannot be had without leaving less than ``disk_reserve`` free on the disk
        (or the disk is full); the allocation already made stays.
        """
        if not self.can_allocate:
            return True
        room = 2 * self.bcfg.headroom
        size = self.core.map_size
        if self.allocated >= min(size, hw + room):
            return True
        if not retry and self.refusing == "DISK_FULL":
            return False  # a failed top-up is retried at the next re-check, not every batch
        free, _ = disk_space(self.path)
        on_disk = self.file_size()
        for want in (min(size, hw + 3 * self.bcfg.headroom), min(size, hw + room)):
            if want > on_disk and free - (want - on_disk) < self.bcfg.disk_reserve:
                continue  # it would eat into what is left to others: refuse new work first
            try:
                fd = os.open(self.path / "data.mdb", os.O_RDWR)
            except OSError:
                return True  # nothing to allocate yet
            try:
                # from 0, not from the old allocation: also fills any hole LMDB's pwrite left
                os.posix_fallocate(fd, 0, want)
            except OSError as exc:
                if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                    log.warning("storage: %s cannot allocate ahead (%s): a full disk will show as write "
                                "errors at commit", self.path, exc)
                    self.can_allocate = False
                    return True
                continue  # ENOSPC (or EIO): try the smaller reservation
            finally:
                os.close(fd)
            self.allocated = want
            return True
        return False

    # --- samples and figures ----------------------------------------------------------------------------

    def sample(self, tx: Tx) -> None:
        """Housekeeping: record the live bytes of the map (hourly, world clock), bounded."""
        used = S.pages_in_use(self.core.storage, tx.txn) * self.core.env.stat()["psize"]
        self.samples.append([tx.now, used])
        del self.samples[:-MAX_SAMPLES]
        tx.put("meta", SAMPLES_KEY, self.samples)

    def sample_due(self, now: float) -> bool:
        return not self.samples or now - self.samples[-1][0] >= SAMPLE_EVERY

    def figures(self, tx: Tx) -> dict[str, Any]:
        """The ``broker.storage`` part of ``stats`` (the shape is in services/broker/ops_admin.py)."""
        core = self.core
        psize = core.env.stat()["psize"]
        used = S.pages_in_use(core.storage, tx.txn) * psize
        free, total = disk_space(self.path)
        rate = None
        recent = [s for s in self.samples if tx.now - s[0] <= RATE_WINDOW]
        if recent and tx.now - recent[0][0] >= MIN_RATE_SPAN:
            rate = (used - recent[0][1]) / (tx.now - recent[0][0]) * 86400.0
        ceiling = min(self.bcfg.map_ceiling, self.file_size() + max(0, free - self.bcfg.disk_reserve))
        days = None
        if rate is not None and rate > 0:
            days = max(0.0, ceiling - used) / rate
        return {"map_size": core.map_size, "map_used": used, "map_ceiling": self.bcfg.map_ceiling,
                "disk_free": free, "disk_total": total, "refusing": self.refusing, "since": self.since,
                "growth_per_day": rate, "days_until_full": days}
