r"""Parts: a component as one CP-SAT problem, or, when it is large and no spread or failure-domain rule ties
its racks together, cut into blocks of whole racks solved one after another.

The greedy start (``planner.place.hint``) is a complete placement of the component. A block takes the racks
in inventory order until its model would pass ``part_size`` unit-site variables (``x[g,site]`` of the groups
the start put there); its groups' replica counts are the replicas the start put in its racks (``R_{g,b}``),
so each block is the package's model on its own racks (``count``, ``rack``, ``node``/``class``, the same
objective) and CP-SAT, starting from the start's share, changes only what lies inside it. Units the start
could not place are *carried*: they join the first block with free devices as units on its virtual site, and
what a block cannot place goes on to the next; what the last block leaves is the component's shortfall.

The cut keeps every constraint (racked replicas lie in one rack, a rack in one block), so each block's
placement is valid and together they place every unit the start placed; what it gives up is moving units
between blocks, which changes moves only where the start did not already meet the counted lower bound
(``sites.fewest_moves``) and nodes in use only by what one block's packing could gain from another's.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, replace

from planner.place.hint import Hint
from planner.place.sites import Group, Site, Sites

Carry = dict[int, int]  # group index → replicas not yet placed


@dataclass(frozen=True)
class Part:
    """One CP-SAT problem: its groups (replica counts are this part's share), its sites and its start."""

    label: str
    pools: frozenset[str]
    groups: list[Group]
    sites: Sites
    hint: Hint
    proven: bool = False  # its start meets the objective's lower bound (``bounds.start_is_optimal``)

    @property
    def units(self) -> int:
        """Stage and memory units this part places."""
        return sum((g.pp + g.mem) * g.replicas for g in self.groups)

    def free_devices(self) -> int:
        """Devices its start leaves free on real nodes."""
        size = {g.index: g.tp for g in self.groups}
        used = sum(v * (1 if mem else size[g]) for (g, si, mem), v in self.hint.x.items()
                   if not self.sites.sites[si].virtual)
        return sum(s.devices * len(s.names) for s in self.sites.sites if not s.virtual) - used

    def with_carry(self, carry: Mapping[int, int], groups: Mapping[int, Group]) -> Part:
        """The part with carried replicas added as units on its virtual sites (where its start puts them)."""
        if not carry:
            return self
        mine = {g.index: g for g in self.groups}
        hint = Hint(dict(self.hint.x), dict(self.hint.keep), dict(self.hint.y), dict(self.hint.nodes_used))
        for gi, n in carry.items():
            g = groups[gi]
            base = mine.get(gi)
            mine[gi] = replace(g, replicas=n) if base is None else replace(base, replicas=base.replicas + n)
            key = (gi, self.sites.virtual(g.pool), False)
            hint.x[key] = hint.x.get(key, 0) + n * g.pp
            if g.memory_pool:
                mkey = (gi, self.sites.virtual(g.memory_pool), True)
                hint.x[mkey] = hint.x.get(mkey, 0) + n * g.mem
            if g.racked:
                hint.y[(gi, f"virtual:{g.pool}")] = hint.y.get((gi, f"virtual:{g.pool}"), 0) + n
        return Part(self.label, self.pools, sorted(mine.values(), key=lambda g: g.index), self.sites, hint, False)

    def checked(self, proven: bool) -> Part:
        """The part, marked proven optimal or not."""
        return replace(self, proven=proven)


def _label(pools: frozenset[str], racks: list[str] | None = None) -> str:
    where = f"pools {', '.join(sorted(pools))}"
    if racks is None:
        return where
    if len(racks) == 1:
        return f"{where}, rack {racks[0]}"
    return f"{where}, {len(racks)} racks {racks[0]} … {racks[-1]}"


def start_carry(groups: list[Group], sites: Sites, hint: Hint) -> Carry:
    """Replicas the start could not place (on virtual sites)."""
    out: Carry = {}
    for g in groups:
        units = hint.x.get((g.index, sites.virtual(g.pool), False), 0)
        if units:
            out[g.index] = units // g.pp
    return out


def whole(groups: list[Group], pools: frozenset[str], sites: Sites, hint: Hint) -> Part:
    """The component as one part."""
    return Part(_label(pools), pools, groups, sites, hint)


def model_size(groups: list[Group], sites: Sites) -> int:
    """Unit-site variables of a model over these groups and sites: ``x[g,site]`` and ``xm[g,site]``."""
    per_pool = {p: len(sis) for p, sis in sites.by_pool.items()}
    return sum(per_pool.get(g.pool, 0) + (per_pool.get(g.memory_pool, 0) if g.memory_pool else 0) for g in groups)


def split(groups: list[Group], pools: frozenset[str], sites: Sites, hint: Hint, part_size: int,
          rack_order: Mapping[str, int]) -> list[Part]:
    """Blocks of whole racks in ``rack_order`` (the inventory's), each with about ``part_size`` unit-site
    variables at most (a single rack may pass it), carrying the start's units there; the start's virtual units
    are left out (``start_carry``)."""
    by_rack: dict[str, list[int]] = defaultdict(list)
    for si, s in enumerate(sites.sites):
        if not s.virtual:
            by_rack[s.rack].append(si)
    rack_sites = {r: by_rack[r] for r in sorted(by_rack, key=lambda r: (rack_order.get(r, len(rack_order)), r))}
    present: dict[str, set[int]] = defaultdict(set)
    for (gi, si, _), v in hint.x.items():
        if v and not sites.sites[si].virtual:
            present[sites.sites[si].rack].add(gi)
    by_index = {g.index: g for g in groups}
    blocks: list[list[str]] = [[]]
    in_block: set[int] = set()
    count: dict[str, int] = defaultdict(int)
    for rack, sis in rack_sites.items():
        more = dict(count)
        for si in sis:
            more[sites.sites[si].pool] = more.get(sites.sites[si].pool, 0) + 1
        gs = in_block | present[rack]
        size = sum(more.get(by_index[gi].pool, 0) + more.get(by_index[gi].memory_pool or "", 0) for gi in gs)
        if blocks[-1] and size > part_size:
            blocks.append([])
            gs, more = set(present[rack]), {}
            for si in sis:
                more[sites.sites[si].pool] = more.get(sites.sites[si].pool, 0) + 1
        blocks[-1].append(rack)
        in_block, count = gs, defaultdict(int, more)
    return [_block(racks, [si for r in racks for si in rack_sites[r]], groups, pools, sites, hint)
            for racks in blocks if racks]


def _block(racks: list[str], sis: list[int], groups: list[Group], pools: frozenset[str], sites: Sites,
           hint: Hint) -> Part:
    """The part over these racks: their sites (renumbered) and each pool's virtual site, the start's units."""
    renumber = {old: new for new, old in enumerate(sis)}
    block_sites: list[Site] = [sites.sites[si] for si in sis]
    for pool in sorted(sites.by_pool):
        renumber[sites.virtual(pool)] = len(block_sites)
        block_sites.append(sites.sites[sites.virtual(pool)])
    by_pool: dict[str, list[int]] = defaultdict(list)
    for si, s in enumerate(block_sites):
        by_pool[s.pool].append(si)
    real = set(sis)
    rack_set = set(racks)
    part_hint = Hint(
        x={(g, renumber[si], m): v for (g, si, m), v in hint.x.items() if si in real},
        keep={(g, renumber[si], m): v for (g, si, m), v in hint.keep.items() if si in real},
        y={(g, r): v for (g, r), v in hint.y.items() if r in rack_set},
        nodes_used={renumber[si]: v for si, v in hint.nodes_used.items() if si in real},
    )
    replicas: dict[int, int] = defaultdict(int)
    for (gi, _, mem), v in part_hint.x.items():
        if not mem:
            replicas[gi] += v
    mine = [replace(g, replicas=replicas[g.index] // g.pp) for g in groups if replicas.get(g.index)]
    return Part(_label(pools, racks), pools, mine, Sites(block_sites, dict(by_pool)), part_hint)
