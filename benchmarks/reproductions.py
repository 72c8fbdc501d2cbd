"""Public results the planner should reproduce, each run through ``plan_fleet`` on a shipped example.

1. DistServe (OPT-13B, A100, 512 in / 64 out): disaggregation against colocation, per-GPU rate and the
   prefill:decode GPU ratio, at Figure 1's SLOs (TTFT 0.4 s / TPOT 0.04 s) and at the chatbot SLOs
   (TTFT 0.2 s / TPOT 0.1 s). Then where the gap to the paper's per-GPU rates comes from: the capacity
   model with TTFT counted as DistServe counts it (its prefill instance returns the first token), a replay of
   DistServe's own fitted step times through the same queues, and the model with those steps 12% slower.
2. Lamina (LLaMA3-70B long context, H100 + H20): attention offload against H100-only decode, decode
   throughput per dollar.
3. Mélange (Llama-2-7B, L4/A10G/A100/H100, mixed workload): the mixed plan against the best single type
   over a rate sweep and two price books.

Prints a table per study and ends with one JSON line of the figures.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from planner.catalog import builtin_catalog  # noqa: E402
from planner.io.distserve import load_distserve  # noqa: E402
from planner.io.fleetfile import load_fleet  # noqa: E402
from planner.io.profiles import default_perf_model  # noqa: E402
from planner.model.capacity import ServingLimits, capacity_table  # noqa: E402
from planner.model.perf import ReplicaShape  # noqa: E402
from planner.pipeline import plan_fleet  # noqa: E402
from planner.replay import Arrivals, ReplayOptions, StepTimes, max_rate_meeting_slo, replay  # noqa: E402
from planner.schema import (  # noqa: E402
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

# DistServe's Figure 1 (its real system, one A100 each): per-GPU rates at P90 TTFT 0.4 s / TPOT 0.04 s.
DISTSERVE_PAPER = {"prefill": 5.6, "decode": 10.0, "colocated": 1.6, "disaggregated": 3.3}
DISTSERVE_FITS = ROOT / "benchmarks/data/profiles/distserve"
FIG1 = SLO(ttft_ms=400, tpot_ms=40, percentile=90)
# A step slowdown of DistServe's fits under which the model meets all four of the paper's rates.
DISTSERVE_STEP_SLOWDOWN = 1.12


def with_service(fleet: FleetSpec, **updates: object) -> FleetSpec:
    """The fleet with its first service's fields replaced (traffic.rate_rps via ``rate_rps``, slo via ``slo``)."""
    svc = fleet.services[0]
    if "rate_rps" in updates:
        updates["traffic"] = svc.traffic.model_copy(update={"rate_rps": updates.pop("rate_rps")})
    if "slo" in updates:
        ttft, tpot = updates.pop("slo")  # type: ignore[misc]
        updates["slo"] = svc.slo.model_copy(update={"ttft_ms": ttft, "tpot_ms": tpot})
    return fleet.model_copy(update={"services": [Service.model_validate(svc.model_dump() | updates)]})


def gpus(plan: Plan, role: Role | None = None) -> int:
    return sum(g.replicas * (g.configuration.devices + g.configuration.memory_devices)
               for g in plan.replica_groups if role is None or g.configuration.role is role)


def distserve(ttft_ms: float, tpot_ms: float) -> dict[str, float]:
    """Per-GPU rate of the planner's choice and of colocation only; prefill and decode GPUs."""
    fleet = with_service(load_fleet(ROOT / "examples/distserve-opt13b.yaml"), slo=(ttft_ms, tpot_ms))
    rate = fleet.services[0].traffic.rate_rps
    best = plan_fleet(fleet, baselines=False)
    colo = plan_fleet(with_service(fleet, allowed_roles=[Role.UNIFIED]), baselines=False)
    return {"ttft_ms": ttft_ms, "tpot_ms": tpot_ms, "per_gpu_rps": rate / gpus(best),
            "colocated_per_gpu_rps": rate / gpus(colo), "ratio": gpus(colo) / gpus(best),
            "prefill_gpus": gpus(best, Role.PREFILL), "decode_gpus": gpus(best, Role.DECODE),
            "unified_gpus": gpus(best, Role.UNIFIED)}


def _rates(prefill: float, decode: float, colocated: float) -> dict[str, float]:
    """Per-GPU rates, with DistServe's 2 prefill + 1 decode GPUs for the disaggregated one."""
    return {"prefill": prefill, "decode": decode, "colocated": colocated,
            "disaggregated": min(2 * prefill, decode) / 3}


def distserve_model(slowdown: float = 1.0) -> dict[str, float]:
    """The capacity model (engine ``vllm-2023``) at Figure 1's SLOs with TTFT counted at the prefill."""
    cat = builtin_catalog()
    shape = ReplicaShape(model=cat.model("opt-13b"), device=cat.device("a100-80gb"), tp=1)
    lim = ServingLimits(handoff_in_ttft=False, prefill_slowdown=slowdown, decode_slowdown=slowdown)
    b = [LengthBucket(input_tokens=512, output_tokens=64, share=1.0)]
    p, d, u = (capacity_table(default_perf_model("vllm-2023"), shape, r, b, FIG1, lim)[0].rps
               for r in (Role.PREFILL, Role.DECODE, Role.UNIFIED))
    return _rates(p, d, u)


def _one_gpu_plan(*groups: tuple[Role, int]) -> Plan:
    return Plan(fleet="distserve", cost_usd_per_hour=0.0, solver=SolverReport(backend="-", status="optimal"),
                replica_groups=[ReplicaGroup(service="chat", pool="a100", replicas=n, expected_watts=0.0,
                                             cost_usd_per_hour=0.0,
                                             configuration=Configuration(device="a100-80gb", tp=1, role=role))
                                for role, n in groups])


def distserve_replay(fit: str = "vllm") -> dict[str, float]:
    """Largest rates a replay of DistServe's own fitted step times (``profiler-a100-80g.<fit>.json``) sustains
    with 90% of requests meeting both targets, first token at the prefill, vLLM's 2023 batch limits."""
    times: StepTimes = load_distserve(DISTSERVE_FITS / f"profiler-a100-80g.{fit}.json",
                                      DISTSERVE_FITS / "max_num_tokens.csv", "facebook/opt-13b")
    opts = ReplayOptions(chunked_prefill=False, max_batched_tokens=2560, max_batch=256,
                         first_token_from_prefill=True)
    cat = builtin_catalog()

    def fleet(ttft: float, tpot: float) -> FleetSpec:
        return FleetSpec(pools=[Pool(id="a100", device="a100-80gb", max_nodes=100, price_usd_per_device_hour=1.0)],
                         services=[Service(id="chat", model="opt-13b", slo=SLO(ttft_ms=ttft, tpot_ms=tpot),
                                           traffic=Traffic(rate_rps=1.0, buckets=[
                                               LengthBucket(input_tokens=512, output_tokens=64, share=1.0)]))])

    def goodput(p: Plan, f: FleetSpec) -> float:
        def ok(rate: float) -> bool:
            rng = np.random.default_rng(0)
            arr = {"chat": Arrivals(np.cumsum(rng.exponential(1 / rate, 1500)), np.full(1500, 512), np.full(1500, 64))}
            return replay(p, f, cat, times, arr, opts).services[0].attainment >= FIG1.percentile / 100
        return max_rate_meeting_slo(ok, 0.1, 60.0, tolerance_rps=0.05)

    return _rates(goodput(_one_gpu_plan((Role.PREFILL, 1), (Role.DECODE, 8)), fleet(FIG1.ttft_ms, 1e9)),
                  goodput(_one_gpu_plan((Role.PREFILL, 12), (Role.DECODE, 1)), fleet(1e9, FIG1.tpot_ms)),
                  goodput(_one_gpu_plan((Role.UNIFIED, 1)), fleet(FIG1.ttft_ms, FIG1.tpot_ms)))


def lamina() -> dict[str, float | str]:
    """Decode $/h with and without the H20 pool at the same traffic; the offload configuration chosen."""
    fleet = load_fleet(ROOT / "examples/lamina-llama3-70b.yaml")
    with_h20 = plan_fleet(fleet, baselines=False)
    h100_only = plan_fleet(fleet.model_copy(update={"pools": [p for p in fleet.pools if p.device != "h20"]}),
                           baselines=False)

    def decode_cost(p: Plan) -> float:
        return sum(g.cost_usd_per_hour for g in p.replica_groups if g.configuration.role is not Role.PREFILL)

    offload = [g.configuration.label() for g in with_h20.replica_groups
               if g.configuration.role is Role.DECODE_OFFLOAD]
    return {"decode_usd_per_hour_offload": decode_cost(with_h20), "decode_usd_per_hour_h100": decode_cost(h100_only),
            "throughput_per_usd_ratio": decode_cost(h100_only) / decode_cost(with_h20),
            "offload_configuration": ", ".join(offload) or "none"}


def melange(rates: list[float], books: list[str]) -> list[dict[str, float | str]]:
    """Mixed plan against the best single device type for each rate and price book."""
    base = load_fleet(ROOT / "examples/melange-mixed.yaml")
    rows: list[dict[str, float | str]] = []
    for book in books:
        pools = [p.model_copy(update={"price_book": book}) for p in base.pools]
        for rate in rates:
            fleet = with_service(base.model_copy(update={"pools": pools}), rate_rps=rate)
            plan = plan_fleet(fleet)
            single = min(b.cost_usd_per_hour for b in plan.baselines if b.cost_usd_per_hour is not None)
            rows.append({"prices": book, "rate_rps": rate, "mixed_usd_per_hour": plan.cost_usd_per_hour,
                         "single_usd_per_hour": single, "saving": 1 - plan.cost_usd_per_hour / single,
                         "mix": ", ".join(f"{k} {v}" for k, v in plan.devices_by_type.items())})
    return rows


def main() -> None:
    t0 = time.perf_counter()
    print("DistServe OPT-13B / A100, 512 in / 64 out (paper: 2 prefill + 1 decode GPU, 2.1x colocated per GPU)")
    ds = [distserve(400, 40), distserve(200, 100)]
    print(f"{'TTFT ms':>8} {'TPOT ms':>8} {'plan rps/GPU':>13} {'colocated':>10} {'ratio':>6} {'prefill:decode':>15}")
    for r in ds:
        print(f"{r['ttft_ms']:>8.0f} {r['tpot_ms']:>8.0f} {r['per_gpu_rps']:>13.2f} "
              f"{r['colocated_per_gpu_rps']:>10.2f} {r['ratio']:>6.2f} "
              f"{r['prefill_gpus']:>7.0f}:{r['decode_gpus']:<7.0f}")
    print("\nWhere the gap comes from (req/s per GPU at Figure 1's SLOs; disaggregated = 2 prefill + 1 decode GPU)")
    rows = {"paper (its real system)": DISTSERVE_PAPER,
            "model, TTFT at the prefill": distserve_model(),
            "replay of DistServe's vLLM fit": distserve_replay("vllm"),
            "replay of DistServe's own fit": distserve_replay("distserve"),
            f"model, steps x{DISTSERVE_STEP_SLOWDOWN}": distserve_model(DISTSERVE_STEP_SLOWDOWN)}
    print(f"{'':<34} {'prefill':>8} {'decode':>8} {'colocated':>10} {'disagg.':>8}")
    for name, r in rows.items():
        print(f"{name:<34} {r['prefill']:>8.2f} {r['decode']:>8.2f} {r['colocated']:>10.2f} {r['disaggregated']:>8.2f}")
    print("\nLamina LLaMA3-70B, 8k context (paper: +16-90% throughput per dollar with 2xH100 + 4xH20)")
    la = lamina()
    print(f"decode $/h with H20 {la['decode_usd_per_hour_offload']:.2f} ({la['offload_configuration']}), "
          f"H100 only {la['decode_usd_per_hour_h100']:.2f}: throughput per $ x{la['throughput_per_usd_ratio']:.2f}")
    print("\nMélange Llama-2-7B mixed workload, TPOT 120 ms (paper: 15-77% cheaper than the best single type)")
    me = melange([4, 8, 16, 32, 64], ["melange-2024", "aws-us-east-1-2026q1"])
    print(f"{'prices':<22} {'rate':>5} {'mixed $/h':>10} {'single $/h':>11} {'saving':>7}  mix")
    for r in me:
        print(f"{r['prices']:<22} {r['rate_rps']:>5.0f} {r['mixed_usd_per_hour']:>10.2f} "
              f"{r['single_usd_per_hour']:>11.2f} {r['saving']:>7.1%}  {r['mix']}")
    print(f"\n({time.perf_counter() - t0:.1f} s)")
    print(json.dumps({
        "distserve_fig1_ratio": round(ds[0]["ratio"], 3),
        "distserve_fig1_prefill_decode": [ds[0]["prefill_gpus"], ds[0]["decode_gpus"]],
        "distserve_chatbot_ratio": round(ds[1]["ratio"], 3),
        "distserve_fig1_per_gpu_rps": round(ds[0]["per_gpu_rps"], 3),
        "distserve_fig1_colocated_per_gpu_rps": round(ds[0]["colocated_per_gpu_rps"], 3),
        "distserve_gap": {k: {m: round(v, 3) for m, v in r.items()} for k, r in rows.items()},
        "lamina_throughput_per_usd_ratio": round(float(la["throughput_per_usd_ratio"]), 3),
        "melange_max_saving": round(max(float(r["saving"]) for r in me), 3),
        "melange_savings": [round(float(r["saving"]), 3) for r in me],
    }))


if __name__ == "__main__":
    main()
