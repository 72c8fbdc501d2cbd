"""Progress of a solve: the best plan's cost (incumbent) and the best proven lower bound over time.

A ``Progress`` is made by the front door with the command's clock and start, and travels in
``SolveOptions.progress``. Stages report what they know for the whole fleet: every plan of the fleet's
problem is an incumbent, but a bound counts only when it holds for the whole fleet (a restricted model's or one
service's bound does not), so a stage that solves a part hands its solver a view that drops bounds
(``without_bounds``) or none at all. Only improvements are recorded, each with the seconds since the start and
the stage that found it; a sink (e.g. a line on stderr) sees each one as it comes. A bound that creeps up
is recorded when it has risen by ``BOUND_STEP`` of itself, or a second after the last point.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass

from planner.clock import Clock

BOUND_STEP = 1e-3  # a bound's rise worth a point of its own (relative)
QUIET_S = 1.0  # after this long without a point, any rise of the bound is worth one


@dataclass(frozen=True)
class ProgressPoint:
    """The best plan's cost and the best bound at ``seconds`` after the start, and who improved them."""

    seconds: float
    incumbent: float | None
    bound: float | None
    stage: str

    @property
    def gap(self) -> float | None:
        """(incumbent − bound) / incumbent, or None while either is unknown."""
        if self.incumbent is None or self.bound is None:
            return None
        return max(0.0, (self.incumbent - self.bound) / max(abs(self.incumbent), 1e-9))


Sink = Callable[[ProgressPoint], None]


class Progress:
    """Thread-safe record of improvements to the incumbent and the bound (see module docstring)."""

    def __init__(self, clock: Clock, start: float | None = None, sink: Sink | None = None) -> None:
        self.clock = clock
        self.start = clock.now() if start is None else start
        self.sink = sink
        self._lock = threading.Lock()
        self._incumbent = math.inf
        self._bound = -math.inf
        self._shown_bound = -math.inf
        self._shown_at = -math.inf
        self.points: list[ProgressPoint] = []

    @property
    def incumbent(self) -> float | None:
        """The best plan's cost so far (None: no plan yet)."""
        return self._incumbent if math.isfinite(self._incumbent) else None

    @property
    def bound(self) -> float | None:
        """The best bound so far (None: none yet)."""
        return self._bound if math.isfinite(self._bound) else None

    def report(self, incumbent: float | None = None, bound: float | None = None, stage: str = "") -> None:
        """Record a plan's cost and/or a bound if either improves on the best so far."""
        with self._lock:
            now = self.clock.now()
            show = False
            if incumbent is not None and math.isfinite(incumbent) and incumbent < self._incumbent - 1e-9 * max(
                    1.0, abs(incumbent)):
                self._incumbent = incumbent
                show = True
            if bound is not None and math.isfinite(bound) and bound > self._bound + 1e-9 * max(1.0, abs(bound)):
                self._bound = bound
                show = show or not math.isfinite(self._shown_bound) or now - self._shown_at >= QUIET_S or (
                    bound - self._shown_bound >= BOUND_STEP * max(abs(bound), 1e-9))
            if not show:
                return
            self._shown_bound, self._shown_at = self._bound, now
            point = ProgressPoint(round(now - self.start, 4), self.incumbent, self.bound, stage)
            self.points.append(point)
        if self.sink is not None:
            self.sink(point)

    def mark(self, stage: str) -> None:
        """Record that a stage ended (e.g. the candidates), with the plan and bound as they stand."""
        with self._lock:
            point = ProgressPoint(round(self.clock.now() - self.start, 4), self.incumbent, self.bound, stage)
            self.points.append(point)
        if self.sink is not None:
            self.sink(point)

    def seconds_at(self, stage: str) -> float | None:
        """When ``stage`` first reported or ended (None: it did not)."""
        return next((p.seconds for p in self.points if p.stage == stage), None)

    def close(self, stage: str = "end") -> None:
        """Record the final state if a bound rose since the last point (so the last point is the answer's)."""
        with self._lock:
            if self._bound <= self._shown_bound or not math.isfinite(self._bound):
                return
            self._shown_bound, self._shown_at = self._bound, self.clock.now()
            point = ProgressPoint(round(self._shown_at - self.start, 4), self.incumbent, self.bound, stage)
            self.points.append(point)
        if self.sink is not None:
            self.sink(point)

    def first_plan_seconds(self) -> float | None:
        """Seconds from the start to the first plan (None: no plan)."""
        return next((p.seconds for p in self.points if p.incumbent is not None), None)

    def at(self, seconds: float) -> ProgressPoint | None:
        """The state at ``seconds`` after the start (None before the first point)."""
        last = None
        for p in self.points:
            if p.seconds > seconds:
                break
            last = p
        return last

    def without_bounds(self) -> ProgressView:
        """A view for a stage whose plans are the fleet's but whose bounds are not (a restricted model)."""
        return ProgressView(self)


@dataclass(frozen=True)
class ProgressView:
    """A restricted model's window on a Progress: its plans pass, its bounds do not."""

    progress: Progress

    def report(self, incumbent: float | None = None, bound: float | None = None, stage: str = "") -> None:
        """Pass a plan's cost on; drop the bound."""
        self.progress.report(incumbent, None, stage)


Reporter = Progress | ProgressView


def plans_only(reporter: Reporter | None) -> Reporter | None:
    """The reporter for a restricted model of the fleet's problem: its plans count, its bounds do not."""
    return reporter.without_bounds() if isinstance(reporter, Progress) else reporter


def format_point(p: ProgressPoint) -> str:
    """One line for stderr: time, plan cost, bound and gap."""
    if p.incumbent is None and p.bound is None:
        return f"[{p.seconds:6.2f} s] {p.stage} done"
    plan = "no plan" if p.incumbent is None else f"plan ${p.incumbent:,.2f}/h"
    bound = "no bound" if p.bound is None else f"bound ${p.bound:,.2f}/h"
    gap = "" if p.gap is None else f", gap {p.gap:.2%}"
    return f"[{p.seconds:6.2f} s] {plan}, {bound}{gap} ({p.stage})"
