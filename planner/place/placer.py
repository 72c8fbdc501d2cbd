"""Placement's entry: ``place`` (components solved in turn within one deadline) and ``placed_plan``.

The model is stated in the package docstring (``planner.place``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

from planner.catalog import Catalog
from planner.clock import Deadline
from planner.place.bounds import fewest_moves
from planner.place.budget import Budget
from planner.place.capacity import phase_capacity, phase_needs
from planner.place.component import PART_SIZE, ComponentInput, ComponentResult, prepare, solve_component
from planner.place.inventory import Inventory, InventoryNode, fleet_inventory
from planner.place.losses import tolerance_losses
from planner.place.result import Fallback, Objective, PlacementResult, ReplicaPlacement, Shortfall, Tolerate
from planner.place.sites import Group, components, current_units, plan_groups
from planner.schema import FleetSpec, Plan

OFFLOAD_LINK_GBYTES_PER_S = 30.0  # Lamina: ≤ 30 GB/s per replica up to batch 300 at α = 0.2


def _offload_link_warning(g: Group, fleet: FleetSpec, catalog: Catalog) -> str | None:
    """A warning when the offload pair's NICs carry less than the attention traffic a replica can need."""
    pools = {p.id: p for p in fleet.pools}
    comp = catalog.devices.get(pools[g.pool].device) if g.pool in pools else None
    memd = catalog.devices.get(pools[g.memory_pool].device) if g.memory_pool in pools else None
    if not (comp and memd):
        return None
    link = min(g.tp * g.pp * comp.nic_gbitps, g.mem * memd.nic_gbitps) / 8
    if link >= OFFLOAD_LINK_GBYTES_PER_S:
        return None
    return (f"group {g.index} ({g.service}): offload link budget {link:.1f} GB/s is below the "
            f"{OFFLOAD_LINK_GBYTES_PER_S:.0f} GB/s attention traffic a replica can need")


def _explain_structure(groups: list[Group], inv_by_pool: Mapping[str, list[InventoryNode]],
                       fleet: FleetSpec, catalog: Catalog) -> tuple[list[str], list[str]]:
    """Reasons no placement can exist (fatal), and warnings (offload link budget)."""
    fatal: list[str] = []
    warn: list[str] = []
    largest = {p: max(n.devices for n in ns) for p, ns in inv_by_pool.items() if ns}
    biggest_usable = {p: max((n.devices for n in ns if n.usable), default=0) for p, ns in inv_by_pool.items()}
    usable_racks = {p: {n.rack for n in ns if n.usable} for p, ns in inv_by_pool.items()}
    for g in groups:
        if not inv_by_pool.get(g.pool):
            fatal.append(f"group {g.index} ({g.service}): pool {g.pool!r} has no nodes")
        elif g.tp > largest[g.pool]:
            fatal.append(f"group {g.index} ({g.service}): a TP group of {g.tp} devices cannot fit in one node of "
                         f"pool {g.pool!r} (largest node: {biggest_usable[g.pool]} devices)")
        if g.mem and g.memory_pool is not None:
            if not usable_racks.get(g.pool, set()) & usable_racks.get(g.memory_pool, set()):
                fatal.append(f"group {g.index} ({g.service}): no rack holds both compute pool {g.pool!r} and "
                             f"memory pool {g.memory_pool!r}, so attention-offload partners cannot share a rack")
            note = _offload_link_warning(g, fleet, catalog)
            if note:
                warn.append(note)
    return fatal, warn


class _Components:
    """The components' results as they come in."""

    def __init__(self) -> None:
        self.replicas: list[ReplicaPlacement] = []
        self.shortfalls: list[Shortfall] = []
        self.explanations: list[str] = []
        self.fallbacks: list[Fallback] = []
        self.moves = self.kept = self.parts = self.counted_parts = 0
        self.optimal = True

    def add(self, res: ComponentResult) -> None:
        self.replicas.extend(res.replicas)
        self.shortfalls.extend(res.shortfall)
        self.explanations.extend(res.explanations)
        self.fallbacks.extend(res.fallbacks)
        self.moves += res.moves
        self.kept += res.kept
        self.parts += res.parts
        self.counted_parts += res.counted_parts
        self.optimal = self.optimal and res.optimal


def place(
    plan: Plan,
    fleet: FleetSpec,
    catalog: Catalog,
    *,
    current: Plan | None = None,
    tolerate: Tolerate = "none",
    failed: Iterable[str] = (),
    inventory: Inventory | None = None,
    objective: Objective = "moves_then_fragmentation",
    deadline: Deadline | None = None,
    time_limit_s: float = 10.0,
    workers: int = 2,
    part_size: int = PART_SIZE,
) -> PlacementResult:
    """Put every replica of ``plan`` on nodes: fewest moves from ``current``, then fewest nodes in use.

    Time is read only through ``deadline`` (default: ``time_limit_s`` from now on the process's clock), which
    bounds the whole call; components without spread or failure-domain rules whose models pass ``part_size``
    unit-site variables are solved as rack blocks. Parts CP-SAT did not solve keep the first-fit start and are
    listed in ``fallbacks``.
    """
    deadline = deadline or Deadline.after(time_limit_s)
    started = deadline.now()
    inv = inventory or fleet_inventory(fleet)
    failed = list(failed)
    if failed:
        inv = inv.without(failed)
    inv_by_pool = inv.by_pool()
    usable_by_pool = {p: sum(1 for n in ns if n.usable) for p, ns in inv_by_pool.items()}
    capacity = {i: c for caps in phase_capacity(plan, fleet).values() for i, c in caps.items()}
    groups = plan_groups(plan, capacity)
    fatal, warn = _explain_structure(groups, inv_by_pool, fleet, catalog)
    if fatal:
        return PlacementResult("infeasible", (), 0, 0, {}, {}, usable_by_pool, (), tuple(fatal + warn),
                               solve_seconds=deadline.now() - started)
    cur_stage, cur_mem = current_units(plan, current, {n.name for n in inv.nodes if n.usable})
    inp = ComponentInput(inv_by_pool, fleet, cur_stage, cur_mem, tolerate, objective, workers,
                         phase_needs(plan, fleet) if tolerate != "none" else {}, part_size)
    prepared = [prepare(cgroups, comp, inp) for comp in components(groups, fleet, tolerate)
                if (cgroups := [g for g in groups if g.pool in comp])]
    budget = Budget(deadline, sum(p.units for p in prepared))
    done = _Components()
    done.explanations.extend(warn)
    for prep in prepared:
        res = solve_component(prep, inp, budget)
        done.add(res)
        if res.status == "infeasible":
            return PlacementResult("infeasible", (), 0, 0, {}, {}, usable_by_pool, tuple(done.shortfalls),
                                   tuple(done.explanations), solve_seconds=deadline.now() - started,
                                   parts=done.parts, fallbacks=tuple(done.fallbacks))
    bound = None if done.shortfalls else fewest_moves(groups, cur_stage, cur_mem)
    return _result(plan, fleet, inv, tolerate, done, usable_by_pool, deadline.now() - started, bound)


def _result(plan: Plan, fleet: FleetSpec, inv: Inventory, tolerate: Tolerate, done: _Components,
            usable_by_pool: dict[str, int], seconds: float, bound: int | None) -> PlacementResult:
    """The placed (or short) result: nodes in use and free per pool, and the failure-domain losses."""
    pool_of = {n.name: n.pool for n in inv.nodes}
    used: dict[str, set[str]] = defaultdict(set)
    for r in done.replicas:
        for part in (*r.stages, *r.memory):
            used[pool_of[part.node]].add(part.node)
    nodes_used = {p: len(used.get(p, set())) for p in usable_by_pool}
    free = {p: usable_by_pool[p] - nodes_used[p] for p in usable_by_pool}
    losses = (tolerance_losses(plan, done.replicas, inv, tolerate, fleet)
              if tolerate != "none" and not done.shortfalls else ())
    explanations = list(done.explanations)
    for loss in losses:
        explanations.append(
            f"losing {loss.kind} {loss.domain} leaves {loss.service} {loss.replicas_left} replicas with "
            f"{loss.capacity_left:.0%} of the capacity its load needs")
    return PlacementResult(
        status="shortfall" if done.shortfalls else "placed",
        replicas=tuple(done.replicas), moves=done.moves, kept=done.kept, nodes_used_by_pool=nodes_used,
        free_nodes_by_pool=free, usable_nodes_by_pool=usable_by_pool, shortfall=tuple(done.shortfalls),
        explanations=tuple(explanations), tolerance_losses=tuple(losses), solve_seconds=seconds,
        optimal=done.optimal, parts=done.parts, counted_parts=done.counted_parts, fallbacks=tuple(done.fallbacks),
        moves_bound=bound,
    )


def placed_plan(plan: Plan, result: PlacementResult) -> Plan:
    """The plan with each group's ``nodes`` filled in (node per device slot) and the nodes it really uses."""
    nodes = result.nodes_by_group(len(plan.replica_groups))
    groups = [g.model_copy(update={"nodes": nodes[i]}) for i, g in enumerate(plan.replica_groups)]
    used = {p: n for p, n in result.nodes_used_by_pool.items() if n}
    return plan.model_copy(update={"replica_groups": groups, "nodes_by_pool": used or plan.nodes_by_pool})
