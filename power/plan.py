"""Power planning: how many servers a domain can host, and what capping costs them.

``plan_servers`` answers "how many servers of this kind fit this budget at this risk": it simulates the
uncapped draw of the nameplate row (budget / server maximum) under a request trace, takes the per-server
mean power over time, and scales it to N servers (each server brings the same load, so the row draws N
times the per-server mean). The answer is the largest N whose uncapped demand exceeds the budget in at most
``risk`` of the meter's one-second windows: that much the capping loop must absorb, the rest of the time it
only trims peaks between T1 and the budget.

``impact`` compares a capped run with the uncapped run of the same requests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from planner.schema import PowerDomain
from power.sim import F64, ServerSpec, SimConfig, SimResult, calibrate_load, simulate, trace_workload


@dataclass(frozen=True)
class Impact:
    """What capping cost, against the uncapped run of the same requests."""

    brake_events: int
    max_over_budget_s: float
    hp_p50_impact_pct: float
    lp_throughput_loss_pct: float
    peak_share: float
    capped_time_share: float


def impact(capped: SimResult, free: SimResult, high_priority: int = 1) -> Impact:
    """High-priority p50 end-to-end latency change and low-priority throughput loss, in percent.

    Low-priority throughput loss is ``1 − Σ service time uncapped / Σ service time capped`` over its
    requests: the share of serving capacity the caps took from those GPUs while requests ran on them.
    """
    assert capped.latency_s is not None and free.latency_s is not None
    assert capped.service_s is not None and free.service_s is not None and capped.request_priority is not None
    hp = capped.request_priority >= high_priority
    lp = ~hp
    ok = np.isfinite(capped.latency_s) & np.isfinite(free.latency_s)
    hp_ok, lp_ok = hp & ok, lp & ok
    hp_pct = 0.0
    if hp_ok.any():
        hp_pct = 100.0 * (float(np.median(capped.latency_s[hp_ok])) / float(np.median(free.latency_s[hp_ok])) - 1)
    lp_pct = 0.0
    if lp_ok.any():
        lp_pct = 100.0 * (1 - float(free.service_s[lp_ok].sum()) / float(capped.service_s[lp_ok].sum()))
    return Impact(capped.brake_events, capped.max_over_budget_s(), hp_pct, lp_pct,
                  float(capped.share.max()), float((capped.capped_gpus > 0).mean()))


@dataclass(frozen=True)
class ServerPlanRow:
    """Uncapped demand of N servers against the budget."""

    servers: int
    oversubscription: float
    peak_share: float
    time_above_t1: float
    time_above_t2: float
    time_above_budget: float


@dataclass(frozen=True)
class ServerPlan:
    """The answer of :func:`plan_servers`."""

    domain: str
    nameplate_servers: int
    max_servers: int
    risk: float
    copies_per_server: float
    rows: tuple[ServerPlanRow, ...]


def window_means(series: F64, dt_s: float, window_s: float = 1.0) -> F64:
    """Means over consecutive windows (the meter's view)."""
    n = max(1, int(round(window_s / dt_s)))
    usable = series[: series.size // n * n]
    return usable.reshape(-1, n).mean(axis=1) if usable.size else series


def plan_servers(domain: PowerDomain, server: ServerSpec, trace: tuple[F64, F64, F64], risk: float = 0.001,
                 peak_share: float = 0.79, copies_per_server: float | None = None, dt_s: float = 0.2,
                 duration_s: float | None = None, seed: int = 0, max_ratio: float = 2.0) -> ServerPlan:
    """Largest server count whose uncapped demand exceeds the budget in at most ``risk`` of the time.

    Per-server load is ``copies_per_server`` copies of the trace, or (when not given) the load at which the
    nameplate row peaks at ``peak_share`` of its budget (POLCA's 79% for inference rows).
    """
    if not 0 <= risk < 1:
        raise ValueError("risk: must be in [0, 1)")
    nameplate = max(1, int(domain.budget_watts // server.max_watts))
    servers = [ServerSpec(f"{server.node}-{i:03d}", server.device, server.gpus, i % 2, server.overhead_watts)
               for i in range(nameplate)]
    if copies_per_server is None:
        copies_per_server = calibrate_load(trace, servers, domain.budget_watts, peak_share, dt_s=dt_s,
                                           duration_s=duration_s, seed=seed)
    wl = trace_workload(trace, servers, copies_per_server, dt_s=dt_s, duration_s=duration_s, seed=seed)
    free = simulate(servers, wl, domain.budget_watts, sim=SimConfig(dt_s=dt_s, noise_share=0.0, seed=seed),
                    control=False)
    per_server = window_means(free.power_watts, dt_s) / nameplate
    th = domain.thresholds
    rows: list[ServerPlanRow] = []
    best = nameplate
    for n in range(nameplate, int(math.floor(nameplate * max_ratio)) + 1):
        share = n * per_server / domain.budget_watts
        row = ServerPlanRow(n, n / nameplate, float(share.max()), float((share > th.t1_share).mean()),
                            float((share > th.t2_share).mean()), float((share > th.brake_share).mean()))
        rows.append(row)
        if row.time_above_budget <= risk:
            best = n
        else:
            break
    return ServerPlan(domain.id, nameplate, best, risk, copies_per_server, tuple(rows))


def row_servers(template: Sequence[ServerSpec], count: int) -> list[ServerSpec]:
    """``count`` servers cycling through ``template``'s kinds, half of each kind low priority."""
    out = []
    for i in range(count):
        t = template[i % len(template)]
        out.append(ServerSpec(f"node-{i:03d}", t.device, t.gpus, 0 if (i // len(template)) % 2 == 0 else 1,
                              t.overhead_watts))
    return out
