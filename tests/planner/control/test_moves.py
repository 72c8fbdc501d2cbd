"""The order of a move: start what fits next to the running replicas, stop only what the Ready set can
spare, alternate when a pool is full, and stop (blocked) rather than break before making."""

from __future__ import annotations

from planner.control.moves import Rollout, order_moves, serves, timeline, within_limits
from planner.schema import Role
from planner.solve import Column, Demand, PoolSupply, PowerBudget, Problem


def _problem(rate: float, max_nodes: int, budget: float | None = None) -> Problem:
    pools = (PoolSupply("p", "z", "row" if budget else None, 4, max_nodes, 1.0, nameplate_watts_per_node=1000.0),)
    cols = (Column("a", "svc", Role.UNIFIED, "p", 1, (1.0,)), Column("b", "svc", Role.UNIFIED, "p", 2, (3.0,)))
    budgets = (PowerBudget("row", budget),) if budget else ()
    return Problem(pools, cols, (Demand("svc", (rate,)),), budgets, headroom=1.0)


def test_make_before_break_when_the_pool_holds_both() -> None:
    p = _problem(3.0, max_nodes=2)
    r = order_moves(p, p, {"a": 3}, {"b": 1})
    assert [w.kind for w in r.waves] == ["start", "stop"] and not r.blocked
    assert r.waves[0].running == {"a": 3, "b": 1} and r.waves[1].ready == {"b": 1}
    assert r.started == 1 and r.stopped == 3


def test_a_full_pool_alternates_and_never_leaves_the_service_short() -> None:
    """4 devices: three 'a' (1 device each) run; the target is 'b' (2 devices). Every step keeps the pool
    and, at each stop, the demand; with demand 2 one 'a' gives way first and the 'b' fits after it."""
    p = _problem(3.0, max_nodes=1)
    r = order_moves(p, p, {"a": 3}, {"b": 2})
    for w in r.waves:
        assert within_limits(p, w.running) == []
        if w.kind == "stop":
            assert serves(p, w.ready)
    low = _problem(2.0, max_nodes=1)
    r = order_moves(low, low, {"a": 3}, {"b": 1})  # demand 2: 'a' can give way one at a time
    assert not r.blocked and r.waves[-1].ready == {"b": 1}
    for w in r.waves:
        assert within_limits(low, w.running) == []
        if w.kind == "stop":
            assert serves(low, w.ready)


def test_blocked_when_no_step_is_safe() -> None:
    p = _problem(3.0, max_nodes=1)
    r = order_moves(p, p, {"a": 4}, {"b": 2})  # the pool is full; one 'a' is spare, the other three are needed
    assert r.blocked and "can stop without leaving its service short" in r.blocked
    assert [(w.kind, w.replicas) for w in r.waves] == [("stop", {"a": 1})]
    assert serves(p, r.waves[0].ready)


def test_power_nameplate_is_kept_at_every_step() -> None:
    p = _problem(3.0, max_nodes=4, budget=1500.0)  # one node's nameplate fits, two do not
    r = order_moves(p, p, {"a": 3}, {"b": 2})
    for w in r.waves:
        assert within_limits(p, w.running) == []


def test_timeline_pays_new_replicas_while_they_load() -> None:
    p = _problem(3.0, max_nodes=2)
    r = order_moves(p, p, {"a": 3}, {"b": 1})
    segs = timeline(r, startup_s=300.0, period_s=900.0)
    assert [(s.start_s, s.end_s) for s in segs] == [(0.0, 300.0), (300.0, 900.0)]
    assert segs[0].ready == {"a": 3} and segs[0].paid == {"a": 3, "b": 1} and segs[1].ready == {"b": 1}


def test_replicas_started_ahead_are_paid_from_their_start_not_from_the_period_start() -> None:
    rollout = Rollout({"a": 1}, {"a": 1}, ())
    segments = timeline(rollout, startup_s=300.0, period_s=900.0, ahead={"b": 2}, ahead_s=600.0)
    assert [(s.start_s, s.end_s) for s in segments] == [(0.0, 600.0), (600.0, 900.0)]
    assert segments[0].paid == {"a": 1} and segments[1].paid == {"a": 1, "b": 2}
    assert all(s.ready == {"a": 1} for s in segments)  # Ready only at the next period
    assert len(timeline(rollout, 300.0, 900.0)) == 1
