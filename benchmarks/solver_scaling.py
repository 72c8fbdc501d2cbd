"""How the fleet MILP scales: variables, constraints, solve time and gap for growing fleets.

Fleets are synthetic but shaped like real ones: 12 device types (memory, bandwidth, compute, watts, prices of
their class), services with 7B–70B models, TTFT/TPOT SLOs and length histograms, every TP {1,2,4,8} × PP
{1,2,4} × role (unified, prefill, decode, decode+offload on a memory pool), capacity from a small roofline
(prefill compute-bound, decode bandwidth-bound with the batch limited by KV memory and the TPOT target).
`columns_for` is a parameter, so the real candidate generator can be measured the same way.
Second part: Mélange-format random instances (one service, one device per replica) of 400 buckets × 16 types.

`--real`: fleets from the planner's own catalogue and performance model instead (`real_fleet`: the catalogue's
first device types in two zones, 7B–72B models, every TP/PP/role the candidate generator allows, up to 30
length buckets), built by `planner.pipeline.build_inputs`; candidate generation is timed apart from the solve.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from planner.catalog import builtin_catalog  # noqa: E402
from planner.melange import problem_from_case  # noqa: E402
from planner.pipeline import build_inputs  # noqa: E402
from planner.schema import SLO, FleetSpec, LengthBucket, PlannerOptions, Pool, Role, Service, Traffic  # noqa: E402
from planner.solve import (  # noqa: E402
    Column,
    Demand,
    PoolSupply,
    PowerBudget,
    Problem,
    SolveOptions,
    prune_dominated,
    solve,
)

TPS = (1, 2, 4, 8)
PPS = (1, 2, 4)
GB = 1e9


@dataclass(frozen=True)
class DeviceSpec:
    """Just enough of a device for a roofline."""

    name: str
    memory_gb: float
    memory_tbps: float
    tflops: float
    tdp_watts: float
    usd_per_hour: float
    memory_kind: bool = False


@dataclass(frozen=True)
class ServiceSpec:
    """A synthetic service: model size, SLO and a length histogram with per-bucket rates."""

    name: str
    params_b: float
    layers: int
    heads: int
    kv_bytes_per_token: float
    ttft_s: float
    tpot_s: float
    buckets: tuple[tuple[int, int], ...]  # (input tokens, output tokens)
    rates_rps: tuple[float, ...]


DEVICES = (
    DeviceSpec("l4", 24, 0.30, 121, 72, 0.70),
    DeviceSpec("a10g", 24, 0.60, 125, 300, 1.01),
    DeviceSpec("l40s", 48, 0.86, 362, 350, 1.60),
    DeviceSpec("a100-40", 40, 1.55, 312, 400, 2.90),
    DeviceSpec("a100-80", 80, 2.04, 312, 400, 3.67),
    DeviceSpec("h100-pcie", 80, 2.00, 756, 350, 4.50),
    DeviceSpec("h100-sxm", 80, 3.35, 989, 700, 7.52),
    DeviceSpec("h200", 141, 4.80, 989, 700, 9.80),
    DeviceSpec("h20", 96, 4.00, 148, 400, 2.10, memory_kind=True),
    DeviceSpec("mi300x", 192, 5.30, 1307, 750, 6.00),
    DeviceSpec("b200", 180, 8.00, 2250, 1000, 12.00),
    DeviceSpec("gaudi2", 96, 2.45, 432, 600, 3.20),
)
MODELS = (  # (params B, layers, heads, KV bytes per token)
    (7.0, 32, 32, 32 * 2 * 8 * 128 * 2),
    (8.0, 32, 32, 32 * 2 * 8 * 128 * 2),
    (13.0, 40, 40, 40 * 2 * 40 * 128 * 2),
    (34.0, 48, 64, 48 * 2 * 8 * 128 * 2),
    (70.0, 80, 64, 80 * 2 * 8 * 128 * 2),
)
INPUTS = (128, 512, 1024, 2048, 4096, 8192, 16384, 32768)
OUTPUTS = (64, 128, 256, 512, 1024)


def synthetic_service(index: int, n_buckets: int, rng: random.Random) -> ServiceSpec:
    """A service with a random model, SLO and a skewed length histogram over n_buckets buckets."""
    params, layers, heads, kv = MODELS[index % len(MODELS)]
    grid = [(i, o) for i in INPUTS for o in OUTPUTS]
    buckets = tuple(sorted(rng.sample(grid, n_buckets)))
    weights = [rng.paretovariate(1.2) for _ in buckets]
    total = rng.uniform(2.0, 40.0)
    rates = tuple(total * w / sum(weights) for w in weights)
    return ServiceSpec(f"svc{index:02d}", params, layers, heads, kv, ttft_s=rng.choice([0.5, 1.0, 2.0, 4.0]),
                       tpot_s=rng.choice([0.03, 0.05, 0.1]), buckets=buckets, rates_rps=rates)


def _decode_rps(svc: ServiceSpec, dev: DeviceSpec, tp: int, pp: int, inp: int, out: int,
                mem_dev: DeviceSpec | None, mem_n: int) -> float:
    """Decode req/s of one replica: batch limited by KV memory and by the TPOT target."""
    weights = 2.0 * svc.params_b * GB
    ctx = inp + out / 2
    kv_req = svc.kv_bytes_per_token * (inp + out)
    eff = 0.75
    step_weights = weights / (dev.memory_tbps * 1e12 * tp * pp * eff) * pp  # one token passes every stage
    if mem_dev is None:
        free = dev.memory_gb * GB * tp * pp * 0.9 - weights
        kv_bw = dev.memory_tbps * 1e12 * tp * pp * eff
    else:
        free = mem_dev.memory_gb * GB * mem_n * 0.9
        kv_bw = mem_dev.memory_tbps * 1e12 * mem_n * eff
        step_weights *= 1.08  # activations cross to the memory devices and back every layer
    if free <= 0:
        return 0.0
    batch_mem = free / kv_req
    spare = svc.tpot_s - step_weights
    if spare <= 0:
        return 0.0
    batch_tpot = spare * kv_bw / (svc.kv_bytes_per_token * ctx)
    batch = min(batch_mem, batch_tpot, 256.0) * pp  # micro-batches keep every stage busy
    if batch < 1.0:
        return 0.0
    step = step_weights + batch / pp * svc.kv_bytes_per_token * ctx / kv_bw
    return batch / (step * out)


def _prefill_rps(svc: ServiceSpec, dev: DeviceSpec, tp: int, pp: int, inp: int) -> float:
    """Prefill req/s of one replica within the TTFT target (compute-bound, TP scales sub-linearly)."""
    flops = 2.0 * svc.params_b * 1e9 * inp
    eff = 0.55 * (0.92 ** math.log2(tp)) * (0.95 ** math.log2(pp))
    latency = flops / (dev.tflops * 1e12 * tp * eff) * (1.0 + 0.1 * (pp - 1))
    # The TTFT target grows with the prompt beyond 2k tokens (long-context services accept a longer wait);
    # queueing leaves 40% of it for waiting.
    if latency > svc.ttft_s * max(1.0, inp / 2048) * 0.6:
        return 0.0
    return float(dev.tflops * 1e12 * tp * pp * eff / flops)


def synthetic_columns(svc: ServiceSpec, pools: Sequence[PoolSupply],
                      devices: dict[str, DeviceSpec]) -> list[Column]:
    """Every TP × PP × role in every pool where the model's heads and layers divide and the weights fit."""
    out: list[Column] = []
    mem_pools = [p for p in pools if devices[p.id].memory_kind]
    for pool in pools:
        dev = devices[pool.id]
        for tp in TPS:
            if svc.heads % tp or tp > pool.devices_per_node:
                continue
            for pp in PPS:
                if svc.layers % pp:
                    continue
                k = tp * pp
                if dev.memory_gb * k * 0.9 < 2.0 * svc.params_b * 1.05:
                    continue
                pre = [_prefill_rps(svc, dev, tp, pp, i) for i, _ in svc.buckets]
                dec = [_decode_rps(svc, dev, tp, pp, i, o, None, 0) for i, o in svc.buckets]
                uni = [0.0 if p == 0 or d == 0 else 0.85 / (1 / p + 1 / d) for p, d in zip(pre, dec, strict=True)]
                idle = k * dev.tdp_watts * 0.15
                base = f"{svc.name}-{dev.name}-tp{tp}pp{pp}"
                for role, caps, active in ((Role.UNIFIED, uni, 0.8), (Role.PREFILL, pre, 0.95),
                                           (Role.DECODE, dec, 0.6)):
                    if any(caps):
                        out.append(Column(f"{base}-{role.value}", svc.name, role, pool.id, k, tuple(caps),
                                          idle, k * dev.tdp_watts * active, label=f"{dev.name} tp{tp} pp{pp} {role}"))
                for mp in mem_pools:
                    if mp.id == pool.id:
                        continue
                    mdev = devices[mp.id]
                    off = [_decode_rps(svc, dev, tp, pp, i, o, mdev, tp) for i, o in svc.buckets]
                    if any(off):
                        out.append(Column(f"{base}-offload-{mp.id}", svc.name, Role.DECODE_OFFLOAD, pool.id, k,
                                          tuple(off), idle + tp * mdev.tdp_watts * 0.15,
                                          k * dev.tdp_watts * 0.6 + tp * mdev.tdp_watts * 0.7,
                                          memory_pool=mp.id, memory_devices=tp,
                                          label=f"{dev.name} tp{tp} pp{pp} + {tp} {mdev.name}"))
    return out


ColumnsFor = Callable[[ServiceSpec, Sequence[PoolSupply], dict[str, DeviceSpec]], list[Column]]


def synthetic_fleet(n_services: int, n_devices: int, n_buckets: int, seed: int = 0,
                    columns_for: ColumnsFor = synthetic_columns) -> Problem:
    """A fleet of n_services on n_devices types, each in one pool, two zones, a power domain per zone."""
    rng = random.Random(seed)
    # Spread the chosen types over the catalogue (small and large), always with the memory type for offload.
    picks = sorted({round(i * (len(DEVICES) - 1) / max(1, n_devices - 1)) for i in range(n_devices)})
    devs = [DEVICES[i] for i in picks]
    if not any(d.memory_kind for d in devs):
        devs[len(devs) // 2] = DEVICES[8]
    devices = {d.name: d for d in devs}
    pools = tuple(
        PoolSupply(id=d.name, zone=("east", "west")[i % 2], power_domain=f"row-{('east', 'west')[i % 2]}",
                   devices_per_node=8, max_nodes=rng.choice([4, 8, 16, 32]), usd_per_device_hour=d.usd_per_hour,
                   billing="device", nameplate_watts_per_node=8 * d.tdp_watts + 1500, node_idle_watts=600)
        for i, d in enumerate(devs)
    )
    services = [synthetic_service(i, n_buckets, rng) for i in range(n_services)]
    columns: list[Column] = []
    demands = []
    for s in services:
        columns.extend(columns_for(s, pools, devices))
        demands.append(Demand(s.name, s.rates_rps, tuple(f"{i}/{o}" for i, o in s.buckets),
                              min_replicas=2, spread_zones=2 if n_devices > 1 else 1))
    budgets = tuple(PowerBudget(f"row-{z}", 400_000.0, 1.3, 0.9) for z in ("east", "west"))
    return Problem(pools, tuple(columns), tuple(demands), budgets, headroom=0.85)


def random_melange_case(n_buckets: int, n_types: int, seed: int) -> dict[str, object]:
    """A Mélange-format case: throughput tables per type (1e-6 where the SLO cannot be met), a histogram."""
    rng = random.Random(seed)
    rows = max(1, int(math.sqrt(n_buckets)))
    cols = n_buckets // rows
    gpu_info = {}
    for t in range(n_types):
        speed = rng.uniform(0.5, 8.0)
        cost = speed ** 0.8 * rng.uniform(0.6, 1.2)
        tputs = [[1e-6 if rng.random() < 0.1 * (i + j) / (rows + cols) * speed ** -0.5
                  else round(speed * 20.0 / (1 + i) / (1 + 0.5 * j) * rng.uniform(0.8, 1.2), 4)
                  for j in range(cols)] for i in range(rows)]
        gpu_info[f"gpu{t:02d}"] = {"cost": round(cost, 4), "tputs": tputs}
    weights = [[rng.paretovariate(1.1) for _ in range(cols)] for _ in range(rows)]
    total = sum(map(sum, weights))
    dist = [[w / total for w in row] for row in weights]
    return {"gpu_info": gpu_info, "workload_distribution": dist, "total_request_rate": rng.uniform(20, 400),
            "slice_factor": 1}


REAL_PRICES = {"h100-sxm": 4.0, "h200-sxm": 5.0, "a100-80gb": 2.2, "a100-40gb": 1.6, "l40s": 1.2, "l4": 0.6,
               "a10g": 0.8, "t4": 0.35, "h20": 1.8, "mi300x": 3.5, "gaudi3": 3.0, "a40": 0.7}
REAL_MODELS = ("llama-2-7b", "llama-3-8b", "llama-2-13b", "codellama-34b", "mixtral-8x7b", "llama-3-70b",
               "llama-2-70b", "qwen-72b")
REAL_SIZES = ((5, 6, 12), (10, 8, 20), (20, 12, 30))


def real_fleet(n_services: int, n_devices: int, n_buckets: int, seed: int = 0) -> FleetSpec:
    """A fleet over the catalogue's first n_devices types (the h20 memory type among them from 5 on), a pool
    per type and zone, n_services services cycling through 7B–72B models with random rates, SLOs and length
    histograms over n_buckets (input, output) cells."""
    rng = random.Random(seed)
    cat = builtin_catalog()
    devs = list(cat.devices)[:n_devices]
    if "h20" not in devs and n_devices >= 5:
        devs[-1] = "h20"
    pools = [Pool(id=f"{d}-{z}", device=d, devices_per_node=8, max_nodes=rng.randint(8, 40), zone=z,
                  price_usd_per_device_hour=REAL_PRICES[d] * (1.0 if z == "a" else 1.1))
             for d in devs for z in ("a", "b")]
    ins = [128, 512, 1024, 2048, 4096, 8192][: max(1, n_buckets // 5)]
    outs = [32, 128, 256, 512, 1024]
    cells = list(itertools.product(ins, outs))[:n_buckets]
    services = []
    for i in range(n_services):
        w = [rng.random() for _ in cells]
        total = sum(w)
        model = REAL_MODELS[i % len(REAL_MODELS)]
        big = "70b" in model or "72b" in model or "34b" in model
        rate = rng.uniform(0.5, 4) if big else rng.uniform(2, 20)
        buckets = [LengthBucket(input_tokens=a, output_tokens=b, share=x / total)
                   for (a, b), x in zip(cells, w, strict=True)]
        services.append(Service(id=f"svc-{i}", model=model, traffic=Traffic(rate_rps=rate, buckets=buckets),
                                slo=SLO(ttft_ms=rng.choice([2000, 5000, 10000]),
                                        tpot_ms=rng.choice([50, 80, 120, 150])),
                                min_replicas=1))
    return FleetSpec(name="scale", pools=pools, services=services,
                     planner=PlannerOptions(time_limit_s=10, relative_gap=0.005))


def main_real(opts: SolveOptions) -> None:
    """The real-candidate fleets: build (candidates + pruning) and solve timed apart."""
    rows = []
    print(f"{'services':>8} {'types':>5} {'buckets':>7} {'columns':>7} {'pruned':>6} {'build s':>8} "
          f"{'variables':>9} {'rows':>7} {'solve s':>8} {'gap':>7} {'status':<8} {'$/h':>9} {'bound $/h':>9}  bound")
    for n_s, n_d, n_b in REAL_SIZES:
        t0 = time.perf_counter()
        inputs = build_inputs(real_fleet(n_s, n_d, n_b))
        build_s = time.perf_counter() - t0
        problem = inputs.problem
        t1 = time.perf_counter()
        sol = solve(problem, opts)
        solve_s = time.perf_counter() - t1
        rows.append({"services": n_s, "device_types": n_d, "buckets": n_b, "columns": len(problem.columns),
                     "pruned": inputs.pruned, "build_seconds": round(build_s, 3), "variables": sol.variables,
                     "constraints": sol.constraints, "solve_seconds": round(solve_s, 3), "gap": sol.relative_gap,
                     "status": sol.status, "objective": sol.objective, "best_bound": sol.best_bound,
                     "usd_per_hour": sol.cost_usd_per_hour, "backends": sol.backends})
        print(f"{n_s:>8} {n_d:>5} {n_b:>7} {len(problem.columns):>7} {inputs.pruned:>6} {build_s:>8.2f} "
              f"{sol.variables:>9} {sol.constraints:>7} {solve_s:>8.2f} {pct(sol.relative_gap):>7} {sol.status:<8} "
              f"{money(sol.cost_usd_per_hour):>9} {money(sol.best_bound):>9}  {bound_kind(sol.message)}")
    largest = rows[-1]
    print(json.dumps({
        "benchmark": "solver_scaling_real",
        "largest_fleet_solve_seconds": largest["solve_seconds"], "largest_fleet_gap": largest["gap"],
        "largest_fleet_build_seconds": largest["build_seconds"],
        "largest_fleet_variables": largest["variables"], "largest_fleet_constraints": largest["constraints"],
        "fleets": rows,
    }))


def pct(share: float | None) -> str:
    """A share as a percentage, or n/a where the solver gave none (never a made-up 0%)."""
    return "n/a" if share is None else f"{share:.2%}"


def money(usd: float | None) -> str:
    """$/h with two decimals, or n/a."""
    return "n/a" if usd is None else f"{usd:.2f}"


def bound_kind(message: str) -> str:
    """Which bound the gap is measured against: the solver's own, or the priced model's (see planner.solve)."""
    parts = message.split("; ")
    return parts[1] if len(parts) > 1 else "solver"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", action="store_true", help="fleets from the real candidate generator")
    args = parser.parse_args()
    opts = SolveOptions(backend="highs", time_limit_s=10.0, relative_gap=0.005, threads=2)
    if args.real:
        main_real(opts)
        return
    sizes = ((2, 4, 6), (5, 6, 12), (10, 8, 20), (20, 12, 30))
    fleet_rows = []
    print(f"{'services':>8} {'types':>5} {'buckets':>7} {'columns':>7} {'pruned':>6} {'variables':>9} "
          f"{'rows':>7} {'prune+solve s':>13} {'gap':>7} {'status':<8} {'$/h':>9}  bound")
    for n_s, n_d, n_b in sizes:
        problem = synthetic_fleet(n_s, n_d, n_b)
        t0 = time.perf_counter()
        pruned, count = prune_dominated(problem)
        sol = solve(pruned, opts)
        total_s = time.perf_counter() - t0
        row = {"services": n_s, "device_types": n_d, "buckets": n_b, "columns": len(problem.columns),
               "pruned": count, "variables": sol.variables, "constraints": sol.constraints,
               "seconds": round(total_s, 3), "gap": sol.relative_gap, "status": sol.status,
               "usd_per_hour": sol.cost_usd_per_hour, "backends": sol.backends}
        fleet_rows.append(row)
        print(f"{n_s:>8} {n_d:>5} {n_b:>7} {len(problem.columns):>7} {count:>6} {sol.variables:>9} "
              f"{sol.constraints:>7} {total_s:>13.2f} {pct(sol.relative_gap):>7} {sol.status:<8} "
              f"{money(sol.cost_usd_per_hour):>9}  {bound_kind(sol.message)}")
    print()
    print(f"{'Mélange-format':<16} {'buckets':>7} {'types':>5} {'solve s':>8} {'status':<8} {'$/h':>9}")
    mel_rows = []
    for seed in range(3):
        case = random_melange_case(400, 16, seed)
        problem = problem_from_case(case)
        # One pool per type and no shared limits: the x ≤ n rows buy little here and cost time.
        sol = solve(problem, SolveOptions(time_limit_s=10.0, relative_gap=0.005, link_rows=False))
        mel_rows.append({"seed": seed, "buckets": 400, "device_types": 16, "seconds": round(sol.solve_seconds, 3),
                         "status": sol.status, "gap": sol.relative_gap, "usd_per_hour": sol.cost_usd_per_hour,
                         "backends": sol.backends})
        print(f"{'seed ' + str(seed):<16} {400:>7} {16:>5} {sol.solve_seconds:>8.3f} {sol.status:<8} "
              f"{money(sol.cost_usd_per_hour):>9}  gap {pct(sol.relative_gap)}")
    largest = fleet_rows[-1]
    print(json.dumps({
        "benchmark": "solver_scaling",
        "largest_fleet_seconds": largest["seconds"], "largest_fleet_gap": largest["gap"],
        "largest_fleet_variables": largest["variables"], "largest_fleet_constraints": largest["constraints"],
        "melange_400x16_max_seconds": max(float(r["seconds"] or 0.0) for r in mel_rows),
        "fleets": fleet_rows, "melange": mel_rows,
    }))


if __name__ == "__main__":
    main()
