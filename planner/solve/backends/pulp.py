"""CBC and HiGHS through PuLP.

PuLP reports "Optimal" when CBC stops at its time limit with a plan, so the status comes from ``sol_status``.
PuLP does not pass CBC's best bound on; CBC writes it to its log ("Lower bound:" when it stops early), so the
bound is read from there, and a search CBC completed (no early stop) proves the plan optimal. Where the log
says neither, the bound is unknown (None). HiGHS under PuLP hands over its own model (``solverModel``), whose
MIP dual bound is the bound.
"""

from __future__ import annotations

import math
import re
import tempfile
import warnings
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal

import numpy as np

from planner.clock import Deadline
from planner.solve.backends.base import BackendName, RawResult, time_limit_s
from planner.solve.backends.highs import quiet_stdout
from planner.solve.formulation.matrix import Arrays, Matrix, as_matrix
from planner.solve.problem import SolveOptions, Status

_CBC_PROVEN = re.compile(r"^Result - Optimal solution found\s*$", re.MULTILINE)
_CBC_LOWER = re.compile(r"^Lower bound:\s+(\S+)", re.MULTILINE)
_CBC_OBJECTIVE = re.compile(r"^Objective value:\s+(\S+)", re.MULTILINE)


class PulpBackend:
    """CBC (the binary bundled with PuLP) or HiGHS, both driven through a PuLP model."""

    def __init__(self, which: Literal["cbc", "highs"]) -> None:
        self.which = which

    @property
    def name(self) -> BackendName:
        """Its name: cbc, or pulp-highs for HiGHS through PuLP."""
        return "cbc" if self.which == "cbc" else "pulp-highs"

    def solve(self, model: Matrix | Arrays, options: SolveOptions, deadline: Deadline | None = None,
              start: np.ndarray | None = None, stop_at: float | None = None) -> RawResult:
        """Solve through PuLP (start and stop_at are not passed on)."""
        import pulp

        prob, xs = _pulp_model(pulp, as_matrix(model))
        limit = time_limit_s(options, deadline)
        with tempfile.TemporaryDirectory(prefix="medley-cbc-") as tmp:
            log_path = Path(tmp) / "cbc.log"
            solver = self._solver(pulp, options, limit, log_path)
            try:
                if self.which == "highs":
                    with quiet_stdout():
                        prob.solve(solver)
                else:
                    prob.solve(solver)
            except pulp.PulpSolverError as exc:
                return RawResult("error", None, None, None, str(exc))
            log = log_path.read_text(errors="replace") if log_path.exists() else ""
        # PuLP's status says "Optimal" when CBC stops at its time limit with a solution; sol_status tells.
        if prob.status == pulp.LpStatusInfeasible or prob.sol_status == pulp.LpSolutionInfeasible:
            return RawResult("infeasible", None, None, None, "infeasible")
        if prob.sol_status == pulp.LpSolutionOptimal:
            status: Status = "optimal"
        elif prob.sol_status == pulp.LpSolutionIntegerFeasible:
            status = "feasible"
        elif prob.sol_status == pulp.LpSolutionNoSolutionFound:
            return RawResult("time_limit_no_solution", None, None, None, "no solution within the limit")
        else:
            return RawResult("error", None, None, None, pulp.LpStatus[prob.status])
        values = np.asarray([x.varValue if x.varValue is not None else 0.0 for x in xs], dtype=float)
        obj = float(pulp.value(prob.objective))
        has_integer = any(as_matrix(model).integer)
        if self.which == "cbc":
            bound = cbc_bound(log, obj) if has_integer else (obj if status == "optimal" else None)
        else:
            bound = _highs_bound(prob.solverModel, obj, has_integer)
        return RawResult(status, values, obj, bound, pulp.LpStatus[prob.status])

    def _solver(self, pulp: Any, options: SolveOptions, limit: float, log_path: Path) -> Any:
        if self.which == "cbc":
            with warnings.catch_warnings():
                # PuLP 3 marks its bundled CBC as deprecated in favour of an installed one; the bundled one is
                # what ships with the wheel, so it is the one we can count on.
                warnings.simplefilter("ignore", DeprecationWarning)
                return pulp.PULP_CBC_CMD(msg=False, timeLimit=limit, gapRel=options.relative_gap,
                                         threads=options.threads, logPath=str(log_path))
        return pulp.HiGHS(msg=False, timeLimit=limit, gapRel=options.relative_gap)


def _pulp_model(pulp: Any, m: Matrix) -> tuple[Any, list[Any]]:
    """The matrix as a PuLP problem and its variables in the matrix's order."""
    prob = pulp.LpProblem("fleet", pulp.LpMinimize)
    xs = [
        prob.add_variable(
            f"v{i}",
            lowBound=lb if math.isfinite(lb) else None,
            upBound=ub if math.isfinite(ub) else None,
            cat=pulp.LpInteger if integer else pulp.LpContinuous,
        )
        for i, (lb, ub, integer) in enumerate(zip(m.col_lb, m.col_ub, m.integer, strict=True))
    ]
    prob += pulp.LpAffineExpression([(xs[i], c) for i, c in enumerate(m.cost) if c != 0.0], constant=m.offset)
    by_row: list[list[tuple[Any, float]]] = [[] for _ in m.row_lb]
    for r, c, v in zip(m.nz_row, m.nz_col, m.nz_val, strict=True):
        by_row[r].append((xs[c], v))
    for r, terms in enumerate(by_row):
        lb, ub = m.row_lb[r], m.row_ub[r]
        expr = pulp.LpAffineExpression(terms)
        if lb == ub:
            prob += pulp.LpConstraint(expr, pulp.LpConstraintEQ, f"r{r}", lb)
            continue
        if math.isfinite(lb):
            prob += pulp.LpConstraint(expr, pulp.LpConstraintGE, f"r{r}_lo", lb)
        if math.isfinite(ub):
            prob += pulp.LpConstraint(expr, pulp.LpConstraintLE, f"r{r}_up", ub)
    return prob, xs


def _printed_floor(text: str) -> float | None:
    """A number CBC printed, lowered by one unit of its last printed digit (it rounds when printing)."""
    try:
        d = Decimal(text)
    except InvalidOperation:
        return None
    exponent = d.as_tuple().exponent
    if not isinstance(exponent, int) or not d.is_finite():
        return None
    return float(d) - 10.0 ** exponent


def cbc_bound(log: str, objective: float) -> float | None:
    """The lower bound CBC proved for a plan of cost ``objective``, read from its log; None where it is silent.

    A completed search ("Result - Optimal solution found") proves the plan optimal; a search stopped on the
    gap or a limit prints its "Lower bound:". CBC's log leaves out the objective's constant, which is added
    back from the plan's own objective line.
    """
    if _CBC_PROVEN.search(log):
        return objective
    lower, logged = _CBC_LOWER.search(log), _CBC_OBJECTIVE.search(log)
    if lower is None or logged is None:
        return None
    bound = _printed_floor(lower.group(1))
    try:
        shift = objective - float(logged.group(1))
    except ValueError:
        return None
    return None if bound is None else min(objective, bound + shift)


def _highs_bound(model: Any, objective: float, has_integer: bool) -> float | None:
    """HiGHS's MIP dual bound (the objective for an LP), on the objective's scale."""
    if not has_integer:
        return objective
    try:
        info = model.getInfo()
    except AttributeError:
        return None
    bound = float(info.mip_dual_bound)
    if not math.isfinite(bound):
        return None
    return min(objective, bound + (objective - float(info.objective_function_value)))
