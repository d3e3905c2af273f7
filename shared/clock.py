"""The one clock of the project.

Two readings, for two different jobs:

* ``world()`` — seconds since the epoch, as the world sees them: quota windows, provider reset times,
  backoff (``not_before``), aging. It can be scaled and offset (``FANO_CLOCK_SCALE``,
  ``FANO_CLOCK_OFFSET``) so that a simulated week runs in minutes.
* ``mono()`` — ``CLOCK_MONOTONIC``: heartbeats and leases. It never jumps, and on Linux it is shared by
  every process of the machine, so a lease deadline stored by one broker incarnation is still
  meaningful to the next one — until a reboot, which :func:`boot_id` detects.

Tests inject :class:`FakeClock` instead of sleeping.
"""
from __future__ import annotations

import os
import time


class Clock:
    def __init__(self, scale: float = 1.0, offset: float = 0.0):
        if scale <= 0:
            raise ValueError("clock scale must be positive")
        self.scale = scale
        self.offset = offset
        self._origin_real = time.time()
        self._origin_mono = time.monotonic()

    @classmethod
    def from_env(cls) -> "Clock":
        return cls(float(os.environ.get("FANO_CLOCK_SCALE", "1") or 1),
                   float(os.environ.get("FANO_CLOCK_OFFSET", "0") or 0))

    def world(self) -> float:
        if self.scale == 1.0:
            return time.time() + self.offset
        # scale around a fixed origin so world time stays continuous and monotone within a process
        elapsed = time.monotonic() - self._origin_mono
        return self._origin_real + self.offset + elapsed * self.scale

    def mono(self) -> float:
        return time.monotonic()


class FakeClock(Clock):
    """A clock that moves only when told to (unit tests)."""

    def __init__(self, world: float = 1_700_000_000.0, mono: float = 1000.0):
        super().__init__()
        self._world = world
        self._mono = mono

    def world(self) -> float:
        return self._world

    def mono(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._world += seconds
        self._mono += seconds

    def set_world(self, t: float) -> None:
        self._world = t


def boot_id() -> str:
    """An id that changes when the machine reboots (monotonic deadlines are void after one)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        # no procfs: approximate by the boot time, rounded so that it is stable between calls
        return str(round(time.time() - time.monotonic()))
