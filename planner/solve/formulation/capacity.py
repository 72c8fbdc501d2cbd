"""Capacity family: a column's share variables, the load they put on its replicas, and the link rows.

    x[c,b] ∈ [0,1] for b with λ_{s_c,b} > 0 and cap_{c,b} > 0
    capacity[c]:  busy[c] := Σ_b λ_{s_c,b}/cap_{c,b} · x[c,b] ≤ h · n[c]        (h = headroom)
    link[c,b]:    x[c,b] ≤ n[c]   (implied: n is integer and x ≤ 1; lifts the LP bound, used in pricing)
"""

from __future__ import annotations

import numpy as np

from planner.solve.formulation.base import INF, TOLERANCE, Built, Family, busy
from planner.solve.problem import Column, Problem, Solution


def add_capacity(f: Built, c: Column) -> None:
    """x[c,·], capacity[c] and (when f.link) link[c,·]; n[c] must exist."""
    d = f.demands[c.service]
    nv = f.n[c.key]
    rates = np.asarray(d.bucket_rates_rps, dtype=float)
    caps = np.asarray(c.capacity_rps, dtype=float)
    if caps.shape != rates.shape:
        raise ValueError(f"column {c.key}: {caps.size} capacities for {rates.size} buckets")
    bk = np.nonzero((rates > 0) & (caps > 0))[0]
    xs = f.m.vars(len(bk), 0.0, 1.0)
    f.shares[c.key] = (bk, xs)
    load = rates[bk] / caps[bk]
    xs_list = list(xs)
    f.cap_row[c.key] = f.m.row(f"capacity[{c.key}]", [*xs_list, nv], [*load.tolist(), -f.problem.headroom],
                               -INF, 0.0)
    f.loads[c.key] = load
    # n is integer, so a column that carries any share of a bucket has a whole replica: x ≤ n. Implied by the
    # integer model, it lifts the LP bound where small buckets would otherwise ride on 0.1 of a replica.
    f.link_rows[c.key] = f.m.pair_rows("link", xs, nv, (1.0, -1.0), -INF, 0.0) if f.link \
        else range(len(f.m.row_lb), len(f.m.row_lb))


def violations(problem: Problem, solution: Solution) -> list[str]:
    """A column serves only buckets it can, only with a replica, and within h · n of load."""
    out = []
    load = busy(problem, solution)
    shares = solution.prefill_share | solution.decode_share
    cols = {c.key: c for c in problem.columns}
    for (key, b), x in shares.items():
        n = solution.replicas.get(key, 0)
        if x > 1e-9 and cols[key].capacity_rps[b] <= 0:
            out.append(f"{key} serves bucket {b} it cannot")
        if x > n + TOLERANCE:
            out.append(f"{key} carries {x:.3g} of bucket {b} with {n} replicas")
    for c in problem.columns:
        n = solution.replicas.get(c.key, 0)
        if load.get(c.key, 0.0) > problem.headroom * n + TOLERANCE:
            out.append(f"{c.key} over capacity {load[c.key]} > {problem.headroom} × {n}")
    return out


FAMILY = Family("capacity", violations)
