"""SCIP and CP-SAT through OR-Tools' linear solver wrapper.

CP-SAT has no continuous variables, so shares are integers in units of 1/SHARE_UNITS_CPSAT (10⁻⁶) and every
inequality row holding shares is widened by Σ|coefficient|·10⁻⁶, the most that rounding the continuous
optimum's shares can move it. Precision: a CP-SAT plan meets capacity and power rows to within that widening
(a load error of at most 10⁻⁶ per unit of a bucket's load, in replicas), and its cost matches the continuous
optimum.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np

from planner.clock import Deadline
from planner.solve.backends.base import BackendName, RawResult, time_limit_s
from planner.solve.formulation.matrix import Arrays, Matrix, as_matrix
from planner.solve.problem import SolveOptions, Status

SHARE_UNITS_CPSAT = 1_000_000


class OrToolsBackend:
    """SCIP or CP-SAT through pywraplp."""

    def __init__(self, which: Literal["SCIP", "CP_SAT"]) -> None:
        self.which = which

    @property
    def name(self) -> BackendName:
        """Its name: scip or cpsat."""
        return "scip" if self.which == "SCIP" else "cpsat"

    def solve(self, model: Matrix | Arrays, options: SolveOptions, deadline: Deadline | None = None,
              start: np.ndarray | None = None, stop_at: float | None = None) -> RawResult:
        """Solve with OR-Tools (start and stop_at are not passed on)."""
        from ortools.linear_solver import pywraplp

        m = as_matrix(model)
        solver = pywraplp.Solver.CreateSolver(self.which)
        if solver is None:
            return RawResult("error", None, None, None, f"OR-Tools has no {self.which}")
        xs, scale = self._variables(solver, m)
        self._rows(solver, m, xs, scale)
        objective = solver.Objective()
        for i, price in enumerate(m.cost):
            if price != 0.0:
                objective.SetCoefficient(xs[i], price * scale[i])
        objective.SetOffset(m.offset)
        objective.SetMinimization()
        solver.SetTimeLimit(int(time_limit_s(options, deadline) * 1000))
        solver.SetNumThreads(max(1, options.threads))
        params = pywraplp.MPSolverParameters()
        params.SetDoubleParam(pywraplp.MPSolverParameters.RELATIVE_MIP_GAP, options.relative_gap)
        code = solver.Solve(params)
        if code == pywraplp.Solver.INFEASIBLE:
            return RawResult("infeasible", None, None, None, "infeasible")
        if code in (pywraplp.Solver.OPTIMAL, pywraplp.Solver.FEASIBLE):
            values = np.asarray([x.solution_value() for x in xs], dtype=float) * scale
            obj = float(objective.Value())
            bound = float(objective.BestBound())
            status: Status = "optimal" if code == pywraplp.Solver.OPTIMAL else "feasible"
            return RawResult(status, values, obj, bound if math.isfinite(bound) else None, str(code))
        if code == pywraplp.Solver.NOT_SOLVED:
            return RawResult("time_limit_no_solution", None, None, None, "not solved within the limit")
        return RawResult("error", None, None, None, f"OR-Tools result {code}")

    def _variables(self, solver: Any, m: Matrix) -> tuple[list[Any], np.ndarray]:
        """The model's variables (CP-SAT: continuous ones as integers in share units) and their scales."""
        quantise = self.which == "CP_SAT"
        units = float(SHARE_UNITS_CPSAT)
        scale = np.ones(len(m.cost))
        xs = []
        for i, (lb, ub, integer) in enumerate(zip(m.col_lb, m.col_ub, m.integer, strict=True)):
            lo = lb if math.isfinite(lb) else -solver.infinity()
            hi = ub if math.isfinite(ub) else solver.infinity()
            if integer:
                xs.append(solver.IntVar(lo, hi, f"v{i}"))
            elif quantise:
                # CP-SAT takes no continuous variables: a share (or slack) counts units of 1/SHARE_UNITS_CPSAT.
                scale[i] = 1.0 / units
                hi_q = ub * units if math.isfinite(ub) else 1e9
                xs.append(solver.IntVar(math.floor(lb * units), math.ceil(hi_q), f"v{i}"))
            else:
                xs.append(solver.NumVar(lo, hi, f"v{i}"))
        return xs, scale

    def _rows(self, solver: Any, m: Matrix, xs: list[Any], scale: np.ndarray) -> None:
        """The model's rows (CP-SAT: inequalities widened by what rounding shares to units can move them)."""
        row_lb, row_ub = list(m.row_lb), list(m.row_ub)
        if self.which == "CP_SAT":
            # Rounding each share to a unit moves a row by at most |coefficient|/units; widen inequality rows
            # by that much so the rounded continuous optimum stays feasible (coverage equalities stay exact).
            units = float(SHARE_UNITS_CPSAT)
            widen = np.zeros(len(row_lb))
            np.add.at(widen, np.asarray(m.nz_row, dtype=np.int64),
                      np.abs(np.asarray(m.nz_val)) * (scale[np.asarray(m.nz_col, dtype=np.int64)] < 1.0) / units)
            for r in range(len(row_lb)):
                if row_lb[r] != row_ub[r]:
                    row_lb[r] -= widen[r]
                    row_ub[r] += widen[r]
        rows = [solver.Constraint(
            lb if math.isfinite(lb) else -solver.infinity(), ub if math.isfinite(ub) else solver.infinity()
        ) for lb, ub in zip(row_lb, row_ub, strict=True)]
        for r, c, v in zip(m.nz_row, m.nz_col, m.nz_val, strict=True):
            rows[r].SetCoefficient(xs[c], v * scale[c])
