"""The placement model's sets: replica groups as units, nodes and classes of empty nodes as sites, the
components that are solved together, and the units each group already runs per node."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from planner.place.inventory import InventoryNode
from planner.place.result import Tolerate
from planner.schema import Configuration, FleetSpec, Plan, ReplicaGroup, Role

Units = dict[tuple[int, str], int]  # (group, node) → units


@dataclass(frozen=True)
class Group:
    """One replica group as placement sees it: ``pp`` stage units of ``tp`` devices and ``mem`` memory units."""

    index: int
    service: str
    pool: str
    memory_pool: str | None
    tp: int
    pp: int
    mem: int
    replicas: int
    role: Role
    utilisation: float
    capacity: float = 0.0  # one replica's capacity, share of its service phase's load (``phase_capacity``)

    @property
    def racked(self) -> bool:
        """Its replicas must sit in one rack (pipeline stages or offload partners)."""
        return self.pp > 1 or self.mem > 0


def plan_groups(plan: Plan, capacity: Mapping[int, float]) -> list[Group]:
    """The plan's groups with replicas, each with one replica's capacity."""
    return [
        Group(i, g.service, g.pool, g.memory_pool if g.configuration.memory_devices else None,
              g.configuration.tp, g.configuration.pp, g.configuration.memory_devices, g.replicas,
              g.configuration.role, g.utilisation, capacity.get(i, 0.0))
        for i, g in enumerate(plan.replica_groups) if g.replicas > 0
    ]


@dataclass
class Site:
    """An individual node or a class of identical empty nodes."""

    pool: str
    zone: str
    rack: str
    devices: int
    names: list[str]
    individual: bool
    virtual: bool = False


@dataclass(frozen=True)
class Sites:
    """The sites of one component, and each pool's site indices."""

    sites: list[Site]
    by_pool: dict[str, list[int]]

    def real(self, pool: str) -> list[int]:
        """Site indices of a pool's nodes (its virtual site left out)."""
        return [si for si in self.by_pool.get(pool, []) if not self.sites[si].virtual]

    def virtual(self, pool: str) -> int:
        """The index of a pool's virtual site."""
        return next(si for si in self.by_pool[pool] if self.sites[si].virtual)


def divisible_chain(sizes: Iterable[int], devices: int) -> bool:
    """TP sizes that divide each other and the node size: first-fit decreasing packs any class total."""
    s = sorted(set(sizes))
    return all(devices % a == 0 for a in s) and all(b % a == 0 for a, b in zip(s, s[1:], strict=False))


def build_sites(groups: list[Group], pools: set[str], inv_by_pool: Mapping[str, list[InventoryNode]],
                occupied: set[str], tolerate: Tolerate) -> Sites:
    """Nodes that hold replicas (or that the aggregate cannot represent) one by one, the other empty nodes
    as classes per (zone, rack, size), and one virtual site per pool."""
    sizes_by_pool: dict[str, list[int]] = defaultdict(list)
    for g in groups:
        sizes_by_pool[g.pool].append(g.tp)
        if g.memory_pool:
            sizes_by_pool[g.memory_pool].append(1)
    sites: list[Site] = []
    for pool in sorted(pools):
        nodes = [n for n in inv_by_pool.get(pool, []) if n.usable]
        classes: dict[tuple[str, str, int], list[str]] = defaultdict(list)
        chain = {d: divisible_chain(sizes_by_pool[pool] or [1], d) for d in {n.devices for n in nodes}}
        for n in nodes:
            if n.name in occupied or tolerate == "node" or not chain[n.devices]:
                sites.append(Site(pool, n.zone, n.rack, n.devices, [n.name], True))
            else:
                classes[(n.zone, n.rack, n.devices)].append(n.name)
        for (zone, rack, devs), names in sorted(classes.items()):
            sites.append(Site(pool, zone, rack, devs, names, False))
        per_node = max((n.devices for n in inv_by_pool.get(pool, [])), default=1)
        sites.append(Site(pool, "", f"virtual:{pool}", per_node, [], False, virtual=True))
    by_pool: dict[str, list[int]] = defaultdict(list)
    for si, s in enumerate(sites):
        by_pool[s.pool].append(si)
    return Sites(sites, by_pool)


def components(groups: list[Group], fleet: FleetSpec, tolerate: Tolerate) -> list[set[str]]:
    """Pools solved together: joined by offload partners, and a service's pools under spread or tolerance."""
    parent: dict[str, str] = {}

    def find(a: str) -> str:
        parent.setdefault(a, a)
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def union(a: str, b: str) -> None:
        parent[find(a)] = find(b)

    spread = {s.id: s.spread_zones for s in fleet.services}
    by_service: dict[str, list[str]] = defaultdict(list)
    for g in groups:
        find(g.pool)
        if g.memory_pool:
            union(g.pool, g.memory_pool)
        by_service[g.service].append(g.pool)
    for sid, pools in by_service.items():
        if spread.get(sid, 1) > 1 or tolerate != "none":
            for p in pools[1:]:
                union(pools[0], p)
    comps: dict[str, set[str]] = defaultdict(set)
    for p in list(parent):
        comps[find(p)].add(p)
    return list(comps.values())


def _group_key(g: ReplicaGroup) -> tuple[str, str, str | None, Configuration]:
    return (g.service, g.pool, g.memory_pool, g.configuration)


def current_units(plan: Plan, current: Plan | None, usable: set[str]) -> tuple[Units, Units]:
    """Stage and memory units each new group already runs per node (matched by group key)."""
    stage: Units = defaultdict(int)
    memory: Units = defaultdict(int)
    if current is None:
        return stage, memory
    index = {_group_key(g): i for i, g in enumerate(plan.replica_groups)}
    for old in current.replica_groups:
        gi = index.get(_group_key(old))
        if gi is None or not old.nodes:
            continue
        c = old.configuration
        per = c.devices + c.memory_devices
        for r in range(len(old.nodes) // per):
            chunk = old.nodes[r * per:(r + 1) * per]
            for s in range(c.pp):
                node = chunk[s * c.tp]
                if node in usable:
                    stage[(gi, node)] += 1
            for node in chunk[c.devices:]:
                if node in usable:
                    memory[(gi, node)] += 1
    return stage, memory

