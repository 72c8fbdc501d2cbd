"""From unit counts to device slots: individual nodes directly, classes by first-fit decreasing; virtual
units become a shortfall of nodes per pool."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping

from planner.place.result import DeviceSlots, ReplicaPlacement, Shortfall
from planner.place.sites import Group, Site, Sites

Counts = Mapping[tuple[int, int], int]  # (group, site) → units
_Parts = dict[int, dict[str, list[DeviceSlots]]]  # group → rack → parts


def _pack_site(s: Site, items: list[tuple[int, int, bool]], stage_parts: _Parts, mem_parts: _Parts) -> None:
    """First-fit decreasing of one site's units ``(size, group, memory?)`` over its nodes, largest first."""
    items.sort(key=lambda it: (-it[0], it[1]))
    free = [0] * len(s.names)  # next free slot per node
    k0 = 0  # nodes before k0 are full
    for size, gi, is_mem in items:
        while k0 < len(free) and free[k0] == s.devices:
            k0 += 1
        for k in range(k0, len(free)):
            used = free[k]
            if used + size <= s.devices:
                part = DeviceSlots(s.names[k], tuple(range(used, used + size)))
                free[k] = used + size
                (mem_parts if is_mem else stage_parts)[gi][s.rack].append(part)
                break
        else:  # cannot happen when sizes form a divisible chain; kept loud
            raise RuntimeError(f"packing failed on {s.rack}: unit of {size} devices")


def expand(groups: list[Group], sites: list[Site], x: Counts, xm: Counts) -> list[ReplicaPlacement]:
    """Turn unit counts into replicas: each rack's stage parts ``pp`` at a time with ``mem`` memory parts."""
    stage_parts: _Parts = defaultdict(lambda: defaultdict(list))
    mem_parts: _Parts = defaultdict(lambda: defaultdict(list))
    by_group = {g.index: g for g in groups}
    items: dict[int, list[tuple[int, int, bool]]] = defaultdict(list)
    for counts, mem in ((x, False), (xm, True)):
        for (gi, si), units in counts.items():
            if units and gi in by_group and not sites[si].virtual:
                items[si].extend([(1 if mem else by_group[gi].tp, gi, mem)] * units)
    for si in sorted(items):
        _pack_site(sites[si], items[si], stage_parts, mem_parts)
    out: list[ReplicaPlacement] = []
    for gi in sorted(by_group):
        g = by_group[gi]
        for rack in sorted(set(stage_parts[gi]) | set(mem_parts[gi])):
            st = stage_parts[gi].get(rack, [])
            me = mem_parts[gi].get(rack, [])
            for r in range(len(st) // g.pp):
                out.append(ReplicaPlacement(gi, tuple(st[r * g.pp:(r + 1) * g.pp]),
                                            tuple(me[r * g.mem:(r + 1) * g.mem])))
    return out


def shortfalls(groups: list[Group], sites: Sites, pools: set[str], x: Counts, xm: Counts) -> list[Shortfall]:
    """Per pool with virtual units: the nodes its replicas would need beyond its usable ones."""
    out: list[Shortfall] = []
    for pool in sorted(pools):
        vsi = sites.virtual(pool)
        devs = sum(x.get((g.index, vsi), 0) * g.tp for g in groups)
        devs += sum(xm.get((g.index, vsi), 0) for g in groups)
        if devs:
            nodes_needed = math.ceil(devs / sites.sites[vsi].devices)
            usable = sum(len(sites.sites[si].names) for si in sites.real(pool))
            out.append(Shortfall(pool, nodes_needed, usable,
                                 f"pool {pool}: {devs} devices of replicas do not fit on its {usable} "
                                 f"usable nodes as TP groups inside nodes (and PP/offload inside racks); "
                                 f"{nodes_needed} more node(s) needed"))
    return out
