"""The MILP solvers behind one ``Backend`` Protocol: HiGHS (highspy), CBC and HiGHS through PuLP, SCIP and
CP-SAT through OR-Tools. Adding a backend: an adapter with ``name`` and ``solve`` here, its name in
``planner.schema.SolverName`` (what a fleet may ask for), and a line in ``backend_for``."""

from __future__ import annotations

from planner.solve.backends.base import BACKEND_NAMES, Backend, RawResult
from planner.solve.backends.highs import HighsBackend
from planner.solve.backends.ortools import OrToolsBackend
from planner.solve.backends.pulp import PulpBackend
from planner.solve.problem import BackendName


def backend_for(name: BackendName) -> Backend:
    """The adapter for a backend name."""
    if name == "highs":
        return HighsBackend()
    if name == "cbc":
        return PulpBackend("cbc")
    if name == "pulp-highs":
        return PulpBackend("highs")
    if name == "scip":
        return OrToolsBackend("SCIP")
    if name == "cpsat":
        return OrToolsBackend("CP_SAT")
    raise ValueError(f"unknown backend {name!r}; one of {', '.join(BACKEND_NAMES)}")


__all__ = ["BACKEND_NAMES", "Backend", "BackendName", "HighsBackend", "OrToolsBackend", "PulpBackend", "RawResult",
           "backend_for"]
