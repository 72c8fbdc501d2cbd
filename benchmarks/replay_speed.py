"""Replay speed: the 1-hour Azure conversation trace (19,366 requests) against a 50-replica plan.

Llama-2-7B on A100-80GB, TP1 unified, 50 replicas, step times from the shipped performance model. Prints
one JSON line with the wall time and what the replay saw.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from planner.catalog import builtin_catalog
from planner.io.profiles import shipped_calibration
from planner.io.traces import load_trace
from planner.model.roofline import RooflinePerfModel
from planner.replay import PerfStepTimes, TraceSource, build_workload, replay
from planner.schema import (
    SLO,
    Configuration,
    FleetSpec,
    Plan,
    Pool,
    ReplicaGroup,
    Service,
    SolverReport,
    Traffic,
)

TRACE = Path(__file__).parent / "data" / "traces" / "azure_llm_2023" / "AzureLLMInferenceTrace_conv.csv"


def main() -> None:
    catalog = builtin_catalog()
    fleet = FleetSpec(
        pools=[Pool(id="a100", device="a100-80gb", max_nodes=7, price_usd_per_device_hour=3.67)],
        services=[Service(id="conv", model="llama-2-7b", traffic=Traffic(rate_rps=5.4, trace_file=str(TRACE)),
                          slo=SLO(ttft_ms=1000, tpot_ms=100))],
    )
    plan = Plan(fleet="replay", replica_groups=[ReplicaGroup(
        service="conv", pool="a100", configuration=Configuration(device="a100-80gb", tp=1), replicas=50,
        cost_usd_per_hour=50 * 3.67, expected_watts=0.0)], cost_usd_per_hour=50 * 3.67,
        solver=SolverReport(backend="synthetic", status="optimal"))
    t0 = time.perf_counter()
    workload = build_workload(fleet, TraceSource(kind="file", path=TRACE, keep_trace_rate=True),
                              trace=load_trace(TRACE))
    load_s = time.perf_counter() - t0
    times = PerfStepTimes(RooflinePerfModel(shipped_calibration()), fleet, catalog)
    t0 = time.perf_counter()
    report = replay(plan, fleet, catalog, times, workload)
    replay_s = time.perf_counter() - t0
    svc = report.services[0]
    print(json.dumps({
        "requests": svc.requests, "replicas": 50, "trace_span_s": round(report.span_s, 1),
        "load_s": round(load_s, 2), "replay_s": round(replay_s, 2), "completed": svc.completed,
        "ttft_p90_ms": round(svc.ttft_ms.p90, 1), "tpot_p90_ms": round(svc.tpot_ms.p90, 2),
        "attainment": round(svc.attainment, 4), "mean_power_kw": round(report.mean_power_watts / 1e3, 2),
        "utilisation": round(report.groups[0].utilisation, 3),
    }))


if __name__ == "__main__":
    main()
