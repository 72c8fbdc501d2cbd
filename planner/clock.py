"""Time as a value passed in: a ``Clock`` Protocol, the process's monotonic clock, a fake for tests, and a
``Deadline`` that every stage of one command checks (candidate generation, solve, placement).

The pure stages never read the system clock themselves; the front door makes one ``Deadline`` and hands it
down, so a test can run a stage on a ``FakeClock`` and a time limit means the whole command's limit.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Protocol


class Clock(Protocol):
    """Seconds on a monotonic scale (only differences mean anything)."""

    def now(self) -> float: ...


class MonotonicClock:
    """The process's monotonic clock."""

    def now(self) -> float:
        return time.monotonic()


@dataclass
class FakeClock:
    """A clock that moves only when told (``advance``), or by ``tick`` on every reading."""

    t: float = 0.0
    tick: float = 0.0

    def now(self) -> float:
        self.t += self.tick
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


SYSTEM_CLOCK: Clock = MonotonicClock()


@dataclass(frozen=True)
class Deadline:
    """The end of a command's time budget on ``clock``; ``math.inf`` seconds means none."""

    end: float
    clock: Clock = field(default=SYSTEM_CLOCK, compare=False)

    @staticmethod
    def after(seconds: float, clock: Clock = SYSTEM_CLOCK) -> Deadline:
        """A deadline ``seconds`` from now."""
        return Deadline(clock.now() + seconds if math.isfinite(seconds) else math.inf, clock)

    @staticmethod
    def never(clock: Clock = SYSTEM_CLOCK) -> Deadline:
        return Deadline(math.inf, clock)

    def now(self) -> float:
        return self.clock.now()

    def remaining(self) -> float:
        """Seconds left (never negative)."""
        return max(0.0, self.end - self.clock.now())

    def expired(self) -> bool:
        return self.clock.now() >= self.end

    def share(self, fraction: float, at_most: float = math.inf) -> Deadline:
        """A sub-deadline for one stage: ``fraction`` of what is left, and no more than ``at_most`` seconds."""
        left = self.end - self.clock.now()
        return Deadline(self.clock.now() + min(max(0.0, left) * fraction, at_most), self.clock)

    def capped(self, seconds: float) -> Deadline:
        """This deadline or ``seconds`` from now, whichever comes first."""
        return Deadline(min(self.end, self.clock.now() + seconds), self.clock)
