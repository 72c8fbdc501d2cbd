"""Power oversubscription: 52 servers under a 40-server budget (+30%), Azure 2023 code trace.

For an all-A100 row and a mixed A100 + H100 row:

1. the budget is the 40 servers' modelled maximum draw; the per-server load is the trace scaled so that the
   40 uncapped servers peak at 79% of that budget (POLCA's characterisation of inference rows);
2. 52 servers (same per-server load) run under the real policy and loop in the power simulator, and again
   uncapped; the figures compare the two: brake events, high-priority p50 end-to-end latency impact,
   low-priority throughput loss (share of serving capacity the caps took);
3. the largest server count that keeps zero brakes, < 1% and < 2% is found by bisection;
4. telemetry and actuation faults on the 52-server A100 row (``power.sim_faults.SCENARIOS``): a frozen
   meter with fresh timestamps, a meter clock 60 s ahead that then freezes, a 0 W glitch, NaN and negative
   readings, a restarted loop and lost node agents (through the Kubernetes path: intent annotations and
   real node agents). Each prints its longest stretch over budget against the loop's bound (meter window,
   one control period, actuation latency, one simulation step).

Step times (what a cap costs) come from ``planner.model.perf`` for Llama-2-70B at TP8 with compute scaled by
the locked clock (``--step-times simple`` uses the power simulator's own simple model instead).

Run: ``.venv/bin/python benchmarks/power_oversubscription.py [--duration-s 3600] [--trace code|conv]
[--faults-only]``. The last line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from planner.catalog import builtin_catalog  # noqa: E402
from planner.io.profiles import default_perf_model  # noqa: E402
from planner.model.perf import ReplicaShape  # noqa: E402
from planner.schema import DeviceType, ModelSpec  # noqa: E402
from power.loop import LoopConfig  # noqa: E402
from power.plan import Impact, impact, row_servers  # noqa: E402
from power.sim import (  # noqa: E402
    ServerSpec,
    SimConfig,
    SimpleStepTimes,
    StepTimes,
    calibrate_load,
    domain_budget_watts,
    load_azure_trace,
    safety_bound_s,
    server_overhead_watts,
    simulate,
    trace_workload,
)
from power.sim_faults import SCENARIOS, run_scenario  # noqa: E402

TRACES = ROOT / "benchmarks/data/traces/azure_llm_2023"
BUDGET_SERVERS = 40
TARGET_SERVERS = 52


class PerfStepTimes:
    """Step times from ``planner.model.perf`` at a locked clock: compute scales with the clock share, memory
    bandwidth and per-step overheads do not. One replica per server (TP = GPUs per server)."""

    def __init__(self, model: ModelSpec, prompt_tokens: int, decode_batch: int, context_tokens: int) -> None:
        self.perf = default_perf_model()
        self.model = model
        self.prompt_tokens = prompt_tokens
        self.decode_batch = decode_batch
        self.context_tokens = context_tokens
        self._cache: dict[tuple[str, int, float], tuple[float, float]] = {}

    def _times(self, device: DeviceType, gpus: int, share: float) -> tuple[float, float]:
        key = (device.id, gpus, round(share, 4))
        if key not in self._cache:
            update = {"bf16_tflops": device.bf16_tflops * share}
            if device.fp8_tflops is not None:
                update["fp8_tflops"] = device.fp8_tflops * share
            shape = ReplicaShape(self.model, device.model_copy(update=update), gpus)
            prefill_s = self.perf.prefill_ms(shape, 1, self.prompt_tokens) / 1000
            tpot_s = self.perf.decode_step_ms(shape, self.decode_batch, self.context_tokens) / 1000
            self._cache[key] = (self.prompt_tokens / prefill_s, tpot_s)
        return self._cache[key]

    def prefill_tokens_per_s(self, server: ServerSpec, clock_share: float) -> float:
        """Prompt tokens per second of the server's replica at this clock."""
        return self._times(server.device, server.gpus, clock_share)[0]

    def tpot_s(self, server: ServerSpec, clock_share: float) -> float:
        """Decode step time of the server's replica at this clock."""
        return self._times(server.device, server.gpus, clock_share)[1]


def passes(m: Impact, bound_s: float) -> bool:
    """POLCA's bar: no brake, < 1% high-priority p50 impact, < 2% low-priority throughput loss, safe."""
    return (m.brake_events == 0 and m.hp_p50_impact_pct < 1.0 and m.lp_throughput_loss_pct < 2.0
            and m.max_over_budget_s <= bound_s)


def evaluate(name: str, template: Sequence[ServerSpec], trace: tuple, dt_s: float,  # type: ignore[type-arg]
             duration_s: float, seed: int, step_times: StepTimes) -> dict[str, object]:
    """Figures at +30% and the largest oversubscription that keeps the bar, for one row kind."""
    base = row_servers(template, BUDGET_SERVERS)
    budget = domain_budget_watts(base)
    load = calibrate_load(trace, base, budget, 0.79, dt_s=dt_s, duration_s=duration_s, seed=seed,
                          step_times=step_times)
    cfg = SimConfig(dt_s=dt_s, seed=seed)
    bound = safety_bound_s(cfg, LoopConfig())
    cache: dict[int, Impact] = {}

    def at(n: int) -> Impact:
        if n not in cache:
            servers = row_servers(template, n)
            wl = trace_workload(trace, servers, load, dt_s=dt_s, duration_s=duration_s, seed=seed,
                                step_times=step_times)
            capped = simulate(servers, wl, budget, sim=cfg, step_times=step_times)
            free = simulate(servers, wl, budget, sim=cfg, control=False, step_times=step_times)
            cache[n] = impact(capped, free)
            m = cache[n]
            print(f"  {name}: {n} servers ({n / BUDGET_SERVERS:.3f}x): brakes {m.brake_events}, "
                  f"hp p50 {m.hp_p50_impact_pct:+.2f}%, lp loss {m.lp_throughput_loss_pct:.2f}%, "
                  f"peak {m.peak_share:.3f} of budget, caps on {m.capped_time_share:.1%} of the time, "
                  f"longest over budget {m.max_over_budget_s:.1f} s", flush=True)
        return cache[n]

    target = at(TARGET_SERVERS)
    lo, hi = BUDGET_SERVERS, 2 * BUDGET_SERVERS
    if passes(target, bound):
        lo = TARGET_SERVERS
    else:
        hi = TARGET_SERVERS
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if passes(at(mid), bound):
            lo = mid
        else:
            hi = mid
    return {
        "row": name,
        "budget_watts": round(budget),
        "copies_per_server": round(load, 5),
        "servers": TARGET_SERVERS,
        "brake_events": target.brake_events,
        "hp_p50_impact_pct": round(target.hp_p50_impact_pct, 3),
        "lp_throughput_loss_pct": round(target.lp_throughput_loss_pct, 3),
        "max_over_budget_s": round(target.max_over_budget_s, 2),
        "max_servers": lo,
        "max_oversubscription": round(lo / BUDGET_SERVERS, 3),
    }


def telemetry_faults(template: Sequence[ServerSpec], dt_s: float, seed: int) -> dict[str, object]:
    """Longest time over budget in each fault scenario on the oversubscribed row, and the bound."""
    budget = domain_budget_watts(row_servers(template, BUDGET_SERVERS))
    servers = row_servers(template, TARGET_SERVERS)
    cfg, loop = SimConfig(dt_s=dt_s, seed=seed), LoopConfig()
    bound = safety_bound_s(cfg, loop)
    worst: dict[str, float] = {}
    for sc in SCENARIOS:
        r = run_scenario(sc, servers, budget, cfg, loop)
        worst[sc.name] = round(r.max_over_budget_s(), 2)
        print(f"  fault: {sc.name} ({sc.describe}): longest over budget {r.max_over_budget_s():.1f} s "
              f"(bound {bound:.1f} s), brakes {r.brake_events}", flush=True)
    return {"telemetry_faults_worst_over_budget_s": max(worst.values()),
            "telemetry_faults_bound_s": round(bound, 2), "telemetry_faults_over_budget_s": worst}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=3600.0)
    parser.add_argument("--dt-s", type=float, default=0.2)
    parser.add_argument("--trace", choices=["code", "conv"], default="code")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--step-times", choices=["perf", "simple"], default="perf",
                        help="latency cost of caps: planner.model.perf at the locked clock, or the simple model")
    parser.add_argument("--faults-only", action="store_true", help="only the telemetry-fault scenarios")
    args = parser.parse_args()
    started = time.perf_counter()
    cat = builtin_catalog()
    a100, h100 = cat.device("a100-80gb"), cat.device("h100-sxm")
    a100_server = ServerSpec("t", a100, 8, 0, server_overhead_watts(a100))
    print(f"Telemetry faults: {TARGET_SERVERS} A100 servers on a {BUDGET_SERVERS}-server budget")
    faults = telemetry_faults([a100_server], args.dt_s, args.seed)
    print(f"telemetry faults: worst {faults['telemetry_faults_worst_over_budget_s']} s over budget, "
          f"bound {faults['telemetry_faults_bound_s']} s")
    if args.faults_only:
        print(json.dumps({**faults, "seconds": round(time.perf_counter() - started, 1)}))
        return
    trace = load_azure_trace(TRACES / f"AzureLLMInferenceTrace_{args.trace}.csv")
    step_times: StepTimes = SimpleStepTimes()
    if args.step_times == "perf":
        prompt = int(trace[1].mean())
        step_times = PerfStepTimes(cat.model("llama-2-70b"), prompt, 16, prompt + int(trace[2].mean()))

    def server(device):  # type: ignore[no-untyped-def]
        return ServerSpec("t", device, 8, 0, server_overhead_watts(device))

    print(f"Azure 2023 {args.trace} trace, {args.duration_s:.0f} s, budget of {BUDGET_SERVERS} servers, "
          f"Llama-2-70B TP8 per server, step times: {args.step_times}")
    a = evaluate("a100", [server(a100)], trace, args.dt_s, args.duration_s, args.seed, step_times)
    mixed = evaluate("a100+h100", [server(a100), server(h100)], trace, args.dt_s, args.duration_s, args.seed,
                     step_times)
    for r in (a, mixed):
        print(f"{r['row']}: {TARGET_SERVERS} on a {BUDGET_SERVERS}-server budget: brakes {r['brake_events']}, "
              f"hp p50 impact {r['hp_p50_impact_pct']}%, lp throughput loss {r['lp_throughput_loss_pct']}%; "
              f"largest oversubscription keeping the bar {r['max_oversubscription']}x")
    out = {
        "brake_events": a["brake_events"],
        "hp_p50_impact_pct": a["hp_p50_impact_pct"],
        "lp_throughput_loss_pct": a["lp_throughput_loss_pct"],
        "max_oversubscription": a["max_oversubscription"],
        "max_over_budget_s": a["max_over_budget_s"],
        "mixed_brake_events": mixed["brake_events"],
        "mixed_hp_p50_impact_pct": mixed["hp_p50_impact_pct"],
        "mixed_lp_throughput_loss_pct": mixed["lp_throughput_loss_pct"],
        "mixed_max_oversubscription": mixed["max_oversubscription"],
        "trace": args.trace,
        "step_times": args.step_times,
        "duration_s": args.duration_s,
        **faults,
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
