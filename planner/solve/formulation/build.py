"""Assemble the fleet MILP from its constraint families, in one fixed order of variables and rows."""

from __future__ import annotations

from planner.solve.formulation import (
    buckets,
    capacity,
    churn,
    cover,
    handoff,
    min_replicas,
    objective,
    pool,
    power,
    simplicity,
    spread,
    tiers,
    work,
    zone_roles,
)
from planner.solve.formulation.base import Built, Family
from planner.solve.problem import Problem, Solution

# Every constraint family, in the order build adds them.
FAMILIES: tuple[Family, ...] = (objective.FAMILY, churn.FAMILY, capacity.FAMILY, cover.FAMILY, handoff.FAMILY,
                                buckets.FAMILY, min_replicas.FAMILY, spread.FAMILY, zone_roles.FAMILY,
                                simplicity.FAMILY, work.FAMILY, pool.FAMILY, power.FAMILY, tiers.FAMILY)


def build(problem: Problem, elastic: bool = False, link: bool = True, bucket_rows: bool = False,
          work_rows: bool = False) -> Built:
    """The matrix; in elastic mode every resource row gets a priced slack for explanations.

    Per column: n[c] (objective), δ[c] and its rows (churn), x[c,·] with capacity[c] and link[c,·] (capacity);
    per demand and bucket: cover rows, hand-off rows, then bucket rows; per demand: min_replicas, spread,
    zone roles, then simplicity; then the work rows, the pool rows with N[p], the power rows, and the tier rows
    (credits, spot shares, spot losses).
    """
    f = Built(problem, elastic=elastic, link=link, bucket_rows=bucket_rows, work_rows=work_rows)
    for c in f.columns:
        objective.add_replicas(f, c)
        churn.add_churn(f, c)
        capacity.add_capacity(f, c)
    churn.add_churn_offset(f)
    for d in problem.demands:
        covering = cover.cover_terms(f, d)
        knapsack = buckets.bucket_terms(f, d) if bucket_rows else None
        handing = handoff.handoff_terms(f, d)
        for b, rate in enumerate(d.bucket_rates_rps):
            if rate <= 0:
                continue
            cover.add_cover(f, d, b, covering)
            handoff.add_handoff(f, d, b, handing)
            if knapsack is not None:
                buckets.add_bucket_rows(f, d, b, knapsack)
        min_replicas.add_min_replicas(f, d)
        spread.add_spread(f, d)
        zone_roles.add_zone_roles(f, d)
        simplicity.add_simplicity(f, d)
    work.add_work_rows(f)
    pool.add_pools(f)
    power.add_power(f)
    tiers.add_tiers(f)
    return f


def violations(problem: Problem, solution: Solution) -> list[str]:
    """Every way a plan breaks the problem, family by family (empty: it is a plan of the problem)."""
    return [v for family in FAMILIES for v in family.violations(problem, solution)]
