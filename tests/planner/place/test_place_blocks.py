"""Large placements: rack blocks keep every constraint, counted bounds prove a start optimal, the reduced model
has the full model's optima, carried units find room, and parts without time keep first-fit and say so."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ortools.sat.python import cp_model

from planner.catalog import builtin_catalog
from planner.clock import Deadline, FakeClock
from planner.place import PlacementResult, place
from planner.place.bounds import fewest_moves, fewest_nodes, reduction
from planner.place.budget import MIN_SOLVE_S, Budget
from planner.place.hint import greedy_hint
from planner.place.inventory import fleet_inventory
from planner.place.model import ComponentModel, build_model
from planner.place.sites import build_sites, current_units, plan_groups
from planner.schema import (
    SLO,
    Configuration,
    FleetSpec,
    LengthBucket,
    Node,
    Plan,
    Pool,
    ReplicaGroup,
    Service,
    SolverReport,
    Traffic,
)

CAT = builtin_catalog()
TRAFFIC = Traffic(rate_rps=1.0, buckets=[LengthBucket(input_tokens=512, output_tokens=64, share=1.0)])


def fleet_of(racks: list[list[str]], services: int, failed: set[str] = frozenset()) -> FleetSpec:
    nodes = [Node(name=n, rack=f"r{r}", zone="z", state="failed" if n in failed else "ready")
             for r, names in enumerate(racks) for n in names]
    return FleetSpec(pools=[Pool(id="gpu", device="h100-sxm", max_nodes=len(nodes), nodes=nodes)],
                     services=[Service(id=f"s{i}", model="llama-2-7b", traffic=TRAFFIC,
                                       slo=SLO(ttft_ms=500, tpot_ms=80)) for i in range(services)])


def group(service: str, tp: int, replicas: int, pp: int = 1, nodes: list[str] | None = None) -> ReplicaGroup:
    return ReplicaGroup(service=service, pool="gpu", configuration=Configuration(device="h100-sxm", tp=tp, pp=pp),
                        replicas=replicas, cost_usd_per_hour=1.0, expected_watts=0.0, utilisation=0.5,
                        nodes=nodes or [])


def mkplan(groups: list[ReplicaGroup]) -> Plan:
    return Plan(fleet="t", replica_groups=groups, cost_usd_per_hour=0.0,
                solver=SolverReport(backend="t", status="optimal"))


def check(fleet: FleetSpec, plan: Plan, res: PlacementResult) -> None:
    """Every replica once; TP groups inside a usable node, stages in one rack, no device twice."""
    inv = {n.name: n for n in fleet_inventory(fleet).nodes}
    per_group = Counter(r.group for r in res.replicas)
    for gi, g in enumerate(plan.replica_groups):
        assert per_group[gi] == g.replicas
    used: set[tuple[str, int]] = set()
    for r in res.replicas:
        c = plan.replica_groups[r.group].configuration
        assert len(r.stages) == c.pp and all(len(p.slots) == c.tp for p in r.stages)
        assert len({inv[p.node].rack for p in r.stages}) == 1
        for p in r.stages:
            assert inv[p.node].usable
            for slot in p.slots:
                assert 0 <= slot < inv[p.node].devices and (p.node, slot) not in used
                used.add((p.node, slot))


@st.composite
def replacements(draw: st.DrawFn) -> tuple[list[list[str]], Plan, Plan, set[str]]:
    """Racks of nodes, a plan, the plan after a change, and nodes lost meanwhile."""
    racks = [[f"n{r}-{k}" for k in range(draw(st.integers(1, 4)))] for r in range(draw(st.integers(2, 6)))]
    groups = [group(f"s{i % 3}", draw(st.sampled_from([1, 2, 4, 8])), draw(st.integers(1, 4)),
                    pp=draw(st.sampled_from([1, 1, 2])))
              for i in range(draw(st.integers(1, 5)))]
    changed = [g.model_copy(update={"replicas": max(1, g.replicas + draw(st.integers(-2, 2)))}) for g in groups]
    names = [n for r in racks for n in r]
    failed = {n for n in names if draw(st.integers(0, 6)) == 0}
    return racks, mkplan(groups), mkplan(changed), failed


def scatter(racks: list[list[str]], plan: Plan, rng: random.Random) -> Plan:
    """The plan as it might run after many changes: each replica in a random rack, each stage on a random node
    with room there (replicas that find none are left out)."""
    free = {n: 8 for r in racks for n in r}
    groups = []
    for g in plan.replica_groups:
        c, nodes, placed = g.configuration, [], 0
        for _ in range(g.replicas):
            rack = rng.choice(racks)
            stages = []
            for _ in range(c.pp):
                room = [n for n in rng.sample(rack, len(rack)) if free[n] - c.tp * stages.count(n) >= c.tp]
                if not room:
                    break
                stages.append(room[0])
            if len(stages) == c.pp:
                for n in stages:
                    free[n] -= c.tp
                    nodes.extend([n] * c.tp)
                placed += 1
        groups.append(g.model_copy(update={"replicas": placed, "nodes": nodes}))
    return mkplan(groups)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(replacements(), st.randoms(use_true_random=False))
def test_rack_blocks_keep_every_constraint_and_never_beat_the_counted_bound(
        case: tuple[list[list[str]], Plan, Plan, set[str]], rng: random.Random) -> None:
    racks, plan, changed, failed = case
    fleet = fleet_of(racks, 3)
    current = scatter(racks, plan, rng)
    again = place(changed, fleet, CAT, current=current, failed=failed, part_size=1, time_limit_s=5.0, workers=1)
    whole = place(changed, fleet, CAT, current=current, failed=failed, time_limit_s=5.0, workers=1)
    if again.status == "placed":
        check(fleet_of(racks, 3, failed), changed, again)
        assert again.moves_bound is not None and again.moves >= again.moves_bound
        assert again.kept + again.moves == sum(g.configuration.pp * g.replicas for g in changed.replica_groups)
    else:
        assert again.shortfall and all(s.nodes_needed > 0 for s in again.shortfall)
    if whole.status == "placed" and whole.optimal and again.status == "placed":
        assert again.moves >= whole.moves  # blocks never find fewer moves than the proven optimum


def two_racks_with_holes() -> tuple[FleetSpec, Plan, Plan]:
    """In each rack, a shrinking group runs on both nodes and another group on the second: the start keeps the
    shrinking group's first unit (two nodes in use per rack), the optimum its second (one)."""
    fleet = fleet_of([["a0", "a1"], ["b0", "b1"]], 4)
    old = mkplan([group("s0", 4, 2, nodes=["a0"] * 4 + ["a1"] * 4), group("s1", 4, 1, nodes=["a1"] * 4),
                  group("s2", 4, 2, nodes=["b0"] * 4 + ["b1"] * 4), group("s3", 4, 1, nodes=["b1"] * 4)])
    new = mkplan([g.model_copy(update={"replicas": 1 if i in (0, 2) else g.replicas, "nodes": []})
                  for i, g in enumerate(old.replica_groups)])
    return fleet, old, new


def test_cp_sat_improves_a_start_the_counted_bound_does_not_prove() -> None:
    fleet, old, new = two_racks_with_holes()
    for part_size in (1, 10_000):  # rack blocks, then the whole pool
        res = place(new, fleet, CAT, current=old, part_size=part_size, workers=1)
        check(fleet, new, res)
        assert res.moves == 0 and res.moves_proven
        assert res.nodes_used_by_pool["gpu"] == 2 and res.counted_parts == 0 and not res.fallbacks
        assert res.parts == (2 if part_size == 1 else 1)


def test_parts_without_time_keep_first_fit_and_say_so() -> None:
    fleet, old, new = two_racks_with_holes()
    expired = Deadline(end=0.0, clock=FakeClock(t=100.0))
    res = place(new, fleet, CAT, current=old, part_size=1, deadline=expired, workers=1)
    check(fleet, new, res)
    assert res.status == "placed" and res.nodes_used_by_pool["gpu"] == 4  # the start, as it was
    assert [f.reason for f in res.fallbacks] == ["no time left in the deadline"] * 2
    assert "pools gpu: first-fit placement used in 2 of 2 rack blocks (no time left in the deadline)" in (
        res.explanations)


def test_units_the_start_cannot_place_are_carried_to_a_block_that_makes_room() -> None:
    # a half-used node in each rack: the start finds no rack with two empty nodes for the pipeline replica;
    # the first block passes its TP4 unit on to the second block and takes the replica
    fleet = fleet_of([["a0", "a1"], ["b0", "b1"]], 2)
    old = mkplan([group("s0", 4, 2, nodes=["a0"] * 4 + ["b0"] * 4)])
    new = mkplan([group("s0", 4, 2), group("s1", 8, 1, pp=2)])
    res = place(new, fleet, CAT, current=old, part_size=1, workers=1)
    assert res.status == "placed" and res.moves == 3  # one TP4 unit and both stages start
    check(fleet, new, res)
    whole = place(new, fleet, CAT, current=old, workers=1)
    assert whole.status == "placed" and whole.moves == res.moves


def test_a_shortfall_is_the_same_in_blocks_and_whole() -> None:
    fleet = fleet_of([["a0", "a1"], ["b0", "b1"], ["c0"]], 2)
    plan = mkplan([group("s0", 4, 7), group("s1", 8, 2)])  # 44 devices on 40
    blocks = place(plan, fleet, CAT, part_size=1, workers=1)
    whole = place(plan, fleet, CAT, workers=1)
    assert blocks.status == whole.status == "shortfall"
    assert [(s.pool, s.nodes_needed) for s in blocks.shortfall] == [(s.pool, s.nodes_needed) for s in whole.shortfall]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(replacements(), st.randoms(use_true_random=False))
def test_the_reduced_model_has_the_full_models_optimum(case: tuple[list[list[str]], Plan, Plan, set[str]],
                                                       rng: random.Random) -> None:
    racks, plan, changed, _ = case
    fleet = fleet_of(racks, 3)
    current = scatter(racks, plan, rng)
    inv = fleet_inventory(fleet)
    cur_stage, cur_mem = current_units(changed, current, {n.name for n in inv.nodes})
    groups = plan_groups(changed, {})
    sites = build_sites(groups, {"gpu"}, inv.by_pool(), {n for (_, n) in cur_stage}, "none")
    hint = greedy_hint(groups, sites, cur_stage, cur_mem)
    red = reduction(groups, sites, hint, cur_stage, cur_mem)
    if red is None:
        return
    answers = []
    for r in (None, red):
        model = build_model(groups, sites, cur_stage, cur_mem, hint, r)
        model.minimize("moves_then_fragmentation")
        solver = cp_model.CpSolver()
        solver.parameters.num_workers = 1
        solver.parameters.max_time_in_seconds = 30.0
        assert solver.solve(model.m) == cp_model.OPTIMAL
        x, _ = model.values(solver)
        kept = sum(min(v, cur_stage.get((gi, sites.sites[si].names[0]), 0)) for (gi, si), v in x.items()
                   if v and sites.sites[si].individual and not sites.sites[si].virtual)
        answers.append((kept, sum(solver.value(u) for u in model.used_terms) + _constant_nodes(model)))
    assert answers[0] == answers[1]


def _constant_nodes(model: ComponentModel) -> int:
    """Nodes the reduced model holds constant units on (in use whatever the solve)."""
    return sum(1 for terms in model.load.values() if terms and all(isinstance(t, int) for t in terms)
               and any(t != 0 for t in terms))


def test_counted_bounds() -> None:
    assert fewest_nodes(20, [(4, 2), (8, 3)]) == 3
    assert fewest_nodes(30, [(4, 2), (8, 3)]) == 5
    assert fewest_nodes(0, [(8, 3)]) == 0
    groups = plan_groups(mkplan([group("s0", 2, 3), group("s1", 4, 1, pp=2)]), {})
    # group 0 needs 3 units and runs 1; group 1 needs 2 and runs 3 (it shrinks: nothing starts)
    assert fewest_moves(groups, {(0, "a"): 1, (1, "a"): 2, (1, "b"): 1}, {}) == 2


def test_budget_shares_what_is_left_after_the_measured_work() -> None:
    clock = FakeClock()
    budget = Budget(Deadline.after(10.0, clock), units=100)
    # 1 s to build 50 units: 2 s of building and expanding still to come, 0.5 s kept for the result
    assert budget.solve_time(50, built_s=1.0) == pytest.approx((10.0 - 0.5 - 2.0) * 50 / 100)
    clock.advance(9.0)
    assert budget.solve_time(50, built_s=1.0) == 0.0  # 1 s left, less than the work still to come
    assert MIN_SOLVE_S > 0
