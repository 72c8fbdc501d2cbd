"""The horizon model: it prices moves, scales up a period ahead of the rise while replicas load, keeps
make-before-break room in full pools, and does not flap on noise around a threshold (no more than one move
per dwell window)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from planner.clock import Deadline
from planner.schema import Role
from planner.solve import Column, Demand, PoolSupply, Problem, SolveOptions
from planner.solve.formulation.transition import Transition
from planner.solve.horizon import (
    HorizonProblem,
    carried_rates,
    dwell_moves,
    horizon_violations,
    moved_services,
    solve_horizon,
)

OPTS = SolveOptions(time_limit_s=20.0, relative_gap=0.0)


def _problem(rate: float, *, max_nodes: int | None = None) -> Problem:
    """One service, two configurations: 'small' carries 1 req/s for $1/h, 'big' 4 req/s for $3/h."""
    pools = (PoolSupply("p", "z", None, 8, max_nodes, 1.0),)
    cols = (Column("small", "svc", Role.UNIFIED, "p", 1, (1.0,)), Column("big", "svc", Role.UNIFIED, "p", 3, (4.0,)))
    return Problem(pools, cols, (Demand("svc", (rate,)),), headroom=1.0)


def _solve(rates: list[float], tr: Transition, current: dict[str, int] | None = None,
           age: dict[str, int] | None = None, max_nodes: int | None = None):
    hp = HorizonProblem(tuple(_problem(r, max_nodes=max_nodes) for r in carried_rates(rates, tr.lookahead())), tr,
                        current or {}, age or {})
    return hp, solve_horizon(hp, OPTS, Deadline.after(20.0))


def test_carried_rates_hold_the_next_periods_rise_while_replicas_load() -> None:
    assert carried_rates([1, 1, 5, 2, 2], 1) == [1, 5, 5, 2, 2]
    assert carried_rates([1, 1, 5, 2, 2], 0) == [1, 1, 5, 2, 2]
    assert Transition(period_s=900, startup_s=300).lookahead() == 1
    assert Transition(period_s=300, startup_s=480).lookahead() == 2


def test_a_rise_is_met_a_period_early_when_replicas_take_minutes_to_load() -> None:
    tr = Transition(period_s=900, startup_s=300, dwell_periods=1, hysteresis=0.0)
    hp, sol = _solve([2.0, 2.0, 6.0, 6.0], tr, current={"small": 2})
    assert sol.status == "optimal" and horizon_violations(hp, sol) == []
    capacity = [p.replicas.get("small", 0) * 1.0 + p.replicas.get("big", 0) * 4.0 for p in sol.plans]
    assert capacity[1] >= 6.0  # period 1 already carries period 2's demand
    assert capacity[0] >= 2.0


def test_start_up_and_drain_are_paid_for_each_replica_moved() -> None:
    tr = Transition(period_s=3600, startup_s=360, drain_s=180, dwell_periods=1, hysteresis=0.0)
    hp, sol = _solve([3.0], tr, current={"small": 1})
    assert sol.plans[0].replicas == {"small": 3}
    # 3 small replicas for an hour, plus two starts paid for 6 minutes each
    assert abs((sol.objective_usd or 0) - (3.0 + 2 * 1.0 * 0.1)) < 1e-6
    hp, sol = _solve([1.0], tr, current={"small": 3})
    assert abs((sol.objective_usd or 0) - (1.0 + 2 * 1.0 * 0.05)) < 1e-6  # two stops drain for 3 minutes


def test_a_full_pool_keeps_room_to_make_before_it_breaks() -> None:
    """Four 1-device 'small' replicas run in a pool of 4 devices; 'big' (3 devices) would be cheaper per
    request, but swapping needs both at once: the plan keeps the smalls rather than a swap that cannot fit."""
    tr = Transition(period_s=3600, startup_s=0, drain_s=0, dwell_periods=1, hysteresis=0.0)
    pools = (PoolSupply("p", "z", None, 4, 1, 1.0),)
    cols = (Column("small", "svc", Role.UNIFIED, "p", 1, (1.0,)), Column("big", "svc", Role.UNIFIED, "p", 3, (4.5,)))
    problem = Problem(pools, cols, (Demand("svc", (4.0,)),), headroom=1.0)
    hp = HorizonProblem((problem,), tr, {"small": 4}, {})
    sol = solve_horizon(hp, OPTS, Deadline.after(20.0))
    assert sol.plans[0].replicas == {"small": 4}
    free = HorizonProblem((replace(problem, pools=(replace(pools[0], max_nodes=2),)),), tr, {"small": 4}, {})
    assert solve_horizon(free, OPTS, Deadline.after(20.0)).plans[0].replicas == {"big": 1}


def test_hysteresis_keeps_a_replica_until_the_spare_work_exceeds_the_margin() -> None:
    tr = Transition(period_s=900, startup_s=0, drain_s=0, dwell_periods=1, hysteresis=0.25)
    _, sol = _solve([2.7], tr, current={"small": 3})
    assert sol.plans[0].replicas == {"small": 3}  # 2 replicas would carry 2.7 with 0 spare (< 25%)
    _, sol = _solve([1.5], tr, current={"small": 3})
    assert sol.plans[0].replicas == {"small": 2}  # 2 carry 1.5 with a third spare: shrink


def test_noise_around_a_threshold_makes_at_most_one_move_per_dwell_window() -> None:
    """Demand wobbles across the size where a fourth replica is needed; the loop re-plans every period
    (receding horizon) and moves at most once in any four consecutive periods."""
    rng = np.random.default_rng(7)
    tr = Transition(period_s=900, startup_s=300, drain_s=60, dwell_periods=4, hysteresis=0.1)
    demand = 3.0 + rng.uniform(-0.4, 0.4, 28)
    current: dict[str, int] = {"small": 3}
    last_move: int | None = None
    moves: list[int] = []
    for t in range(24):
        age = {"svc": t - last_move} if last_move is not None else {}
        hp, sol = _solve(list(demand[t: t + 5]), tr, current, age)
        assert sol.status in ("optimal", "feasible") and horizon_violations(hp, sol) == []
        nxt = sol.plans[0].replicas
        if moved_services(hp.periods[0], current, nxt):
            moves.append(t)
            last_move = t
        current = nxt
    assert all(b - a >= tr.dwell_periods for a, b in zip(moves, moves[1:], strict=False)), moves
    assert len(moves) <= 24 // tr.dwell_periods


def test_a_move_inside_the_dwell_window_is_priced_and_reported() -> None:
    tr = Transition(period_s=900, startup_s=0, drain_s=0, dwell_periods=4, hysteresis=0.0, dwell_violation_usd=0.01)
    hp, sol = _solve([6.0], tr, current={"small": 2}, age={"svc": 1})
    assert sol.plans[0].replicas.get("small", 0) + 4 * sol.plans[0].replicas.get("big", 0) >= 6
    assert dwell_moves(hp, sol) == {"svc": 1}
    tr_dear = replace(tr, dwell_violation_usd=1e6)
    hp, sol = _solve([6.0], tr_dear, current={"small": 2}, age={"svc": 1})
    assert dwell_moves(hp, sol) == {"svc": 1}  # demand must be served: the move happens, at its price


def test_start_ahead_lead_and_carry_follow_the_start_up() -> None:
    assert Transition(period_s=900, startup_s=300).prestart_s() == 600.0  # Ready when the next period begins
    assert Transition(period_s=900, startup_s=300).carried() == 0
    assert Transition(period_s=300, startup_s=480).prestart_s() == 120.0  # Ready two periods on
    assert Transition(period_s=300, startup_s=480).carried() == 1


def test_a_move_begun_ahead_is_period_zeros_move_and_holds_the_dwell_window() -> None:
    """Age 0: the service's move into period 0 began last period (replicas started ahead). Completing it in
    period 0 is free; another move inside the window is priced."""
    tr = Transition(period_s=900, startup_s=0, drain_s=0, dwell_periods=4, hysteresis=0.0, dwell_violation_usd=1e4)
    hp, sol = _solve([2.0, 6.0], tr, current={"small": 2}, age={"svc": 0})
    capacity = sol.plans[0].replicas.get("small", 0) + 4 * sol.plans[0].replicas.get("big", 0)
    assert capacity >= 6.0 and dwell_moves(hp, sol) == {}  # grows in period 0 rather than moving twice
    hp, sol = _solve([2.0, 6.0], tr, current={"small": 2})
    assert sol.plans[0].replicas == {"small": 2}  # no move to complete: wait for period 1
