"""Bucket family: the replicas able to serve a bucket can carry its whole rate (implied by cover and capacity;
written out, the solver derives knapsack-cover cuts from them).

    bucket_prefill[s,b]: Σ_{c∈U_s∪Pf_s} h·cap_{c,b} n[c] ≥ λ_{s,b}
    bucket_decode[s,b]:  Σ_{c∈U_s∪Dc_s} h·cap_{c,b} n[c] ≥ λ_{s,b}     (one row when s has only unified columns)
"""

from __future__ import annotations

from planner.roles import DECODE_ROLES, PREFILL_ROLES, Phase
from planner.schema import Role
from planner.solve.formulation.base import INF, TOLERANCE, Built, Family
from planner.solve.problem import Demand, Problem, Solution

_PHASE_ROLES: tuple[tuple[Phase, frozenset[Role]], ...] = (("prefill", PREFILL_ROLES), ("decode", DECODE_ROLES))
BucketTerms = dict[tuple[Phase, int], tuple[list[int], list[float]]]  # (phase, bucket) → (n[c], h·cap_{c,b})


def bucket_terms(f: Built, d: Demand) -> BucketTerms:
    """Per phase and bucket, the replicas variables that can serve it and the rate one replica carries."""
    out: BucketTerms = {}
    h = f.problem.headroom
    for c in f.columns_of.get(d.service, []):
        bk, _ = f.shares[c.key]
        nv = f.n[c.key]
        for b in bk.tolist():
            for phase, roles in _PHASE_ROLES:
                if c.role in roles:
                    cols, vals = out.setdefault((phase, b), ([], []))
                    cols.append(nv)
                    vals.append(h * float(c.capacity_rps[b]))
    return out


def add_bucket_rows(f: Built, d: Demand, b: int, terms: BucketTerms) -> None:
    """bucket_prefill[s,b] and bucket_decode[s,b]."""
    phases: tuple[Phase, ...] = ("prefill",) if d.service not in f.disaggregated else ("prefill", "decode")
    rate = d.bucket_rates_rps[b]
    for phase in phases:
        cols, vals = terms.get((phase, b), ([], []))
        f.m.row(f"bucket_{phase}[{d.service},{b}]", cols, vals, rate, INF)


def violations(problem: Problem, solution: Solution) -> list[str]:
    """The replicas that can serve each phase of a bucket carry its rate at headroom."""
    out = []
    for d in problem.demands:
        cols = problem.by_service.get(d.service, ())
        for b, rate in enumerate(d.bucket_rates_rps):
            if rate <= 0:
                continue
            for phase, roles in _PHASE_ROLES:
                carried = sum(problem.headroom * c.capacity_rps[b] * solution.replicas.get(c.key, 0)
                              for c in cols if c.role in roles and c.capacity_rps[b] > 0)
                if carried < rate - TOLERANCE * max(1.0, rate):
                    out.append(f"{d.service} bucket {b} {phase}: replicas carry {carried:.4g} < {rate:.4g} req/s")
    return out


FAMILY = Family("buckets", violations)
