r"""Tier family: reserved devices and a commitment paid whatever is used, a cap on a service's spot share, and
spare capacity outside the spot pools so that a service survives the spot losses it must (planner.solve.tiers).

    U_p := Σ_{c: p_c=p} d_c n[c] + Σ_{c: q_c=p} m_c n[c]   (D_p N[p] for a node-billed pool)
    w[p] ∈ [0, R_p], v[p] ≥ 0   reserved and committed devices of pool p, each at objective coefficient −π_p
    tier_use[p]:     w[p] + v[p] − U_p ≤ 0
    commitment:      Σ_p r_p v[p] ≤ C
    spot_share[s]:   Σ_{c of s, p_c spot} d_c n[c] − σ_s Σ_{c of s} d_c n[c] ≤ 0          (σ_s < 1)
    for every loss ℓ = (s, L) (spot pools L reclaimed together), over the columns c of s outside L:
      y[ℓ,c,b] ∈ [0,1];  spot_cover[ℓ,b,φ]: Σ_{c covers φ} y[ℓ,c,b] = 1;
      spot_capacity[ℓ,c]: Σ_b λ_{s,b}/cap_{c,b} y[ℓ,c,b] ≤ h n[c]
      spot_bucket[ℓ,b,φ]: Σ_{c covers φ} h cap_{c,b} n[c] ≥ λ_{s,b}   (implied by the two; with bucket rows)
      spot_work[ℓ,φ,r]: the work rows (work.work_cuts) over the survivors      (valid likewise; with work rows)
The credits make reserved devices cost nothing at the margin (so they are used before anything paid) and the
commitment cover on-demand use up to C; a loss's rows are the cover and capacity rows again on the survivors,
with their own shares: after the loss the load is routed anew (``reroute`` is the same LP for fixed n).
Which losses a service must survive: ``planner.tiers.risk``. Elastic mode prices a slack on each spot_cover row.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import numpy as np

from planner.roles import DECODE_ROLES, PREFILL_ROLES
from planner.schema import Finding, Role
from planner.solve.formulation.base import INF, Built, Family, Probe
from planner.solve.formulation.pool import pool_terms
from planner.solve.formulation.work import WORK_REFERENCES, work_cuts
from planner.solve.problem import Column, Problem, Solution, billed_devices, pool_usage
from planner.solve.reroute import reroute
from planner.solve.tiers import SpotLoss, Tiers, credit_split

# The commitment probe adds this share of the commitment (at least $1/h).
_COMMIT_STEP = 0.1


def add_tiers(f: Built) -> None:
    """Credit variables and rows, spot-share caps, and each loss's cover and capacity rows (after the pools)."""
    t = f.problem.tiers
    if t is None:
        return
    _add_credits(f, t)
    for service, cap in sorted(t.spot_caps.items()):
        _add_spot_share(f, t, service, cap)
    for loss in t.losses:
        add_loss(f, loss)


def _usage(f: Built, pool: str, terms: Mapping[str, tuple[list[int], list[float]]]) -> tuple[list[int], list[float]]:
    """U_p as (variables, coefficients): the pool's devices, or its billed nodes' for node billing."""
    p = f.pools[pool]
    if p.billing == "node" and pool in f.nodes:
        return [f.nodes[pool]], [float(p.devices_per_node)]
    return terms.get(pool, ([], []))


def _add_credits(f: Built, t: Tiers) -> None:
    terms = pool_terms(f)
    committed: tuple[list[int], list[float]] = ([], [])
    for credit in t.credits:
        cols, vals = _usage(f, credit.pool, terms)
        if not cols:
            continue
        price = f.pools[credit.pool].usd_per_device_hour
        mine: list[int] = []
        if credit.reserved_devices > 0:
            mine.append(f.m.var(0.0, float(credit.reserved_devices), -price, False))
        if credit.committed_rate is not None and t.commitment_usd_per_hour > 0:
            v = f.m.var(0.0, INF, -price, False)
            mine.append(v)
            committed[0].append(v)
            committed[1].append(credit.committed_rate)
        if mine:
            f.m.row(f"tier_use[{credit.pool}]", [*mine, *cols], [1.0] * len(mine) + [-x for x in vals], -INF, 0.0)
    if committed[0]:
        f.m.row("commitment", committed[0], committed[1], -INF, t.commitment_usd_per_hour)


def _devices(c: Column, spot: Mapping[str, float]) -> tuple[float, float]:
    """(all devices, devices in spot pools) of one replica of ``c``."""
    on_spot = (c.devices if c.pool in spot else 0) + (c.memory_devices if c.memory_pool in spot else 0)
    return float(c.devices + c.memory_devices), float(on_spot)


def _add_spot_share(f: Built, t: Tiers, service: str, cap: float) -> None:
    cols, vals = [], []
    for c in f.columns_of.get(service, []):
        total, on_spot = _devices(c, t.spot_pools)
        if on_spot or total:
            cols.append(f.n[c.key])
            vals.append(on_spot - cap * total)
    if cols and any(v > 0 for v in vals):
        f.m.row(f"spot_share[{service}]", cols, vals, -INF, 0.0)


def add_loss(f: Built, loss: SpotLoss) -> None:
    """spot_cover and spot_capacity rows of one loss (see module), on the service's surviving columns."""
    d = f.demands.get(loss.service)
    if d is None:
        return
    lost = set(loss.pools)
    rates = np.asarray(d.bucket_rates_rps, dtype=float)
    cover: dict[tuple[str, int], list[int]] = {}
    knapsack: dict[tuple[str, int], tuple[list[int], list[float]]] = {}
    for c in f.columns_of.get(loss.service, []):
        if c.pool in lost or (c.memory_pool is not None and c.memory_pool in lost):
            continue
        bk, _ = f.shares[c.key]
        for b in bk.tolist():
            for phase, roles in (("prefill", PREFILL_ROLES), ("decode", DECODE_ROLES)):
                if c.role in roles:
                    cols, vals = knapsack.setdefault((phase, b), ([], []))
                    cols.append(f.n[c.key])
                    vals.append(f.problem.headroom * c.capacity_rps[b])
        ys = f.m.vars(len(bk), 0.0, 1.0)
        load = rates[bk] / np.asarray(c.capacity_rps, dtype=float)[bk]
        f.m.row(f"spot_capacity[{loss.name}|{c.key}]", [*ys, f.n[c.key]], [*load.tolist(), -f.problem.headroom],
                -INF, 0.0)
        for b, y in zip(bk.tolist(), ys, strict=True):
            if c.role in PREFILL_ROLES:
                cover.setdefault(("prefill", b), []).append(y)
            if c.role in DECODE_ROLES:
                cover.setdefault(("decode", b), []).append(y)
    phases = ("prefill", "decode") if loss.service in f.disaggregated else ("prefill",)
    for b in np.nonzero(rates > 0)[0].tolist():
        for phase in phases:
            ys_b = cover.get((phase, b), [])
            name = f"spot_cover[{loss.name}|{b}|{phase}]"
            cols, vals = list(ys_b), [1.0] * len(ys_b)
            if f.elastic:
                cols, vals = [*cols, f.elastic_slack(name)], [*vals, 1.0]
            f.m.row(name, cols, vals, 1.0, 1.0)
            if f.bucket_rows and not f.elastic and (phase, b) in knapsack:
                # implied by the two rows above (as bucket rows are); the solver derives knapsack cuts from it
                f.m.row(f"spot_bucket[{loss.name}|{b}|{phase}]", *knapsack[(phase, b)], float(rates[b]), INF)
    if f.work_rows and not f.elastic:
        _add_loss_work(f, loss, rates, phases)


def _add_loss_work(f: Built, loss: SpotLoss, rates: np.ndarray, phases: tuple[str, ...]) -> None:
    """The work rows (``work.work_cuts``) over a loss's survivors: the same argument holds for its shares."""
    lost = set(loss.pools)
    for phase in phases:
        roles = PREFILL_ROLES if phase == "prefill" else DECODE_ROLES
        members = [c for c in f.columns_of.get(loss.service, []) if c.role in roles and c.pool not in lost
                   and (c.memory_pool is None or c.memory_pool not in lost)]
        if not members:
            continue
        vars_ = np.asarray([f.n[c.key] for c in members], dtype=np.int64)
        caps = np.asarray([c.capacity_rps for c in members], dtype=float)
        prices = np.asarray([f.m.cost[f.n[c.key]] for c in members], dtype=float)
        groups = np.asarray([int(c.role is Role.UNIFIED) for c in members], dtype=np.int64)
        for j, (keep, coef, rhs) in enumerate(work_cuts(rates, caps, prices, f.problem.headroom,
                                                         WORK_REFERENCES, groups)):
            f.m.row(f"spot_work[{loss.name}|{phase}|{j}]", vars_[keep].tolist(), coef.tolist(), rhs, INF)


def violations(problem: Problem, solution: Solution) -> list[str]:
    """Spot shares stay under their caps, and every loss leaves survivors that carry the load."""
    t = problem.tiers
    if t is None:
        return []
    out = []
    for service, cap in t.spot_caps.items():
        total = on_spot = 0.0
        for c in problem.columns:
            if c.service == service and solution.replicas.get(c.key, 0):
                a, s = _devices(c, t.spot_pools)
                total += a * solution.replicas[c.key]
                on_spot += s * solution.replicas[c.key]
        if on_spot > cap * total + 1e-6:
            out.append(f"{service} runs {on_spot:g} of {total:g} devices on spot, above its cap {cap:g}")
    for loss in t.losses:
        left = reroute(problem, loss.service, solution.replicas, loss.pools)
        if not left.holds:
            out.append(f"{loss.service} after losing {', '.join(loss.pools)}: survivors at {left.peak:.3g}× "
                       "their allowed load")
    return out


def shortfall(problem: Problem, kind: str, target: str, excess: float, replicas: Mapping[str, int]) -> Finding:
    """A bucket a service cannot keep serving after a spot loss, within the fleet's other pools."""
    service, pools, bucket, phase = target.split("|")
    d = next(x for x in problem.demands if x.service == service)
    b = int(bucket)
    lost = pools.split("+")
    serves = any(c.capacity_rps[b] > 0 for c in problem.columns if c.service == service and c.pool not in lost
                 and (c.memory_pool is None or c.memory_pool not in lost))
    why = ("the pools it may use outside them cannot hold enough" if serves else
           "no configuration outside them serves it (allow on-demand pools, lower max_spot_share or raise "
           "spot_risk)")
    label = d.bucket_labels[b] if b < len(d.bucket_labels) else f"bucket {b}"
    return Finding(kind="infeasible", constraint=f"{kind}[{target}]", value=excess,
                   message=(f"service {service}: cannot keep the {phase} of {label} after spot pool(s) "
                            f"{', '.join(lost)} are reclaimed: {why}"))


def probes(problem: Problem, solution: Solution) -> list[Probe]:
    """Reserved nodes all in use, and a commitment used up, each with one more unit of it."""
    t = problem.tiers
    if t is None:
        return []
    pools = {p.id: p for p in problem.pools}
    billed = billed_devices(problem, pool_usage(problem, solution.replicas))
    prices = {p.id: p.usd_per_device_hour for p in problem.pools}
    split = credit_split(t, prices, billed)
    out = []
    for credit in t.credits:
        p = pools[credit.pool]
        if credit.reserved_devices <= 0 or split.reserved.get(p.id, 0.0) < credit.reserved_devices - 1e-9:
            continue
        nodes = credit.reserved_devices // p.devices_per_node
        more = replace(credit, reserved_devices=credit.reserved_devices + p.devices_per_node)
        relaxed = replace(t, credits=tuple(more if c.pool == p.id else c for c in t.credits))
        out.append(Probe(
            Finding(kind="binding", constraint=f"reserved[{p.id}]", value=float(nodes),
                    message=f"pool {p.id}: all {nodes} reserved nodes are used"),
            replace(problem, tiers=relaxed), f"reserved[{p.id}]", f"one more reserved node in pool {p.id}"))
    c = t.commitment_usd_per_hour
    if c > 0 and split.commitment_used_usd_per_hour >= c - 1e-6:
        step = max(1.0, round(_COMMIT_STEP * c))
        out.append(Probe(
            Finding(kind="binding", constraint="commitment", value=c,
                    message=f"the ${c:.2f}/h commitment is used up"),
            replace(problem, tiers=replace(t, commitment_usd_per_hour=c + step)), "commitment",
            f"${step:.0f}/h more commitment (paid whether used or not)"))
    return out


FAMILY = Family("tiers", violations, slacks=("spot_cover",), shortfall=shortfall, probes=probes)
