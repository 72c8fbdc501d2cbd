"""Solve one component (pools joined by offload partners, spread or failure-domain rules) with CP-SAT."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ortools.sat.python import cp_model

from planner.place.expand import expand, shortfalls
from planner.place.hint import Hint, greedy_hint
from planner.place.inventory import InventoryNode
from planner.place.model import ComponentModel, build_model
from planner.place.result import Objective, ReplicaPlacement, Shortfall, Status, Tolerate
from planner.place.rules import Needs, add_rules
from planner.place.sites import Group, build_sites
from planner.schema import FleetSpec


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


@dataclass(frozen=True)
class _Counts:
    x: dict[tuple[int, int], int]
    xm: dict[tuple[int, int], int]
    kept: int


def _solution(model: ComponentModel, solver: cp_model.CpSolver) -> _Counts:
    return _Counts({k: solver.value(v) for k, v in model.x.items()},
                   {k: solver.value(v) for k, v in model.xm.items()},
                   sum(solver.value(k) for k in model.keep_terms))


def _from_hint(hint: Hint) -> _Counts:
    return _Counts({(g, si): v for (g, si, mem), v in hint.x.items() if not mem},
                   {(g, si): v for (g, si, mem), v in hint.x.items() if mem},
                   sum(hint.keep.values()))


def solve_component(groups: list[Group], pools: set[str], inp: ComponentInput, time_limit_s: float) -> ComponentResult:
    """Place one component's groups within ``time_limit_s`` of CP-SAT time."""
    occupied = {n for (_, n) in inp.cur_stage} | {n for (_, n) in inp.cur_mem}
    sites = build_sites(groups, pools, inp.inv_by_pool, occupied, inp.tolerate)
    hint = greedy_hint(groups, sites, inp.cur_stage, inp.cur_mem)
    model = build_model(groups, sites, inp.cur_stage, inp.cur_mem, hint)
    domain_rules, explanations = add_rules(model, inp.fleet, inp.tolerate, inp.needs)
    model.minimize(inp.objective)
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = time_limit_s
    solver.parameters.num_workers = max(1, inp.workers)
    status = solver.solve(model.m)
    if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        counts = _solution(model, solver)
    elif status != cp_model.INFEASIBLE and not domain_rules:
        # out of time before the first solution (a loaded machine, a huge component): the greedy start
        # is a complete placement of its own when no spread or failure-domain rule applies
        counts = _from_hint(hint)
        explanations.append(f"pools {', '.join(sorted(pools))}: solver out of time, first-fit placement used")
    else:
        what = "no placement exists" if status == cp_model.INFEASIBLE else "no placement found in time"
        explanations.append(
            f"pools {', '.join(sorted(pools))}: {what} under the spread and failure-domain rules; "
            "relax spread_zones or --tolerate, or add nodes")
        return ComponentResult("infeasible", [], [], explanations, 0, 0, False)
    short = shortfalls(groups, sites, pools, counts.x, counts.xm)
    explanations.extend(s.reason for s in short)
    real = sites.sites
    started_units = sum(v for (_, si), v in counts.x.items() if not real[si].virtual)
    started_units += sum(v for (_, si), v in counts.xm.items() if not real[si].virtual)
    reps = expand(groups, real, counts.x, counts.xm)
    return ComponentResult("shortfall" if short else "placed", reps, short, explanations,
                           started_units - counts.kept, counts.kept, status == cp_model.OPTIMAL)
