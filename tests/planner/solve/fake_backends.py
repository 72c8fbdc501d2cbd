"""Backends for solver tests that read time only through a FakeClock (imported by name: this folder is on the
import path, see conftest.py)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from planner.clock import Deadline, FakeClock
from planner.solve import SolveOptions
from planner.solve.backends import Backend, BackendName, HighsBackend, RawResult
from planner.solve.formulation import Arrays, Matrix


@dataclass
class RecordingBackend:
    """HiGHS that notes the seconds each call was given (and whether its primal heuristics were on) and moves a
    fake clock on by ``takes_s`` per call; ``weak`` claims only half the objective as its bound (as a solver
    stopped early would)."""

    clock: FakeClock
    takes_s: float = 0.0
    weak: bool = False
    given_s: list[float] = field(default_factory=list)
    heuristics: list[bool] = field(default_factory=list)
    inner: Backend = field(default_factory=HighsBackend)

    @property
    def name(self) -> BackendName:
        return "highs"

    def solve(self, model: Matrix | Arrays, options: SolveOptions, deadline: Deadline | None = None,
              start: np.ndarray | None = None, stop_at: float | None = None) -> RawResult:
        assert deadline is not None and deadline.clock is self.clock
        self.given_s.append(deadline.remaining())
        self.heuristics.append(options.highs_heuristics)
        self.clock.advance(self.takes_s)
        raw = self.inner.solve(model, options, Deadline.after(30.0), start, stop_at)
        if self.weak and raw.objective is not None:
            return replace(raw, status="feasible", best_bound=raw.objective / 2)
        return raw
