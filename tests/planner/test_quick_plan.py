"""The quick pass of large fleets: a plan of unified single-stage replicas first, the answer when pricing every
configuration does not end in time, and never a dearer answer than it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import planner.pipeline as pipeline
from planner.clock import Deadline, FakeClock
from planner.io.fleetfile import load_fleet
from planner.pipeline import configuration_count, plan_fleet, quick_fleet
from planner.plan_notes import GroupLoad, groups_notes
from planner.schema import FleetSpec, Role
from planner.solve.progress import Progress

QUICKSTART = Path(__file__).resolve().parents[2] / "examples" / "quickstart.yaml"


@pytest.fixture(scope="module")
def fleet() -> FleetSpec:
    return load_fleet(QUICKSTART)


def test_configuration_count_counts_pools_tp_pp_and_roles(fleet: FleetSpec) -> None:
    o = fleet.planner
    pools = sum(1 for p in fleet.pools if p.max_nodes != 0)
    assert configuration_count(fleet) == len(fleet.services) * pools * len(o.tp_options) * len(o.pp_options) * len(
        o.roles)
    small = quick_fleet(fleet)
    assert small is not None and configuration_count(small) == len(fleet.services) * pools * len(o.tp_options)


def test_no_quick_pass_where_a_service_may_not_run_unified(fleet: FleetSpec) -> None:
    svc = fleet.services[0].model_copy(update={"allowed_roles": [Role.PREFILL, Role.DECODE]})
    assert quick_fleet(fleet.model_copy(update={"services": [svc, *fleet.services[1:]]})) is None


def test_quick_plan_comes_first_and_the_answer_is_never_dearer(fleet: FleetSpec,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    plain = plan_fleet(fleet, baselines=False, marginals=False)
    monkeypatch.setattr(pipeline, "QUICK_MIN_CONFIGURATIONS", 0)
    record = Progress(Deadline.after(60).clock)
    plan = plan_fleet(fleet, baselines=False, marginals=False, progress=record)
    quick = [p for p in record.points if p.stage == "quick"]
    assert quick and record.points[0].stage == "quick" and quick[0].incumbent is not None
    assert record.seconds_at("quick") <= (record.seconds_at("candidates") or 0.0)
    assert plan.cost_usd_per_hour <= quick[0].incumbent + 1e-6
    assert plan.cost_usd_per_hour == pytest.approx(plain.cost_usd_per_hour, rel=fleet.planner.relative_gap)


def test_quick_plan_is_the_answer_when_pricing_runs_out_of_time(fleet: FleetSpec,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine stalls after the quick pass: the full pricing finds the deadline gone and the quick plan is
    answered, unified single-stage replicas only, with a note that says so and no baselines."""
    monkeypatch.setattr(pipeline, "QUICK_MIN_CONFIGURATIONS", 0)
    clock = FakeClock()
    real = pipeline.build_inputs
    calls: list[bool] = []

    def stalls_after_first(*args: Any, **kwargs: Any) -> pipeline.PlanInputs:
        out = real(*args, **kwargs)
        if not calls:
            clock.advance(100.0)
        calls.append(True)
        return out

    monkeypatch.setattr(pipeline, "build_inputs", stalls_after_first)
    plan = plan_fleet(fleet, deadline=Deadline.after(10.0, clock))
    assert len(calls) == 1  # the full pricing raised at its first look at the deadline
    assert plan.replica_groups and all(g.configuration.role is Role.UNIFIED and g.configuration.pp == 1
                                       for g in plan.replica_groups)
    assert plan.baselines == [] and plan.solver.status == "feasible" and plan.solver.best_bound is None
    note = [f for f in plan.findings if f.constraint == "time_limit"]
    assert len(note) == 1 and "unified single-stage replicas only" in note[0].message
    served: dict[str, float] = {}
    for g in plan.replica_groups:
        served[g.service] = served.get(g.service, 0.0) + sum(ld.decode_share for ld in g.load)
    buckets = {s.id: len(s.traffic.buckets) for s in fleet.services}
    assert served == pytest.approx({s: float(n) for s, n in buckets.items()})


def test_notes_of_many_groups_match_each_group_alone(fleet: FleetSpec) -> None:
    inputs = pipeline.build_inputs(fleet)
    plan = plan_fleet(fleet, baselines=False, marginals=False)
    assert inputs.perf is not None and inputs.calibration is not None
    cat = pipeline.fleet_catalog(fleet)
    rates = {d.service: d.bucket_rates_rps for d in inputs.problem.demands}
    groups = []
    for g in plan.replica_groups:
        key = pipeline.column_key(g.service, g.pool, g.configuration, g.memory_pool)
        c = inputs.candidates[key]
        groups.append(GroupLoad(c, inputs.buckets[g.service], rates[g.service], g.load, g.replicas))
    together = groups_notes(inputs.perf, cat, inputs.calibration, groups)
    alone = [groups_notes(inputs.perf, cat, inputs.calibration, [g])[0] for g in groups]
    assert together == alone
    assert [u for _, u in together] == [g.utilisation_at_p90_error for g in plan.replica_groups]
    assert all(u is not None and u > 0 for _, u in together)


def test_quick_plan_is_the_answer_when_pricing_leaves_no_time_to_solve(fleet: FleetSpec,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Pricing every configuration ends 0.2 s before the deadline: no solve starts (it would overrun the
    limit), the quick plan is the answer and says why."""
    monkeypatch.setattr(pipeline, "QUICK_MIN_CONFIGURATIONS", 0)
    clock = FakeClock()
    real_build, real_solve = pipeline.build_inputs, pipeline.solve
    calls: list[bool] = []
    solves: list[bool] = []

    def slow_second(*args: Any, **kwargs: Any) -> pipeline.PlanInputs:
        out = real_build(*args, **kwargs)
        if calls:
            clock.advance(9.8 - clock.now())
        calls.append(True)
        return out

    def counted(*args: Any, **kwargs: Any) -> Any:
        solves.append(True)
        return real_solve(*args, **kwargs)

    monkeypatch.setattr(pipeline, "build_inputs", slow_second)
    monkeypatch.setattr(pipeline, "solve", counted)
    plan = plan_fleet(fleet, deadline=Deadline.after(10.0, clock))
    assert len(calls) == 2 and solves == []
    assert plan.replica_groups and all(g.configuration.role is Role.UNIFIED for g in plan.replica_groups)
    [note] = [f for f in plan.findings if f.constraint == "time_limit"]
    assert "left no time to solve" in note.message
    # Every configuration was priced, so the services' bucket floors bound the fleet: the gap is honest.
    rep = plan.solver
    assert rep.best_bound is not None and rep.objective is not None and 0 < rep.best_bound <= rep.objective
    assert rep.relative_gap == pytest.approx((rep.objective - rep.best_bound) / rep.objective)


def test_no_deadline_plans_to_the_end(fleet: FleetSpec, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a deadline (Deadline.never) no stage's share of it is NaN: the quick pass, the pricing and the
    solve all run, and the answer is the full model's."""
    monkeypatch.setattr(pipeline, "QUICK_MIN_CONFIGURATIONS", 0)
    plan = plan_fleet(fleet, baselines=False, deadline=Deadline.never())
    assert not [f for f in plan.findings if f.constraint == "time_limit"]
    assert plan.solver.status == "optimal" and plan.solver.relative_gap is not None
    assert plan.solver.relative_gap <= fleet.planner.relative_gap


def test_the_quick_answer_goes_without_a_bound_where_bounding_would_overrun(fleet: FleetSpec,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Pricing every configuration ends with time left for neither a solve nor the column table the services'
    floors need (a large fleet on a slow machine): the quick plan is answered at once, without a bound rather
    than past the deadline, dominated columns are not pruned (only a solve would gain), and nothing is solved."""
    monkeypatch.setattr(pipeline, "QUICK_MIN_CONFIGURATIONS", 0)
    monkeypatch.setattr(pipeline, "TABLE_S_PER_COLUMN", 1.0)  # seconds a column: never in time
    real_solve, real_prune = pipeline.solve, pipeline.prune_dominated
    solves: list[bool] = []
    prunes: list[int] = []

    def counted(*args: Any, **kwargs: Any) -> Any:
        solves.append(True)
        return real_solve(*args, **kwargs)

    def pruning(problem: Any) -> Any:
        prunes.append(len(problem.columns))
        return real_prune(problem)

    monkeypatch.setattr(pipeline, "solve", counted)
    monkeypatch.setattr(pipeline, "prune_dominated", pruning)
    plan = plan_fleet(fleet, deadline=Deadline.after(60.0))
    assert solves == [] and len(prunes) == 1  # the quick pass's small problem only
    [note] = [f for f in plan.findings if f.constraint == "time_limit"]
    assert "left no time to solve or to bound the plan" in note.message
    assert plan.solver.best_bound is None and plan.solver.relative_gap is None and plan.solver.status == "feasible"
    assert plan.replica_groups and all(g.configuration.role is Role.UNIFIED for g in plan.replica_groups)
