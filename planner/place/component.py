"""Solve one component (pools joined by offload partners, spread or failure-domain rules) with CP-SAT: as one
part, or as rack blocks (``planner.place.blocks``) when it is large and no rule ties its racks together."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

from ortools.sat.python import cp_model

from planner.place.blocks import Carry, Part, model_size, split, start_carry, whole
from planner.place.bounds import reduction, start_is_optimal
from planner.place.budget import Budget
from planner.place.expand import expand, shortfalls
from planner.place.hint import greedy_hint
from planner.place.inventory import InventoryNode
from planner.place.model import Counts, build_model
from planner.place.result import Fallback, Objective, ReplicaPlacement, Shortfall, Status, Tolerate
from planner.place.rules import Needs, add_rules
from planner.place.sites import Group, Sites, build_sites
from planner.schema import FleetSpec

PART_SIZE = 6_000  # unit-site variables above which a component without rules is cut into rack blocks
OUT_OF_TIME = "solver out of time"
NO_TIME = "no time left in the deadline"


@dataclass
class ComponentResult:
    """One component's replicas, shortfalls and notes."""

    status: Status
    replicas: list[ReplicaPlacement]
    shortfall: list[Shortfall]
    explanations: list[str]
    moves: int
    kept: int
    optimal: bool
    parts: int = 0
    counted_parts: int = 0
    fallbacks: list[Fallback] = field(default_factory=list)


@dataclass(frozen=True)
class ComponentInput:
    """What one component is solved from (the same for every component of a call, but its groups and pools)."""

    inv_by_pool: Mapping[str, list[InventoryNode]]
    fleet: FleetSpec
    cur_stage: Mapping[tuple[int, str], int]
    cur_mem: Mapping[tuple[int, str], int]
    tolerate: Tolerate
    objective: Objective
    workers: int
    needs: Needs
    part_size: int = PART_SIZE


@dataclass(frozen=True)
class Prepared:
    """A component ready to solve: its sites, its parts and the replicas its start could not place."""

    groups: list[Group]
    pools: frozenset[str]
    sites: Sites
    parts: list[Part]
    carry: Carry

    @property
    def units(self) -> int:
        """Units its parts will solve for (carried ones included; parts proven optimal left out)."""
        return sum(p.units for p in self.parts if not p.proven) + sum(
            (g.pp + g.mem) * self.carry.get(g.index, 0) for g in self.groups)


@dataclass(frozen=True)
class _Counts:
    x: Counts
    xm: Counts
    kept: int


@dataclass
class _PartResult:
    counts: _Counts | None  # None: no placement under the rules
    explanations: list[str]
    optimal: bool
    fallback: str | None  # why the start stands, when it does


def _has_rules(groups: list[Group], fleet: FleetSpec, tolerate: Tolerate) -> bool:
    """A spread or failure-domain rule ties the component's racks together."""
    spread = {s.id: s.spread_zones for s in fleet.services}
    return tolerate != "none" or any(spread.get(g.service, 1) > 1 for g in groups)


def prepare(groups: list[Group], pools: set[str], inp: ComponentInput) -> Prepared:
    """Sites, the greedy start and the parts of one component."""
    occupied = {n for (_, n) in inp.cur_stage} | {n for (_, n) in inp.cur_mem}
    sites = build_sites(groups, pools, inp.inv_by_pool, occupied, inp.tolerate)
    hint = greedy_hint(groups, sites, inp.cur_stage, inp.cur_mem)
    frozen = frozenset(pools)
    one = whole(groups, frozen, sites, hint)
    if _has_rules(groups, inp.fleet, inp.tolerate):
        return Prepared(groups, frozen, sites, [one], {})
    if start_is_optimal(groups, sites, hint, inp.cur_stage, inp.cur_mem, inp.objective):
        return Prepared(groups, frozen, sites, [one.checked(True)], {})
    if model_size(groups, sites) <= inp.part_size:
        return Prepared(groups, frozen, sites, [one], {})
    order: dict[str, int] = {}
    for pool in sorted(pools):
        for n in inp.inv_by_pool.get(pool, []):
            order.setdefault(n.rack, len(order))
    parts = [p.checked(start_is_optimal(p.groups, p.sites, p.hint, inp.cur_stage, inp.cur_mem, inp.objective))
             for p in split(groups, frozen, sites, hint, inp.part_size, order)]
    return Prepared(groups, frozen, sites, parts, start_carry(groups, sites, hint))


def _counts(part: Part, inp: ComponentInput, x: Counts, xm: Counts) -> _Counts:
    """Unit counts with the units they keep: on each node, as many as ran there, up to those placed there."""
    kept = 0
    for counts, current in ((x, inp.cur_stage), (xm, inp.cur_mem)):
        for (gi, si), units in counts.items():
            s = part.sites.sites[si]
            if units and s.individual and not s.virtual:
                kept += min(units, current.get((gi, s.names[0]), 0))
    return _Counts(x, xm, kept)


def _from_hint(part: Part, inp: ComponentInput) -> _Counts:
    hint = part.hint.x
    return _counts(part, inp, {(g, si): v for (g, si, mem), v in hint.items() if not mem},
                   {(g, si): v for (g, si, mem), v in hint.items() if mem})


def _solve_part(part: Part, inp: ComponentInput, budget: Budget, rules: bool) -> _PartResult:
    """CP-SAT on one part within its share of the budget; the start where it is proven optimal by counting,
    or where CP-SAT finds nothing and no rule applies."""
    if part.proven:
        return _PartResult(_from_hint(part, inp), [], True, None)
    started = budget.deadline.now()
    red = None if rules else reduction(part.groups, part.sites, part.hint, inp.cur_stage, inp.cur_mem)
    model = build_model(part.groups, part.sites, inp.cur_stage, inp.cur_mem, part.hint, red)
    domain_rules, explanations = add_rules(model, inp.fleet, inp.tolerate, inp.needs)
    model.minimize(inp.objective)
    limit = budget.solve_time(part.units, budget.deadline.now() - started)
    status = cp_model.UNKNOWN
    if limit > 0:
        solver = cp_model.CpSolver()
        solver.parameters.max_time_in_seconds = limit
        solver.parameters.num_workers = max(1, inp.workers)
        # a start that is a whole placement (no rules) is loaded at once without presolve, which on large
        # parts takes longer than the search that improves it
        solver.parameters.cp_model_presolve = domain_rules
        status = solver.solve(model.m)
        if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            return _PartResult(_counts(part, inp, *model.values(solver)), explanations,
                               status == cp_model.OPTIMAL, None)
    if status != cp_model.INFEASIBLE and not domain_rules:
        # out of time before the first solution (a loaded machine, a huge part): the greedy start is a
        # complete placement of its own when no spread or failure-domain rule applies
        return _PartResult(_from_hint(part, inp), explanations, False, OUT_OF_TIME if limit > 0 else NO_TIME)
    what = "no placement exists" if status == cp_model.INFEASIBLE else "no placement found in time"
    explanations.append(f"{part.label}: {what} under the spread and failure-domain rules; "
                        "relax spread_zones or --tolerate, or add nodes")
    return _PartResult(None, explanations, False, None)


def _carry_into(part: Part, carry: Carry, groups: Mapping[int, Group], last: bool) -> tuple[Part, Carry]:
    """Carried replicas join this part when it has free devices for them (or is the last one)."""
    if carry and (last or part.free_devices() >= min(groups[gi].tp for gi in carry)):
        return part.with_carry(carry, groups), {}
    return part, carry


def _fallback_notes(prep: Prepared, fallbacks: list[Fallback], parts: int) -> list[str]:
    """One line per component that kept its first-fit start somewhere (``parts``: the parts it solved)."""
    if not fallbacks:
        return []
    reasons = ", ".join(sorted({f.reason for f in fallbacks}))
    if len(prep.parts) == 1:
        return [f"{fallbacks[0].part}: {reasons}, first-fit placement used"]
    return [f"pools {', '.join(sorted(prep.pools))}: first-fit placement used in {len(fallbacks)} of "
            f"{parts} rack blocks ({reasons})"]


def solve_component(prep: Prepared, inp: ComponentInput, budget: Budget) -> ComponentResult:
    """Place one prepared component, part after part, within the budget's deadline."""
    by_index = {g.index: g for g in prep.groups}
    rules = _has_rules(prep.groups, inp.fleet, inp.tolerate)
    out = ComponentResult("placed", [], [], [], 0, 0, len(prep.parts) == 1)
    carry = dict(prep.carry)
    for i, part in enumerate(prep.parts):
        part, carry = _carry_into(part, carry, by_index, i == len(prep.parts) - 1)
        if not part.groups:
            continue
        res = _solve_part(part, inp, budget, rules)
        out.explanations.extend(res.explanations)
        if res.counts is None:
            return ComponentResult("infeasible", [], [], out.explanations, 0, 0, False, out.parts + 1)
        out.parts += 1
        out.counted_parts += part.proven
        out.optimal = out.optimal and res.optimal
        if res.fallback:
            out.fallbacks.append(Fallback(part.label, res.fallback))
        expanding = budget.deadline.now()
        carry = _place_part(out, part, res.counts, carry)
        budget.expanded(budget.deadline.now() - expanding)
    out.explanations.extend(_fallback_notes(prep, out.fallbacks, out.parts))
    out.shortfall = _shortfall(prep, carry)
    out.explanations.extend(s.reason for s in out.shortfall)
    out.status = "shortfall" if out.shortfall else "placed"
    return out


def _place_part(out: ComponentResult, part: Part, counts: _Counts, carry: Carry) -> Carry:
    """Add a part's replicas, moves and kept units; return the carry with its unplaced replicas added."""
    real = part.sites.sites
    started = sum(v for (_, si), v in counts.x.items() if not real[si].virtual)
    started += sum(v for (_, si), v in counts.xm.items() if not real[si].virtual)
    out.replicas.extend(expand(part.groups, real, counts.x, counts.xm))
    out.moves += started - counts.kept
    out.kept += counts.kept
    left: Carry = defaultdict(int, carry)
    for g in part.groups:
        units = counts.x.get((g.index, part.sites.virtual(g.pool)), 0)
        if units:
            left[g.index] += units // g.pp
    return dict(left)


def _shortfall(prep: Prepared, carry: Carry) -> list[Shortfall]:
    """The replicas no part could place, as nodes each pool is short of."""
    by_index = {g.index: g for g in prep.groups}
    x: dict[tuple[int, int], int] = {}
    xm: dict[tuple[int, int], int] = {}
    for gi, n in carry.items():
        g = by_index[gi]
        x[(gi, prep.sites.virtual(g.pool))] = n * g.pp
        if g.memory_pool:
            xm[(gi, prep.sites.virtual(g.memory_pool))] = n * g.mem
    return shortfalls(prep.groups, prep.sites, set(prep.pools), x, xm)
