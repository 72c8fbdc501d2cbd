"""Placement and N-1 tolerance around the planner: plan-and-place, tolerant plans, replay verification.

Every planning step goes through a :class:`planner.ports.Planner` (``plan_fleet`` with its options, or a test's
fake); ``plan_tolerant``'s docstring describes the N-1 loop.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from planner.catalog import Catalog, fleet_catalog
from planner.io.profiles import fleet_calibration, fleet_perf_model, load_profile, read_measured_csv
from planner.io.traces import load_trace, service_traces
from planner.model.measured import TablePerfModel
from planner.model.perf import PerfModel
from planner.model.roofline import RooflinePerfModel
from planner.pipeline import InfeasibleFleet, build_inputs, fleet_planner, plan_id, service_buckets
from planner.place import (
    DomainLoss,
    PlacementResult,
    Tolerate,
    node_count_feedback,
    phase_capacity,
    phase_needs,
    place,
    placed_plan,
    tolerance_losses,
)
from planner.place.inventory import Inventory, fleet_inventory
from planner.ports import Planner
from planner.replay import PerfStepTimes, ReplayOptions, ReplayReport, TraceSource, build_workload, replay
from planner.schema import DeviceKind, Finding, FleetSpec, Plan, ServiceDemand


def planner_engine(fleet: FleetSpec) -> ReplayOptions:
    """The engine the capacity model assumes: a step is all prompts or all decodes (prompts first), and at most
    the fleet's batch cap (``planner.max_num_seqs``, else its engine profile's) runs at once."""
    cap = fleet.planner.max_num_seqs or fleet_calibration(fleet).engine_profile().max_num_seqs
    return ReplayOptions(chunked_prefill=False, max_batched_tokens=8192, max_batch=cap)


class PlacementFailed(Exception):
    """The plan's replicas cannot be put on the fleet's nodes; the message says why, ``result`` holds more."""

    def __init__(self, message: str, result: PlacementResult, plan: Plan | None = None) -> None:
        super().__init__(message)
        self.result = result
        self.plan = plan  # the plan that did not place, when known
        self.node_counts = node_count_feedback(result)  # max_nodes per pool for a re-solve


class ToleranceUnreachable(Exception):
    """No plan on this fleet survives the loss of one failure domain; ``loss`` is the worst one seen."""

    def __init__(self, message: str, loss: DomainLoss | None = None) -> None:
        super().__init__(message)
        self.loss = loss


def _place(
    plan: Plan,
    fleet: FleetSpec,
    catalog: Catalog,
    tolerate: Tolerate,
    failed: Iterable[str],
    current: Plan | None,
) -> tuple[Plan, PlacementResult]:
    """Place ``plan``: the placed plan (notes as findings) and the raw result. Raises PlacementFailed."""
    res = place(plan, fleet, catalog, current=current, tolerate=tolerate, failed=failed)
    if res.status != "placed":
        detail = "; ".join(res.explanations) or res.status
        raise PlacementFailed(f"placement {res.status}: {detail}", res)
    notes = [Finding(kind="note", constraint="placement", message=m) for m in res.explanations]
    notes.append(Finding(kind="note", constraint="placement",
                         message=f"{res.moves} replica unit(s) started, {res.kept} kept; nodes in use "
                                 + ", ".join(f"{p} {n}" for p, n in sorted(res.nodes_used_by_pool.items())),
                         value=float(res.moves)))
    placed = placed_plan(plan, res)
    return placed.model_copy(update={"findings": [*placed.findings, *notes]}), res


def place_plan(
    plan: Plan,
    fleet: FleetSpec,
    catalog: Catalog,
    tolerate: Tolerate = "none",
    failed: Iterable[str] = (),
    current: Plan | None = None,
) -> Plan:
    """The plan with nodes filled in; placement notes become findings. Raises PlacementFailed."""
    return _place(plan, fleet, catalog, tolerate, failed, current)[0]


def draft_planner(catalog: Catalog, *, backend: str | None = None, base_dir: Path | None = None,
                  created_at: str = "") -> Planner:
    """``plan_fleet`` without baselines or marginal values (each re-solves the MILP): for the rounds of
    ``plan_tolerant`` whose plans are not the answer."""
    return fleet_planner(catalog=catalog, backend=backend, baselines=False, marginals=False, base_dir=base_dir,
                         created_at=created_at)


def plan_and_place_fleet(
    fleet: FleetSpec,
    *,
    current: Plan | None = None,
    backend: str | None = None,
    baselines: bool = True,
    base_dir: Path | None = None,
    created_at: str = "",
    tolerate: Tolerate = "none",
    failed: Iterable[str] = (),
    progress: Callable[[str], None] | None = None,
) -> Plan:
    """``plan_and_place`` with ``plan_fleet`` as its planner (with these options) for the answer, and without
    baselines or marginal values for the rounds of ``--tolerate`` that are not the answer."""
    catalog = fleet_catalog(fleet)
    planner = fleet_planner(catalog=catalog, backend=backend, baselines=baselines, base_dir=base_dir,
                            created_at=created_at)
    draft = draft_planner(catalog, backend=backend, base_dir=base_dir, created_at=created_at)
    return plan_and_place(fleet, catalog, tolerate=tolerate, failed=failed, current=current, planner=planner,
                          base_dir=base_dir, draft=draft, progress=progress)


def plan_and_place(
    fleet: FleetSpec,
    catalog: Catalog,
    *,
    tolerate: Tolerate = "none",
    failed: Iterable[str] = (),
    current: Plan | None = None,
    planner: Planner | None = None,
    rounds: int = 4,
    tolerance_rounds: int = 6,
    base_dir: Path | None = None,
    draft: Planner | None = None,
    progress: Callable[[str], None] | None = None,
) -> Plan:
    """Plan on the nodes that are usable, place, and re-plan with the node counts placement can realise.

    With ``tolerate`` the plan must also keep every service's load after losing any one node, rack or zone;
    see ``plan_tolerant`` (``draft`` and ``progress`` are its). Raises PlacementFailed, ToleranceUnreachable or
    the planner's InfeasibleFleet.
    """
    if planner is None:
        planner, draft = fleet_planner(catalog=catalog), draft or draft_planner(catalog, base_dir=base_dir)
    failed = list(failed)
    if tolerate != "none":
        return plan_tolerant(fleet, catalog, tolerate=tolerate, failed=failed, current=current, planner=planner,
                             rounds=rounds, tolerance_rounds=tolerance_rounds, base_dir=base_dir, draft=draft,
                             progress=progress)
    return _plan_placed(fleet, fleet, catalog, planner, "none", failed, current, rounds)[0]


def _plan_placed(
    fleet: FleetSpec,
    demand: FleetSpec,
    catalog: Catalog,
    planner: Planner,
    tolerate: Tolerate,
    failed: list[str],
    current: Plan | None,
    rounds: int,
    rebase: Callable[[Plan], Plan] = lambda p: p,
) -> tuple[Plan, PlacementResult, FleetSpec]:
    """Plan ``demand`` (``fleet`` with scaled rates, or itself) on usable nodes, ``rebase`` it, place it.

    Re-plans with fewer nodes per pool when placement reports a shortfall (fragmentation). Returns the placed
    plan, the placement and the demand as last planned (with those node limits).
    """
    usable = Counter(n.pool for n in fleet_inventory(fleet, failed=failed).nodes if n.usable)
    limits = {p.id: min(p.max_nodes, usable[p.id]) for p in fleet.pools}
    notes: list[Finding] = []
    for _ in range(rounds):
        planned = demand.model_copy(update={"pools": [p.model_copy(update={"max_nodes": limits[p.id]})
                                                      for p in demand.pools]})
        plan = rebase(planner(planned, current=current))
        try:
            placed, res = _place(plan, fleet, catalog, tolerate, failed, current)
        except PlacementFailed as err:
            if not err.node_counts or all(limits[p] <= n for p, n in err.node_counts.items()):
                err.plan = plan
                raise
            if tolerate != "none":
                try:  # the failure-domain rule, not the node count, may be what leaves replicas unplaced
                    _place(plan, fleet, catalog, "none", failed, current)
                except PlacementFailed:
                    pass
                else:
                    err.plan = plan
                    raise
            for pool, n in err.node_counts.items():
                limits[pool] = min(limits[pool], n)
                notes.append(Finding(kind="note", constraint=f"placement[{pool}]", value=float(n),
                                     message=f"pool {pool}: replicas did not pack on its nodes; re-planned "
                                             f"with {n} node(s)"))
            continue
        return placed.model_copy(update={"findings": [*placed.findings, *notes]}), res, planned
    raise PlacementFailed(f"placement still short after {rounds} re-plans", place(
        plan, fleet, catalog, current=current, tolerate=tolerate, failed=failed), plan)


def plan_tolerant(
    fleet: FleetSpec,
    catalog: Catalog,
    *,
    tolerate: Literal["node", "rack", "zone"],
    failed: Iterable[str] = (),
    current: Plan | None = None,
    planner: Planner | None = None,
    rounds: int = 4,
    tolerance_rounds: int = 6,
    base_dir: Path | None = None,
    draft: Planner | None = None,
    progress: Callable[[str], None] | None = None,
) -> Plan:
    """A placed plan whose every service keeps the capacity its load needs after losing any one domain.

    Zones, and racks when every pool sits in one rack: see ``_plan_zone_tolerant`` (one solve, each domain
    sized for rate/(K−1)). Nodes and racks:
    spare capacity is bought by planning each short service at a higher rate, ``rate_rps × f_s``, and then
    reporting the plan at the real rate (utilisation ÷ f_s), so placement's failure-domain rule and
    ``tolerance_losses`` judge the real load: a service (serving and prefill replicas apart) survives losing a
    domain when the replicas outside it, each valued at its capacity (``place.phase_capacity``: its share of the
    load at the planner's headroom, so device types compare), cover the load. Scaling the rate, not a minimum
    replica count, keeps the extra capacity in the configurations that carry the load and grows prefill and
    decode pools alike. One step is not exact (whole replicas, and placement must also be able to spread), so
    it loops: start at ``f = 1`` (the plan without tolerance, whose cost the findings compare against), place
    with the rule, and for every service still short set ``f_s`` to ``T* = max(K/(K−1), 1 + c_max)``, the
    capacity (in load units at headroom; a plan for rate × f holds at least f) that survives losing the
    fullest of ``K`` evenly filled domains, or its largest replica (``c_max``), and at least ``f_s·(T + c_min)/T``
    (``T`` its capacity now: one more of its smallest replicas).
    Rounds plan with ``draft`` (default ``planner``; ``draft_planner`` skips baselines and marginal values);
    the answer is planned once more with ``planner`` for them. ``progress`` gets one line per round.
    Placement keeps its fewest-moves-then-fewest-nodes objective throughout. Raises ToleranceUnreachable when a
    service's pools span one domain, when the extra capacity does not fit the fleet (the MILP is infeasible),
    or after ``tolerance_rounds`` rounds.
    """
    planner = planner or fleet_planner(catalog=catalog)
    draft = draft or planner
    failed = list(failed)
    inv = fleet_inventory(fleet, failed=failed)
    if tolerate == "zone":
        return _plan_zone_tolerant(fleet, catalog, inv, failed, current, planner, rounds, base_dir)
    racks: dict[str, set[str]] = {}
    for n in inv.nodes:
        if n.usable:
            racks.setdefault(n.pool, set()).add(n.rack)
    if tolerate == "rack" and all(len(r) == 1 for r in racks.values()):
        if progress is not None:
            progress("tolerate rack: round 1, every pool sits in one rack: each service's K racks planned for "
                     "rate/(K−1)")
        return _plan_zone_tolerant(fleet, catalog, inv, failed, current, planner, rounds, base_dir, "rack",
                                   {p: min(r) for p, r in racks.items()})
    ctx = _Rounds(fleet, catalog, inv, tolerate, failed, current, rounds, base_dir)
    return _plan_in_rounds(ctx, planner, draft, tolerance_rounds, progress)


@dataclass(frozen=True)
class _Rounds:
    """What every round of node or rack N-1 planning shares."""

    fleet: FleetSpec
    catalog: Catalog
    inv: Inventory
    tolerate: Literal["node", "rack"]
    failed: list[str]
    current: Plan | None
    rounds: int  # re-plans per round when placement falls short
    base_dir: Path | None


def _plan_in_rounds(ctx: _Rounds, planner: Planner, draft: Planner, tolerance_rounds: int,
                    progress: Callable[[str], None] | None) -> Plan:
    """The loop of ``plan_tolerant`` for nodes and racks: plan, place, raise the short services' rates."""
    factors = {s.id: 1.0 for s in ctx.fleet.services}
    floors: dict[str, int] = {}  # raised min_replicas: serving replicas that each carry the whole load
    cost_without: float | None = None
    worst: DomainLoss | None = None
    losses: Sequence[DomainLoss] = ()

    for rnd in range(1, tolerance_rounds + 1):
        if progress is not None:
            progress(_round_line(ctx.tolerate, rnd, losses, worst, factors, floors))
        demand, rebase = _round_demand(ctx, factors, floors)
        try:
            plan, res, planned, losses = _placed_round(ctx, demand, draft, rebase)
        except InfeasibleFleet as err:
            if worst is None:
                raise
            raise ToleranceUnreachable(_loss_message(
                worst, f"the spare capacity does not fit the fleet ({err})"), worst) from err
        if cost_without is None:
            cost_without = plan.cost_usd_per_hour
        if not losses and res is not None:
            if draft is not planner:
                plan = _final_plan(plan, res, planner(planned, current=ctx.current), rebase, ctx.fleet, ctx.catalog,
                                   ctx.tolerate, ctx.failed, ctx.current)
            return _with_cost_note(plan, ctx.tolerate, cost_without, factors, rnd, floors)
        worst = min(losses, key=lambda x: (x.capacity_left, x.service, x.domain))
        _raise_factors(plan, ctx.fleet, ctx.catalog, ctx.inv, ctx.tolerate, losses, factors, floors)
    assert worst is not None
    raise ToleranceUnreachable(_loss_message(
        worst, f"still short after {tolerance_rounds} re-plans with more capacity; the pools' nodes may be "
               "too few to spread its replicas"), worst)


def _round_demand(ctx: _Rounds, factors: Mapping[str, float],
                  floors: Mapping[str, int]) -> tuple[FleetSpec, Callable[[Plan], Plan]]:
    """The fleet at this round's rates and replica floors, and how to describe its plan at the real rates."""
    demand, parent = _scaled_demand(ctx.fleet, factors, {})
    demand = demand.model_copy(update={"services": [
        s.model_copy(update={"min_replicas": max(s.min_replicas, floors.get(s.id, 0))}) for s in demand.services]})

    def rebase(p: Plan) -> Plan:
        return _at_real_rate(p, ctx.fleet, ctx.catalog, factors, parent, ctx.base_dir)

    return demand, rebase


def _placed_round(ctx: _Rounds, demand: FleetSpec, draft: Planner, rebase: Callable[[Plan], Plan],
                  ) -> tuple[Plan, PlacementResult | None, FleetSpec, Sequence[DomainLoss]]:
    """One round: plan ``demand``, place it with the failure-domain rule; the plan, its placement (None when
    only a placement without the rule was found), the demand as planned, and who is short after a loss."""
    try:
        plan, res, planned = _plan_placed(ctx.fleet, demand, ctx.catalog, draft, ctx.tolerate, ctx.failed,
                                          ctx.current, ctx.rounds, rebase)
        return plan, res, planned, res.tolerance_losses
    except PlacementFailed as err:
        if err.plan is None:
            raise
        # the failure-domain rule cannot be met (or pushes replicas off the nodes): a placement without it
        # shows who is short
        plan = err.plan
        try:
            loose_plan, loose = _place(plan, ctx.fleet, ctx.catalog, "none", ctx.failed, ctx.current)
        except PlacementFailed:
            raise err from None
        losses = tolerance_losses(plan, loose.replicas, ctx.inv, ctx.tolerate, ctx.fleet)
        if not losses:  # the rule in placement is conservative (racked replicas): this one survives anyway
            return loose_plan, loose, demand, losses
        return plan, None, demand, losses


def _final_plan(placed: Plan, res: PlacementResult, full: Plan, rebase: Callable[[Plan], Plan], fleet: FleetSpec,
                catalog: Catalog, tolerate: Tolerate, failed: list[str], current: Plan | None) -> Plan:
    """The answer with the full planner's baselines and findings: ``full`` is the same demand planned again.

    The same replicas (the usual case: the same MILP) keep ``res``'s placement; others are placed anew and
    used if they keep the failure-domain rule, else the draft's ``placed`` stands without them.
    """
    full = rebase(full)
    if [g.model_copy(update={"nodes": []}) for g in placed.replica_groups] == full.replica_groups:
        done = placed_plan(full, res)
    else:
        try:
            done, again = _place(full, fleet, catalog, tolerate, failed, current)
        except PlacementFailed:
            return placed
        if again.tolerance_losses:
            return placed
    return done.model_copy(update={"findings": [*done.findings, *(f for f in placed.findings
                                                                  if f not in done.findings)]})


def _round_line(kind: str, rnd: int, losses: Iterable[DomainLoss], worst: DomainLoss | None,
                factors: Mapping[str, float], floors: Mapping[str, int]) -> str:
    """One progress line: the round, who was short in the last one, the rates it plans at."""
    scaled = _scaled_words(factors, floors)
    if worst is None:
        return f"tolerate {kind}: round {rnd}, planning at the real rates"
    short = len({x.service for x in losses})
    return (f"tolerate {kind}: round {rnd}, {short} service(s) short (worst: {worst.service} loses "
            f"{worst.capacity_lost:.0%} of its capacity with {kind} {worst.domain}, left with "
            f"{worst.capacity_left:.0%} of what its load needs), planning with {scaled}")


def _plan_zone_tolerant(fleet: FleetSpec, catalog: Catalog, inv: Inventory, failed: list[str],
                        current: Plan | None, planner: Planner, rounds: int, base_dir: Path | None,
                        kind: Literal["zone", "rack"] = "zone", pool_domain: Mapping[str, str] | None = None) -> Plan:
    """Zone N-1 in one solve: every service is planned per zone, each of its K zones sized for rate/(K−1).

    Pools belong to zones, so the MILP can be told where capacity goes: after any one zone is lost, the
    K−1 left each serve rate/(K−1) with the SLO they were planned for, whatever devices each zone holds
    (no replica counting, which heterogeneous pools would make approximate). A service whose pools span
    one zone cannot survive its loss: ToleranceUnreachable names it. With ``kind="rack"`` the same for racks,
    when every pool's usable nodes sit in one rack (``pool_domain``: pool → its rack).
    """
    factors: dict[str, float] = {}
    split: dict[str, list[str]] = {}
    for svc in fleet.services:
        zones = sorted(_domains_of(svc.id, fleet, catalog, inv, kind))
        if len(zones) < 2:
            raise ToleranceUnreachable(
                f"--tolerate {kind}: service {svc.id} can run only in {', '.join(zones) or f'no usable {kind}'}; "
                f"losing that {kind} leaves it nothing (give it pools in a second {kind})")
        factors[svc.id] = len(zones) / (len(zones) - 1)
        split[svc.id] = zones
    cost_without = planner(fleet, current=current).cost_usd_per_hour
    demand, parent = _scaled_demand(fleet, factors, split, pool_domain)

    def rebase(p: Plan) -> Plan:
        return _at_real_rate(p, fleet, catalog, factors, parent, base_dir)

    try:
        plan = _plan_placed(fleet, demand, catalog, planner, "none", failed, current, rounds, rebase)[0]
    except InfeasibleFleet as err:
        raise ToleranceUnreachable(
            f"--tolerate {kind}: the fleet cannot hold capacity for every service's whole rate in the {kind}s "
            f"left after losing any one ({err})") from err
    return _with_cost_note(plan, kind, cost_without, factors, 1)


def _loss_message(loss: DomainLoss, why: str) -> str:
    return (f"--tolerate {loss.kind}: losing {loss.kind} {loss.domain} leaves service {loss.service} "
            f"{loss.replicas_left} replica(s) with {loss.capacity_left:.0%} of the capacity its load needs; {why}")


def _domains_of(service: str, fleet: FleetSpec, catalog: Catalog, inv: Inventory,
                kind: Literal["node", "rack", "zone"]) -> set[str]:
    """Usable node, rack or zone names of the accelerator pools a service may run on."""
    svc = next(s for s in fleet.services if s.id == service)
    pools = {p.id for p in fleet.pools if (svc.allowed_pools is None or p.id in svc.allowed_pools)
             and catalog.device(p.device).kind is DeviceKind.ACCELERATOR}
    return {n.name if kind == "node" else n.rack if kind == "rack" else n.zone
            for n in inv.nodes if n.usable and n.pool in pools}


def _scaled_words(factors: Mapping[str, float], floors: Mapping[str, int]) -> str:
    """``rate chat ×1.40, code ×2.00; min replicas summarise 2``, or '' when nothing is raised."""
    rates = ", ".join(f"{s} ×{f:.2f}" for s, f in sorted(factors.items()) if f != 1.0)
    mins = ", ".join(f"{s} {n}" for s, n in sorted(floors.items()))
    return "; ".join(([f"rate {rates}"] if rates else []) + ([f"min replicas {mins}"] if mins else []))


def _raise_factors(plan: Plan, fleet: FleetSpec, catalog: Catalog, inv: Inventory,
                   kind: Literal["node", "rack"], losses: Iterable[DomainLoss],
                   factors: dict[str, float], floors: dict[str, int]) -> None:
    """Raise the rate factor of every short service by its capacity shortfall (see ``plan_tolerant``), so its
    next plan has capacity to spare (node or rack tolerance; zones are planned in one solve). A serving phase
    whose largest replica alone carries the load first gets one more serving replica (``floors``, its
    min_replicas) instead: a second such replica survives, and scaling the rate would buy it only at 1 + that
    replica's capacity; if the cheapest extra replica is too small, later rounds scale the rate."""
    caps, needs = phase_capacity(plan, fleet), phase_needs(plan, fleet)
    worst: dict[tuple[str, bool], DomainLoss] = {}
    for loss in losses:
        key = (loss.service, loss.prefill)
        if key not in worst or loss.capacity_left < worst[key].capacity_left:
            worst[key] = loss
    steps: dict[str, float] = {}
    for (sid, prefill), loss in sorted(worst.items()):
        domains = _domains_of(sid, fleet, catalog, inv, kind)
        if len(domains) < 2:
            raise ToleranceUnreachable(_loss_message(
                loss, f"its pools span only one {kind} ({', '.join(sorted(domains)) or 'none usable'})"), loss)
        cap = caps.get((sid, prefill), {})
        held = [(c, plan.replica_groups[i].replicas) for i, c in cap.items()]
        total = sum(c * n for c, n in held)
        per = [c for c, n in held if c > 0 and n > 0]
        f = factors[sid]
        if per and not prefill and max(per) >= 1 and sid not in floors:
            serving = sum(n for _, n in held)
            floors[sid] = max(floors.get(sid, 0), serving + 1)
            continue
        if not per:  # no capacity to measure: double the rate
            steps[sid] = max(steps.get(sid, f), 2 * f)
            continue
        # a plan for rate × f holds capacity T ≥ f (load units at headroom), so planning at T* buys T*
        want = max(len(domains) / (len(domains) - 1), 1 + max(per))
        # a bucket short on its own groups: scale them all until they hold its share plus their largest replica
        for need, gs in needs.get((sid, prefill), [])[1:]:
            held_b = sum(cap.get(i, 0.0) * plan.replica_groups[i].replicas for i in gs)
            if held_b > 0:
                want = max(want, f * (need + max(cap.get(i, 0.0) for i in gs)) / held_b)
        steps[sid] = max(steps.get(sid, f), want, f * (total + min(per)) / total)
    factors.update(steps)


def _sub_id(service: str, k: int) -> str:
    return f"{service[:55]}.n1-z{k}"


def _scaled_demand(fleet: FleetSpec, factors: Mapping[str, float], split: Mapping[str, list[str]],
                   pool_domain: Mapping[str, str] | None = None) -> tuple[FleetSpec, dict[str, str]]:
    """The fleet with every service's rate × its factor; a split service becomes one service per zone.

    A service split over K zones asks ``rate × f / K`` of each zone's pools, so with ``f = K/(K−1)`` the
    zones left after losing any one hold capacity for the whole rate. ``pool_domain`` (pool → rack) splits
    by another domain than the pools' zones. Returns the fleet and sub-id → id.
    """
    services = []
    parent: dict[str, str] = {}
    for s in fleet.services:
        f = factors.get(s.id, 1.0)
        zones = split.get(s.id, [])
        if not zones:
            services.append(s if f == 1.0 else s.model_copy(update={
                "traffic": s.traffic.model_copy(update={"rate_rps": s.traffic.rate_rps * f})}))
            continue
        for k, zone in enumerate(zones):
            pools = [p.id for p in fleet.pools
                     if (p.zone if pool_domain is None else pool_domain.get(p.id)) == zone
                     and (s.allowed_pools is None or p.id in s.allowed_pools)]
            sub = _sub_id(s.id, k)
            parent[sub] = s.id
            services.append(s.model_copy(update={
                "id": sub, "allowed_pools": pools, "spread_zones": 1,
                "min_replicas": math.ceil(s.min_replicas / len(zones)),
                "traffic": s.traffic.model_copy(update={"rate_rps": s.traffic.rate_rps * f / len(zones)})}))
    return fleet.model_copy(update={"services": services}), parent


def _at_real_rate(plan: Plan, fleet: FleetSpec, catalog: Catalog, factors: Mapping[str, float],
                  parent: Mapping[str, str], base_dir: Path | None) -> Plan:
    """A plan made for rates × factors, described at the real rates: utilisation, watts, $ per token, id.

    Groups of a per-zone sub-service go back to their service; all zones up, each carries rate / K.
    """
    if all(f == 1.0 for f in factors.values()) and not parent:
        return plan

    groups = []
    for g in plan.replica_groups:
        g = g.model_copy(update={"service": parent.get(g.service, g.service)})
        f = factors.get(g.service, 1.0)
        if f == 1.0:
            groups.append(g)
            continue
        c = g.configuration
        # expected watts are idle + utilisation × (active − idle) per replica: only the second part scales
        idle = c.devices * catalog.device(c.device).idle_watts
        if c.memory_device:
            idle += c.memory_devices * catalog.device(c.memory_device).idle_watts
        idle *= g.replicas
        watts = idle + max(0.0, g.expected_watts - idle) / f
        groups.append(g.model_copy(update={"utilisation": round(g.utilisation / f, 4),
                                           "expected_watts": round(watts, 1)}))
    per_million = plan.usd_per_million_tokens
    if per_million is not None:
        buckets = service_buckets(fleet, base_dir)
        tokens = {s.id: s.traffic.rate_rps * sum(b.share * (b.input_tokens + b.output_tokens)
                                                 for b in buckets[s.id]) for s in fleet.services}
        real = sum(tokens.values())
        if real > 0:
            per_million = round(per_million * sum(t * factors.get(s, 1.0) for s, t in tokens.items()) / real, 4)
    return plan.model_copy(update={"replica_groups": groups, "usd_per_million_tokens": per_million,
                                   "id": plan_id(plan.fleet, groups), "demand": _real_demand(plan, fleet, parent)})


def _real_demand(plan: Plan, fleet: FleetSpec, parent: Mapping[str, str]) -> list[ServiceDemand]:
    """The plan's stored demand at the real rates, per-zone sub-services folded back into their service."""
    rates = {s.id: s.traffic.rate_rps for s in fleet.services}
    out: dict[str, ServiceDemand] = {}
    for d in plan.demand:
        sid = parent.get(d.service, d.service)
        if sid not in out:
            out[sid] = d.model_copy(update={"service": sid, "rate_rps": rates.get(sid, d.rate_rps)})
    return list(out.values())


def _with_cost_note(plan: Plan, kind: str, cost_without: float, factors: Mapping[str, float],
                    rounds: int, floors: Mapping[str, int] | None = None) -> Plan:
    """The plan with a finding that says what surviving the loss of one domain costs."""
    extra = plan.cost_usd_per_hour - cost_without
    pct = f" ({extra / cost_without:+.1%})" if cost_without > 0 else ""
    scaled = _scaled_words(factors, floors or {})
    note = Finding(
        kind="note", constraint=f"tolerate[{kind}]", value=round(extra, 4),
        message=f"N-1 {kind}: ${plan.cost_usd_per_hour:.2f}/h with tolerance vs ${cost_without:.2f}/h without, "
                f"+${extra:.2f}/h{pct}; " + (f"capacity planned for {scaled}" if scaled else
                                             "the plan already had the spare replicas")
                + f" ({rounds} round(s)); every service keeps its load after losing any one {kind}")
    return plan.model_copy(update={"findings": [*plan.findings, note]})


def step_times_model(fleet: FleetSpec, path: Path) -> tuple[PerfModel, str]:
    """Step times other than the planner's, for the replay: a measured table (CSV; the fleet's model where
    it does not cover a point) or an engine profile (YAML) over the fleet's calibration, and its name."""
    if path.suffix.lower() == ".csv":
        return TablePerfModel(read_measured_csv(path), fleet_perf_model(fleet)), f"the measured table {path.name}"
    return RooflinePerfModel(fleet_calibration(fleet).overlay(load_profile(path))), f"the engine profile {path.name}"


def verify_plan(plan: Plan, fleet: FleetSpec, source: TraceSource, base_dir: Path | None = None,
                step_times: Path | None = None) -> ReplayReport:
    """Replay the source's traffic against the plan (trace files are loaded here: the source's, else each
    trace-file service's own, relative to ``base_dir``) on the planner's performance model, or on
    ``step_times`` (a measured table or engine profile: see :func:`step_times_model`)."""
    catalog = fleet_catalog(fleet)
    if step_times is None:
        times = PerfStepTimes(fleet_perf_model(fleet), fleet, catalog)
    else:
        perf, name = step_times_model(fleet, step_times)
        times = PerfStepTimes(perf, fleet, catalog, source=name)
    trace = load_trace(source.path) if source.kind == "file" and source.path else None
    own = service_traces(fleet, base_dir) if trace is None else {}
    workload = build_workload(fleet, source, plan=plan, trace=trace, service_traces=own)
    return replay(plan, fleet, catalog, times, workload, planner_engine(fleet))


def verify_spot_reclaims(plan: Plan, fleet: FleetSpec, source: TraceSource,
                         base_dir: Path | None = None) -> dict[str, ReplayReport]:
    """N−1 over spot domains: the replay of the plan right after each spot pool it uses is reclaimed (the others
    up), each service's load re-routed over the replicas left (``planner.tiers.reclaim``), per pool."""
    from planner.tiers.reclaim import after_reclaim, spot_pools_used

    inputs = build_inputs(fleet, base_dir=base_dir)
    return {pool: verify_plan(after_reclaim(plan, inputs, [pool])[0], fleet, source, base_dir)
            for pool in spot_pools_used(plan, fleet)}


def trace_source(trace: str, *, rate_scale: float = 1.0, duration_s: float = 600.0, seed: int = 0) -> TraceSource:
    """The replay's traffic by name: ``poisson`` or ``bursty`` (from the services' traffic), else a trace file."""
    if trace in ("poisson", "bursty"):
        return TraceSource(kind="poisson" if trace == "poisson" else "bursty", rate_scale=rate_scale,
                           duration_s=duration_s, seed=seed)
    return TraceSource(kind="file", path=Path(trace), rate_scale=rate_scale, seed=seed)
