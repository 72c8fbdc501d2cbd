"""Placement: constraints hold on random fleets, moves, shortfall feedback, failure domains, explanations."""

from __future__ import annotations

from collections import Counter, defaultdict

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planner.catalog import builtin_catalog
from planner.place import PlacementResult, node_count_feedback, place, placed_plan, tolerance_losses
from planner.place.inventory import fleet_inventory
from planner.schema import (
    SLO,
    Configuration,
    FleetSpec,
    LengthBucket,
    Node,
    Plan,
    Pool,
    ReplicaGroup,
    Role,
    Service,
    SolverReport,
    Traffic,
)
from planner.tolerance import place_plan, plan_and_place

CAT = builtin_catalog()
TRAFFIC = Traffic(rate_rps=1.0, buckets=[LengthBucket(input_tokens=512, output_tokens=64, share=1.0)])


def svc(sid: str, spread: int = 1) -> Service:
    return Service(id=sid, model="llama-2-7b", traffic=TRAFFIC, slo=SLO(ttft_ms=500, tpot_ms=80),
                   spread_zones=spread)


def group(service: str, pool: str, tp: int, replicas: int, pp: int = 1, device: str = "h100-sxm",
          role: Role = Role.UNIFIED, memory_pool: str | None = None, mem: int = 0,
          utilisation: float = 0.5) -> ReplicaGroup:
    cfg = Configuration(device=device, tp=tp, pp=pp, role=role,
                        memory_device="h20" if mem else None, memory_devices=mem)
    return ReplicaGroup(service=service, pool=pool, memory_pool=memory_pool, configuration=cfg,
                        replicas=replicas, cost_usd_per_hour=1.0, expected_watts=0.0, utilisation=utilisation)


def mkplan(groups: list[ReplicaGroup]) -> Plan:
    return Plan(fleet="t", replica_groups=groups, cost_usd_per_hour=0.0,
                solver=SolverReport(backend="t", status="optimal"))


def check_constraints(fleet: FleetSpec, plan: Plan, res: PlacementResult, failed: set[str] = frozenset()) -> None:
    inv = {n.name: n for n in fleet_inventory(fleet).nodes}
    used: set[tuple[str, int]] = set()
    per_group = Counter(r.group for r in res.replicas)
    for gi, g in enumerate(plan.replica_groups):
        assert per_group[gi] == g.replicas
    for r in res.replicas:
        g = plan.replica_groups[r.group]
        c = g.configuration
        assert len(r.stages) == c.pp and len(r.memory) == c.memory_devices
        racks = set()
        for part in r.stages:
            node = inv[part.node]
            assert node.pool == g.pool and node.usable and part.node not in failed
            assert len(part.slots) == c.tp  # a TP group inside one node
            racks.add(node.rack)
        for part in r.memory:
            node = inv[part.node]
            assert node.pool == g.memory_pool
            racks.add(node.rack)
        assert len(racks) == 1  # stages and offload partners share a rack
        for part in (*r.stages, *r.memory):
            for slot in part.slots:
                assert 0 <= slot < inv[part.node].devices
                assert (part.node, slot) not in used
                used.add((part.node, slot))


@st.composite
def fleets(draw: st.DrawFn) -> tuple[FleetSpec, Plan, set[str]]:
    n_nodes = draw(st.integers(2, 12))
    nodes = [Node(name=f"n{i}", zone=f"z{(i // 3) % 2}", rack=f"r{i // 3}",
                  devices=draw(st.sampled_from([4, 8])),
                  state=draw(st.sampled_from(["ready", "ready", "ready", "cordoned"])))
             for i in range(n_nodes)]
    pool = Pool(id="gpu", device="h100-sxm", max_nodes=n_nodes, nodes=nodes, price_usd_per_device_hour=2.0)
    n_services = draw(st.integers(1, 3))
    groups = []
    for s in range(n_services):
        for _ in range(draw(st.integers(1, 2))):
            groups.append(group(f"s{s}", "gpu", draw(st.sampled_from([1, 2, 4])), draw(st.integers(1, 4)),
                                pp=draw(st.sampled_from([1, 1, 2]))))
    fleet = FleetSpec(pools=[pool], services=[svc(f"s{s}", spread=draw(st.sampled_from([1, 1, 2])))
                                              for s in range(n_services)])
    failed = {n.name for n in nodes if n.state == "ready" and draw(st.integers(0, 5)) == 0}
    return fleet, mkplan(groups), failed


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleets())
def test_random_fleets_respect_node_rack_and_slot_constraints(case: tuple[FleetSpec, Plan, set[str]]) -> None:
    fleet, plan, failed = case
    res = place(plan, fleet, CAT, failed=failed, time_limit_s=2.0, workers=1)
    if res.status == "infeasible":  # only a spread rule no usable zone layout satisfies
        assert any("spread" in e for e in res.explanations)
        return
    if res.status == "placed":
        check_constraints(fleet, plan, res, failed)
        inv = fleet_inventory(fleet)
        for s in fleet.services:
            zones = {inv.node(r.stages[0].node).zone for r in res.replicas
                     if plan.replica_groups[r.group].service == s.id}
            usable_zones = {n.zone for n in inv.nodes if n.usable and n.name not in failed}
            replicas = sum(g.replicas for g in plan.replica_groups if g.service == s.id)
            assert len(zones) >= min(s.spread_zones, len(usable_zones), replicas)
        assert sum(res.nodes_used_by_pool.values()) + sum(res.free_nodes_by_pool.values()) == sum(
            res.usable_nodes_by_pool.values())
    else:
        need = sum(g.replicas * g.configuration.devices for g in plan.replica_groups)
        assert res.shortfall and all(s.nodes_needed > 0 for s in res.shortfall)
        # the replicas could not be packed: either too few devices or the nodes fragment them
        usable = res.usable_nodes_by_pool["gpu"]
        assert need > 0 and (node_count_feedback(res)["gpu"] < usable or usable == 0)


def test_fewest_nodes_whole_nodes_stay_free() -> None:
    fleet = FleetSpec(pools=[Pool(id="gpu", device="h100-sxm", max_nodes=6)], services=[svc("a")])
    plan = mkplan([group("a", "gpu", 2, 4), group("a", "gpu", 1, 8)])  # 16 devices = 2 whole nodes
    res = place(plan, fleet, CAT, workers=1)
    check_constraints(fleet, plan, res)
    assert res.nodes_used_by_pool["gpu"] == 2 and res.free_nodes_by_pool["gpu"] == 4


def test_tp_larger_than_node_is_explained() -> None:
    fleet = FleetSpec(pools=[Pool(id="gpu", device="h100-sxm", max_nodes=4)], services=[svc("a")])
    res = place(mkplan([group("a", "gpu", 16, 1)]), fleet, CAT, workers=1)
    assert res.status == "infeasible"
    assert any("cannot fit in one node" in e for e in res.explanations)


def test_fragmentation_shortfall_feeds_back_node_counts() -> None:
    # 3 nodes of 8 with a TP4 replica running on each: two TP8 replicas cannot be added without moving them,
    # and with moves allowed it still needs 3 × 4 + 2 × 8 = 28 > 24 devices.
    fleet = FleetSpec(pools=[Pool(id="gpu", device="h100-sxm", max_nodes=3)], services=[svc("a"), svc("b")])
    plan = mkplan([group("a", "gpu", 4, 3), group("b", "gpu", 8, 2)])
    res = place(plan, fleet, CAT, workers=1)
    assert res.status == "shortfall"
    assert res.shortfall[0].pool == "gpu" and res.shortfall[0].nodes_needed == 1
    assert node_count_feedback(res) == {"gpu": 2}
    assert "more node" in res.explanations[0]


def test_same_plan_again_moves_nothing_and_failed_node_moves_only_its_replicas() -> None:
    fleet = FleetSpec(pools=[Pool(id="gpu", device="h100-sxm", max_nodes=6)], services=[svc("a"), svc("b")])
    plan = mkplan([group("a", "gpu", 4, 3), group("b", "gpu", 2, 5)])
    first = place(plan, fleet, CAT, workers=1)
    current = placed_plan(plan, first)
    again = place(plan, fleet, CAT, current=current, workers=1)
    assert again.moves == 0 and again.kept == 8
    lost = current.replica_groups[0].nodes[0]
    on_lost = sum(1 for r in first.replicas for p in r.stages if p.node == lost)
    after = place(plan, fleet, CAT, current=current, failed={lost}, workers=1)
    check_constraints(fleet, plan, after, failed={lost})
    assert after.moves == on_lost


def test_offload_partners_share_a_rack() -> None:
    nodes_c = [Node(name=f"c{i}", rack=f"r{i}") for i in range(2)]
    nodes_m = [Node(name=f"m{i}", rack=f"r{i}") for i in range(2)]
    fleet = FleetSpec(pools=[Pool(id="gpu", device="h100-sxm", max_nodes=2, nodes=nodes_c),
                             Pool(id="mem", device="h20", max_nodes=2, nodes=nodes_m)], services=[svc("a")])
    plan = mkplan([group("a", "gpu", 2, 6, role=Role.DECODE_OFFLOAD, memory_pool="mem", mem=2)])
    res = place(plan, fleet, CAT, workers=1)
    assert res.status == "placed"
    check_constraints(fleet, plan, res)


def test_zone_spread_and_zone_tolerance() -> None:
    nodes = [Node(name=f"n{i}", zone=f"z{i % 2}", rack=f"r{i}") for i in range(4)]
    fleet = FleetSpec(pools=[Pool(id="gpu", device="h100-sxm", max_nodes=4, nodes=nodes)],
                      services=[svc("a", spread=2)])
    plan = mkplan([group("a", "gpu", 8, 2)])
    res = place(plan, fleet, CAT, workers=1)
    zones = {fleet_inventory(fleet).node(r.stages[0].node).zone for r in res.replicas}
    assert zones == {"z0", "z1"}
    # 4 replicas whose load needs 2 (utilisation 0.5): tolerate zone keeps ≤ 2 in each zone
    plan4 = mkplan([group("a", "gpu", 4, 4, utilisation=0.5)])
    tol = place(plan4, fleet, CAT, tolerate="zone", workers=1)
    assert tol.status == "placed" and not tol.tolerance_losses
    # all four in one zone: losing it leaves none
    one_zone = mkplan([group("a", "gpu", 4, 4, utilisation=0.5)])
    skewed = FleetSpec(pools=[Pool(id="gpu", device="h100-sxm", max_nodes=4, nodes=[
        Node(name=f"n{i}", zone="z0" if i < 2 else "z1", rack=f"r{i}", state="ready" if i < 2 else "cordoned")
        for i in range(4)])], services=[svc("a")])
    packed = place(one_zone, skewed, CAT, workers=1)
    losses = tolerance_losses(one_zone, packed.replicas, fleet_inventory(skewed), "zone")
    assert any(loss.domain == "z0" and loss.replicas_left == 0 for loss in losses)


def test_place_plan_fills_node_per_device_slot() -> None:
    fleet = FleetSpec(pools=[Pool(id="gpu", device="h100-sxm", max_nodes=3)], services=[svc("a")])
    plan = mkplan([group("a", "gpu", 2, 3, pp=2)])
    placed = place_plan(plan, fleet, CAT)
    nodes = placed.replica_groups[0].nodes
    assert len(nodes) == 3 * 4
    per_node = defaultdict(int)
    for n in nodes:
        per_node[n] += 1
    assert all(v % 2 == 0 for v in per_node.values())  # whole TP pairs per node


def test_fragmentation_feedback_replans_with_placeable_node_counts() -> None:
    # 6-device nodes: by device count 2 nodes hold three TP4 replicas, on real nodes only two
    fleet = FleetSpec(pools=[Pool(id="gpu", device="h100-sxm", devices_per_node=6, max_nodes=2)],
                      services=[svc("a")])
    asked: list[int] = []

    def planner(f: FleetSpec, *, current: Plan | None = None) -> Plan:  # counts devices, as the MILP's pool row does
        pool = f.pools[0]
        asked.append(pool.max_nodes)
        return mkplan([group("a", "gpu", 4, pool.max_nodes * pool.devices_per_node // 4)])

    placed = plan_and_place(fleet, CAT, planner=planner)
    assert asked == [2, 1]
    assert placed.replica_groups[0].replicas == 1 and len(placed.replica_groups[0].nodes) == 4
    assert any("re-planned with 1 node" in f.message for f in placed.findings)


def test_failed_nodes_shrink_what_the_planner_may_use() -> None:
    fleet = FleetSpec(pools=[Pool(id="gpu", device="h100-sxm", max_nodes=3)], services=[svc("a")])
    seen: list[int] = []

    def planner(f: FleetSpec, *, current: Plan | None = None) -> Plan:
        seen.append(f.pools[0].max_nodes)
        return mkplan([group("a", "gpu", 8, f.pools[0].max_nodes)])

    placed = plan_and_place(fleet, CAT, failed=["gpu-0001"], planner=planner)
    assert seen == [2]
    assert "gpu-0001" not in placed.replica_groups[0].nodes and len(set(placed.replica_groups[0].nodes)) == 2


def test_rack_and_node_tolerance_cap_replicas_per_domain() -> None:
    nodes = [Node(name=f"n{i}", rack=f"r{i // 2}") for i in range(8)]  # 4 racks of 2 nodes
    fleet = FleetSpec(pools=[Pool(id="gpu", device="h100-sxm", max_nodes=8, nodes=nodes)], services=[svc("a")])
    plan = mkplan([group("a", "gpu", 2, 8, utilisation=0.7)])  # load needs ⌈5.6⌉ = 6 of 8
    inv = fleet_inventory(fleet)
    for kind, cap in (("rack", 2), ("node", 2)):
        res = place(plan, fleet, CAT, tolerate=kind, workers=1)  # type: ignore[arg-type]
        assert res.status == "placed" and not res.tolerance_losses
        per = Counter(inv.node(r.stages[0].node).rack if kind == "rack" else r.stages[0].node
                      for r in res.replicas)
        assert max(per.values()) <= cap
    # without the rule the packing puts 4 replicas on a node: losing it breaks the service
    packed = place(plan, fleet, CAT, workers=1)
    assert tolerance_losses(plan, packed.replicas, inv, "node")
