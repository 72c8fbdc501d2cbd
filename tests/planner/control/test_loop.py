"""The control loop's state between periods: replicas kept when no plan is found keep a routing."""

from __future__ import annotations

from pathlib import Path

from planner.control.loop import ControlLoop
from planner.io.fleetfile import load_fleet
from planner.pipeline import build_inputs
from planner.solve import SolveOptions, solve

ROOT = Path(__file__).resolve().parents[3]


def test_replicas_kept_without_a_plan_keep_a_routing_that_carries_the_demand() -> None:
    fleet = load_fleet(ROOT / "examples" / "quickstart.yaml")
    inputs = build_inputs(fleet)
    loop = ControlLoop(fleet, inputs, menu=frozenset({"none"}))
    rates = {s.id: s.traffic.rate_rps for s in fleet.services}
    best = solve(inputs.problem, SolveOptions(time_limit_s=20.0))
    loop.current = {k: n for k, n in best.replicas.items() if n > 0}
    kept = loop.kept(rates)
    assert {k: n for k, n in kept.replicas.items() if n > 0} == loop.current
    for svc in rates:  # every service's traffic goes somewhere that runs
        shares = [v for (key, _), v in kept.prefill_share.items() if key.split("|")[0] == svc]
        assert shares and sum(shares) > 0
