"""Hand-off family: every prompt a prefill replica serves is decoded where its KV cache can go.

A prefill column's capacity is timed with its KV hand-off at its own NIC share (``planner.model.handoff``),
which holds when its decode partner receives at least as fast (``ν_d ≥ ν_p``, ν = ``handoff_gbitps``). Per
service s with prefill and decode-only columns, bucket b ∈ B_s^+, zone g of the columns' pools, and each NIC
rate v of the zone's prefill columns::

    handoff[s,b,g]:       Σ_{c∈Pf_s, zone g} x[c,b] = Σ_{c∈Dc_s, zone g} x[c,b]                 (same zone)
    handoff_nic[s,b,g,v]: Σ_{c∈Pf_s, zone g, ν_c ≥ v} x[c,b] ≤ Σ_{c∈Dc_s, zone g, ν_c ≥ v} x[c,b]

By Hall's theorem on these nested sets the zone's prefill shares can be matched to its decode shares with
every prefill handing to a decode no slower than itself, so no hand-off is slower than its capacity assumed.
A service that allows cross-zone hand-offs (``Service.kv_handoff``) gets the NIC rows over all its zones
instead of per zone (the totals already match by the cover rows) and pays for the KV bytes that cross::

    e[s,b,g] ≥ 0,   handoff_cross[s,b,g]: e[s,b,g] ≥ Σ_{c∈Pf_s, zone g} x[c,b] − Σ_{c∈Dc_s, zone g} x[c,b]
    objective += Σ_{s,b,g} κ_{s,b} e[s,b,g]     (κ = λ_b · KV GB per request · $/GB · 3600, Demand.handoff_usd_per_hour)

Σ_g e is the least share that must cross zones; the NIC nesting over all zones may force more (not priced).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from planner.roles import DECODE_ONLY_ROLES
from planner.schema import Finding, Role
from planner.solve.formulation.base import INF, TOLERANCE, Built, Family
from planner.solve.problem import Column, Demand, Problem, Solution, bucket_name

_Side = dict[str, list[tuple[int, float]]]  # zone → (share variable, ν) of one side, for one bucket


HandoffTerms = dict[int, tuple[_Side, _Side]]  # bucket → (prefill side, decode-only side)


def handoff_terms(f: Built, d: Demand) -> HandoffTerms:
    """Per bucket, the service's prefill and decode-only share variables by zone with their NIC rates, each side
    in column order."""
    out: HandoffTerms = {}
    for c in f.columns_of.get(d.service, []):
        if c.role is not Role.PREFILL and c.role not in DECODE_ONLY_ROLES:
            continue
        bk, xs = f.shares[c.key]
        zone, nu, at = f.pools[c.pool].zone, c.handoff_gbitps, 0 if c.role is Role.PREFILL else 1
        for b, xv in zip(bk.tolist(), xs, strict=True):
            sides = out.get(b)
            if sides is None:
                sides = out[b] = (defaultdict(list), defaultdict(list))
            sides[at][zone].append((xv, nu))
    return out


def _nic_rows(f: Built, name: str, pre: list[tuple[int, float]], dec: list[tuple[int, float]]) -> None:
    """handoff_nic rows: prefills at ν ≥ v go to decodes at ν ≥ v, for every prefill rate v."""
    px, pnu = np.asarray([x for x, _ in pre], dtype=np.int64), np.asarray([nu for _, nu in pre])
    dx, dnu = np.asarray([x for x, _ in dec], dtype=np.int64), np.asarray([nu for _, nu in dec])
    for v in np.unique(pnu).tolist():
        p, q = px[pnu >= v], dx[dnu >= v]
        f.m.row(f"{name},{v:g}]", np.concatenate([p, q]), np.concatenate([np.ones(len(p)), -np.ones(len(q))]),
                -INF, 0.0)


def add_handoff(f: Built, d: Demand, b: int, terms: HandoffTerms) -> None:
    """The hand-off rows of one bucket of one service (nothing for a service without both sides); ``terms``:
    the service's handoff_terms."""
    if b not in terms:
        return
    pre, dec = terms[b]
    key = f"{d.service},{b}"
    if not d.cross_zone_handoff:
        for g in sorted(set(pre) | set(dec)):
            p, q = pre.get(g, []), dec.get(g, [])
            f.m.row(f"handoff[{key},{g}]", [x for x, _ in p] + [x for x, _ in q],
                    [1.0] * len(p) + [-1.0] * len(q), 0.0, 0.0)
            _nic_rows(f, f"handoff_nic[{key},{g}", p, q)
        return
    _nic_rows(f, f"handoff_nic[{key},*", [t for side in pre.values() for t in side],
              [t for side in dec.values() for t in side])
    price = d.handoff_usd_per_hour[b] if b < len(d.handoff_usd_per_hour) else 0.0
    if price <= 0:
        return
    for g in sorted(set(pre) | set(dec)):
        p, q = pre.get(g, []), dec.get(g, [])
        ev = f.m.var(0.0, INF, price, False)
        f.crossing[(d.service, b, g)] = ev
        f.m.row(f"handoff_cross[{key},{g}]", [ev, *(x for x, _ in p), *(x for x, _ in q)],
                [1.0] + [-1.0] * len(p) + [1.0] * len(q), 0.0, INF)


def zone_shares(problem: Problem, solution: Solution, d: Demand, b: int) -> dict[str, tuple[float, float]]:
    """(prefill share, decode-only share) of bucket b per zone in a plan."""
    zone = {p.id: p.zone for p in problem.pools}
    out: dict[str, tuple[float, float]] = {}
    for c in problem.by_service.get(d.service, ()):
        pre, dec = out.get(zone[c.pool], (0.0, 0.0))
        if c.role is Role.PREFILL:
            pre += solution.prefill_share.get((c.key, b), 0.0)
        elif c.role in DECODE_ONLY_ROLES:
            dec += solution.decode_share.get((c.key, b), 0.0)
        out[zone[c.pool]] = (pre, dec)
    return out


def cross_zone_usd_per_hour(problem: Problem, solution: Solution) -> dict[str, float]:
    """Per service allowed to hand off across zones, what its plan's cross-zone KV bytes cost an hour."""
    out: dict[str, float] = {}
    for d in problem.demands:
        if not d.cross_zone_handoff:
            continue
        total = 0.0
        for b, price in enumerate(d.handoff_usd_per_hour):
            shares = zone_shares(problem, solution, d, b)
            total += price * sum(max(0.0, pre - dec) for pre, dec in shares.values())
        out[d.service] = total
    return out


def _nic_ok(problem: Problem, solution: Solution, cols: list[Column], b: int) -> bool:
    """The plan's prefill shares of bucket b among ``cols`` fit decodes no slower, rate by rate."""
    pre = [(solution.prefill_share.get((c.key, b), 0.0), c.handoff_gbitps) for c in cols if c.role is Role.PREFILL]
    dec = [(solution.decode_share.get((c.key, b), 0.0), c.handoff_gbitps) for c in cols
           if c.role in DECODE_ONLY_ROLES]
    return all(sum(x for x, nu in pre if nu >= v) <= sum(x for x, nu in dec if nu >= v) + TOLERANCE
               for _, v in pre)


def violations(problem: Problem, solution: Solution) -> list[str]:
    """Each zone's prefill shares match its decode shares (same zone), every prefill hands to no slower NICs."""
    zone = {p.id: p.zone for p in problem.pools}
    out = []
    for d in problem.demands:
        cols = list(problem.by_service.get(d.service, ()))
        for b, rate in enumerate(d.bucket_rates_rps):
            if rate <= 0:
                continue
            groups = [cols] if d.cross_zone_handoff else [[c for c in cols if zone[c.pool] == g]
                                                          for g in sorted({zone[c.pool] for c in cols})]
            if not d.cross_zone_handoff:
                for g, (pre, dec) in zone_shares(problem, solution, d, b).items():
                    if abs(pre - dec) > TOLERANCE:
                        out.append(f"{d.service} bucket {b} zone {g}: prefill {pre:.4g} ≠ decode {dec:.4g}")
            if not all(_nic_ok(problem, solution, group, b) for group in groups):
                out.append(f"{d.service} bucket {b}: a prefill hands off to a slower decode")
    return out


def _can_pair(pre: list[Column], dec: list[Column], b: int) -> bool:
    slowest = min((c.handoff_gbitps for c in pre if c.capacity_rps[b] > 0), default=None)
    return slowest is not None and any(c.capacity_rps[b] > 0 and c.handoff_gbitps >= slowest for c in dec)


def structural(problem: Problem, d: Demand) -> list[Finding]:
    """Buckets that only disaggregated replicas can serve, where no zone (or, across zones, no pair at all)
    holds a prefill and a decode configuration that can take the hand-off."""
    zone = {p.id: p.zone for p in problem.pools}
    cols = list(problem.by_service.get(d.service, ()))
    out = []
    for b, rate in enumerate(d.bucket_rates_rps):
        if rate <= 0 or any(c.role is Role.UNIFIED and c.capacity_rps[b] > 0 for c in cols):
            continue
        pre = [c for c in cols if c.role is Role.PREFILL]
        dec = [c for c in cols if c.role in DECODE_ONLY_ROLES]
        if not pre or not dec:
            continue  # the cover family words it
        zones = [None] if d.cross_zone_handoff else sorted({zone[c.pool] for c in cols})
        if any(_can_pair([c for c in pre if g is None or zone[c.pool] == g],
                         [c for c in dec if g is None or zone[c.pool] == g], b) for g in zones):
            continue
        where = "anywhere" if d.cross_zone_handoff else "in any one zone"
        out.append(Finding(kind="infeasible", constraint=f"handoff[{d.service},{b}]",
                           message=(f"service {d.service}: {bucket_name(d, b)} needs prefill and decode replicas, but "
                                    f"no prefill configuration can hand its KV cache to a decode configuration "
                                    f"{where} that receives at least as fast (allow services[{d.service}].kv_handoff: "
                                    "cross-zone, or add a unified configuration)"), value=rate))
    return out


FAMILY = Family("handoff", violations)
