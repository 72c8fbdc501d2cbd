"""Zone-roles family: in every zone a service spreads over, it runs every role it uses.

A zone counted for the spread (z[s,g] = 1, see spread) must hold a replica of each role class r the service
gives traffic to (r ∈ {unified, prefill, decode-side}), so that a zone left after another's loss runs the
same split of work and each zone's prefill replicas have decode replicas to hand off to. Only for services
with spread_s > 1 and columns of at least two role classes::

    u[s,r] ∈ {0,1}          role class r carries traffic somewhere
    role_used[s,r,b]:       u[s,r] ≥ Σ_{c∈r} x[c,b]                    ∀ b ∈ B_s^+  (the shares of a class sum to ≤ 1)
    zone_role[s,r,g]:       Σ_{c∈r, zone(p_c)=g} n[c] ≥ z[s,g] + u[s,r] − 1
"""

from __future__ import annotations

from planner.roles import DECODE_ONLY_ROLES
from planner.schema import Role
from planner.solve.formulation.base import INF, Built, Family
from planner.solve.problem import Column, Demand, Problem, Solution

ROLE_CLASSES = ("unified", "prefill", "decode")


def role_class(c: Column) -> str:
    """The class of a column's role for this family."""
    if c.role is Role.UNIFIED:
        return "unified"
    return "decode" if c.role in DECODE_ONLY_ROLES else "prefill"


def add_zone_roles(f: Built, d: Demand) -> None:
    """u[s,·], role_used and zone_role rows of one service (nothing without spread or a second class)."""
    if d.spread_zones <= 1:
        return
    cols = f.columns_of.get(d.service, [])
    classes = [r for r in ROLE_CLASSES if any(role_class(c) == r for c in cols)]
    if len(classes) < 2:
        return
    zones = sorted({g for (s, g) in f.zones if s == d.service})
    for r in classes:
        members = [c for c in cols if role_class(c) == r]
        uv = f.m.var(0.0, 1.0, 0.0, True)
        f.role_flags[(d.service, r)] = uv
        for b, rate in enumerate(d.bucket_rates_rps):
            xs = [xv for c in members for bb, xv in zip(f.shares[c.key][0].tolist(), f.shares[c.key][1], strict=True)
                  if bb == b]
            if rate > 0 and xs:
                f.m.row(f"role_used[{d.service},{r},{b}]", [uv, *xs], [1.0] + [-1.0] * len(xs), 0.0, INF)
        for g in zones:
            ns = [f.n[c.key] for c in members if f.pools[c.pool].zone == g]
            f.m.row(f"zone_role[{d.service},{r},{g}]", [*ns, f.zones[(d.service, g)], uv],
                    [1.0] * len(ns) + [-1.0, -1.0], -1.0, INF)


def violations(problem: Problem, solution: Solution) -> list[str]:
    """A service that spreads over several zones has each role class it uses in at least spread_s zones that
    hold all of them."""
    zone = {p.id: p.zone for p in problem.pools}
    shares = solution.prefill_share | solution.decode_share
    out = []
    for d in problem.demands:
        if d.spread_zones <= 1:
            continue
        cols = list(problem.by_service.get(d.service, ()))
        if len({role_class(c) for c in cols}) < 2:  # the rows exist only then (add_zone_roles)
            continue
        busy = {k for (k, _), v in shares.items() if v > 1e-9}
        used = {role_class(c) for c in cols if c.key in busy}
        present: dict[str, set[str]] = {}
        for c in cols:
            if solution.replicas.get(c.key, 0) > 0:
                present.setdefault(zone[c.pool], set()).add(role_class(c))
        complete = [g for g, roles in present.items() if used <= roles]
        if len(complete) < d.spread_zones:
            out.append(f"{d.service}: only {len(complete)} zones run all of {sorted(used)}")
    return out


FAMILY = Family("zone_roles", violations)
