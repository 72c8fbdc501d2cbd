"""The one deadline of a placement shared among its CP-SAT parts.

Each part's solver time is its share (by replica units) of what is left once two things are set aside: the
work outside the solver that the parts still to come will need (building their models and expanding their
solutions, at the seconds per unit measured on the parts done so far) and a reserve for assembling the
result. A part left with less than ``MIN_SOLVE_S`` is not solved: its first-fit start stands, and the
placement says so.
"""

from __future__ import annotations

from planner.clock import Deadline

RESERVE_SHARE = 0.05  # of the time given, kept for assembling the result after the last part
MIN_SOLVE_S = 0.05  # less than this and CP-SAT has no time to load a model, let alone improve the start


class Budget:
    """Solver seconds per part from one ``Deadline``, learning the cost of the work around the solver."""

    def __init__(self, deadline: Deadline, units: int) -> None:
        self.deadline = deadline
        self.units_left = max(1, units)
        self.reserve = RESERVE_SHARE * deadline.remaining()
        self.work_s = 0.0
        self.work_units = 0

    def solve_time(self, units: int, built_s: float) -> float:
        """Seconds of CP-SAT time for a part of ``units`` whose model took ``built_s`` seconds to build
        (0 when none is left)."""
        units = max(1, units)
        self.units_left = max(self.units_left, units)  # carried units can join a part the total left out
        self.work_s += built_s
        self.work_units += units
        rate = self.work_s / self.work_units  # seconds of model building and expansion per unit
        later = rate * self.units_left  # this part's expansion, the later parts' building and expansion
        share = (self.deadline.remaining() - self.reserve - later) * units / self.units_left
        self.units_left = max(1, self.units_left - units)
        return share if share >= MIN_SOLVE_S else 0.0

    def expanded(self, seconds: float) -> None:
        """Count the seconds a part's solution took to expand into device slots."""
        self.work_s += seconds
