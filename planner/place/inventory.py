"""Node inventory per pool: the fleet file's explicit node lists, or nodes generated from ``max_nodes``.

Generated nodes are named ``<pool>-<index>`` and fill racks of ``nodes_per_rack`` in the pool's zone; rack
names are shared by the pools of a zone (``<zone>-rack<k>``), so a memory pool and a compute pool in one
zone share racks as they would in one row of a data centre.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from planner.schema import FleetSpec, Plan, Pool

NODES_PER_RACK = 16


@dataclass(frozen=True)
class InventoryNode:
    """One node a replica can be placed on."""

    name: str
    pool: str
    zone: str
    rack: str
    devices: int
    state: str = "ready"  # ready | cordoned | failed

    @property
    def usable(self) -> bool:
        return self.state == "ready"


@dataclass(frozen=True)
class Inventory:
    """Every node of the fleet, by pool, in a stable order."""

    nodes: tuple[InventoryNode, ...]

    def by_pool(self) -> dict[str, list[InventoryNode]]:
        """Nodes grouped by pool id."""
        out: dict[str, list[InventoryNode]] = {}
        for n in self.nodes:
            out.setdefault(n.pool, []).append(n)
        return out

    def node(self, name: str) -> InventoryNode:
        """The node of that name."""
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(f"unknown node {name!r}")

    def without(self, failed: Iterable[str]) -> Inventory:
        """The inventory with these nodes marked failed (names not in it are errors)."""
        lost = set(failed)
        known = {n.name for n in self.nodes}
        unknown = sorted(lost - known)
        if unknown:
            raise KeyError(f"unknown node(s) {', '.join(unknown)}")
        return Inventory(tuple(
            InventoryNode(n.name, n.pool, n.zone, n.rack, n.devices, "failed") if n.name in lost else n
            for n in self.nodes
        ))


def pool_nodes(pool: Pool, *, nodes_per_rack: int = NODES_PER_RACK) -> list[InventoryNode]:
    """A pool's nodes: its explicit list (defaults filled from the pool) or ``max_nodes`` generated ones."""
    if pool.nodes is not None:
        return [
            InventoryNode(
                name=n.name,
                pool=pool.id,
                zone=n.zone or pool.zone,
                rack=n.rack or f"{n.zone or pool.zone}-rack{i // nodes_per_rack}",
                devices=n.devices or pool.devices_per_node,
                state=n.state,
            )
            for i, n in enumerate(pool.nodes)
        ]
    return [
        InventoryNode(
            name=f"{pool.id}-{i:04d}",
            pool=pool.id,
            zone=pool.zone,
            rack=f"{pool.zone}-rack{i // nodes_per_rack}",
            devices=pool.devices_per_node,
        )
        for i in range(pool.max_nodes)
    ]


def fleet_inventory(
    fleet: FleetSpec, *, failed: Iterable[str] = (), nodes_per_rack: int = NODES_PER_RACK
) -> Inventory:
    """All nodes of the fleet's pools, with ``failed`` nodes marked failed."""
    inv = Inventory(tuple(n for p in fleet.pools for n in pool_nodes(p, nodes_per_rack=nodes_per_rack)))
    failed = list(failed)
    return inv.without(failed) if failed else inv


def running_devices(plan: Plan | None) -> Mapping[tuple[int, str], int]:
    """Devices each replica group of a placed plan holds per node: ``{(group index, node): devices}``."""
    out: dict[tuple[int, str], int] = {}
    if plan is None:
        return out
    for gi, g in enumerate(plan.replica_groups):
        for node in g.nodes:
            out[(gi, node)] = out.get((gi, node), 0) + 1
    return out
