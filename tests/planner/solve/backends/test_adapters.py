"""Every backend honours the one Protocol on problems with known optima, bounds are the solvers' own, and
HiGHS's stray stdout line stays off our stdout."""

from __future__ import annotations

import os
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from planner.clock import Deadline
from planner.io.fleetfile import load_fleet
from planner.pipeline import build_inputs
from planner.schema import Role
from planner.solve import Column, Demand, PoolSupply, Problem, SolveOptions, solve
from planner.solve.backends import BACKEND_NAMES, backend_for
from planner.solve.backends.highs import quiet_stdout
from planner.solve.backends.pulp import cbc_bound
from planner.solve.formulation import Arrays, build
from planner.solve.incumbent import checked_greedy_plan, start_vector

EXACT = SolveOptions(relative_gap=0.0, time_limit_s=20)
QUICKSTART = Path(__file__).resolve().parents[4] / "examples" / "quickstart.yaml"


def _two_types() -> Problem:
    # 6 req/s: small does 2 req/s for $1.2, big 5 req/s for $2; 1 big + 1 small ($3.2) beats 3 small or 2 big.
    pools = (PoolSupply("s", "z", None, 1, None, 1.2), PoolSupply("b", "z", None, 1, None, 2.0))
    cols = (Column("s", "svc", Role.UNIFIED, "s", 1, (2.0,)), Column("b", "svc", Role.UNIFIED, "b", 1, (5.0,)))
    return Problem(pools, cols, (Demand("svc", (6.0,), min_replicas=0),))


@pytest.mark.parametrize("name", BACKEND_NAMES)
def test_each_backend_solves_a_built_matrix_to_its_known_optimum(name: str) -> None:
    backend = backend_for(name)  # type: ignore[arg-type]
    assert backend.name == name
    built = build(_two_types(), link=False, bucket_rows=True, work_rows=True)
    raw = backend.solve(Arrays.of(built.m), EXACT, Deadline.after(20))
    assert raw.status == "optimal" and raw.values is not None and raw.objective is not None
    assert raw.objective == pytest.approx(3.2, abs=1e-6)
    assert {k: round(float(raw.values[i])) for k, i in built.n.items()} == {"s": 1, "b": 1}
    # Proven optimal with no gap allowed: the bound is the objective (as the solver states it).
    assert raw.best_bound is not None and raw.best_bound == pytest.approx(3.2, abs=1e-5)
    assert raw.best_bound <= raw.objective + 1e-9


@pytest.mark.parametrize("name", BACKEND_NAMES)
def test_each_backend_says_infeasible(name: str) -> None:
    pools = (PoolSupply("p", "z", None, 1, 2, 1.0),)
    problem = Problem(pools, (Column("c", "svc", Role.UNIFIED, "p", 1, (1.0,)),), (Demand("svc", (5.0,)),))
    raw = backend_for(name).solve(build(problem).m, EXACT)  # type: ignore[arg-type]
    assert raw.status == "infeasible" and raw.values is None


def test_cbc_bound_is_never_above_the_optimum_when_it_stops_at_its_gap() -> None:
    """CBC stops within 5% on quickstart; PuLP says Optimal, but the bound is CBC's own lower bound."""
    problem = build_inputs(load_fleet(QUICKSTART)).problem
    exact = solve(problem, SolveOptions(relative_gap=0.0, time_limit_s=60))
    loose = solve(problem, SolveOptions(backend="cbc", relative_gap=0.05, time_limit_s=60))
    assert exact.status == "optimal" and exact.objective is not None
    assert loose.objective is not None and loose.best_bound is not None and loose.relative_gap is not None
    assert loose.best_bound <= exact.objective + 1e-6 <= loose.objective + 2e-6
    assert loose.relative_gap <= 0.05 + 1e-9


def test_cbc_bound_reads_the_log() -> None:
    completed = "Cbc0001I Search completed - best objective 112.172\n\nResult - Optimal solution found\n\n" \
                "Objective value:                112.17200000\n"
    assert cbc_bound(completed, 112.172) == 112.172
    gap_stop = ("Result - Optimal solution found (within gap tolerance)\n\n"
                "Objective value:                113.38400000\n"
                "Lower bound:                    111.789\nGap:                            0.01\n")
    # CBC prints the bound rounded to its last digit: one unit lower is what it proved for sure.
    assert cbc_bound(gap_stop, 113.384) == pytest.approx(111.788)
    # The log leaves out the objective's constant; the plan's own objective puts it back.
    assert cbc_bound(gap_stop, 123.384) == pytest.approx(121.788)
    assert cbc_bound("Result - Stopped on time limit\n\nNo feasible solution found\n", 5.0) is None


def test_pulp_highs_bound_comes_from_its_model() -> None:
    sol = solve(_two_types(), SolveOptions(backend="pulp-highs", relative_gap=0.0))
    assert sol.status == "optimal" and sol.best_bound == pytest.approx(3.2, abs=1e-6)
    assert sol.backends == {"milp": "pulp-highs"}


def test_quiet_stdout_silences_the_descriptor_across_threads(capfd: pytest.CaptureFixture[str]) -> None:
    inside = threading.Event()
    release = threading.Event()

    def other() -> None:
        with quiet_stdout():
            inside.set()
            release.wait(5)
            os.write(1, b"from the other thread\n")

    t = threading.Thread(target=other)
    with quiet_stdout():
        t.start()
        inside.wait(5)
        os.write(1, b"hidden\n")
    # The other thread still runs HiGHS: stdout stays silenced until the last one leaves.
    os.write(1, b"still hidden\n")
    release.set()
    t.join(5)
    os.write(1, b"shown\n")
    assert capfd.readouterr().out == "shown\n"


def test_highs_lp_returns_row_duals() -> None:
    built = build(_two_types(), link=False)
    relaxed = Arrays.of(built.m)
    lp = Arrays(relaxed.col_lb, relaxed.col_ub, relaxed.cost, np.zeros_like(relaxed.integer), relaxed.row_lb,
                relaxed.row_ub, relaxed.nz_row, relaxed.nz_col, relaxed.nz_val, relaxed.offset)
    raw = backend_for("highs").solve(lp, EXACT)
    assert raw.status == "optimal" and raw.row_dual is not None and len(raw.row_dual) == len(relaxed.row_lb)
    # The LP carries 6 req/s on the cheaper-per-request big type: 1.2 replicas at $2.
    assert raw.objective == pytest.approx(2.4)


def test_highs_without_its_primal_heuristics_proves_the_same_optimum() -> None:
    # what marginal-value probes and baselines run with: they start from the plan to beat
    problem = build_inputs(load_fleet(QUICKSTART)).problem
    built = build(problem, bucket_rows=True, work_rows=True)
    plan = checked_greedy_plan(problem)
    assert plan is not None
    start = start_vector(problem, built, plan)
    opts = SolveOptions(relative_gap=1e-3, time_limit_s=20)
    found = [backend_for("highs").solve(built.m, replace(opts, highs_heuristics=h), Deadline.after(20), start)
             for h in (True, False)]
    assert all(r.status == "optimal" and r.objective is not None and r.best_bound is not None for r in found)
    assert found[1].objective == pytest.approx(found[0].objective, rel=1e-3)
    assert found[1].best_bound <= found[0].objective + 1e-6
