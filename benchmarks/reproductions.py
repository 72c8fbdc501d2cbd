"""Public results the planner should reproduce, each run through ``plan_fleet`` on a shipped example.

1. DistServe (OPT-13B, A100, 512 in / 64 out): disaggregation against colocation, per-GPU rate and the
   prefill:decode GPU ratio, at Figure 1's SLOs (TTFT 0.4 s / TPOT 0.04 s) and at the chatbot SLOs
   (TTFT 0.2 s / TPOT 0.1 s).
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

from planner.io.fleetfile import load_fleet  # noqa: E402
from planner.pipeline import plan_fleet  # noqa: E402
from planner.schema import FleetSpec, Plan, Role, Service  # noqa: E402


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
        "lamina_throughput_per_usd_ratio": round(float(la["throughput_per_usd_ratio"]), 3),
        "melange_max_saving": round(max(float(r["saving"]) for r in me), 3),
        "melange_savings": [round(float(r["saving"]), 3) for r in me],
    }))


if __name__ == "__main__":
    main()
