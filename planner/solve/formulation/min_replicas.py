"""Minimum-replicas family: a service keeps a floor of replicas that answer requests.

    min_replicas[s]: Σ_{c∈Serve_s} n[c] ≥ min_s        (Serve_s = U_s ∪ Dc_s)
"""

from __future__ import annotations

from collections.abc import Mapping

from planner.roles import SERVING_ROLES
from planner.schema import Finding
from planner.solve.formulation.base import INF, Built, Family
from planner.solve.problem import Demand, Problem, Solution


def add_min_replicas(f: Built, d: Demand) -> None:
    """min_replicas[s] (with a priced slack in elastic mode)."""
    if d.min_replicas <= 0:
        return
    cols = [v for v, _ in f.serving(d.service)]
    vals = [1.0] * len(cols)
    name = f"min_replicas[{d.service}]"
    if f.elastic:
        cols, vals = [*cols, f.elastic_slack(name)], [*vals, 1.0]
    f.m.row(name, cols, vals, float(d.min_replicas), INF)


def violations(problem: Problem, solution: Solution) -> list[str]:
    """Each service has at least its minimum of serving replicas."""
    out = []
    for d in problem.demands:
        serving = sum(solution.replicas.get(c.key, 0) for c in problem.by_service.get(d.service, ())
                      if c.role in SERVING_ROLES)
        if serving < d.min_replicas:
            out.append(f"{d.service} min replicas: {serving} < {d.min_replicas}")
    return out


def structural(problem: Problem, d: Demand) -> list[Finding]:
    """A service that needs serving replicas but has no serving column at all."""
    if d.min_replicas > 0 and not any(c.service == d.service and c.role in SERVING_ROLES for c in problem.columns):
        return [Finding(kind="infeasible", constraint=f"min_replicas[{d.service}]",
                        message=f"service {d.service}: needs {d.min_replicas} serving replicas but has no serving "
                                "configuration in any allowed pool", value=float(d.min_replicas))]
    return []


def shortfall(problem: Problem, kind: str, target: str, excess: float, replicas: Mapping[str, int]) -> Finding:
    """How many serving replicas the available pools leave a service short."""
    d = {x.service: x for x in problem.demands}[target]
    return Finding(kind="infeasible", constraint=f"{kind}[{target}]",
                   message=(f"service {target}: needs {d.min_replicas} serving replicas; short {excess:.0f} within "
                            "the available pools"), value=excess)


FAMILY = Family("min_replicas", violations, slacks=("min_replicas",), shortfall=shortfall)
