"""The replay on step times other than the planner's: a measured table or an engine profile catches what the
model got wrong, and the report says which step times it ran on and what that run can show."""

from __future__ import annotations

from pathlib import Path

import yaml

from planner.catalog import builtin_catalog
from planner.io.profiles import default_perf_model
from planner.model.perf import ReplicaShape
from planner.replay import TraceSource
from planner.replay.steptimes import INDEPENDENT_CHECKS, QUEUEING_ONLY
from planner.schema import (
    SLO,
    Configuration,
    FleetSpec,
    LengthBucket,
    Plan,
    Pool,
    ReplicaGroup,
    Role,
    Service,
    SolverReport,
    Traffic,
)
from planner.tolerance import verify_plan

CAT = builtin_catalog()


def _fleet() -> FleetSpec:
    return FleetSpec(pools=[Pool(id="a100", device="a100-80gb", max_nodes=4, price_usd_per_device_hour=3.67)],
                     services=[Service(id="chat", model="llama-2-7b", slo=SLO(ttft_ms=1000, tpot_ms=40),
                                       traffic=Traffic(rate_rps=6.0, buckets=[
                                           LengthBucket(input_tokens=512, output_tokens=128, share=1.0)]))])


def _plan() -> Plan:
    group = ReplicaGroup(service="chat", pool="a100", replicas=1, cost_usd_per_hour=3.67, expected_watts=0.0,
                         configuration=Configuration(device="a100-80gb", tp=1, role=Role.UNIFIED))
    return Plan(fleet="t", cost_usd_per_hour=3.67, solver=SolverReport(backend="t", status="optimal"),
                replica_groups=[group])


def _slow_table(path: Path, factor: float) -> Path:
    """A measured table of llama-2-7b on one A100 whose steps are ``factor`` × the model's."""
    pm = default_perf_model()
    shape = ReplicaShape(model=CAT.model("llama-2-7b"), device=CAT.device("a100-80gb"), tp=1)
    rows = ["model,device,tp,pp,phase,batch,tokens,time_ms"]
    for batch in (1, 2, 4, 8, 16, 32, 64, 128, 256):
        for tokens in (32, 256, 512, 1024, 2048):
            step = factor * pm.decode_step_ms(shape, batch, tokens)
            rows.append(f"llama-2-7b,a100-80gb,1,1,decode,{batch},{tokens},{step:.4f}")
            if batch <= 16:
                rows.append(f"llama-2-7b,a100-80gb,1,1,prefill,{batch},{tokens},"
                            f"{factor * pm.prefill_ms(shape, batch, tokens):.4f}")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_measured_steps_slower_than_the_model_show_in_the_replay(tmp_path: Path) -> None:
    fleet, plan = _fleet(), _plan()
    source = TraceSource(kind="poisson", duration_s=120, seed=2)
    own = verify_plan(plan, fleet, source)
    measured = verify_plan(plan, fleet, source, step_times=_slow_table(tmp_path / "measured.csv", 1.6))
    assert own.step_times == "the planner's performance model" and own.checks == QUEUEING_ONLY
    assert measured.step_times.startswith("the measured table measured.csv (it covered")
    assert measured.checks == INDEPENDENT_CHECKS
    s_own, s_meas = own.services[0], measured.services[0]
    print(f"\nmodel steps: TPOT p90 {s_own.tpot_ms.p90:.1f} ms, attainment {s_own.attainment:.3f}; steps 1.6x: "
          f"{s_meas.tpot_ms.p90:.1f} ms, {s_meas.attainment:.3f} ({measured.step_times})")
    assert s_meas.tpot_ms.p50 > 1.4 * s_own.tpot_ms.p50
    assert own.verified and not measured.verified


def test_an_engine_profile_drives_the_replay(tmp_path: Path) -> None:
    profile = tmp_path / "slow.yaml"
    profile.write_text(yaml.safe_dump({"engine": "slow", "engines": {"slow": {"base": "vllm"}}, "overheads": [
        {"engine": "slow", "device": "a100-80gb", "tp": 1, "prefill_ms_per_layer": 0.0, "decode_ms_per_layer": 0.0,
         "prefill_step_ms": 40.0, "decode_step_ms": 30.0}]}))
    fleet, plan = _fleet(), _plan()
    source = TraceSource(kind="poisson", duration_s=60, seed=2)
    report = verify_plan(plan, fleet, source, step_times=profile)
    assert report.step_times == "the engine profile slow.yaml" and report.checks == INDEPENDENT_CHECKS
    assert report.services[0].tpot_ms.p50 > 30.0
