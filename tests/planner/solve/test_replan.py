"""Services of a plan solved by service, solved again without some columns while the others keep their parts."""

from __future__ import annotations

from dataclasses import replace

import pytest

import planner.solve.replan as replan
from planner.clock import Deadline
from planner.schema import Role
from planner.solve import Column, Demand, PoolSupply, Problem, Solution, SolveOptions, solve, violations
from planner.solve.replan import solved_by_service, without_columns

EXACT = SolveOptions(relative_gap=0.0, time_limit_s=20, decompose="on", threads=1)


def _fleet(max_nodes: int | None = None) -> Problem:
    """Three services; each has a cheap one-device column ("fast") and a dearer two-device one ("slow") in a
    cheap pool, and the same two in a dear pool."""
    pools = (PoolSupply("cheap", "a", None, 8, max_nodes, 1.0), PoolSupply("dear", "b", None, 8, None, 3.0))
    cols = tuple(Column(f"s{s}-{pool}-{kind}", f"s{s}", Role.UNIFIED, pool, devices, (cap,))
                 for s in range(3) for pool in ("cheap", "dear")
                 for kind, devices, cap in (("fast", 1, 2.0), ("slow", 2, 2.0)))
    return Problem(pools, cols, tuple(Demand(f"s{s}", (3.0,), min_replicas=1) for s in range(3)))


def _without_fast(problem: Problem, service: str) -> Problem:
    return replace(problem, columns=tuple(c for c in problem.columns
                                          if not (c.service == service and c.key.endswith("fast"))))


def test_only_the_named_services_are_solved_again_and_the_others_keep_their_parts(
        monkeypatch: pytest.MonkeyPatch) -> None:
    problem = _fleet()
    sol = solve(problem, EXACT)
    assert solved_by_service(sol) and sol.objective == pytest.approx(3 * 2 * 1.0)  # two fast replicas each
    solved: list[list[str]] = []
    inner = replan._solve

    def counting(p: Problem, options: SolveOptions, deadline: Deadline) -> Solution:
        solved.append([d.service for d in p.demands])
        return inner(p, options, deadline)

    monkeypatch.setattr(replan, "_solve", counting)
    fewer = _without_fast(problem, "s1")
    alt = without_columns(problem, sol, fewer, {"s1"}, EXACT, Deadline.after(20.0))
    assert alt is not None and solved == [["s1"]]
    # s1 now runs two two-device replicas ($4/h); s0 and s2 keep theirs.
    best = solve(fewer, replace(EXACT, decompose="off"))
    assert alt.objective == pytest.approx(best.objective) == pytest.approx(8.0)
    assert violations(fewer, alt) == []
    assert {k: n for k, n in alt.replicas.items() if n and not k.startswith("s1")} == \
        {k: n for k, n in sol.replicas.items() if n and not k.startswith("s1")}
    # The old bound ($6/h) holds: the fleet lost columns. The gap widens by what s1 costs more.
    assert alt.best_bound == pytest.approx(6.0) and alt.relative_gap == pytest.approx(0.25)
    assert alt.status == "feasible" and alt.cost_usd_per_hour == pytest.approx(8.0)


def test_no_plan_where_the_new_plans_overrun_the_pools_or_the_plan_was_solved_whole() -> None:
    # The plan runs six one-device replicas in the cheap pool. With that pool cut to one six-device node and
    # the dear pool to none, s1 without its one-device column needs four devices: they fit the pool alone, not
    # beside the four the others use.
    problem = _fleet()
    sol = solve(problem, EXACT)
    assert sol.objective is not None and sum(sol.replicas.values()) == 6
    squeezed = replace(problem, pools=(replace(problem.pools[0], devices_per_node=6, max_nodes=1),
                                       replace(problem.pools[1], max_nodes=0)))
    assert violations(squeezed, sol) == []
    assert without_columns(squeezed, sol, _without_fast(squeezed, "s1"), {"s1"}, EXACT, Deadline.after(20.0)) \
        is None
    whole = solve(problem, replace(EXACT, decompose="off"))
    assert not solved_by_service(whole)
    assert without_columns(problem, whole, _without_fast(problem, "s1"), {"s1"}, EXACT, Deadline.after(20.0)) is None
