"""Failure domains after placement: which losses leave a service short, and the plan that survives one."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Literal

from planner.place.capacity import CAPACITY_SLACK, phase_capacity, phase_needs
from planner.place.inventory import Inventory, InventoryNode
from planner.place.result import DomainLoss, PlacementResult, ReplicaPlacement, Tolerate
from planner.schema import FleetSpec, Plan

DomainKind = Literal["node", "rack", "zone"]


def domain_name(node: InventoryNode, kind: DomainKind) -> str:
    """The node's node, rack or zone name."""
    return node.name if kind == "node" else node.rack if kind == "rack" else node.zone


def _domains(r: ReplicaPlacement, node_of: dict[str, InventoryNode], kind: DomainKind) -> set[str]:
    """Every domain of ``kind`` one replica has a stage or memory device in."""
    return {domain_name(node_of[part.node], kind) for part in (*r.stages, *r.memory)}


def tolerance_losses(
    plan: Plan, replicas: Iterable[ReplicaPlacement], inventory: Inventory, tolerate: Tolerate,
    fleet: FleetSpec | None = None,
) -> tuple[DomainLoss, ...]:
    """Domains (node, rack or zone) whose loss leaves a service's phase less capacity than its load needs.

    Capacity, not replica counts: see ``phase_capacity`` and ``phase_needs`` (the bucket mix is the plan's
    stored demand, else ``fleet``'s buckets; ``fleet`` gives the headroom; with neither, buckets weigh alike
    and the headroom is the default). ``capacity_left`` is the least share of a need that survives (the
    whole load, or a bucket's share on its groups).
    """
    if tolerate == "none":
        return ()
    node_of = {n.name: n for n in inventory.nodes}
    reps = [(r, _domains(r, node_of, tolerate)) for r in replicas]
    losses: list[DomainLoss] = []
    all_domains = sorted({d for _, ds in reps for d in ds})
    needs = phase_needs(plan, fleet)
    for (sid, prefill), cap in sorted(phase_capacity(plan, fleet).items()):
        mine = [(r.group, cap[r.group], ds) for r, ds in reps if r.group in cap]
        total = sum(c for _, c, _ in mine)
        for d in all_domains:
            kept = [(gi, c) for gi, c, ds in mine if d not in ds]
            short = [sum(c for gi, c in kept if gi in gs) / need for need, gs in needs[(sid, prefill)]
                     if sum(c for gi, c in kept if gi in gs) < need - CAPACITY_SLACK]
            if short:
                lost = 1 - sum(c for _, c in kept) / total if total > 0 else 1.0
                losses.append(DomainLoss(tolerate, d, sid, len(kept), round(min(short), 4), round(lost, 4), prefill))
    return tuple(losses)


def surviving_plan(plan: Plan, result: PlacementResult, inventory: Inventory, kind: DomainKind, domain: str) -> Plan:
    """The plan as it would run after losing one node, rack or zone: replicas touching it are gone."""
    node_of = {n.name: n for n in inventory.nodes}
    lost: dict[int, int] = defaultdict(int)
    for r in result.replicas:
        if domain in _domains(r, node_of, kind):
            lost[r.group] += 1
    groups = [g.model_copy(update={"replicas": g.replicas - lost[i], "nodes": []})
              for i, g in enumerate(plan.replica_groups)]
    return plan.model_copy(update={"replica_groups": groups})
