r"""Lower bounds, by counting, that prove a placement optimal without a solve.

Moves: ``keep[g,n] ≤ cur[g,n]`` and a group keeps no more units than it places, so when every unit is placed

    moves ≥ Σ_g (pp_g·R_g − Σ_n cur[g,n])⁺ + (m_g·R_g − Σ_n curm[g,n])⁺          (``fewest_moves``)

Nodes in use: a pool's units of ``D_p`` devices need at least the fewest of its nodes whose devices add up to
``D_p``, largest nodes first (``fewest_nodes``). A part's start that places every unit (no virtual ones),
keeps ``Σ_g min(units_g, cur_g)`` units and uses that many nodes meets the lower bound of the objective
``BIG·virtual + W·(units − keep) + used`` (``start_is_optimal``), so CP-SAT has nothing to improve there.

When the start places every unit and keeps all it can but uses more nodes than the bound, every optimum keeps
as much (``W`` outweighs any count of nodes), so per group and kind of unit (stage, memory), with ``need``
its units and ``cur`` those it runs in the part: ``need ≤ cur`` → all its units are kept ones, so
``x[g,n] ≤ cur[g,n]`` and no unit elsewhere (``need = cur``: ``x = cur``, constants); ``need > cur`` → every
current unit stays, ``x[g,n] ≥ cur[g,n]``, and new units only on sites with room for one beside the units that
must stay. ``reduction`` gives these domains: the model then has no keep or virtual variables and minimises
nodes in use alone, with the same optima.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass

from planner.place.hint import Hint, UnitKey
from planner.place.result import Objective
from planner.place.sites import Group, Sites, Units


def fewest_moves(groups: list[Group], cur_stage: Units, cur_mem: Units) -> int:
    """The fewest units any placement of ``groups`` that places them all must start (see the module)."""
    stage: dict[int, int] = defaultdict(int)
    memory: dict[int, int] = defaultdict(int)
    for (gi, _), units in cur_stage.items():
        stage[gi] += units
    for (gi, _), units in cur_mem.items():
        memory[gi] += units
    return sum(max(0, g.pp * g.replicas - stage[g.index]) + max(0, g.mem * g.replicas - memory[g.index])
               for g in groups)


def fewest_nodes(devices: int, nodes: list[tuple[int, int]]) -> int:
    """The fewest nodes, from ``(devices per node, count)`` classes, whose devices add up to ``devices``."""
    used = 0
    for size, count in sorted(nodes, reverse=True):
        if devices <= 0:
            break
        take = min(count, -(-devices // size))
        used += take
        devices -= take * size
    return used


def _most_kept(groups: list[Group], sites: Sites, cur_stage: Mapping[tuple[int, str], int],
               cur_mem: Mapping[tuple[int, str], int]) -> int:
    """Units the part's groups could keep at most: what they run on its nodes, up to what they place."""
    names = {s.names[0] for s in sites.sites if s.individual and not s.virtual}
    stage: dict[int, int] = defaultdict(int)
    memory: dict[int, int] = defaultdict(int)
    for (gi, node), units in cur_stage.items():
        if node in names:
            stage[gi] += units
    for (gi, node), units in cur_mem.items():
        if node in names:
            memory[gi] += units
    return sum(min(stage[g.index], g.pp * g.replicas) + min(memory[g.index], g.mem * g.replicas) for g in groups)


def _keeps_all(groups: list[Group], sites: Sites, hint: Hint, cur_stage: Mapping[tuple[int, str], int],
               cur_mem: Mapping[tuple[int, str], int]) -> bool:
    """The start places every unit and keeps every unit it can."""
    if any(units and sites.sites[si].virtual for (_, si, _), units in hint.x.items()):
        return False
    return sum(hint.keep.values()) >= _most_kept(groups, sites, cur_stage, cur_mem)


def start_is_optimal(groups: list[Group], sites: Sites, hint: Hint, cur_stage: Mapping[tuple[int, str], int],
                     cur_mem: Mapping[tuple[int, str], int], objective: Objective) -> bool:
    """The start places every unit, keeps all it can and (unless only moves count) uses the fewest nodes."""
    if not _keeps_all(groups, sites, hint, cur_stage, cur_mem):
        return False
    if objective == "moves":
        return True
    tp = {g.index: g.tp for g in groups}
    devices: dict[str, int] = defaultdict(int)
    for (gi, si, mem), units in hint.x.items():
        devices[sites.sites[si].pool] += units * (1 if mem else tp[gi])
    least = sum(fewest_nodes(d, [(sites.sites[si].devices, len(sites.sites[si].names)) for si in sites.real(p)])
                for p, d in devices.items())
    return sum(hint.nodes_used.values()) <= least


@dataclass(frozen=True)
class Reduction:
    """Unit domains every optimum keeps to (see the module): constants of groups that keep exactly what they
    run, and (least, most) units per site for the others; a site not listed holds none of that group's units."""

    fixed: dict[UnitKey, int]
    domain: dict[UnitKey, tuple[int, int]]
    stable: frozenset[int]


def reduction(groups: list[Group], sites: Sites, hint: Hint, cur_stage: Mapping[tuple[int, str], int],
              cur_mem: Mapping[tuple[int, str], int]) -> Reduction | None:
    """The domains of ``x`` and ``xm`` every optimum keeps to, when the start keeps all it can (else None)."""
    if not _keeps_all(groups, sites, hint, cur_stage, cur_mem):
        return None
    site_of = {s.names[0]: si for si, s in enumerate(sites.sites) if s.individual and not s.virtual}
    cur: dict[UnitKey, int] = {}
    for current, mem in ((cur_stage, False), (cur_mem, True)):
        for (gi, node), units in current.items():
            if node in site_of and units:
                cur[(gi, site_of[node], mem)] = units
    total: dict[tuple[int, bool], int] = defaultdict(int)
    for (gi, _, mem), units in cur.items():
        total[(gi, mem)] += units
    need = {(g.index, mem): (g.mem if mem else g.pp) * g.replicas for g in groups for mem in (False, True)}
    size = {(g.index, mem): 1 if mem else g.tp for g in groups for mem in (False, True)}
    growing = {k for k, n in need.items() if n > total[k]}
    room = {si: s.devices for si, s in enumerate(sites.sites) if not s.virtual}
    for (gi, si, mem), units in cur.items():
        if (gi, mem) in need and need[(gi, mem)] >= total[(gi, mem)]:  # these units stay in every optimum
            room[si] -= units * size[(gi, mem)]
    stable = frozenset(g.index for g in groups if all(need[(g.index, m)] == total[(g.index, m)] for m in (False, True)))
    fixed = {k: u for k, u in cur.items() if k[0] in stable}
    domain = {k: (0, u) for k, u in cur.items() if (k[0], k[2]) in need and k[0] not in stable
              and (k[0], k[2]) not in growing}
    for g in groups:
        for mem in (False, True):
            if (g.index, mem) in growing:
                _grow(g, mem, need[(g.index, mem)], sites, room, cur, domain)
    return Reduction(fixed, domain, stable)


def _grow(g: Group, mem: bool, need: int, sites: Sites, room: Mapping[int, int], cur: Mapping[UnitKey, int],
          domain: dict[UnitKey, tuple[int, int]]) -> None:
    """A growing group's domains: its current units stay, new ones go where one fits beside what stays."""
    pool = g.memory_pool if mem else g.pool
    unit = 1 if mem else g.tp
    for si in sites.real(pool or ""):
        s = sites.sites[si]
        here = cur.get((g.index, si, mem), 0)
        most = min(need, (s.devices // unit) * len(s.names))
        if here or room[si] >= unit:
            domain[(g.index, si, mem)] = (here, max(here, most))
