r"""What a service's surviving replicas can carry after some pools are lost: the routing LP.

For a service s with replicas n_c fixed, lost pools L and survivors S = {c : p_c ∉ L, q_c ∉ L, n_c > 0}:

    min t   s.t.  Σ_{c∈S, c covers φ} y[c,b] = 1           ∀ b ∈ B_s^+, phase φ (prefill; decode when disaggregated)
                  Σ_b λ_b / cap_{c,b} · y[c,b] ≤ t · h · n_c  ∀ c ∈ S
                  0 ≤ y ≤ 1

t is the busiest survivor's load as a share of what the planner allows it (headroom h): the loss keeps the
SLO the plan was sized for when t ≤ 1. This is the recourse the tier rows (``formulation.tiers``) buy
capacity for; the replay after a spot reclaim routes the load by ``y``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np

from planner.roles import DECODE_ROLES, PREFILL_ROLES
from planner.schema import Role
from planner.solve.problem import Column, Problem


@dataclass(frozen=True)
class Rerouted:
    """The least peak load a loss leaves (``peak`` > 1: short; inf: a bucket no survivor serves) and the shares."""

    peak: float
    prefill_share: dict[tuple[str, int], float]
    decode_share: dict[tuple[str, int], float]

    @property
    def holds(self) -> bool:
        """Whether the survivors carry the load within the planner's headroom."""
        return self.peak <= 1.0 + 1e-6


def survivors(problem: Problem, service: str, replicas: Mapping[str, int], lost: Collection[str]) -> list[Column]:
    """The service's columns with replicas and no device in a lost pool."""
    return [c for c in problem.columns if c.service == service and replicas.get(c.key, 0) > 0
            and c.pool not in lost and (c.memory_pool is None or c.memory_pool not in lost)]


def reroute(problem: Problem, service: str, replicas: Mapping[str, int], lost: Collection[str]) -> Rerouted:
    """Route ``service``'s load over its replicas outside ``lost`` with the least peak load (see module)."""
    d = next(x for x in problem.demands if x.service == service)
    rates = np.asarray(d.bucket_rates_rps, dtype=float)
    cols = survivors(problem, service, replicas, lost)
    disaggregated = any(c.role is not Role.UNIFIED for c in problem.columns if c.service == service)
    phases = ("prefill", "decode") if disaggregated else ("prefill",)
    var: list[tuple[int, int]] = []  # (column index, bucket)
    for j, c in enumerate(cols):
        var += [(j, b) for b in range(len(rates)) if rates[b] > 0 and c.capacity_rps[b] > 0]
    rows_eq: list[tuple[int, int]] = []  # (row, variable)
    n_eq = 0
    for b in np.nonzero(rates > 0)[0].tolist():
        for phase in phases:
            roles = PREFILL_ROLES if phase == "prefill" else DECODE_ROLES
            members = [i for i, (j, bb) in enumerate(var) if bb == b and cols[j].role in roles]
            if not members:
                return Rerouted(float("inf"), {}, {})
            rows_eq += [(n_eq, i) for i in members]
            n_eq += 1
    # SciPy's optimiser takes most of a second to import: only a reroute pays for it, not every command.
    from scipy.optimize import linprog
    from scipy.sparse import coo_matrix

    t = len(var)  # the peak variable
    cost = np.zeros(t + 1)
    cost[t] = 1.0
    a_eq = coo_matrix(([1.0] * len(rows_eq), ([r for r, _ in rows_eq], [i for _, i in rows_eq])),
                      shape=(n_eq, t + 1))
    ub_r, ub_c, ub_v = [], [], []
    for i, (j, b) in enumerate(var):
        ub_r.append(j)
        ub_c.append(i)
        ub_v.append(rates[b] / cols[j].capacity_rps[b])
    for j, c in enumerate(cols):
        ub_r.append(j)
        ub_c.append(t)
        ub_v.append(-problem.headroom * replicas[c.key])
    a_ub = coo_matrix((ub_v, (ub_r, ub_c)), shape=(len(cols), t + 1))
    res = linprog(cost, A_ub=a_ub, b_ub=np.zeros(len(cols)), A_eq=a_eq, b_eq=np.ones(n_eq),
                  bounds=[(0.0, 1.0)] * t + [(0.0, None)], method="highs")
    if res.status != 0:
        return Rerouted(float("inf"), {}, {})
    pre: dict[tuple[str, int], float] = {}
    dec: dict[tuple[str, int], float] = {}
    for i, (j, b) in enumerate(var):
        x = float(res.x[i])
        if x <= 1e-9:
            continue
        c = cols[j]
        if c.role in PREFILL_ROLES:
            pre[(c.key, b)] = x
        if c.role in DECODE_ROLES:
            dec[(c.key, b)] = x
    return Rerouted(float(res.x[t]), pre, dec)
