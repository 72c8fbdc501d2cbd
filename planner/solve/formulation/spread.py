"""Zone-spread family: a service's serving replicas sit in at least spread_s zones.

    z[s,g] ∈ {0,1} (only when spread_s > 1)
    spread_zone[s,g]: z[s,g] ≤ Σ_{c∈Serve_s, zone(p_c)=g} n[c];     spread[s]: Σ_g z[s,g] ≥ spread_s
"""

from __future__ import annotations

from collections.abc import Mapping

from planner.roles import SERVING_ROLES
from planner.schema import Finding
from planner.solve.formulation.base import INF, Built, Family
from planner.solve.problem import Demand, Problem, Solution


def add_spread(f: Built, d: Demand) -> None:
    """z[s,·], spread_zone[s,·] and spread[s] (with a priced slack in elastic mode)."""
    if d.spread_zones <= 1:
        return
    srv = f.serving(d.service)
    zvars = []
    for g in sorted({p.zone for p in f.problem.pools}):
        zv = f.m.var(0.0, 1.0, 0.0, True)
        zvars.append(zv)
        f.zones[(d.service, g)] = zv
        zc = [v for v, zone in srv if zone == g]
        f.m.row(f"spread_zone[{d.service},{g}]", [zv, *zc], [1.0] + [-1.0] * len(zc), -INF, 0.0)
    cols, vals = zvars, [1.0] * len(zvars)
    name = f"spread[{d.service}]"
    if f.elastic:
        cols, vals = [*cols, f.elastic_slack(name)], [*vals, 1.0]
    f.m.row(name, cols, vals, float(d.spread_zones), INF)


def violations(problem: Problem, solution: Solution) -> list[str]:
    """Each service's serving replicas reach its number of zones."""
    zone = {p.id: p.zone for p in problem.pools}
    out = []
    for d in problem.demands:
        zones = {zone[c.pool] for c in problem.by_service.get(d.service, ())
                 if c.role in SERVING_ROLES and solution.replicas.get(c.key, 0) > 0}
        if d.spread_zones > 1 and len(zones) < d.spread_zones:
            out.append(f"{d.service} spread over {len(zones)} zones < {d.spread_zones}")
    return out


def structural(problem: Problem, d: Demand) -> list[Finding]:
    """A service whose serving columns reach fewer zones than it must spread over."""
    zone = {p.id: p.zone for p in problem.pools}
    have = len({zone[c.pool] for c in problem.columns if c.service == d.service and c.role in SERVING_ROLES})
    if d.spread_zones > have:
        return [Finding(kind="infeasible", constraint=f"spread[{d.service}]",
                        message=f"service {d.service}: must spread over {d.spread_zones} zones but its "
                                f"configurations reach only {have}", value=float(d.spread_zones - have))]
    return []


def shortfall(problem: Problem, kind: str, target: str, excess: float, replicas: Mapping[str, int]) -> Finding:
    """How many zones the available pools leave a service short."""
    d = {x.service: x for x in problem.demands}[target]
    return Finding(kind="infeasible", constraint=f"{kind}[{target}]",
                   message=(f"service {target}: must spread over {d.spread_zones} zones; short {excess:.0f} zones "
                            "within the available pools"), value=excess)


FAMILY = Family("spread", violations, slacks=("spread",), shortfall=shortfall)
