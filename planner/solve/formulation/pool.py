"""Pool family: the devices a plan uses fit in whole nodes of each pool, up to its node limit.

    N[p] ∈ Z, 0..M_p (only where a pool row is needed: node billing, a node limit, or a power domain)
    pool[p]: Σ_{c: p_c=p} d_c n[c] + Σ_{c: q_c=p} m_c n[c] ≤ D_p N[p]
The pool row counts devices, not packing: a replica's placement on whole nodes is the placer's job.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from planner.schema import Finding
from planner.solve.formulation.base import INF, Built, Family, Probe, users
from planner.solve.problem import PoolSupply, Problem, Solution, nodes_used, pool_usage


def needs_nodes(pool: PoolSupply, domains: set[str]) -> bool:
    """Whether the pool gets N[p] and a pool row."""
    return pool.billing == "node" or pool.max_nodes is not None or (pool.power_domain in domains)


def pool_terms(f: Built) -> dict[str, tuple[list[int], list[float]]]:
    """Per pool, the replicas variables that take its devices and how many each takes, in column order."""
    out: dict[str, tuple[list[int], list[float]]] = {}
    for c in f.columns:
        nv = f.n[c.key]
        cols, vals = out.setdefault(c.pool, ([], []))
        cols.append(nv)
        vals.append(float(c.devices))
        if c.memory_pool is not None and c.memory_devices:
            cols, vals = out.setdefault(c.memory_pool, ([], []))
            cols.append(nv)
            vals.append(float(c.memory_devices))
    return out


def add_pools(f: Built) -> None:
    """N[p] and pool[p] for the pools that need them (elastic: node limits become priced slack)."""
    terms = pool_terms(f)
    domains = {k.id for k in f.problem.power_budgets}
    for p in f.problem.pools:
        if not needs_nodes(p, domains) or p.id not in terms:
            continue
        ub = INF if p.max_nodes is None else float(p.max_nodes)
        cost = p.usd_per_device_hour * p.devices_per_node if p.billing == "node" else 0.0
        if f.elastic and p.max_nodes is not None:
            nv = f.m.var(0.0, INF, cost, True)
            sv = f.elastic_slack(f"pool[{p.id}]")
            f.m.row(f"pool_nodes[{p.id}]", [nv, sv], [1.0, -1.0], -INF, float(p.max_nodes))
        else:
            nv = f.m.var(0.0, ub, cost, True)
        f.nodes[p.id] = nv
        cols, vals = terms[p.id]
        f.pool_row[p.id] = f.m.row(f"pool[{p.id}]", [*cols, nv], [*vals, -float(p.devices_per_node)], -INF, 0.0)


def overrun_pools(problem: Problem, replicas: Mapping[str, int]) -> set[str]:
    """The pools whose node limit a replica assignment breaks."""
    nodes = nodes_used(problem, pool_usage(problem, replicas))
    return {p.id for p in problem.pools if p.max_nodes is not None and nodes[p.id] > p.max_nodes}


def violations(problem: Problem, solution: Solution) -> list[str]:
    """Each pool holds the plan's devices in at most its nodes."""
    over = overrun_pools(problem, solution.replicas)
    nodes = nodes_used(problem, pool_usage(problem, solution.replicas))
    return [f"pool {p.id} needs {nodes[p.id]} nodes > {p.max_nodes}" for p in problem.pools if p.id in over]


def shortfall(problem: Problem, kind: str, target: str, excess: float, replicas: Mapping[str, int]) -> Finding:
    """How many nodes (and devices) a pool is short, and who wants them."""
    p = {q.id: q for q in problem.pools}[target]
    assert p.max_nodes is not None
    used = pool_usage(problem, replicas)
    need = nodes_used(problem, used)[target]
    short = need - p.max_nodes
    msg = (f"pool {target}: the fleet needs {need} nodes ({used[target]} devices) but only "
           f"{p.max_nodes} are available; short {short} nodes ({short * p.devices_per_node} devices); "
           f"wanted by {users(problem, replicas, target)}")
    return Finding(kind="infeasible", constraint=f"{kind}[{target}]", message=msg, value=float(short))


def probes(problem: Problem, solution: Solution) -> list[Probe]:
    """Every pool whose nodes the plan uses up, with one more node in it."""
    out = []
    for p in problem.pools:
        if p.max_nodes is None or solution.nodes.get(p.id, 0) < p.max_nodes:
            continue
        more = replace(p, max_nodes=p.max_nodes + 1)
        out.append(Probe(
            Finding(kind="binding", constraint=f"pool[{p.id}]", message=f"pool {p.id}: all {p.max_nodes} nodes "
                    "are used", value=float(p.max_nodes)),
            replace(problem, pools=tuple(more if q.id == p.id else q for q in problem.pools)),
            f"pool[{p.id}]", f"one more node in pool {p.id}"))
    return out


FAMILY = Family("pool", violations, slacks=("pool",), shortfall=shortfall, probes=probes)
