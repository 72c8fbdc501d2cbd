"""Spot reclaims as the controller sees them: a spot node that disappears, stops being Ready or carries a reclaim
taint is lost, and the fleet is planned and placed around the lost nodes with the fewest moves, as
``medley plan --place --failed NODE`` does (``planner.tolerance.plan_and_place`` with them failed).

Only nodes the fleet names in its spot pools' node lists (``GPUPool.spec.nodes``, from ``medley inventory``) are
watched, so a fleet without spot pools never lists Nodes. ``reclaimed_nodes`` and ``fleet_without`` are pure; the
controller calls ``spot_reclaim`` (which reads Nodes through the ``ClusterClient``) and ``plan_around``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence

from planner.catalog import fleet_catalog
from planner.ports import Planner
from planner.schema import FleetSpec, Plan
from provisioner.cluster import ClusterClient
from provisioner.inventory import ClusterNode

log = logging.getLogger(__name__)

# Taints that announce a node is being taken away (not the standing taint a spot node pool may carry for
# scheduling): AWS Node Termination Handler's spot interruption notice, Karpenter's disruption (v1 and older),
# GKE's preemption notice, the out-of-service taint, and the cluster autoscaler's scale-down.
RECLAIM_TAINTS = (
    "aws-node-termination-handler/spot-itn",
    "karpenter.sh/disrupted",
    "karpenter.sh/disruption",
    "cloud.google.com/impending-node-termination",
    "node.kubernetes.io/out-of-service",
    "ToBeDeletedByClusterAutoscaler",
)


def watched_nodes(fleet: FleetSpec) -> dict[str, str]:
    """Node name → spot pool, for the spot pools that list their nodes."""
    return {n.name: p.id for p in fleet.pools if p.is_spot and p.nodes for n in p.nodes if n.state != "failed"}


def reclaimed_nodes(fleet: FleetSpec, nodes: Iterable[ClusterNode],
                    taints: Sequence[str] = RECLAIM_TAINTS) -> tuple[str, ...]:
    """The fleet's spot nodes the cluster no longer has, that are not Ready, or that carry a reclaim taint."""
    watched = watched_nodes(fleet)
    seen = {n.name: n for n in nodes}
    lost = []
    for name in sorted(watched):
        node = seen.get(name)
        if node is None or not node.ready or any(key in taints for key, _ in node.taints):
            lost.append(name)
    return tuple(lost)


def fleet_without(fleet: FleetSpec, lost: Iterable[str]) -> FleetSpec:
    """The fleet with the lost nodes marked failed in their pools' node lists and each such pool's
    ``max_nodes`` at most its nodes left."""
    gone = set(lost)
    pools = []
    for p in fleet.pools:
        if not p.nodes or not gone & {n.name for n in p.nodes}:
            pools.append(p)
            continue
        nodes = [n.model_copy(update={"state": "failed"}) if n.name in gone else n for n in p.nodes]
        usable = sum(1 for n in nodes if n.state == "ready")
        pools.append(p.model_copy(update={"nodes": nodes, "max_nodes": min(p.max_nodes, usable)}))
    return fleet.model_copy(update={"pools": pools})


def spot_reclaim(client: ClusterClient, fleet: FleetSpec) -> tuple[str, ...]:
    """The fleet's reclaimed spot nodes, reading Nodes only when some spot pool lists its nodes."""
    if not watched_nodes(fleet):
        return ()
    return reclaimed_nodes(fleet, [ClusterNode.of(obj) for obj in client.list("Node")])


def reclaim_digest(digest: str, lost: Sequence[str]) -> str:
    """The inputs digest with the lost nodes in it, so a plan around them is made once and then kept."""
    if not lost:
        return digest
    return hashlib.sha256(f"{digest}\nlost:{','.join(sorted(lost))}".encode()).hexdigest()[:len(digest) or 16]


def plan_around(fleet: FleetSpec, current: Plan | None, lost: Sequence[str], planner: Planner) -> Plan:
    """A plan on the nodes left, placed with the fewest moves from ``current``; unplaced when placement fails."""
    from planner.tolerance import PlacementFailed, plan_and_place

    reduced = fleet_without(fleet, lost)
    log.info("spot nodes reclaimed: %s; planning around them", ", ".join(lost))
    try:
        return plan_and_place(reduced, fleet_catalog(reduced), failed=lost, current=current, planner=planner)
    except PlacementFailed as exc:
        log.warning("placement around the reclaimed nodes failed (%s); planning without placement", exc)
        return planner(reduced, current=current)
