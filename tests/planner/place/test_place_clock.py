"""Placement reads time only through the Deadline it is given; no clock reads under place or replay."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from planner.catalog import builtin_catalog
from planner.clock import Deadline, FakeClock
from planner.place import place
from planner.schema import (
    SLO,
    Configuration,
    FleetSpec,
    LengthBucket,
    Plan,
    Pool,
    ReplicaGroup,
    Service,
    SolverReport,
    Traffic,
)

CAT = builtin_catalog()
ROOT = Path(__file__).resolve().parents[3]


def case() -> tuple[FleetSpec, Plan]:
    traffic = Traffic(rate_rps=1.0, buckets=[LengthBucket(input_tokens=512, output_tokens=64, share=1.0)])
    fleet = FleetSpec(pools=[Pool(id="a", device="h100-sxm", max_nodes=4), Pool(id="b", device="l4", max_nodes=4)],
                      services=[Service(id="s", model="llama-2-7b", traffic=traffic, slo=SLO(ttft_ms=500, tpot_ms=80))])
    groups = [ReplicaGroup(service="s", pool=p, replicas=3, cost_usd_per_hour=1.0, expected_watts=0.0,
                           configuration=Configuration(device=d, tp=2)) for p, d in (("a", "h100-sxm"), ("b", "l4"))]
    return fleet, Plan(fleet="t", replica_groups=groups, cost_usd_per_hour=0.0,
                       solver=SolverReport(backend="t", status="optimal"))


def test_placement_runs_on_a_fake_clock() -> None:
    fleet, plan = case()
    clock = FakeClock(tick=0.5)  # every reading moves time on by half a second
    res = place(plan, fleet, CAT, deadline=Deadline.after(30.0, clock), workers=1)
    assert res.status == "placed" and len(res.replicas) == 6
    # the deadline's reading at the start was at t = 1.0 and the last one is the clock's time now: the
    # seconds reported are the fake clock's, not the process's
    assert res.solve_seconds == pytest.approx(clock.t - 1.0) and res.solve_seconds >= 1.0
    assert (res.solve_seconds / 0.5).is_integer()


def test_an_expired_deadline_still_places_every_replica() -> None:
    fleet, plan = case()
    clock = FakeClock(t=100.0)
    res = place(plan, fleet, CAT, deadline=Deadline(end=50.0, clock=clock), workers=1)
    assert res.status == "placed" and res.solve_seconds == 0.0
    # no time for CP-SAT, and none needed: each pool's first-fit start uses the fewest nodes there are
    assert res.parts == res.counted_parts == 2 and not res.fallbacks and res.optimal


@pytest.mark.parametrize("package", ["planner/place", "planner/replay"])
def test_no_clock_reads_under_placement_and_replay(package: str) -> None:
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                assert all(a.name not in ("time", "datetime") for a in node.names), path
            if isinstance(node, ast.ImportFrom):
                assert node.module not in ("time", "datetime"), path
