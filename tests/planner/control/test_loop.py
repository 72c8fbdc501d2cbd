"""The control loop's state between periods: replicas kept when no plan is found keep a routing; the next
period's new replicas start ahead, within the pools."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from planner.control.loop import ControlLoop
from planner.control.moves import within_limits
from planner.io.fleetfile import load_fleet
from planner.pipeline import build_inputs
from planner.solve import SolveOptions, solve
from planner.solve.horizon import HorizonSolution

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


def test_the_next_periods_new_replicas_start_ahead_within_the_pools() -> None:
    fleet = load_fleet(ROOT / "examples" / "quickstart.yaml")
    inputs = build_inputs(fleet)
    loop = ControlLoop(fleet, inputs, menu=frozenset({"none"}))
    best = solve(inputs.problem, SolveOptions(time_limit_s=20.0))
    now = {k: n for k, n in best.replicas.items() if n > 0}
    key = max(now, key=lambda k: now[k])
    grown = replace(best, replicas={**now, key: now[key] + 1000})  # far beyond its pool
    hs = HorizonSolution("optimal", (best, grown), None, None, 0.0, 0, 0)
    ahead = loop.ahead_of(hs, now)
    assert set(ahead) == {key} and 0 < ahead[key] < 1000  # what fits next to the running replicas
    assert within_limits(inputs.problem, {**now, key: now[key] + ahead[key]}) == []
    assert within_limits(inputs.problem, {**now, key: now[key] + ahead[key] + 1}) != []
    assert loop.ahead_of(HorizonSolution("optimal", (best, best), None, None, 0.0, 0, 0), now) == {}
