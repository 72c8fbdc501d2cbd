"""One door to every MILP solver: a ``Backend`` solves a built matrix under the options and a deadline and
returns a ``RawResult`` (values in the matrix's variable order, objective, proven bound, LP duals)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, get_args

import numpy as np

from planner.clock import Deadline
from planner.solve.formulation.matrix import Arrays, Matrix
from planner.solve.problem import BackendName, SolveOptions, Status

BACKEND_NAMES: tuple[BackendName, ...] = get_args(BackendName)

__all__ = ["BACKEND_NAMES", "Backend", "BackendName", "RawResult", "time_limit_s"]


@dataclass(frozen=True)
class RawResult:
    """What a backend found, in the matrix's terms."""

    status: Status
    values: np.ndarray | None
    objective: float | None
    best_bound: float | None  # proven lower bound; None where the solver does not say
    message: str = ""
    row_dual: np.ndarray | None = None  # LP duals (HiGHS on a model without integers)


class Backend(Protocol):
    """A MILP solver behind one call."""

    @property
    def name(self) -> BackendName:
        """The name a caller asks for it by."""
        ...

    def solve(self, model: Matrix | Arrays, options: SolveOptions, deadline: Deadline | None = None,
              start: np.ndarray | None = None, stop_at: float | None = None) -> RawResult:
        """Solve ``model`` until ``deadline`` (None: options.time_limit_s from now) within options.relative_gap.

        ``start`` is a plan to begin from and ``stop_at`` an objective at which to stop; a backend that cannot
        take them solves without them.
        """
        ...


def time_limit_s(options: SolveOptions, deadline: Deadline | None) -> float:
    """Seconds a backend may run: what the deadline leaves, or the options' limit without one."""
    return float(options.time_limit_s) if deadline is None else deadline.remaining()
