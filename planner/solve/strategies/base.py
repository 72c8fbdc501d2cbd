"""What the strategies share: the ``Strategy`` Protocol, the record of which backend ran each stage, and
turning a backend's raw result into a ``Solution``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from planner.clock import Deadline
from planner.roles import DECODE_ROLES, PREFILL_ROLES
from planner.solve.backends import RawResult
from planner.solve.formulation import Built
from planner.solve.problem import Problem, Solution, expected_watts, nodes_used, plan_cost_usd_per_hour, pool_usage


class Strategy(Protocol):
    """A way to solve the fleet MILP by a deadline."""

    def solve(self, problem: Problem, deadline: Deadline, start: Solution | None = None) -> Solution:
        """The best plan found by the deadline, with an honest status, bound and gap; ``start`` is a plan of
        the problem to begin from and to beat."""
        ...


def nested(prefix: str, stages: Mapping[str, str]) -> dict[str, str]:
    """A sub-solve's stage → backend record, under ``prefix``."""
    return {f"{prefix}/{stage}": name for stage, name in stages.items()}


def solution_of(problem: Problem, built: Built, raw: RawResult, backend: str, seconds: float,
                stages: Mapping[str, str]) -> Solution:
    """The plan in the problem's terms from a raw result on ``built`` (which must hold values)."""
    assert raw.values is not None
    v = raw.values
    replicas = {k: int(round(v[i])) for k, i in built.n.items()}
    pre: dict[tuple[str, int], float] = {}
    dec: dict[tuple[str, int], float] = {}
    for c in problem.columns:
        if c.key not in built.shares:
            continue
        bk, xs = built.shares[c.key]
        for b, xi in zip(bk.tolist(), xs, strict=True):
            share = float(min(1.0, max(0.0, v[xi])))
            if share <= 1e-9:
                continue
            if c.role in PREFILL_ROLES:
                pre[(c.key, b)] = share
            if c.role in DECODE_ROLES:
                dec[(c.key, b)] = share
    nodes = nodes_used(problem, pool_usage(problem, replicas))
    obj, bound = raw.objective, raw.best_bound
    gap = None
    if obj is not None and bound is not None:
        gap = max(0.0, (obj - bound) / max(abs(obj), 1e-9))
    return Solution(
        status=raw.status, backend=backend, objective=obj, best_bound=bound, relative_gap=gap,
        solve_seconds=seconds, variables=len(built.m.cost), constraints=len(built.m.row_lb),
        replicas={k: r for k, r in replicas.items() if r > 0}, prefill_share=pre, decode_share=dec,
        nodes={k: n for k, n in nodes.items() if n > 0},
        expected_watts=expected_watts(problem, replicas, pre | dec, nodes),
        cost_usd_per_hour=plan_cost_usd_per_hour(problem, replicas), message=raw.message, backends=dict(stages),
    )
