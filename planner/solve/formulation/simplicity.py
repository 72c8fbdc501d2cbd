"""Simplicity family: a service runs at most K configurations.

Each configuration (device, TP, PP, role, memory devices: a column's ``label``, whatever pool or zone it runs
in) is an engine set-up to tune, watch and roll out; a service spread over seven of them is seven. Only for
services with a limit K_s (``Demand.max_configurations``) and more labels among their columns than K_s::

    y[s,ℓ] ∈ {0,1}         configuration ℓ is used by service s
    config_used[c]:        n[c] ≤ M_c · y[s,ℓ_c]
    configurations[s]:     Σ_ℓ y[s,ℓ] ≤ K_s          (elastic: a priced slack)

M_c bounds the replicas an optimal plan gives c: the replicas its work needs when it carries every bucket it
can, ⌈Σ_b λ_b/(h·cap_{c,b})⌉, plus the service's minimum replicas, zones and running replicas of c; at most
its pool's devices over d_c (not in elastic mode, where pools may overrun).

Dominance pruning stays exact under the limit: a column beaten by another of the same pool and role is beaten
by the same label in every pool of its device, so moving its replicas to the winner never adds a label.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace

from planner.schema import Finding
from planner.solve.formulation.base import INF, Built, Family, Probe
from planner.solve.problem import Column, Demand, Problem, Solution


def labels_of(problem: Problem, service: str) -> list[str]:
    """The configurations among a service's columns, in column order."""
    return list(dict.fromkeys(c.label or c.key for c in problem.by_service.get(service, ())))


def replica_bound(f: Built, c: Column, d: Demand) -> float:
    """M_c: the most replicas an optimal plan gives column c (module docstring)."""
    work = sum(rate / (f.problem.headroom * cap) for rate, cap in zip(d.bucket_rates_rps, c.capacity_rps, strict=True)
               if rate > 0 and cap > 0)
    bound = float(math.ceil(work - 1e-9) + d.min_replicas + d.spread_zones + f.problem.current_replicas.get(c.key, 0))
    pool = f.pools[c.pool]
    if pool.max_nodes is not None and not f.elastic:  # elastic mode lets pools overrun (priced)
        bound = min(bound, float(math.floor(pool.max_nodes * pool.devices_per_node / c.devices)))
    return max(bound, 1.0)


def add_simplicity(f: Built, d: Demand) -> None:
    """y[s,·], config_used and configurations[s] where the service has more configurations than its limit."""
    k = d.max_configurations
    cols = f.columns_of.get(d.service, [])
    labels = list(dict.fromkeys(c.label or c.key for c in cols))
    if k is None or len(labels) <= k:
        return
    y = {lab: f.m.var(0.0, 1.0, 0.0, True) for lab in labels}
    f.config_flags.update({(d.service, lab): v for lab, v in y.items()})
    for c in cols:
        f.m.row(f"config_used[{c.key}]", [f.n[c.key], y[c.label or c.key]], [1.0, -replica_bound(f, c, d)], -INF, 0.0)
    cols_y, vals = list(y.values()), [1.0] * len(y)
    name = f"configurations[{d.service}]"
    if f.elastic:
        cols_y, vals = [*cols_y, f.elastic_slack(name)], [*vals, -1.0]
    f.m.row(name, cols_y, vals, -INF, float(k))


def used_labels(problem: Problem, solution: Solution, service: str) -> list[str]:
    """The configurations a plan gives replicas to, for one service."""
    return list(dict.fromkeys(c.label or c.key for c in problem.by_service.get(service, ())
                              if solution.replicas.get(c.key, 0) > 0))


def violations(problem: Problem, solution: Solution) -> list[str]:
    """Each service with a limit runs at most that many configurations."""
    return [f"{d.service} runs {len(used)} configurations > {d.max_configurations}"
            for d in problem.demands if d.max_configurations is not None
            for used in [used_labels(problem, solution, d.service)] if len(used) > d.max_configurations]


def shortfall(problem: Problem, kind: str, target: str, excess: float, replicas: Mapping[str, int]) -> Finding:
    """How many configurations over its limit a service would need."""
    d = {x.service: x for x in problem.demands}[target]
    return Finding(kind="infeasible", constraint=f"{kind}[{target}]",
                   message=(f"service {target}: needs {d.max_configurations}+{excess:.0f} configurations; raise "
                            "planner.max_configurations_per_service"), value=excess)


def probes(problem: Problem, solution: Solution) -> list[Probe]:
    """Every service at its limit, with one configuration more (what simplicity costs it)."""
    out = []
    for d in problem.demands:
        k = d.max_configurations
        if k is None or len(labels_of(problem, d.service)) <= k:
            continue
        used = used_labels(problem, solution, d.service)
        if len(used) < k:
            continue
        more = replace(d, max_configurations=k + 1)
        out.append(Probe(
            Finding(kind="binding", constraint=f"configurations[{d.service}]",
                    message=(f"service {d.service}: runs its limit of {k} configurations "
                             f"(planner.max_configurations_per_service): {', '.join(used)}"), value=float(k)),
            replace(problem, demands=tuple(more if x.service == d.service else x for x in problem.demands)),
            f"configurations[{d.service}]", f"a configuration more for service {d.service}", d.service))
    return out


FAMILY = Family("simplicity", violations, slacks=("configurations",), shortfall=shortfall, probes=probes)
