"""Power family: each power domain's expected draw and its nodes' nameplate stay inside its budget.

    power_expected[k]:  Σ_{c: domain(p_c)=k} (idle_c n[c] + (active_c − idle_c) busy[c])
                        + Σ_{p∈k} node_idle_p N[p] ≤ σ_k W_k
    power_nameplate[k]: Σ_{p∈k} nameplate_p N[p] ≤ ρ_k W_k
A decode+offload column's watts are booked to its compute pool's power domain.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from planner.schema import Finding
from planner.solve.formulation.base import INF, Built, Family, Probe, users
from planner.solve.problem import Problem, Solution, expected_watts, nodes_used, pool_usage

# Elastic slack on the power rows counts kilowatts, which keeps its penalty comparable with a missing device.
_SLACK_WATTS = 1000.0


def power_terms(f: Built) -> dict[str, tuple[list[int], list[float]]]:
    """Per domain, the replica and share variables that draw power and their watts, in column order."""
    out: dict[str, tuple[list[int], list[float]]] = {}
    for c in f.columns:
        domain = f.pools[c.pool].power_domain
        if domain is None:
            continue
        cols, vals = out.setdefault(domain, ([], []))
        cols.append(f.n[c.key])
        vals.append(c.idle_watts)
        cols.extend(f.shares[c.key][1])
        vals.extend((f.loads[c.key] * (c.active_watts - c.idle_watts)).tolist())
    return out


def add_power(f: Built) -> None:
    """power_expected[k] and power_nameplate[k] for every budget (elastic: priced kW slack on each)."""
    terms = power_terms(f)
    pools = f.problem.pools
    for k in f.problem.power_budgets:
        cols, vals = terms.get(k.id, ([], []))
        cols, vals = list(cols), list(vals)
        members = [p for p in pools if p.power_domain == k.id and p.id in f.nodes]
        ncols = [f.nodes[p.id] for p in members]
        cols += ncols
        vals += [p.node_idle_watts for p in members]
        ncols2, nvals2 = list(ncols), [p.nameplate_watts_per_node for p in members]
        if f.elastic:
            s1 = f.elastic_slack(f"power_expected[{k.id}]")
            s2 = f.elastic_slack(f"power_nameplate[{k.id}]")
            cols, vals = [*cols, s1], [*vals, -_SLACK_WATTS]
            ncols2, nvals2 = [*ncols2, s2], [*nvals2, -_SLACK_WATTS]
        r1 = f.m.row(f"power_expected[{k.id}]", cols, vals, -INF, k.expected_share * k.budget_watts)
        r2 = f.m.row(f"power_nameplate[{k.id}]", ncols2, nvals2, -INF, k.oversubscription_ratio * k.budget_watts)
        f.power_rows[k.id] = (r1, r2)


def _draw(problem: Problem, replicas: Mapping[str, int],
          shares: Mapping[tuple[str, int], float]) -> dict[str, tuple[float, float]]:
    """Per domain, (expected watts, nameplate watts of the used nodes) of a plan."""
    nodes = nodes_used(problem, pool_usage(problem, replicas))
    watts = expected_watts(problem, replicas, shares, nodes)
    return {k.id: (watts.get(k.id, 0.0), sum(p.nameplate_watts_per_node * nodes[p.id] for p in problem.pools
                                             if p.power_domain == k.id))
            for k in problem.power_budgets}


def overrun_domains(problem: Problem, replicas: Mapping[str, int],
                    shares: Mapping[tuple[str, int], float]) -> set[str]:
    """The power domains whose expected or nameplate limit a plan breaks."""
    draw = _draw(problem, replicas, shares)
    out = set()
    for k in problem.power_budgets:
        tol = 1e-7 * max(1.0, k.budget_watts)
        watts, plate = draw[k.id]
        if watts > k.expected_share * k.budget_watts + tol or plate > k.oversubscription_ratio * k.budget_watts + tol:
            out.add(k.id)
    return out


def violations(problem: Problem, solution: Solution) -> list[str]:
    """Each domain's expected draw and nameplate stay inside their limits."""
    draw = _draw(problem, solution.replicas, solution.prefill_share | solution.decode_share)
    out = []
    for k in problem.power_budgets:
        watts, plate = draw[k.id]
        if watts > k.expected_share * k.budget_watts + 1e-4:
            out.append(f"domain {k.id} expected {watts} W")
        if plate > k.oversubscription_ratio * k.budget_watts + 1e-6:
            out.append(f"domain {k.id} nameplate {plate} W")
    return out


def shortfall(problem: Problem, kind: str, target: str, excess: float, replicas: Mapping[str, int]) -> Finding:
    """How many watts a domain is short on its expected draw or nameplate, and which pools serve whom."""
    k = {b.id: b for b in problem.power_budgets}[target]
    over_w = excess * _SLACK_WATTS
    if kind == "power_expected":
        limit = k.expected_share * k.budget_watts
        what = "expected draw"
    else:
        limit = k.oversubscription_ratio * k.budget_watts
        what = "nameplate power of the nodes"
    members = [p.id for p in problem.pools if p.power_domain == target]
    msg = (f"power domain {target}: the {what} needs {limit + over_w:.0f} W but the limit is "
           f"{limit:.0f} W; short {over_w:.0f} W; pools {', '.join(members)} serve "
           + "; ".join(f"{p}: {users(problem, replicas, p)}" for p in members))
    return Finding(kind="infeasible", constraint=f"{kind}[{target}]", message=msg, value=over_w)


def probes(problem: Problem, solution: Solution) -> list[Probe]:
    """Every domain whose expected draw or nameplate is within 1% of its limit, with 1 kW more budget."""
    out = []
    for k in problem.power_budgets:
        used_w = solution.expected_watts.get(k.id, 0.0)
        limit = k.expected_share * k.budget_watts
        nameplate = sum(p.nameplate_watts_per_node * solution.nodes.get(p.id, 0)
                        for p in problem.pools if p.power_domain == k.id)
        if not (used_w >= 0.99 * limit or nameplate >= 0.99 * k.oversubscription_ratio * k.budget_watts):
            continue
        bigger = replace(k, budget_watts=k.budget_watts + _SLACK_WATTS)
        out.append(Probe(
            Finding(kind="binding", constraint=f"power[{k.id}]",
                    message=(f"power domain {k.id}: expected {used_w:.0f} W of {limit:.0f} W, nameplate "
                             f"{nameplate:.0f} W of {k.oversubscription_ratio * k.budget_watts:.0f} W"),
                    value=used_w),
            replace(problem, power_budgets=tuple(bigger if q.id == k.id else q for q in problem.power_budgets)),
            f"power[{k.id}]", f"1 kW more budget in power domain {k.id}"))
    return out


FAMILY = Family("power", violations, slacks=("power_expected", "power_nameplate"), shortfall=shortfall,
                probes=probes)
