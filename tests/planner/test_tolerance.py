"""N-1 plans: with --tolerate every single node, rack or zone loss keeps every SLO in replay."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Literal

import pytest
import yaml
from typer.testing import CliRunner

from planner.catalog import fleet_catalog
from planner.cli import app
from planner.pipeline import plan_fleet
from planner.place import DeviceSlots, ReplicaPlacement, tolerance_losses
from planner.place.inventory import fleet_inventory
from planner.replay import TraceSource
from planner.schema import SLO, FleetSpec, LengthBucket, Node, Plan, Pool, ReplicaGroup, Service, Traffic
from planner.tolerance import ToleranceUnreachable, plan_and_place, verify_plan

Kind = Literal["node", "rack", "zone"]
CHAT = Service(id="chat", model="llama-3-8b", slo=SLO(ttft_ms=1000, tpot_ms=60),
               traffic=Traffic(rate_rps=6.0, buckets=[LengthBucket(input_tokens=512, output_tokens=128, share=1.0)]))


def zones_fleet() -> FleetSpec:
    """Three zones of L4 nodes; zone a is a little cheaper, so a plan without tolerance sits there."""
    return FleetSpec(name="three-zones", services=[CHAT], pools=[
        Pool(id=f"l4-{z}", device="l4", devices_per_node=4, max_nodes=3, zone=f"zone-{z}",
             price_usd_per_device_hour=0.80 + 0.01 * i) for i, z in enumerate("abc")])


def racks_fleet() -> FleetSpec:
    """One pool, three racks of two 4-device nodes."""
    nodes = [Node(name=f"n{i}", rack=f"rack{i // 2}") for i in range(6)]
    return FleetSpec(name="three-racks", services=[CHAT], pools=[
        Pool(id="l4", device="l4", devices_per_node=4, max_nodes=6, nodes=nodes, price_usd_per_device_hour=0.8)])


def nodes_fleet() -> FleetSpec:
    """One pool of four 4-device nodes in one rack."""
    return FleetSpec(name="four-nodes", services=[CHAT], pools=[
        Pool(id="l4", device="l4", devices_per_node=4, max_nodes=4, price_usd_per_device_hour=0.8)])


FLEETS = {"zone": zones_fleet, "rack": racks_fleet, "node": nodes_fleet}


@cache
def planned(kind: Kind, tolerate: bool) -> tuple[FleetSpec, Plan]:
    fleet = FLEETS[kind]()
    catalog = fleet_catalog(fleet)

    def planner(f: FleetSpec, *, current: Plan | None = None) -> Plan:
        return plan_fleet(f, current=current, catalog=catalog, baselines=False)

    return fleet, plan_and_place(fleet, catalog, planner=planner, tolerate=kind if tolerate else "none")


def replicas(plan: Plan) -> list[ReplicaPlacement]:
    """Each placed replica with its nodes (device slots are not needed to judge a loss)."""
    out = []
    for gi, g in enumerate(plan.replica_groups):
        per = g.configuration.devices + g.configuration.memory_devices
        for r in range(g.replicas):
            nodes = g.nodes[r * per:(r + 1) * per]
            out.append(ReplicaPlacement(gi, tuple(DeviceSlots(n, (k,)) for k, n in enumerate(nodes))))
    return out


def domain_of(fleet: FleetSpec, kind: Kind) -> dict[str, str]:
    return {n.name: n.name if kind == "node" else n.rack if kind == "rack" else n.zone
            for n in fleet_inventory(fleet).nodes}


def without_domain(plan: Plan, fleet: FleetSpec, kind: Kind, domain: str) -> Plan:
    """The plan after the domain's nodes fail: every replica with a device there is gone."""
    where = domain_of(fleet, kind)
    groups = []
    for g in plan.replica_groups:
        per = g.configuration.devices + g.configuration.memory_devices
        chunks = [g.nodes[r * per:(r + 1) * per] for r in range(g.replicas)]
        alive = [c for c in chunks if all(where[n] != domain for n in c)]
        if alive:
            groups.append(g.model_copy(update={"replicas": len(alive), "nodes": [n for c in alive for n in c]}))
    return plan.model_copy(update={"replica_groups": groups})


def slo_after_each_loss(plan: Plan, fleet: FleetSpec, kind: Kind) -> dict[str, bool]:
    """Domain → whether every service still meets its SLO in a Poisson replay at the planned rate."""
    where = domain_of(fleet, kind)
    out = {}
    used = {where[n] for g in plan.replica_groups for n in g.nodes}
    for d in sorted(set(where.values())):
        if d not in used:
            out[d] = True  # nothing runs there: the plan as a whole is checked on its own
            continue
        left = without_domain(plan, fleet, kind, d)
        served = {g.service for g in left.replica_groups}
        if served != {s.id for s in fleet.services}:
            out[d] = False  # a service with no replica left cannot meet its SLO
            continue
        report = verify_plan(left, fleet, TraceSource(kind="poisson", duration_s=240, seed=3))
        out[d] = all(s.meets_slo for s in report.services)
    return out


@pytest.mark.parametrize("kind", ["zone", "rack", "node"])
def test_tolerant_plan_keeps_every_slo_after_losing_each_domain(kind: Kind) -> None:
    fleet, plan = planned(kind, True)
    survived = slo_after_each_loss(plan, fleet, kind)
    assert len(survived) >= 3 and all(survived.values()), survived
    # the plan itself, all domains up, verifies too
    assert verify_plan(plan, fleet, TraceSource(kind="poisson", duration_s=240, seed=3)).verified


@pytest.mark.parametrize("kind", ["zone", "rack", "node"])
def test_same_fleet_without_tolerance_misses_an_slo_on_some_loss(kind: Kind) -> None:
    fleet, plan = planned(kind, False)
    survived = slo_after_each_loss(plan, fleet, kind)
    assert not all(survived.values()), survived


@pytest.mark.parametrize("kind", ["zone", "rack", "node"])
def test_tolerant_plans_report_no_losses_and_their_cost(kind: Kind) -> None:
    fleet, plan = planned(kind, True)
    _, plain = planned(kind, False)
    assert tolerance_losses(plan, replicas(plan), fleet_inventory(fleet), kind) == ()
    assert tolerance_losses(plain, replicas(plain), fleet_inventory(fleet), kind) != ()
    note = next(f for f in plan.findings if f.constraint == f"tolerate[{kind}]")
    assert note.kind == "note" and note.value == pytest.approx(plan.cost_usd_per_hour - plain.cost_usd_per_hour)
    assert "without" in note.message and plan.cost_usd_per_hour > plain.cost_usd_per_hour
    # utilisation is reported at the real rate: the spare capacity shows as lower utilisation
    busy = sum(g.replicas * g.utilisation for g in plan.replica_groups)
    assert busy < sum(g.replicas for g in plan.replica_groups) * fleet.planner.headroom


def one_zone_fleet() -> FleetSpec:
    return FleetSpec(name="one-zone", services=[CHAT], pools=[
        Pool(id="l4-a", device="l4", devices_per_node=4, max_nodes=4, zone="zone-a",
             price_usd_per_device_hour=0.8)])


def test_one_zone_cannot_survive_its_loss_with_a_clear_message() -> None:
    fleet = one_zone_fleet()
    with pytest.raises(ToleranceUnreachable) as err:
        plan_and_place(fleet, fleet_catalog(fleet), tolerate="zone")
    assert str(err.value) == ("--tolerate zone: service chat can run only in zone-a; losing that zone leaves it "
                              "nothing (give it pools in a second zone)")


def test_pools_too_small_for_the_spare_fail_with_a_clear_message() -> None:
    fleet = zones_fleet()
    fleet = fleet.model_copy(update={"pools": [p.model_copy(update={"max_nodes": 1}) for p in fleet.pools]})
    fleet = fleet.model_copy(update={"services": [CHAT.model_copy(update={
        "traffic": CHAT.traffic.model_copy(update={"rate_rps": 18.0})})]})
    assert plan_and_place(fleet, fleet_catalog(fleet)).replica_groups  # fine without tolerance
    with pytest.raises(ToleranceUnreachable, match=r"cannot hold capacity for every service's whole rate in the "
                                                   r"zones left after losing any one \(.*pool"):
        plan_and_place(fleet, fleet_catalog(fleet), tolerate="zone")


def write(tmp_path: Path, fleet: FleetSpec) -> Path:
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(fleet.model_dump(mode="json", by_alias=True, exclude_defaults=True)))
    return path


def test_cli_shows_the_cost_of_tolerance_and_exits_2_when_impossible(tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["plan", str(write(tmp_path, zones_fleet())), "--place", "--tolerate", "zone",
                             "--no-baselines"])
    assert ok.exit_code == 0, ok.output
    assert "N-1 zone:" in ok.output and "with tolerance vs" in ok.output
    bad = runner.invoke(app, ["plan", str(write(tmp_path, one_zone_fleet())), "--place", "--tolerate", "zone",
                              "--no-baselines"])
    assert bad.exit_code == 2 and bad.exception is None or isinstance(bad.exception, SystemExit)
    assert "--tolerate zone: service chat can run only in zone-a" in bad.output and "Traceback" not in bad.output
    assert len(bad.output.strip().splitlines()) == 1


def mixed_fleet() -> FleetSpec:
    """One 8-device H100 node and four 4-device L4 nodes serving one service."""
    return FleetSpec(name="mixed", services=[CHAT], pools=[
        Pool(id="h100", device="h100-sxm", devices_per_node=8, max_nodes=1, price_usd_per_device_hour=4.0),
        Pool(id="l4", device="l4", devices_per_node=4, max_nodes=4, price_usd_per_device_hour=0.8)])


def test_capacity_not_replica_counts_decides_who_survives_a_node_loss() -> None:
    """One H100 replica carries 80% of the load, four L4 replicas 20%: five replicas, the load 'needs' two.

    Counting replicas, losing the H100 node leaves four ≥ two; in capacity the L4s carry a fraction of it.
    """
    fleet = mixed_fleet()
    _, plain = planned("node", False)
    base = plain.replica_groups[0]
    bucket = base.load[0]

    def group(pool: str, device: str, replicas: int, share: float, util: float) -> ReplicaGroup:
        return base.model_copy(update={
            "pool": pool, "replicas": replicas, "utilisation": util, "nodes": [],
            "configuration": base.configuration.model_copy(update={"device": device, "tp": 1}),
            "load": [bucket.model_copy(update={"prefill_share": share, "decode_share": share})]})

    plan = plain.model_copy(update={"replica_groups": [group("h100", "h100-sxm", 1, 0.8, 0.8),
                                                       group("l4", "l4", 4, 0.2, 0.2)]})
    inv = fleet_inventory(fleet)
    h100 = next(n.name for n in inv.nodes if n.pool == "h100")
    l4 = [n.name for n in inv.nodes if n.pool == "l4"]
    reps = [ReplicaPlacement(0, (DeviceSlots(h100, (0,)),))] + [
        ReplicaPlacement(1, (DeviceSlots(n, (0,)),)) for n in l4]
    losses = tolerance_losses(plan, reps, inv, "node", fleet)
    # the count rule (⌈Σ replicas·utilisation⌉ = 2 ≤ 4 left) finds no loss at all
    assert [(x.domain, x.replicas_left) for x in losses] == [(h100, 4)]
    assert losses[0].capacity_left == pytest.approx(0.85 * 0.2 / 0.8 * 4)  # headroom × L4 share
    assert losses[0].capacity_lost == pytest.approx(0.5)
    # a second H100-sized replica's worth on the L4s (utilisation halved: twice the capacity) survives it
    doubled = plan.model_copy(update={"replica_groups": [plan.replica_groups[0], group("l4", "l4", 4, 0.2, 0.1)]})
    assert tolerance_losses(doubled, reps, inv, "node", fleet) == ()


def test_progress_is_reported_once_per_round() -> None:
    fleet = nodes_fleet()
    catalog = fleet_catalog(fleet)
    lines: list[str] = []

    def planner(f: FleetSpec, *, current: Plan | None = None) -> Plan:
        return plan_fleet(f, current=current, catalog=catalog, baselines=False)

    plan = plan_and_place(fleet, catalog, planner=planner, tolerate="node", progress=lines.append)
    note = next(f for f in plan.findings if f.constraint == "tolerate[node]")
    found = re.search(r"\((\d+) round\(s\)\)", note.message)
    assert found, note.message
    rounds = int(found.group(1))
    assert len(lines) == rounds >= 2
    assert lines[0] == "tolerate node: round 1, planning at the real rates"
    assert lines[1].startswith("tolerate node: round 2, 1 service(s) short (worst: chat loses ")
    assert "planning with rate chat ×" in lines[1] or "min replicas chat" in lines[1]
