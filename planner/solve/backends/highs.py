"""HiGHS through highspy: the backend that gives LP duals, takes a start and stops at an objective.

HiGHS 1.12 prints a debug line (``HighsMipSolverData::transformNewIntegerFeasibleSolution tmpSolver.run();``)
with printf whatever its ``output_flag`` and ``log_to_console`` say, which would corrupt a JSON answer on our
stdout; so while HiGHS runs, file descriptor 1 points at /dev/null (``quiet_stdout``).
"""

from __future__ import annotations

import math
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import numpy as np

from planner.clock import Deadline
from planner.solve.backends.base import BackendName, RawResult, time_limit_s
from planner.solve.formulation.matrix import Arrays, Matrix
from planner.solve.problem import SolveOptions


class _StdoutSilencer:
    """Points the process's stdout descriptor at /dev/null while any HiGHS run lasts.

    The descriptor belongs to the whole process, so there is one silencer for every thread: the first run in
    redirects and the last one out restores (a silencer per run would restore too early or to /dev/null).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._saved = -1
        self._devnull = -1

    def _enter(self) -> None:
        with self._lock:
            if self._depth == 0:
                sys.stdout.flush()
                try:
                    saved = os.dup(1)
                except OSError:
                    saved = -1
                if saved >= 0:
                    self._devnull = os.open(os.devnull, os.O_WRONLY)
                    os.dup2(self._devnull, 1)
                    self._saved = saved
            self._depth += 1

    def _exit(self) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth == 0 and self._saved >= 0:
                os.dup2(self._saved, 1)
                os.close(self._saved)
                os.close(self._devnull)
                self._saved = self._devnull = -1

    @contextmanager
    def silenced(self) -> Iterator[None]:
        """Stdout goes to /dev/null until this run and every other one inside have left."""
        self._enter()
        try:
            yield
        finally:
            self._exit()


_SILENCER = _StdoutSilencer()


def quiet_stdout() -> AbstractContextManager[None]:
    """Silence stdout at the descriptor while HiGHS (here or under PuLP) runs."""
    return _SILENCER.silenced()


# The primal heuristics ``SolveOptions.highs_heuristics`` turns off.
_HEURISTICS = ("mip_heuristic_run_feasibility_jump", "mip_heuristic_run_rins", "mip_heuristic_run_rens",
               "mip_heuristic_run_root_reduced_cost")


class HighsBackend:
    """HiGHS through highspy."""

    @property
    def name(self) -> BackendName:
        """Its name: highs."""
        return "highs"

    def solve(self, model: Matrix | Arrays, options: SolveOptions, deadline: Deadline | None = None,
              start: np.ndarray | None = None, stop_at: float | None = None) -> RawResult:
        """Solve with HiGHS; an LP (no integer variables) also returns its row duals."""
        import highspy

        m = Arrays.of(model)
        h = highspy.Highs()
        h.setOptionValue("output_flag", False)
        h.setOptionValue("log_to_console", False)
        h.setOptionValue("time_limit", time_limit_s(options, deadline))
        h.setOptionValue("mip_rel_gap", float(options.relative_gap))
        if not options.highs_restart:
            h.setOptionValue("mip_allow_restart", False)
        if not options.highs_heuristics:
            for heuristic in _HEURISTICS:
                h.setOptionValue(heuristic, False)
        has_integer = bool(m.integer.any())
        h.passModel(_lp(highspy, m, has_integer))
        if start is not None:
            sol = highspy.HighsSolution()
            sol.col_value = start.tolist()
            sol.value_valid = True
            h.setSolution(sol)
        progress = options.progress if has_integer else None
        if stop_at is not None or progress is not None:
            def interrupt(event: highspy.highs.HighsCallbackEvent) -> None:
                out = event.data_out
                if progress is not None:
                    progress.report(out.mip_primal_bound, out.mip_dual_bound, "highs")
                if stop_at is not None and out.mip_primal_bound <= stop_at:
                    event.interrupt()

            h.cbMipInterrupt.subscribe(interrupt)
        with quiet_stdout():
            h.run()
        return _result(highspy, h, has_integer)


def _lp(hs: Any, m: Arrays, has_integer: bool) -> Any:
    """The model as a HighsLp, column-wise."""
    lp = hs.HighsLp()
    nc, nr = len(m.cost), len(m.row_lb)
    lp.num_col_ = nc
    lp.num_row_ = nr
    lp.col_cost_ = m.cost
    lp.col_lower_ = m.col_lb
    lp.col_upper_ = m.col_ub
    lp.row_lower_ = m.row_lb
    lp.row_upper_ = m.row_ub
    lp.offset_ = m.offset
    order = np.lexsort((m.nz_row, m.nz_col))
    starts = np.searchsorted(m.nz_col[order], np.arange(nc + 1)).astype(np.int32)
    lp.a_matrix_.format_ = hs.MatrixFormat.kColwise
    lp.a_matrix_.start_ = starts
    lp.a_matrix_.index_ = m.nz_row[order].astype(np.int32)
    lp.a_matrix_.value_ = m.nz_val[order]
    lp.a_matrix_.num_col_ = nc
    lp.a_matrix_.num_row_ = nr
    if has_integer:
        kinds = (hs.HighsVarType.kContinuous, hs.HighsVarType.kInteger)
        lp.integrality_ = [kinds[i] for i in m.integer.tolist()]
    return lp


def _result(hs: Any, h: Any, has_integer: bool) -> RawResult:
    """HiGHS's status, plan, objective, bound and (for an LP) duals."""
    ms = h.getModelStatus()
    info = h.getInfo()
    has_sol = info.primal_solution_status == 2  # kSolutionStatusFeasible
    values = np.asarray(h.getSolution().col_value, dtype=float) if has_sol else None
    obj = float(info.objective_function_value) if has_sol else None
    bound = float(info.mip_dual_bound) if has_integer else obj
    if bound is not None and not math.isfinite(bound):
        bound = None
    text = h.modelStatusToString(ms)
    if ms == hs.HighsModelStatus.kOptimal:
        duals = None
        if not has_integer and info.dual_solution_status == 2:
            duals = np.asarray(h.getSolution().row_dual, dtype=float)
        return RawResult("optimal", values, obj, bound, text, duals)
    if ms == hs.HighsModelStatus.kInfeasible:
        return RawResult("infeasible", None, None, None, text)
    if has_sol:
        return RawResult("feasible", values, obj, bound, text)
    if ms in (hs.HighsModelStatus.kTimeLimit, hs.HighsModelStatus.kIterationLimit):
        return RawResult("time_limit_no_solution", None, None, bound, text)
    return RawResult("error", None, None, None, text)
