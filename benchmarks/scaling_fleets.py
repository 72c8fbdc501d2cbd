"""The fleets the solver benchmarks grow: synthetic ones with a small roofline of their own, Mélange-format
random instances, and real ones from the planner's catalogue and performance model.

Synthetic fleets are shaped like real ones: 12 device types (memory, bandwidth, compute, watts, prices of
their class), services with 7B–70B models, TTFT/TPOT SLOs and length histograms, every TP {1,2,4,8} × PP
{1,2,4} × role (unified, prefill, decode, decode+offload on a memory pool), capacity from a small roofline
(prefill compute-bound, decode bandwidth-bound with the batch limited by KV memory and the TPOT target).
`columns_for` is a parameter, so the real candidate generator can be measured the same way.

Real fleets (`real_fleet`) use the catalogue's device types in two zones (a pool per type and zone; beyond the
catalogue's 12 types, faster and dearer variants of them), 7B–72B models, every TP/PP/role the candidate
generator allows, and up to 60 length buckets; pools grow with the services unless they are fixed.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from planner.catalog import builtin_catalog
from planner.schema import SLO, FleetSpec, LengthBucket, PlannerOptions, Pool, Role, Service, Traffic
from planner.solve import Column, Demand, PoolSupply, PowerBudget, Problem

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
# Input lengths of the buckets: the first six for up to 30 buckets (6 × 5 outputs), more between them beyond.
REAL_INPUTS = (128, 512, 1024, 2048, 4096, 8192)
MORE_INPUTS = (256, 768, 1536, 3072, 6144, 12288)
REAL_OUTPUTS = (32, 128, 256, 512, 1024)
VARIANT_SPEED = 1.25  # a variant type: this much more bandwidth and compute ...
VARIANT_PRICE = 1.35  # ... at this much more per device-hour


def real_devices(n_devices: int) -> tuple[list[str], list[object]]:
    """The device types of a real fleet (ids) and the variant types to add to its catalogue."""
    cat = builtin_catalog()
    base = list(cat.devices)[: min(n_devices, len(cat.devices))]
    if "h20" not in base and n_devices >= 5:
        base[-1] = "h20"
    extra = []
    for d in list(cat.devices)[: max(0, n_devices - len(base))]:
        dev = cat.device(d)
        extra.append(dev.model_copy(update={"id": f"{d}-v2", "name": f"{dev.name} v2",
                                            "memory_tbps": dev.memory_tbps * VARIANT_SPEED,
                                            "bf16_tflops": dev.bf16_tflops * VARIANT_SPEED}))
    return base + [str(getattr(x, "id")) for x in extra], extra  # noqa: B009


def _price(device: str) -> float:
    if device.endswith("-v2"):
        return REAL_PRICES[device[:-3]] * VARIANT_PRICE
    return REAL_PRICES[device]


def real_fleet(n_services: int, n_devices: int, n_buckets: int, seed: int = 0, fixed_pools: bool = False,
               time_limit_s: float = 10.0, relative_gap: float = 0.005) -> FleetSpec:
    """A fleet over n_devices types, a pool per type and zone (node limits grow with n_services/20 unless
    ``fixed_pools``), n_services services cycling through 7B–72B models with random rates, SLOs and length
    histograms over n_buckets (input, output) cells, those that fit the model's context."""
    rng = random.Random(seed)
    devs, extra = real_devices(n_devices)
    grow = 1.0 if fixed_pools else max(1.0, n_services / 20)
    pools = [Pool(id=f"{d}-{z}", device=d, devices_per_node=8, max_nodes=math.ceil(rng.randint(8, 40) * grow), zone=z,
                  price_usd_per_device_hour=_price(d) * (1.0 if z == "a" else 1.1))
             for d in devs for z in ("a", "b")]
    k = max(1, n_buckets // len(REAL_OUTPUTS))
    ins = REAL_INPUTS[:k] if k <= len(REAL_INPUTS) else tuple(sorted(REAL_INPUTS + MORE_INPUTS))[:k]
    cells = list(itertools.product(ins, REAL_OUTPUTS))[:n_buckets]
    services = []
    models = builtin_catalog().models
    for i in range(n_services):
        w = [rng.random() for _ in cells]
        model = REAL_MODELS[i % len(REAL_MODELS)]
        # A service's buckets are the cells its model's context holds (a 4k-context model has fewer).
        fits = [(cell, x) for cell, x in zip(cells, w, strict=True) if sum(cell) <= models[model].max_context_tokens]
        total = sum(x for _, x in fits)
        big = "70b" in model or "72b" in model or "34b" in model
        rate = rng.uniform(0.5, 4) if big else rng.uniform(2, 20)
        buckets = [LengthBucket(input_tokens=a, output_tokens=b, share=x / total) for (a, b), x in fits]
        services.append(Service(id=f"svc-{i}", model=model, traffic=Traffic(rate_rps=rate, buckets=buckets),
                                slo=SLO(ttft_ms=rng.choice([2000, 5000, 10000]),
                                        tpot_ms=rng.choice([50, 80, 120, 150])),
                                min_replicas=1))
    return FleetSpec(name="scale", devices=extra, pools=pools, services=services,  # type: ignore[arg-type]
                     planner=PlannerOptions(time_limit_s=time_limit_s, relative_gap=relative_gap))
