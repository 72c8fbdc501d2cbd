"""The record of a solve's progress: improvements only, times on the clock it was given, bounds only where they
hold for the fleet, and a last point that is the answer's."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from test_milp_properties import EXACT, FAST, problems

from planner.clock import FakeClock
from planner.solve import Problem, solve
from planner.solve.progress import QUIET_S, Progress, ProgressPoint, format_point


def test_only_improvements_are_recorded_with_the_clock_time() -> None:
    clock = FakeClock(t=50.0)
    shown: list[ProgressPoint] = []
    p = Progress(clock, sink=shown.append)
    clock.advance(0.5)
    p.report(100.0, None, "greedy")
    clock.advance(1.0)
    p.report(120.0, None, "worse")  # a dearer plan is no progress
    p.report(None, 80.0, "lp")
    p.report(99.0, 70.0, "milp")  # a lower bound is no progress either, a cheaper plan is
    assert [(q.seconds, q.incumbent, q.bound, q.stage) for q in p.points] == [
        (0.5, 100.0, None, "greedy"), (1.5, 100.0, 80.0, "lp"), (1.5, 99.0, 80.0, "milp")]
    assert shown == p.points and p.first_plan_seconds() == 0.5
    assert p.at(1.0) == p.points[0] and p.at(0.1) is None
    assert p.points[-1].gap == (99.0 - 80.0) / 99.0


def test_a_creeping_bound_is_recorded_in_steps_and_the_close_keeps_the_last() -> None:
    clock = FakeClock()
    p = Progress(clock)
    p.report(100.0, 90.0, "a")
    p.report(None, 90.00001, "b")  # too small a rise to show at once
    assert len(p.points) == 1 and p.bound == 90.00001
    clock.advance(QUIET_S)
    p.report(None, 90.00002, "c")  # after a quiet second any rise shows
    assert p.points[-1].bound == 90.00002
    p.report(None, 90.00003, "d")
    p.close("end")
    assert p.points[-1].bound == 90.00003 and p.points[-1].stage == "end"


def test_a_restricted_models_view_passes_plans_and_drops_bounds() -> None:
    p = Progress(FakeClock())
    view = p.without_bounds()
    view.report(10.0, 9.0, "restricted")
    assert p.incumbent == 10.0 and p.bound is None


def test_points_read_as_one_line_each() -> None:
    assert format_point(ProgressPoint(1.25, 200.0, 190.0, "highs")) == \
        "[  1.25 s] plan $200.00/h, bound $190.00/h, gap 5.00% (highs)"
    assert format_point(ProgressPoint(3.0, None, None, "candidates")) == "[  3.00 s] candidates done"


@FAST
@given(problems())
def test_a_solves_progress_is_monotone_and_ends_on_its_answer(problem: Problem) -> None:
    record = Progress(FakeClock())
    sol = solve(problem, replace(EXACT, progress=record))
    plans = [q.incumbent for q in record.points if q.incumbent is not None]
    bounds = [q.bound for q in record.points if q.bound is not None]
    assert plans == sorted(plans, reverse=True) and bounds == sorted(bounds)
    if sol.objective is None:
        assert not plans
        return
    assert plans[-1] == pytest.approx(sol.objective, rel=1e-9, abs=1e-9)
    if sol.best_bound is not None:
        # the record's last bound is the answer's, to rounding (HiGHS's callback against its final report)
        assert record.bound == pytest.approx(sol.best_bound, rel=1e-9, abs=1e-9) or sol.best_bound <= record.bound
        assert record.bound is not None and record.bound <= sol.objective + 1e-6 * max(1.0, sol.objective)


@FAST
@given(problems())
def test_a_priced_solves_progress_holds_only_fleet_plans_and_bounds(problem: Problem) -> None:
    # Pricing runs restricted models and, for fleets that fall apart into services, each service alone: their
    # plans and bounds are not the fleet's, and must not show as such.
    record = Progress(FakeClock())
    sol = solve(problem, replace(EXACT, pricing="on", decompose="on", progress=record))
    if sol.objective is None:
        return
    assert all(q.incumbent is None or q.incumbent >= sol.objective - 1e-6 for q in record.points)
    assert all(q.bound is None or q.bound <= sol.objective + 1e-6 for q in record.points)
