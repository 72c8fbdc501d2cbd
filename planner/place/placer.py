r"""Placement of a plan's replicas on concrete nodes (OR-Tools CP-SAT).

A replica of configuration (tp, pp, m memory devices) is ``pp`` *stage units* of ``tp`` devices, each inside
one node (a TP group never spans nodes), all stages in one rack, and ``m`` one-device *memory units* in the
same rack (attention-offload partners). The model counts units per (group, node) instead of devices, and
empty nodes of one (pool, rack, size) are one *class* with a count: with TP sizes that divide each other and
the node size, first-fit decreasing packs any feasible class total, so the aggregate is exact.

Sets
  G  replica groups g (pool p_g, memory pool q_g, tp_g, pp_g, m_g, replicas R_g, service s_g)
  N  nodes n with devices D_n (nodes holding current replicas, or nodes in pools the aggregate cannot
     represent); C classes c of empty nodes (count K_c, devices D_c); V one virtual class per pool
     (unbounded, in no rack or zone: it measures a shortfall)
  cur[g,n]  units of g running on n in the current plan (failed nodes hold none)

Variables
  x[g,n], x[g,c] ∈ Z≥0   stage units (memory units for a memory pool) of g on node n / in class c
  y[g,r] ∈ Z≥0           replicas of g in rack r (only for pp_g > 1 or m_g > 0)
  used[n] ∈ {0,1}, u[c] ∈ 0..K_c   nodes in use
  keep[g,n] ≤ min(x[g,n], cur[g,n])   units that stay where they run
  z[s,zone] ∈ {0,1}      service s serves from zone (only for spread_zones > 1)

Constraints
  count[g]:      Σ_n x[g,n] + Σ_c x[g,c] + v[g] = pp_g R_g      (memory: = m_g R_g)
  rack[g,r]:     Σ_{n∈r} x[g,n] = pp_g y[g,r];  Σ_{n∈r, pool q_g} xm[g,n] = m_g y[g,r];  Σ_r y[g,r] + v[g]/pp_g = R_g
  node[n]:       Σ_g size_g x[g,n] ≤ D_n used[n];   class[c]: Σ_g size_g x[g,c] ≤ D_c u[c]
  spread[s]:     z[s,zone] ≤ replicas of s in zone;  Σ z ≥ spread_zones_s
  tolerate[s,d]: Σ_g c_g·(replicas of g in d) ≤ Σ_g c_g·R_g − 1   (c_g: one replica's capacity as a share of
                 the service's load at the planner's headroom, see ``phase_capacity``; when asked), and the
                 same for each length bucket's share over the groups that serve it (``phase_needs``)

Objective (lexicographic by weights)
  min  BIG·Σ virtual units  +  W·(Σ units − Σ keep)  +  Σ used + Σ u       (moves = units started)
with ``objective="moves"`` dropping the last term. Pools joined by offload partners, zone spread or a
failure-domain rule are solved together; other pools independently (the decomposition that makes 2,000
nodes a matter of seconds).
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ortools.sat.python import cp_model

from planner.catalog import Catalog
from planner.place.inventory import Inventory, InventoryNode, fleet_inventory
from planner.roles import SERVING_ROLES
from planner.schema import Configuration, FleetSpec, LengthBucket, Plan, PlannerOptions, ReplicaGroup, Role

Tolerate = Literal["none", "node", "rack", "zone"]
Objective = Literal["moves_then_fragmentation", "moves"]

_SERVING = SERVING_ROLES
OFFLOAD_LINK_GBYTES_PER_S = 30.0  # Lamina: ≤ 30 GB/s per replica up to batch 300 at α = 0.2


@dataclass(frozen=True)
class DeviceSlots:
    """Devices of one node (slot indices 0..devices−1) used by one part of a replica."""

    node: str
    slots: tuple[int, ...]


@dataclass(frozen=True)
class ReplicaPlacement:
    """One replica: its pipeline stages (one node each) and its memory devices."""

    group: int
    stages: tuple[DeviceSlots, ...]
    memory: tuple[DeviceSlots, ...] = ()


@dataclass(frozen=True)
class Shortfall:
    """A pool that could not hold its replicas: how many more nodes it would take."""

    pool: str
    nodes_needed: int
    nodes_usable: int
    reason: str


@dataclass(frozen=True)
class DomainLoss:
    """A failure domain whose loss leaves a service (one phase) less capacity than its load needs.

    ``capacity_left`` is what the surviving replicas carry at the planner's headroom as a share of the phase's
    load (below 1 here); ``capacity_lost`` the share of the phase's capacity that ran in the domain.
    """

    kind: str
    domain: str
    service: str
    replicas_left: int
    capacity_left: float
    capacity_lost: float
    prefill: bool = False


@dataclass(frozen=True)
class PlacementResult:
    """Where every replica runs, or why it cannot."""

    status: Literal["placed", "shortfall", "infeasible"]
    replicas: tuple[ReplicaPlacement, ...]
    moves: int  # units started on a node they were not running on
    kept: int
    nodes_used_by_pool: dict[str, int]
    free_nodes_by_pool: dict[str, int]
    usable_nodes_by_pool: dict[str, int]
    shortfall: tuple[Shortfall, ...] = ()
    explanations: tuple[str, ...] = ()
    tolerance_losses: tuple[DomainLoss, ...] = ()
    solve_seconds: float = 0.0
    optimal: bool = False

    def nodes_by_group(self, groups: int) -> list[list[str]]:
        """Node per device slot for each group: each replica's stages in order, then its memory devices."""
        out: list[list[str]] = [[] for _ in range(groups)]
        for r in self.replicas:
            for part in (*r.stages, *r.memory):
                out[r.group].extend([part.node] * len(part.slots))
        return out


def node_count_feedback(result: PlacementResult) -> dict[str, int]:
    """Nodes per pool the planner should assume usable so that its counts can be placed (for a re-solve)."""
    return {s.pool: max(0, s.nodes_usable - s.nodes_needed) for s in result.shortfall}


# ---------------------------------------------------------------------------------------------- model


@dataclass(frozen=True)
class _Group:
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
        return self.pp > 1 or self.mem > 0


@dataclass
class _Site:
    """An individual node or a class of identical empty nodes."""

    pool: str
    zone: str
    rack: str
    devices: int
    names: list[str]
    individual: bool
    virtual: bool = False


@dataclass
class _Model:
    sites: list[_Site] = field(default_factory=list)
    x: dict[tuple[int, int], cp_model.IntVar] = field(default_factory=dict)  # (group, site) stage units
    xm: dict[tuple[int, int], cp_model.IntVar] = field(default_factory=dict)  # (group, site) memory units


def _group_key(g: ReplicaGroup) -> tuple[str, str, str | None, Configuration]:
    return (g.service, g.pool, g.memory_pool, g.configuration)


def _current_units(
    plan: Plan, current: Plan | None, usable: set[str]
) -> tuple[dict[tuple[int, str], int], dict[tuple[int, str], int]]:
    """Stage and memory units each new group already runs per node (matched by group key)."""
    stage: dict[tuple[int, str], int] = defaultdict(int)
    memory: dict[tuple[int, str], int] = defaultdict(int)
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


def _explain_structure(groups: list[_Group], inv_by_pool: Mapping[str, list[InventoryNode]],
                       fleet: FleetSpec, catalog: Catalog) -> tuple[list[str], list[str]]:
    """Reasons no placement can exist (fatal), and warnings (offload link budget)."""
    fatal: list[str] = []
    warn: list[str] = []
    for g in groups:
        nodes = [n for n in inv_by_pool.get(g.pool, []) if n.usable]
        biggest = max((n.devices for n in nodes), default=0)
        if not inv_by_pool.get(g.pool):
            fatal.append(f"group {g.index} ({g.service}): pool {g.pool!r} has no nodes")
        elif g.tp > max(n.devices for n in inv_by_pool[g.pool]):
            fatal.append(f"group {g.index} ({g.service}): a TP group of {g.tp} devices cannot fit in one node of "
                         f"pool {g.pool!r} (largest node: {biggest} devices)")
        if g.mem and g.memory_pool is not None:
            racks = {n.rack for n in nodes}
            mem_racks = {n.rack for n in inv_by_pool.get(g.memory_pool, []) if n.usable}
            if not racks & mem_racks:
                fatal.append(f"group {g.index} ({g.service}): no rack holds both compute pool {g.pool!r} and "
                             f"memory pool {g.memory_pool!r}, so attention-offload partners cannot share a rack")
            pools = {p.id: p for p in fleet.pools}
            comp = catalog.devices.get(pools[g.pool].device) if g.pool in pools else None
            memd = catalog.devices.get(pools[g.memory_pool].device) if g.memory_pool in pools else None
            if comp and memd:
                link = min(g.tp * g.pp * comp.nic_gbitps, g.mem * memd.nic_gbitps) / 8
                if link < OFFLOAD_LINK_GBYTES_PER_S:
                    warn.append(f"group {g.index} ({g.service}): offload link budget {link:.1f} GB/s is below the "
                                f"{OFFLOAD_LINK_GBYTES_PER_S:.0f} GB/s attention traffic a replica can need")
    return fatal, warn


def _divisible_chain(sizes: Iterable[int], devices: int) -> bool:
    s = sorted(set(sizes))
    return all(devices % a == 0 for a in s) and all(b % a == 0 for a, b in zip(s, s[1:], strict=False))


def _components(groups: list[_Group], fleet: FleetSpec, tolerate: Tolerate) -> list[set[str]]:
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
    time_limit_s: float = 10.0,
    workers: int = 2,
) -> PlacementResult:
    """Put every replica of ``plan`` on nodes: fewest moves from ``current``, then fewest nodes in use."""
    started = time.perf_counter()
    inv = inventory or fleet_inventory(fleet)
    failed = list(failed)
    if failed:
        inv = inv.without(failed)
    inv_by_pool = inv.by_pool()
    usable_names = {n.name for n in inv.nodes if n.usable}
    capacity = {i: c for caps in phase_capacity(plan, fleet).values() for i, c in caps.items()}
    needs = phase_needs(plan, fleet) if tolerate != "none" else {}
    groups = [
        _Group(i, g.service, g.pool, g.memory_pool if g.configuration.memory_devices else None,
               g.configuration.tp, g.configuration.pp, g.configuration.memory_devices, g.replicas,
               g.configuration.role, g.utilisation, capacity.get(i, 0.0))
        for i, g in enumerate(plan.replica_groups) if g.replicas > 0
    ]
    fatal, warn = _explain_structure(groups, inv_by_pool, fleet, catalog)
    usable_by_pool = {p: sum(1 for n in ns if n.usable) for p, ns in inv_by_pool.items()}
    if fatal:
        return PlacementResult("infeasible", (), 0, 0, {}, {}, usable_by_pool, (), tuple(fatal + warn),
                               solve_seconds=time.perf_counter() - started)
    cur_stage, cur_mem = _current_units(plan, current, usable_names)
    explanations = list(warn)
    replicas: list[ReplicaPlacement] = []
    shortfalls: list[Shortfall] = []
    moves = kept = 0
    optimal = True
    comps = _components(groups, fleet, tolerate)
    deadline = started + time_limit_s
    units_left = sum(g.pp * g.replicas for g in groups) or 1
    for comp in comps:
        cgroups = [g for g in groups if g.pool in comp]
        if not cgroups:
            continue
        units = sum(g.pp * g.replicas for g in cgroups)
        # the time left, shared by size among the components still to solve; a fifth is kept for
        # building models and expanding solutions, so the whole call stays near time_limit_s
        budget = max(0.2, 0.8 * (deadline - time.perf_counter()) * units / units_left)
        units_left -= units
        res = _solve_component(cgroups, comp, inv_by_pool, fleet, cur_stage, cur_mem, tolerate, objective,
                               budget, workers, needs)
        replicas.extend(res.replicas)
        shortfalls.extend(res.shortfall)
        explanations.extend(res.explanations)
        moves += res.moves
        kept += res.kept
        optimal = optimal and res.optimal
        if res.status == "infeasible":
            return PlacementResult("infeasible", (), 0, 0, {}, {}, usable_by_pool, tuple(shortfalls),
                                   tuple(explanations), solve_seconds=time.perf_counter() - started)
    pool_of = {n.name: n.pool for n in inv.nodes}
    used: dict[str, set[str]] = defaultdict(set)
    for r in replicas:
        for part in (*r.stages, *r.memory):
            used[pool_of[part.node]].add(part.node)
    nodes_used = {p: len(used.get(p, set())) for p in inv_by_pool}
    free = {p: usable_by_pool[p] - nodes_used[p] for p in inv_by_pool}
    losses = (tolerance_losses(plan, replicas, inv, tolerate, fleet) if tolerate != "none" and not shortfalls
              else ())
    for loss in losses:
        explanations.append(
            f"losing {loss.kind} {loss.domain} leaves {loss.service} {loss.replicas_left} replicas with "
            f"{loss.capacity_left:.0%} of the capacity its load needs")
    return PlacementResult(
        status="shortfall" if shortfalls else "placed",
        replicas=tuple(replicas), moves=moves, kept=kept, nodes_used_by_pool=nodes_used,
        free_nodes_by_pool=free, usable_nodes_by_pool=usable_by_pool, shortfall=tuple(shortfalls),
        explanations=tuple(explanations), tolerance_losses=tuple(losses),
        solve_seconds=time.perf_counter() - started, optimal=optimal,
    )


@dataclass
class _ComponentResult:
    status: Literal["placed", "shortfall", "infeasible"]
    replicas: list[ReplicaPlacement]
    shortfall: list[Shortfall]
    explanations: list[str]
    moves: int
    kept: int
    optimal: bool


_CAPACITY_SCALE = 10_000  # CP-SAT units per service load in the failure-domain rule
_CAPACITY_SLACK = 1e-3  # rounding of utilisation and shares in a plan: capacity this close to the load covers it


def _bucket_shares(fleet: FleetSpec | None) -> dict[str, dict[tuple[int, int], float]]:
    """Each service's share of requests per (input, output) length bucket; a service whose trace file cannot
    be read from here is left out (its buckets then weigh alike)."""
    out: dict[str, dict[tuple[int, int], float]] = {}
    for svc in fleet.services if fleet is not None else ():
        buckets: list[LengthBucket]
        if svc.traffic.trace_file is None:
            buckets = svc.traffic.length_buckets()
        else:
            from planner.io.traces import bucket_trace

            try:
                buckets = bucket_trace(Path(svc.traffic.trace_file)).buckets
            except (OSError, ValueError):
                continue
        shares: dict[tuple[int, int], float] = defaultdict(float)
        for b in buckets:
            shares[(b.input_tokens, b.output_tokens)] += b.share
        out[svc.id] = dict(shares)
    return out


def phase_capacity(plan: Plan, fleet: FleetSpec | None = None) -> dict[tuple[str, bool], dict[int, float]]:
    """Per (service, prefill phase): group index → one replica's capacity as a share of the phase's load.

    A group carries ``Σ_b w_b·share_{g,b}`` of its phase's requests (``w_b`` the bucket's share of the service's
    requests, ``share`` its decode share, prefill share for prefill groups) at ``utilisation`` of its
    ``replicas``' capacity, so one replica at the planner's headroom carries ``headroom·carried/(replicas·
    utilisation)``: a common unit across device types (one H100 TP8 replica may be worth many L4 replicas). The
    phase keeps its SLO after a loss while its surviving replicas sum to ≥ 1. Approximation: each replica is
    valued at its group's own bucket mix, while after a loss the planner could move buckets between groups
    (which may do better or worse). Replicas of a group with no utilisation count for nothing. A phase whose
    groups record no load (a hand-made plan) is judged by counting, as before capacities: each replica is
    worth ``1/need``, ``need = ⌈Σ replicas·utilisation⌉`` (at least one).
    """
    headroom = (fleet.planner if fleet is not None else PlannerOptions()).headroom
    out: dict[tuple[str, bool], dict[int, float]] = {}
    for key, by_group in _phase_loads(plan, fleet).items():
        carried = {i: sum(by_bucket.values()) for i, by_bucket in by_group.items()}
        load = sum(carried.values())
        if load <= 0:
            busy_total = sum(plan.replica_groups[i].replicas * plan.replica_groups[i].utilisation for i in by_group)
            out[key] = dict.fromkeys(by_group, 1 / max(1, math.ceil(busy_total - 1e-9)))
            continue
        busy = {i: plan.replica_groups[i].replicas * plan.replica_groups[i].utilisation for i in by_group}
        out[key] = {i: headroom * c / load / busy[i] if busy[i] > 0 else 0.0 for i, c in carried.items()}
    return out


def phase_needs(
    plan: Plan, fleet: FleetSpec | None = None
) -> dict[tuple[str, bool], list[tuple[float, frozenset[int]]]]:
    """Per (service, prefill phase): what its surviving replicas must hold after a loss, each as (share of the
    phase's load, groups whose ``phase_capacity`` counts): the whole load on all its groups first, then each
    length bucket's share on the groups planned to serve it (a group planned for short prompts need not meet
    a long prompt's TTFT, so a bucket moves only among its own groups; checking buckets one at a time is the
    approximation)."""
    out: dict[tuple[str, bool], list[tuple[float, frozenset[int]]]] = {}
    for key, by_group in _phase_loads(plan, fleet).items():
        everyone = frozenset(by_group)
        out[key] = [(1.0, everyone)]
        load = sum(sum(by_bucket.values()) for by_bucket in by_group.values())
        if load <= 0:
            continue
        for bucket in sorted({b for by_bucket in by_group.values() for b in by_bucket}):
            serving = frozenset(i for i, by_bucket in by_group.items() if by_bucket.get(bucket, 0.0) > 0)
            share = sum(by_bucket.get(bucket, 0.0) for by_bucket in by_group.values()) / load
            if share > 0 and serving != everyone:
                out[key].append((share, serving))
    return out


def _phase_loads(
    plan: Plan, fleet: FleetSpec | None
) -> dict[tuple[str, bool], dict[int, dict[tuple[int, int], float]]]:
    """Per (service, prefill phase): group index → (input, output) bucket → share of the service's requests
    it carries in that phase (buckets weigh alike when the service's mix is unknown)."""
    shares = _bucket_shares(fleet)
    out: dict[tuple[str, bool], dict[int, dict[tuple[int, int], float]]] = defaultdict(dict)
    for i, g in enumerate(plan.replica_groups):
        prefill = g.configuration.role is Role.PREFILL
        if not prefill and g.configuration.role not in _SERVING:
            continue
        w = shares.get(g.service)
        by_bucket: dict[tuple[int, int], float] = defaultdict(float)
        for b in g.load:
            key = (b.input_tokens, b.output_tokens)
            by_bucket[key] += (w.get(key, 0.0) if w is not None else 1.0) * (b.prefill_share if prefill
                                                                              else b.decode_share)
        out[(g.service, prefill)][i] = dict(by_bucket)
    return out


def _solve_component(
    groups: list[_Group],
    pools: set[str],
    inv_by_pool: Mapping[str, list[InventoryNode]],
    fleet: FleetSpec,
    cur_stage: Mapping[tuple[int, str], int],
    cur_mem: Mapping[tuple[int, str], int],
    tolerate: Tolerate,
    objective: Objective,
    time_limit_s: float,
    workers: int,
    needs: Mapping[tuple[str, bool], list[tuple[float, frozenset[int]]]],
) -> _ComponentResult:
    m = cp_model.CpModel()
    occupied = {n for (_, n) in cur_stage} | {n for (_, n) in cur_mem}
    sizes_by_pool: dict[str, list[int]] = defaultdict(list)
    for g in groups:
        sizes_by_pool[g.pool].append(g.tp)
        if g.memory_pool:
            sizes_by_pool[g.memory_pool].append(1)
    sites: list[_Site] = []
    for pool in sorted(pools):
        nodes = [n for n in inv_by_pool.get(pool, []) if n.usable]
        classes: dict[tuple[str, str, int], list[str]] = defaultdict(list)
        for n in nodes:
            if (n.name in occupied or tolerate == "node"
                    or not _divisible_chain(sizes_by_pool[pool] or [1], n.devices)):
                sites.append(_Site(pool, n.zone, n.rack, n.devices, [n.name], True))
            else:
                classes[(n.zone, n.rack, n.devices)].append(n.name)
        for (zone, rack, devs), names in sorted(classes.items()):
            sites.append(_Site(pool, zone, rack, devs, names, False))
        per_node = max((n.devices for n in inv_by_pool.get(pool, [])), default=1)
        sites.append(_Site(pool, "", f"virtual:{pool}", per_node, [], False, virtual=True))
    site_pool: dict[str, list[int]] = defaultdict(list)
    for si, s in enumerate(sites):
        site_pool[s.pool].append(si)
    units_total = sum(g.pp * g.replicas + g.mem * g.replicas for g in groups)
    x: dict[tuple[int, int], cp_model.IntVar] = {}
    xm: dict[tuple[int, int], cp_model.IntVar] = {}
    load: dict[int, list[cp_model.LinearExprT]] = defaultdict(list)
    keep_terms: list[cp_model.IntVar] = []
    virtual_terms: list[cp_model.LinearExprT] = []
    keep_vars: dict[tuple[int, int, bool], cp_model.IntVar] = {}
    yv: dict[tuple[int, str], cp_model.IntVar] = {}  # replicas of a racked group per rack

    def keep(v: cp_model.IntVar, current: int, cap: int, key: tuple[int, int, bool], name: str) -> None:
        """Count units already on a site that stay there (at most what is placed there now)."""
        if current:
            k = m.new_int_var(0, min(current, cap), name)
            m.add(k <= v)
            keep_terms.append(k)
            keep_vars[key] = k

    hint = _greedy_hint(groups, sites, site_pool, cur_stage, cur_mem)
    for g in groups:
        # stage units
        count = g.pp * g.replicas
        for si in site_pool[g.pool]:
            s = sites[si]
            if s.devices < g.tp:
                continue
            cap = count if s.virtual else min(count, (s.devices // g.tp) * len(s.names))
            if cap <= 0:
                continue
            v = m.new_int_var(0, cap, f"x{g.index}_{si}")
            x[(g.index, si)] = v
            load[si].append(g.tp * v)
            if s.virtual:
                virtual_terms.append(v)
            elif s.individual:
                keep(v, cur_stage.get((g.index, s.names[0]), 0), cap, (g.index, si, False), f"k{g.index}_{si}")
        m.add(sum(x[(g.index, si)] for si in site_pool[g.pool] if (g.index, si) in x) == count)
        if g.memory_pool:
            mcount = g.mem * g.replicas
            for si in site_pool[g.memory_pool]:
                s = sites[si]
                cap = mcount if s.virtual else min(mcount, s.devices * max(1, len(s.names)))
                v = m.new_int_var(0, cap, f"m{g.index}_{si}")
                xm[(g.index, si)] = v
                load[si].append(v)
                if s.virtual:
                    virtual_terms.append(v)
                elif s.individual:
                    keep(v, cur_mem.get((g.index, s.names[0]), 0), cap, (g.index, si, True), f"km{g.index}_{si}")
            m.add(sum(xm[(g.index, si)] for si in site_pool[g.memory_pool]) == mcount)
        if g.racked:
            racks: dict[str, list[int]] = defaultdict(list)
            for si in site_pool[g.pool]:
                racks[sites[si].rack].append(si)
            mem_racks: dict[str, list[int]] = defaultdict(list)
            if g.memory_pool:
                for si in site_pool[g.memory_pool]:
                    rk = sites[si].rack if not sites[si].virtual else f"virtual:{g.pool}"
                    mem_racks[rk].append(si)
            ys = []
            for rack, sis in racks.items():
                y = m.new_int_var(0, g.replicas, f"y{g.index}_{rack}")
                ys.append(y)
                yv[(g.index, rack)] = y
                m.add_hint(y, hint.y.get((g.index, rack), 0))
                m.add(sum(x[(g.index, si)] for si in sis if (g.index, si) in x) == g.pp * y)
                if g.memory_pool:
                    m.add(sum(xm[(g.index, si)] for si in mem_racks.get(rack, [])) == g.mem * y)
            for rack, sis in mem_racks.items():
                if rack not in racks:
                    for si in sis:
                        m.add(xm[(g.index, si)] == 0)
            m.add(sum(ys) == g.replicas)
    used_terms: list[cp_model.LinearExprT] = []
    for si, s in enumerate(sites):
        if not load[si] or s.virtual:
            continue
        if s.individual:
            used = m.new_bool_var(f"used{si}")
            m.add(sum(load[si]) <= s.devices * used)
            used_terms.append(used)
        else:
            used = m.new_int_var(0, len(s.names), f"u{si}")
            m.add(sum(load[si]) <= s.devices * used)
            used_terms.append(used)
        m.add_hint(used, hint.nodes_used.get(si, 0))
    for (gi, si), v in x.items():
        m.add_hint(v, hint.x.get((gi, si, False), 0))
    for (gi, si), v in xm.items():
        m.add_hint(v, hint.x.get((gi, si, True), 0))
    for key, v in keep_vars.items():
        m.add_hint(v, hint.keep.get(key, 0))
    # replicas per (service, zone/rack/node) for spread and failure-domain rules
    svc_groups: dict[str, list[_Group]] = defaultdict(list)
    for g in groups:
        svc_groups[g.service].append(g)
    spread = {s.id: s.spread_zones for s in fleet.services}
    explanations: list[str] = []
    domain_rules = False  # a spread or failure-domain constraint was added (the greedy start ignores them)

    zone_of_rack = {s.rack: s.zone for s in sites if not s.virtual}

    def replicas_in(gs: list[_Group], pick: str, domain: str,
                    weight: Mapping[int, int] | None = None) -> cp_model.LinearExprT:
        """Replicas of ``gs`` in a zone or rack (each times its weight, when given)."""
        terms: list[cp_model.LinearExprT] = []
        for g in gs:
            w = weight[g.index] if weight is not None else 1
            if g.racked:  # a racked replica lies in one rack
                terms.extend(w * y for (gi, rack), y in yv.items() if gi == g.index and domain
                             == (zone_of_rack.get(rack) if pick == "zone" else rack))
                continue
            for si in site_pool[g.pool]:
                s = sites[si]
                if (g.index, si) not in x or s.virtual:
                    continue
                if (s.zone if pick == "zone" else s.rack) == domain:
                    terms.append(w * x[(g.index, si)])  # a stage puts its replica in the stage's domain
        return sum(terms)

    for sid, gs in svc_groups.items():
        serving = [g for g in gs if g.role in _SERVING]
        want = spread.get(sid, 1)
        if want > 1 and serving:
            zones = sorted({sites[si].zone for g in serving for si in site_pool[g.pool] if not sites[si].virtual})
            total = sum(g.replicas for g in serving)
            if len(zones) < want:
                explanations.append(f"service {sid}: asks for {want} zones but its pools reach only "
                                    f"{len(zones)} ({', '.join(zones)}); spread not enforced")
            elif total < want:
                explanations.append(f"service {sid}: {total} serving replica(s) cannot spread over {want} "
                                    "zones; spread not enforced")
            else:
                domain_rules = True
                zs = []
                for zone in zones:
                    z = m.new_bool_var(f"z{sid}_{zone}")
                    m.add(replicas_in(serving, "zone", zone) >= z)
                    zs.append(z)
                m.add(sum(zs) >= want)
        if tolerate != "none":
            for phase in ([g for g in gs if g.role in _SERVING], [g for g in gs if g.role is Role.PREFILL]):
                if not phase:
                    continue
                # per need (the whole load, each bucket on its groups: phase_needs) lost capacity ≤ spare in
                # whole units: weights rounded up, the budget down within the slack tolerance_losses allows,
                # so a placement that keeps these rules keeps that check too
                rules: list[tuple[list[_Group], dict[int, int], int]] = []
                why = ""
                for need, members in needs.get((sid, phase[0].role is Role.PREFILL), []):
                    ms = [g for g in phase if g.index in members]
                    held = sum(g.replicas * g.capacity for g in ms)
                    spare = math.floor((held - need + _CAPACITY_SLACK) * _CAPACITY_SCALE)
                    weight = {g.index: math.ceil(g.capacity * _CAPACITY_SCALE - 1e-9) for g in ms}
                    if held < need + _CAPACITY_SLACK:
                        why = (f"its replicas hold {held / need:.0%} of the capacity its load needs: none to "
                               f"spare")
                    elif max(weight.values()) > spare:
                        why = "one replica holds more capacity than it has to spare"
                    rules.append((ms, weight, spare))
                if why or not rules:
                    explanations.append(f"service {sid}: {why or 'no load recorded'}; it cannot survive losing "
                                        f"a {tolerate}")
                    continue
                domain_rules = True
                domains = sorted({
                    (sites[si].zone if tolerate == "zone" else sites[si].rack) for g in phase
                    for si in site_pool[g.pool] if not sites[si].virtual
                }) if tolerate != "node" else []
                for d in domains:
                    for ms, weight, spare in rules:
                        m.add(replicas_in(ms, tolerate, d, weight) <= spare)
                if tolerate == "node":  # node tolerance models every node singly
                    for si in sorted({si for g in phase for si in site_pool[g.pool]}
                                     | {si for g in phase if g.memory_pool for si in site_pool[g.memory_pool]}):
                        if sites[si].virtual:
                            continue
                        lost: dict[int, cp_model.LinearExprT] = {}
                        for g in phase:
                            units = [v[(g.index, si)] for v in (x, xm) if (g.index, si) in v]
                            if not units:
                                continue
                            if not g.racked:
                                lost[g.index] = units[0]
                                continue
                            # replicas with a stage or memory device here: at most its units, at most R_g
                            hit = m.new_int_var(0, g.replicas, f"hit{g.index}_{si}")
                            m.add_min_equality(hit, [sum(units), g.replicas])
                            lost[g.index] = hit
                        for ms, weight, spare in rules:
                            terms = [weight[g.index] * lost[g.index] for g in ms if g.index in lost]
                            if terms:
                                m.add(sum(terms) <= spare)
    big = (units_total + 1) * (sum(len(s.names) for s in sites) + 1)
    w_move = sum(len(s.names) for s in sites) + 1
    obj: list[cp_model.LinearExprT] = [big * sum(virtual_terms)] if virtual_terms else []
    if keep_terms:
        obj.append(-w_move * sum(keep_terms))
    if objective == "moves_then_fragmentation" and used_terms:
        obj.append(sum(used_terms))
    if obj:
        m.minimize(sum(obj))
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = time_limit_s
    solver.parameters.num_workers = max(1, workers)
    status = solver.solve(m)
    xval: dict[tuple[int, int], int]
    xmval: dict[tuple[int, int], int]
    if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        xval = {k: solver.value(v) for k, v in x.items()}
        xmval = {k: solver.value(v) for k, v in xm.items()}
        kept = sum(solver.value(k) for k in keep_terms)
    elif status != cp_model.INFEASIBLE and not domain_rules:
        # out of time before the first solution (a loaded machine, a huge component): the greedy start
        # is a complete placement of its own when no spread or failure-domain rule applies
        xval = {(g, si): v for (g, si, mem), v in hint.x.items() if not mem}
        xmval = {(g, si): v for (g, si, mem), v in hint.x.items() if mem}
        kept = sum(hint.keep.values())
        explanations.append(f"pools {', '.join(sorted(pools))}: solver out of time, first-fit placement used")
    else:
        what = "no placement exists" if status == cp_model.INFEASIBLE else "no placement found in time"
        explanations.append(
            f"pools {', '.join(sorted(pools))}: {what} under the spread and failure-domain rules; "
            "relax spread_zones or --tolerate, or add nodes")
        return _ComponentResult("infeasible", [], [], explanations, 0, 0, False)
    # shortfall: virtual units → nodes needed per pool
    shortfall: list[Shortfall] = []
    for pool in sorted(pools):
        vsi = next(si for si in site_pool[pool] if sites[si].virtual)
        devs = sum(xval.get((g.index, vsi), 0) * g.tp for g in groups)
        devs += sum(xmval.get((g.index, vsi), 0) for g in groups)
        if devs:
            nodes_needed = math.ceil(devs / sites[vsi].devices)
            usable = sum(len(sites[si].names) for si in site_pool[pool] if not sites[si].virtual)
            shortfall.append(Shortfall(pool, nodes_needed, usable,
                                       f"pool {pool}: {devs} devices of replicas do not fit on its {usable} "
                                       f"usable nodes as TP groups inside nodes (and PP/offload inside racks); "
                                       f"{nodes_needed} more node(s) needed"))
            explanations.append(shortfall[-1].reason)
    started_units = sum(v for (gi, si), v in xval.items() if not sites[si].virtual)
    started_units += sum(v for (gi, si), v in xmval.items() if not sites[si].virtual)
    reps = _expand(groups, sites, xval, xmval)
    return _ComponentResult("shortfall" if shortfall else "placed", reps, shortfall, explanations,
                            started_units - kept, kept, status == cp_model.OPTIMAL)


@dataclass
class _Hint:
    x: dict[tuple[int, int, bool], int] = field(default_factory=dict)  # (group, site, memory?) → units
    keep: dict[tuple[int, int, bool], int] = field(default_factory=dict)
    y: dict[tuple[int, str], int] = field(default_factory=dict)
    nodes_used: dict[int, int] = field(default_factory=dict)


def _greedy_hint(
    groups: list[_Group],
    sites: list[_Site],
    site_pool: Mapping[str, list[int]],
    cur_stage: Mapping[tuple[int, str], int],
    cur_mem: Mapping[tuple[int, str], int],
) -> _Hint:
    """A complete starting solution: keep what runs, then first-fit the rest (leftovers go virtual).

    CP-SAT starts from it, so a large re-placement is feasible from the first second and the search only
    improves moves and fragmentation.
    """
    h = _Hint()
    room = {si: [s.devices] * len(s.names) for si, s in enumerate(sites) if not s.virtual}
    virtual = {s.pool: si for si, s in enumerate(sites) if s.virtual}

    def put(g: int, si: int, k: int, units: int, size: int, mem: bool, kept: bool) -> None:
        room[si][k] -= units * size
        h.x[(g, si, mem)] = h.x.get((g, si, mem), 0) + units
        if kept:
            h.keep[(g, si, mem)] = h.keep.get((g, si, mem), 0) + units

    def racks_of(pool: str) -> dict[str, list[int]]:
        out: dict[str, list[int]] = defaultdict(list)
        for si in site_pool.get(pool, []):
            if not sites[si].virtual:
                out[sites[si].rack].append(si)
        return out

    placed: dict[int, int] = defaultdict(int)  # replicas (racked) or stage units (flat) already placed
    # 1. keep running units
    for g in groups:
        if not g.racked:
            for si in site_pool[g.pool]:
                s = sites[si]
                if not s.individual or s.virtual:
                    continue
                c = min(cur_stage.get((g.index, s.names[0]), 0), g.pp * g.replicas - placed[g.index],
                        room[si][0] // g.tp)
                if c > 0:
                    put(g.index, si, 0, c, g.tp, False, True)
                    placed[g.index] += c
            continue
        mem_racks = racks_of(g.memory_pool) if g.memory_pool else {}
        for rack, sis in racks_of(g.pool).items():
            ind = [si for si in sis if sites[si].individual]
            msis = [si for si in mem_racks.get(rack, []) if sites[si].individual]
            st = sum(cur_stage.get((g.index, sites[si].names[0]), 0) for si in ind)
            mm = sum(cur_mem.get((g.index, sites[si].names[0]), 0) for si in msis)
            reps = min(st // g.pp, mm // g.mem if g.mem else st, g.replicas - placed[g.index])
            if reps <= 0:
                continue
            need = reps * g.pp
            for si in ind:
                c = min(cur_stage.get((g.index, sites[si].names[0]), 0), need, room[si][0] // g.tp)
                if c > 0:
                    put(g.index, si, 0, c, g.tp, False, True)
                    need -= c
            need_m = reps * g.mem
            for si in msis:
                c = min(cur_mem.get((g.index, sites[si].names[0]), 0), need_m, room[si][0])
                if c > 0:
                    put(g.index, si, 0, c, 1, True, True)
                    need_m -= c
            placed[g.index] += reps
            h.y[(g.index, rack)] = h.y.get((g.index, rack), 0) + reps
    # 2. first-fit the rest, largest TP groups first; individual (partly used) nodes before empty ones
    for g in sorted(groups, key=lambda g: (-g.tp, g.index)):
        if not g.racked:
            left = g.pp * g.replicas - placed[g.index]
            order = sorted((si for si in site_pool[g.pool] if not sites[si].virtual),
                           key=lambda si: (not sites[si].individual, si))
            for si in order:
                for k in range(len(room[si])):
                    if left <= 0:
                        break
                    c = min(left, room[si][k] // g.tp)
                    if c > 0:
                        put(g.index, si, k, c, g.tp, False, False)
                        left -= c
                if left <= 0:
                    break
            if left > 0:
                h.x[(g.index, virtual[g.pool], False)] = left
            continue
        mem_racks = racks_of(g.memory_pool) if g.memory_pool else {}
        racks = racks_of(g.pool)
        for _ in range(g.replicas - placed[g.index]):
            done = False
            for rack, sis in racks.items():
                slots = [(si, k) for si in sis for k in range(len(room[si])) for _ in range(room[si][k] // g.tp)]
                mslots = [(si, k) for si in mem_racks.get(rack, []) for k in range(len(room[si]))
                          for _ in range(room[si][k])]
                if len(slots) < g.pp or len(mslots) < g.mem:
                    continue
                for si, k in slots[: g.pp]:
                    put(g.index, si, k, 1, g.tp, False, False)
                for si, k in mslots[: g.mem]:
                    put(g.index, si, k, 1, 1, True, False)
                h.y[(g.index, rack)] = h.y.get((g.index, rack), 0) + 1
                done = True
                break
            if not done:
                h.x[(g.index, virtual[g.pool], False)] = h.x.get((g.index, virtual[g.pool], False), 0) + g.pp
                if g.memory_pool:
                    vm = virtual[g.memory_pool]
                    h.x[(g.index, vm, True)] = h.x.get((g.index, vm, True), 0) + g.mem
                vr = f"virtual:{g.pool}"
                h.y[(g.index, vr)] = h.y.get((g.index, vr), 0) + 1
    for si, rooms in room.items():
        h.nodes_used[si] = sum(1 for r in rooms if r < sites[si].devices)
    return h


def _expand(
    groups: list[_Group],
    sites: list[_Site],
    x: Mapping[tuple[int, int], int],
    xm: Mapping[tuple[int, int], int],
) -> list[ReplicaPlacement]:
    """Turn unit counts into device slots: individual nodes directly, classes by first-fit decreasing."""
    by_group = {g.index: g for g in groups}
    stage_parts: dict[int, dict[str, list[DeviceSlots]]] = defaultdict(lambda: defaultdict(list))  # g → rack
    mem_parts: dict[int, dict[str, list[DeviceSlots]]] = defaultdict(lambda: defaultdict(list))
    for si, s in enumerate(sites):
        if s.virtual:
            continue
        items: list[tuple[int, int, bool]] = []  # (size, group, memory?)
        for g in groups:
            n = x.get((g.index, si), 0)
            items.extend((g.tp, g.index, False) for _ in range(n))
            n = xm.get((g.index, si), 0)
            items.extend((1, g.index, True) for _ in range(n))
        if not items:
            continue
        items.sort(key=lambda it: (-it[0], it[1]))
        free = [0] * len(s.names)  # next free slot per node
        for size, gi, is_mem in items:
            for k, used in enumerate(free):
                if used + size <= s.devices:
                    part = DeviceSlots(s.names[k], tuple(range(used, used + size)))
                    free[k] = used + size
                    (mem_parts if is_mem else stage_parts)[gi][s.rack].append(part)
                    break
            else:  # cannot happen when sizes form a divisible chain; kept loud
                raise RuntimeError(f"packing failed on {s.rack}: unit of {size} devices")
    out: list[ReplicaPlacement] = []
    for gi in sorted(by_group):
        g = by_group[gi]
        racks = sorted(set(stage_parts[gi]) | set(mem_parts[gi]))
        for rack in racks:
            st = stage_parts[gi].get(rack, [])
            me = mem_parts[gi].get(rack, [])
            for r in range(len(st) // g.pp):
                out.append(ReplicaPlacement(gi, tuple(st[r * g.pp:(r + 1) * g.pp]),
                                            tuple(me[r * g.mem:(r + 1) * g.mem])))
    return out


def tolerance_losses(
    plan: Plan, replicas: Iterable[ReplicaPlacement], inventory: Inventory, tolerate: Tolerate,
    fleet: FleetSpec | None = None,
) -> tuple[DomainLoss, ...]:
    """Domains (node, rack or zone) whose loss leaves a service's phase less capacity than its load needs.

    Capacity, not replica counts: see ``phase_capacity`` and ``phase_needs`` (``fleet`` gives the bucket mix
    and headroom; without it buckets weigh alike and the headroom is the default). ``capacity_left`` is the
    least share of a need that survives (the whole load, or a bucket's share on its groups).
    """
    if tolerate == "none":
        return ()
    node_of = {n.name: n for n in inventory.nodes}

    def domains(r: ReplicaPlacement) -> set[str]:
        out = set()
        for part in (*r.stages, *r.memory):
            n = node_of[part.node]
            out.add(n.name if tolerate == "node" else n.rack if tolerate == "rack" else n.zone)
        return out

    reps = [(r, domains(r)) for r in replicas]
    losses: list[DomainLoss] = []
    all_domains = sorted({d for _, ds in reps for d in ds})
    needs = phase_needs(plan, fleet)
    for (sid, prefill), cap in sorted(phase_capacity(plan, fleet).items()):
        mine = [(r.group, cap[r.group], ds) for r, ds in reps if r.group in cap]
        total = sum(c for _, c, _ in mine)
        for d in all_domains:
            kept = [(gi, c) for gi, c, ds in mine if d not in ds]
            short = [sum(c for gi, c in kept if gi in gs) / need for need, gs in needs[(sid, prefill)]
                     if sum(c for gi, c in kept if gi in gs) < need - _CAPACITY_SLACK]
            if short:
                lost = 1 - sum(c for _, c in kept) / total if total > 0 else 1.0
                losses.append(DomainLoss(tolerate, d, sid, len(kept), round(min(short), 4), round(lost, 4), prefill))
    return tuple(losses)


def surviving_plan(
    plan: Plan, result: PlacementResult, inventory: Inventory, kind: Literal["node", "rack", "zone"], domain: str
) -> Plan:
    """The plan as it would run after losing one node, rack or zone: replicas touching it are gone."""
    node_of = {n.name: n for n in inventory.nodes}

    def hit(r: ReplicaPlacement) -> bool:
        for part in (*r.stages, *r.memory):
            n = node_of[part.node]
            if (n.name if kind == "node" else n.rack if kind == "rack" else n.zone) == domain:
                return True
        return False

    lost: dict[int, int] = defaultdict(int)
    for r in result.replicas:
        if hit(r):
            lost[r.group] += 1
    groups = [g.model_copy(update={"replicas": g.replicas - lost[i], "nodes": []})
              for i, g in enumerate(plan.replica_groups)]
    return plan.model_copy(update={"replica_groups": groups})


def placed_plan(plan: Plan, result: PlacementResult) -> Plan:
    """The plan with each group's ``nodes`` filled in (node per device slot) and the nodes it really uses."""
    nodes = result.nodes_by_group(len(plan.replica_groups))
    groups = [g.model_copy(update={"nodes": nodes[i]}) for i, g in enumerate(plan.replica_groups)]
    used = {p: n for p, n in result.nodes_used_by_pool.items() if n}
    return plan.model_copy(update={"replica_groups": groups, "nodes_by_pool": used or plan.nodes_by_pool})
