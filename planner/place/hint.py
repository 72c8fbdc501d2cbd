"""A complete starting placement for CP-SAT: keep what runs, then first-fit the rest (leftovers go virtual).

CP-SAT starts from it, so a large re-placement is feasible from the first second and the search only
improves moves and fragmentation; when the solver finds nothing in time and no spread or failure-domain
rule applies, it is the placement.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

from planner.place.sites import Group, Sites

UnitKey = tuple[int, int, bool]  # (group, site, memory?)


@dataclass
class Hint:
    """Units per (group, site, memory?), the kept share of them, replicas per (group, rack), nodes used."""

    x: dict[UnitKey, int] = field(default_factory=dict)
    keep: dict[UnitKey, int] = field(default_factory=dict)
    y: dict[tuple[int, str], int] = field(default_factory=dict)
    nodes_used: dict[int, int] = field(default_factory=dict)


class _Greedy:
    """The hint under construction: free devices per node of every real site."""

    def __init__(self, sites: Sites, cur_stage: Mapping[tuple[int, str], int],
                 cur_mem: Mapping[tuple[int, str], int]) -> None:
        self.s = sites
        self.cur_stage, self.cur_mem = cur_stage, cur_mem
        self.h = Hint()
        self.room = {si: [s.devices] * len(s.names) for si, s in enumerate(sites.sites) if not s.virtual}
        self.virtual = {s.pool: si for si, s in enumerate(sites.sites) if s.virtual}
        self.placed: dict[int, int] = defaultdict(int)  # replicas (racked) or stage units (flat) placed
        site_of = {s.names[0]: si for si, s in enumerate(sites.sites) if s.individual and not s.virtual}
        self.running: dict[int, list[tuple[int, int]]] = defaultdict(list)  # group → (site, stage units)
        for (gi, node), units in cur_stage.items():
            if node in site_of and units:
                self.running[gi].append((site_of[node], units))
        for runs in self.running.values():
            runs.sort()

    def put(self, g: int, si: int, k: int, units: int, size: int, mem: bool, kept: bool) -> None:
        self.room[si][k] -= units * size
        self.h.x[(g, si, mem)] = self.h.x.get((g, si, mem), 0) + units
        if kept:
            self.h.keep[(g, si, mem)] = self.h.keep.get((g, si, mem), 0) + units

    def racks_of(self, pool: str | None) -> dict[str, list[int]]:
        out: dict[str, list[int]] = defaultdict(list)
        if pool is None:
            return out
        for si in self.s.real(pool):
            out[self.s.sites[si].rack].append(si)
        return out

    def add_y(self, g: int, rack: str, n: int) -> None:
        self.h.y[(g, rack)] = self.h.y.get((g, rack), 0) + n

    # 1. keep running units

    def keep_flat(self, g: Group) -> None:
        pool = set(self.s.by_pool[g.pool])
        for si, running in self.running.get(g.index, []):
            if si not in pool:
                continue
            c = min(running, g.pp * g.replicas - self.placed[g.index], self.room[si][0] // g.tp)
            if c > 0:
                self.put(g.index, si, 0, c, g.tp, False, True)
                self.placed[g.index] += c

    def keep_racked(self, g: Group) -> None:
        mem_racks = self.racks_of(g.memory_pool)
        for rack, sis in self.racks_of(g.pool).items():
            ind = [si for si in sis if self.s.sites[si].individual]
            msis = [si for si in mem_racks.get(rack, []) if self.s.sites[si].individual]
            st = sum(self.cur_stage.get((g.index, self.s.sites[si].names[0]), 0) for si in ind)
            mm = sum(self.cur_mem.get((g.index, self.s.sites[si].names[0]), 0) for si in msis)
            reps = min(st // g.pp, mm // g.mem if g.mem else st, g.replicas - self.placed[g.index])
            if reps <= 0:
                continue
            self._keep_units(g, ind, reps * g.pp, g.tp, False, self.cur_stage)
            self._keep_units(g, msis, reps * g.mem, 1, True, self.cur_mem)
            self.placed[g.index] += reps
            self.add_y(g.index, rack, reps)

    def _keep_units(self, g: Group, sis: list[int], need: int, size: int, mem: bool,
                    current: Mapping[tuple[int, str], int]) -> None:
        for si in sis:
            c = min(current.get((g.index, self.s.sites[si].names[0]), 0), need, self.room[si][0] // size)
            if c > 0:
                self.put(g.index, si, 0, c, size, mem, True)
                need -= c

    # 2. first-fit the rest, individual (partly used) nodes before empty ones

    def fit_flat(self, g: Group) -> None:
        left = g.pp * g.replicas - self.placed[g.index]
        order = sorted(self.s.real(g.pool), key=lambda si: (not self.s.sites[si].individual, si))
        for si in order:
            for k in range(len(self.room[si])):
                if left <= 0:
                    break
                c = min(left, self.room[si][k] // g.tp)
                if c > 0:
                    self.put(g.index, si, k, c, g.tp, False, False)
                    left -= c
            if left <= 0:
                break
        if left > 0:
            self.h.x[(g.index, self.virtual[g.pool], False)] = left

    def fit_racked(self, g: Group) -> None:
        mem_racks = self.racks_of(g.memory_pool)
        racks = list(self.racks_of(g.pool).items())
        k = 0  # racks before k have no room for a replica, and room only shrinks while this group is fitted
        for _ in range(g.replicas - self.placed[g.index]):
            while k < len(racks) and not self._fit_replica(g, racks[k][0], racks[k][1], mem_racks.get(racks[k][0], [])):
                k += 1
            if k == len(racks):
                self._virtual_replica(g)

    def _fit_replica(self, g: Group, rack: str, sis: list[int], msis: list[int]) -> bool:
        """One replica in this rack if its stages and memory devices fit there."""
        room = self.room
        slots = [(si, k) for si in sis for k in range(len(room[si])) for _ in range(room[si][k] // g.tp)]
        mslots = [(si, k) for si in msis for k in range(len(room[si])) for _ in range(room[si][k])]
        if len(slots) < g.pp or len(mslots) < g.mem:
            return False
        for si, k in slots[: g.pp]:
            self.put(g.index, si, k, 1, g.tp, False, False)
        for si, k in mslots[: g.mem]:
            self.put(g.index, si, k, 1, 1, True, False)
        self.add_y(g.index, rack, 1)
        return True

    def _virtual_replica(self, g: Group) -> None:
        h = self.h
        key = (g.index, self.virtual[g.pool], False)
        h.x[key] = h.x.get(key, 0) + g.pp
        if g.memory_pool:
            mkey = (g.index, self.virtual[g.memory_pool], True)
            h.x[mkey] = h.x.get(mkey, 0) + g.mem
        self.add_y(g.index, f"virtual:{g.pool}", 1)


def greedy_hint(groups: list[Group], sites: Sites, cur_stage: Mapping[tuple[int, str], int],
                cur_mem: Mapping[tuple[int, str], int]) -> Hint:
    """A complete starting solution: keep what runs, then first-fit the rest, largest TP groups first."""
    greedy = _Greedy(sites, cur_stage, cur_mem)
    for g in groups:
        if g.racked:
            greedy.keep_racked(g)
        else:
            greedy.keep_flat(g)
    for g in sorted(groups, key=lambda g: (-g.tp, g.index)):
        if g.racked:
            greedy.fit_racked(g)
        else:
            greedy.fit_flat(g)
    for si, rooms in greedy.room.items():
        greedy.h.nodes_used[si] = sum(1 for r in rooms if r < sites.sites[si].devices)
    return greedy.h
