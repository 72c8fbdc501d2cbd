"""Cover family: every bucket's prefill and decode are carried in full.

    cover_prefill[s,b]:  Σ_{c∈U_s} x[c,b] + Σ_{c∈Pf_s} x[c,b] = 1      ∀ s, b ∈ B_s^+
    cover_decode[s,b]:   Σ_{c∈U_s} x[c,b] + Σ_{c∈Dc_s} x[c,b] = 1      ∀ s, b ∈ B_s^+
(one row when s has no disaggregated columns: the two are the same)
"""

from __future__ import annotations

from planner.roles import DECODE_ROLES, PREFILL_ROLES, Phase
from planner.schema import Finding
from planner.solve.formulation.base import TOLERANCE, Built, Family
from planner.solve.problem import Demand, Problem, Solution, bucket_name, demand_uncovered

CoverTerms = dict[tuple[Phase, int], list[int]]  # (phase, bucket) → share variables


def cover_terms(f: Built, d: Demand) -> CoverTerms:
    """The share variables that carry each phase of each of the service's buckets, in column order."""
    out: CoverTerms = {}
    for c in f.columns_of.get(d.service, []):
        bk, xs = f.shares[c.key]
        for b, xv in zip(bk.tolist(), xs, strict=True):
            if c.role in PREFILL_ROLES:
                out.setdefault(("prefill", b), []).append(xv)
            if c.role in DECODE_ROLES:
                out.setdefault(("decode", b), []).append(xv)
    return out


def add_cover(f: Built, d: Demand, b: int, terms: CoverTerms) -> None:
    """cover_prefill[s,b] and cover_decode[s,b] (one row when the service has only unified columns)."""
    phases: tuple[Phase, ...] = ("prefill",) if d.service not in f.disaggregated else ("prefill", "decode")
    for phase in phases:
        cols = terms.get((phase, b), [])
        f.m.row(f"cover_{phase}[{d.service},{b}]", cols, [1.0] * len(cols), 1.0, 1.0)


def violations(problem: Problem, solution: Solution) -> list[str]:
    """Each phase of each bucket with traffic is shared out in full."""
    out = []
    service_of = {c.key: c.service for c in problem.columns}
    totals: dict[tuple[str, str, int], float] = {}
    for phase, shares in (("prefill", solution.prefill_share), ("decode", solution.decode_share)):
        for (k, b), v in shares.items():
            at = (phase, service_of[k], b)
            totals[at] = totals.get(at, 0.0) + v
    for d in problem.demands:
        for b, rate in enumerate(d.bucket_rates_rps):
            if rate <= 0:
                continue
            for phase in ("prefill", "decode"):
                total = totals.get((phase, d.service, b), 0)
                if abs(total - 1.0) > TOLERANCE:
                    out.append(f"{d.service} bucket {b} {phase} covered {total}")
    return out


def structural(problem: Problem, d: Demand) -> list[Finding]:
    """The buckets of the demand whose prefill or decode no column can serve within the SLO."""
    return [Finding(kind="infeasible", constraint=f"cover_{phase}[{d.service},{b}]",
                    message=(f"service {d.service}: no configuration can serve the {phase} of {bucket_name(d, b)} "
                             f"({d.bucket_rates_rps[b]:.3g} req/s) within the SLO"),
                    value=d.bucket_rates_rps[b])
            for b, phase in demand_uncovered(problem, d)]


FAMILY = Family("cover", violations)
