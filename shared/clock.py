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
    """World time ``origin + offset + (real - origin) * scale``; monotonic time unscaled.

    Every process of one deployment must agree on world time, so a scaled clock is anchored at a
    shared ``origin`` (real epoch seconds, ``FANO_CLOCK_ORIGIN``, set once by whoever starts the tree)
    rather than at each process's own start; with scale 1 the origin does not matter.
    """

    def __init__(self, scale: float = 1.0, offset: float = 0.0, origin: float | None = None):
        if not scale > 0:
            raise ValueError("clock scale must be positive")
        if scale != 1.0 and origin is None:
            raise ValueError("a scaled clock needs a shared origin (FANO_CLOCK_ORIGIN, real epoch seconds)")
        self.scale = scale
        self.offset = offset
        self.origin = origin if origin is not None else 0.0

    @classmethod
    def from_env(cls) -> Clock:
        origin = os.environ.get("FANO_CLOCK_ORIGIN")
        return cls(float(os.environ.get("FANO_CLOCK_SCALE", "1") or 1),
                   float(os.environ.get("FANO_CLOCK_OFFSET", "0") or 0),
                   float(origin) if origin else None)

    def world(self) -> float:
        real = time.time()
        if self.scale == 1.0:
            return real + self.offset
        return self.origin + self.offset + (real - self.origin) * self.scale

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
