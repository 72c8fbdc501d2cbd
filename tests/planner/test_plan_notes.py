"""What a plan says about itself: the model's error band per group and whether the plan holds at the p90
error, planning against the band, pipelines only where they are cheaper, every role in every spread zone, and
the quickstart re-planned under these rules."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

import planner.pipeline as pipeline
from planner.catalog import builtin_catalog
from planner.io.fleetfile import load_fleet, parse_fleet
from planner.model.memory import memory_fit
from planner.model.perf import ReplicaShape
from planner.pipeline import plan_fleet
from planner.schema import FleetSpec, Plan, Role

QUICKSTART = Path(__file__).resolve().parents[2] / "examples" / "quickstart.yaml"

DECODE_HEAVY = """\
name: decode-heavy
pools:
  - {id: a10g, device: a10g, devices_per_node: 8, max_nodes: 8, zone: a, price_usd_per_device_hour: 1.0}
services:
  - id: chat
    model: llama-3-8b
    traffic:
      rate_rps: 6
      buckets:
        - {input_tokens: 1024, output_tokens: 256, share: 1.0}
    slo: {ttft_ms: 1000, tpot_ms: 60}
    allowed_roles: [prefill, decode]
    tp_options: [1]
planner:
  pp_options: [1, 2]
"""


@pytest.fixture(scope="module")
def quickstart() -> tuple[FleetSpec, Plan]:
    fleet = load_fleet(QUICKSTART)
    return fleet, plan_fleet(fleet, baselines=False)


def test_every_group_shows_the_models_error_band(quickstart: tuple[FleetSpec, Plan]) -> None:
    _, plan = quickstart
    for g in plan.replica_groups:
        assert g.error_band is not None and g.error_band.scored_on
        assert g.utilisation_at_p90_error is not None and g.utilisation_at_p90_error >= g.utilisation
        assert (g.error_band.decode_p90_pct is not None) == (g.configuration.role is not Role.PREFILL)
    robust = [f for f in plan.findings if f.constraint == "robustness"]
    assert len(robust) == 1 and "p90 error band" in robust[0].message


def test_quickstart_uses_no_needless_pipeline_and_runs_every_role_in_every_zone(
        quickstart: tuple[FleetSpec, Plan]) -> None:
    fleet, plan = quickstart
    zone = {p.id: p.zone for p in fleet.pools}
    explained = {f.constraint for f in plan.findings if f.constraint.startswith("pipeline[")}
    for g in plan.replica_groups:
        # every model of the quickstart fits its device at pp 1 with some TP, so a pipeline needs its finding
        assert g.configuration.pp == 1 or f"pipeline[{g.service}]" in explained
    for svc in fleet.services:
        groups = [g for g in plan.replica_groups if g.service == svc.id]
        roles = {g.configuration.role for g in groups if any(ld.prefill_share + ld.decode_share > 0 for ld in g.load)}
        full = [z for z in set(zone.values()) if roles <= {g.configuration.role for g in groups
                                                            if zone[g.pool] == z}]
        assert len(full) >= svc.spread_zones, svc.id
        # KV caches stay in their zone: each zone's prefill shares are decoded there
        for z in set(zone.values()):
            pre = sum(ld.prefill_share for g in groups if zone[g.pool] == z and g.configuration.role is Role.PREFILL
                      for ld in g.load)
            dec = sum(ld.decode_share for g in groups if zone[g.pool] == z and g.configuration.role is Role.DECODE
                      for ld in g.load)
            assert pre == pytest.approx(dec, abs=1e-4), (svc.id, z)
        assert len({g.configuration.label() for g in groups}) <= fleet.planner.max_configurations_per_service


def test_quickstart_puts_tp_over_two_on_pcie_only_where_nothing_smaller_fits(
        quickstart: tuple[FleetSpec, Plan]) -> None:
    """All-reduce across more than two PCIe-only GPUs is slow (8 GPUs: 0.5 MiB in 503 µs); a plan uses it only
    for a model that fits that device at no smaller TP, with or without a pipeline."""
    fleet, plan = quickstart
    cat = builtin_catalog()
    model = {s.id: s.model for s in fleet.services}
    for g in plan.replica_groups:
        dev = cat.device(g.configuration.device)
        if dev.link_kind == "pcie" and g.configuration.tp > 2:
            m = cat.model(model[g.service])
            assert not any(memory_fit(ReplicaShape(model=m, device=dev, tp=tp, pp=pp)).fits
                           for tp in (1, 2) for pp in fleet.planner.pp_options), g.configuration.label()


def test_planning_against_the_p90_band_costs_more_and_holds_at_it(quickstart: tuple[FleetSpec, Plan]) -> None:
    fleet, plan = quickstart
    robust_fleet = fleet.model_copy(update={"planner": fleet.planner.model_copy(update={"robustness": "p90"})})
    robust = plan_fleet(robust_fleet, baselines=False, marginals=False)
    print(f"\nquickstart ${plan.cost_usd_per_hour:.2f}/h on the model's steps, ${robust.cost_usd_per_hour:.2f}/h "
          "against the p90 error band")
    assert robust.cost_usd_per_hour > plan.cost_usd_per_hour
    # sized on steps that much slower, every group keeps within its capacity there (up to the headroom)
    assert all((g.utilisation_at_p90_error or 0.0) <= 1.0 + 1e-6 for g in robust.replica_groups)
    assert "step times slowed by the 90th-percentile" in next(f.message for f in robust.findings
                                                             if f.constraint == "robustness")


def test_a_pipeline_stays_only_with_the_saving_it_brings() -> None:
    """Llama-3-8B decode on A10G: at PP1 the KV cache left beside the 16 GB of weights binds (1.67 req/s per
    device); PP2 puts half the weights on each stage and runs until TPOT binds (3.64 per device). The plan
    keeps the pipeline and its finding says what plans without one cost."""
    plan = plan_fleet(parse_fleet(DECODE_HEAVY, "decode-heavy.yaml"), baselines=False)
    piped = [g for g in plan.replica_groups if g.configuration.pp > 1]
    assert piped
    notes = [f for f in plan.findings if f.constraint == "pipeline[chat]"]
    assert notes and notes[0].value is not None and notes[0].value > 0
    assert "costs $" in notes[0].message
    # with a single pp the same fleet costs what the finding says more
    flat = parse_fleet(DECODE_HEAVY.replace("pp_options: [1, 2]", "pp_options: [1]"), "flat.yaml")
    assert plan_fleet(flat, baselines=False, marginals=False).cost_usd_per_hour == pytest.approx(
        plan.cost_usd_per_hour + notes[0].value, rel=1e-3)


def test_a_pipeline_not_compared_in_time_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    """When the time left would not get the solve without pipelines past its column table, it is not started:
    the pipeline stays and its finding says it was not compared (no made-up saving)."""
    monkeypatch.setattr(pipeline, "TABLE_S_PER_COLUMN", 1e6)
    plan = plan_fleet(parse_fleet(DECODE_HEAVY, "decode-heavy.yaml"), baselines=False, marginals=False)
    assert [g for g in plan.replica_groups if g.configuration.pp > 1]
    [note] = [f for f in plan.findings if f.constraint == "pipeline[chat]"]
    assert note.value is None and "no plan without such pipelines was found in the time left" in note.message


def test_a_plan_solved_by_service_compares_pipelines_on_their_services_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """Solved service by service, only the service that runs a needless pipeline is solved again without it
    (replan.without_columns): the fleet is solved once, and the finding's saving is what the fleet without
    pipelines costs more."""
    import planner.solve.strategies.choose as choose

    monkeypatch.setattr(choose, "DECOMPOSE_MIN_SHARE_VARIABLES", 0)
    two = DECODE_HEAVY.replace("services:\n", """services:
  - id: other
    model: llama-3-8b
    traffic: {rate_rps: 2, buckets: [{input_tokens: 512, output_tokens: 128, share: 1.0}]}
    slo: {ttft_ms: 2000, tpot_ms: 100}
    tp_options: [1]
""")
    fleets: list[int] = []
    inner = pipeline.solve

    def counting(problem, *args, **kwargs):  # type: ignore[no-untyped-def]
        fleets.append(len(problem.demands))
        return inner(problem, *args, **kwargs)

    monkeypatch.setattr(pipeline, "solve", counting)
    plan = plan_fleet(parse_fleet(two, "two.yaml"), baselines=False, marginals=False)
    assert fleets == [2] and set(plan.solver.backends) == {"services/milp"}
    assert [g for g in plan.replica_groups if g.service == "chat" and g.configuration.pp > 1]
    [note] = [f for f in plan.findings if f.constraint == "pipeline[chat]"]
    assert note.value is not None and note.value > 0
    flat = parse_fleet(two.replace("pp_options: [1, 2]", "pp_options: [1]"), "flat.yaml")
    assert plan_fleet(flat, baselines=False, marginals=False).cost_usd_per_hour == pytest.approx(
        plan.cost_usd_per_hour + note.value, rel=1e-3)


def test_a_plan_solved_again_without_pipelines_keeps_the_bound_the_first_solve_proved(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The solve without needless pipelines runs in half the time left and may prove less than the first did;
    the first's bound holds for the fleet less those columns too (no plan of fewer columns is cheaper), so
    the plan reports the higher one. Here the second solve claims only half its plan as its bound."""
    fleet = parse_fleet(DECODE_HEAVY.replace("pp_options: [1, 2]", "pp_options: [1]").replace(
        "tp_options: [1]", "tp_options: [1, 2]"), "flat.yaml")
    bounds: list[float | None] = []
    inner = pipeline.solve

    def weak_second(problem, *args, **kwargs):  # type: ignore[no-untyped-def]
        sol = inner(problem, *args, **kwargs)
        if bounds:
            sol = replace(sol, best_bound=sol.objective / 2, relative_gap=0.5, status="feasible")
        bounds.append(sol.best_bound)
        return sol

    unused: list[str] = []

    def one_unused_column(inputs, keys):  # type: ignore[no-untyped-def]
        # A column the plan does not run stands in for a needless pipeline (first called with the plan's
        # columns): the plan without it is the same.
        if not unused:
            unused.append(next(c.key for c in inputs.problem.columns if c.key not in set(keys)))
        return {unused[0]}

    monkeypatch.setattr(pipeline, "solve", weak_second)
    monkeypatch.setattr(pipeline, "_needless_pipelines", one_unused_column)
    plan = plan_fleet(fleet, baselines=False, marginals=False)
    assert len(bounds) == 2 and bounds[0] is not None and bounds[1] is not None and bounds[1] < bounds[0]
    assert plan.solver.best_bound == pytest.approx(min(bounds[0], plan.solver.objective))
    assert plan.solver.status == "optimal" and plan.solver.relative_gap is not None
    assert plan.solver.relative_gap <= fleet.planner.relative_gap
