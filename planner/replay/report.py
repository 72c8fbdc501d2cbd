"""What a replay reports: latency percentiles and SLO attainment per service, utilisation per group, cost,
tokens per dollar and power."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from planner.replay.state import Requests
from planner.schema import ReplicaGroup, Service, Value


class Percentiles(Value):
    """Mean and percentiles of a latency (ms)."""

    mean: float
    p50: float
    p90: float
    p99: float


class ServiceReplay(Value):
    """What one service saw in the replay."""

    service: str
    requests: int
    completed: int
    dropped: int
    preemptions: int
    ttft_ms: Percentiles
    tpot_ms: Percentiles
    slo_ttft_ms: float
    slo_tpot_ms: float
    slo_percentile: float
    attainment: float  # share of requests meeting both TTFT and TPOT targets
    meets_slo: bool


class GroupReplay(Value):
    """How busy one replica group was."""

    service: str
    pool: str
    configuration: str
    replicas: int
    utilisation: float  # share of the replay's span the group's replicas were running iterations


class ReplayReport(Value):
    """Replay results: latency and SLO attainment per service, utilisation, cost and power."""

    span_s: float
    services: list[ServiceReplay]
    groups: list[GroupReplay]
    cost_usd_per_hour: float
    tokens: int  # prompt + generated tokens of completed requests
    tokens_per_usd: float
    power_bin_s: float
    power_watts: list[float]  # devices of the plan and their servers' overhead, mean per bin
    power_by_pool_watts: dict[str, list[float]]
    mean_power_watts: float
    peak_power_watts: float
    verified: bool  # every service meets its SLO
    step_times: str = ""  # where the step times came from
    checks: str = ""  # what a replay on these step times can and cannot show


def percentiles(x: np.ndarray) -> Percentiles:
    """Mean (infinite when any value is) and percentiles of a sample; zeros when empty."""
    if x.size == 0:
        return Percentiles(mean=0.0, p50=0.0, p90=0.0, p99=0.0)
    finite = x[np.isfinite(x)]
    p50, p90, p99 = np.percentile(x, [50, 90, 99])
    mean = float(finite.mean()) if finite.size == x.size else math.inf
    return Percentiles(mean=mean, p50=float(p50), p90=float(p90), p99=float(p99))


@dataclass(frozen=True)
class _Latency:
    """Per request: service, done, TTFT and TPOT (ms, infinite when not done), lengths, preemptions."""

    svc: np.ndarray
    done: np.ndarray
    ttft: np.ndarray
    tpot: np.ndarray
    inp: np.ndarray
    out: np.ndarray
    pre: np.ndarray
    t0: float

    @staticmethod
    def of(r: Requests) -> _Latency:
        arrival = np.array(r.arrival)
        first = np.array(r.first_token)
        finish = np.array(r.finish)
        out = np.array(r.output, dtype=np.float64)
        done = finish >= 0
        ttft = np.where(done, (first - arrival) * 1e3, np.inf)
        tpot = np.where(done & (out > 1), (finish - first) * 1e3 / np.maximum(out - 1, 1), 0.0)
        tpot = np.where(done, tpot, np.inf)
        return _Latency(np.array(r.service, dtype=np.int64), done, ttft, tpot, np.array(r.input, dtype=np.float64),
                        out, np.array(r.preempted, dtype=np.int64), float(arrival.min()) if arrival.size else 0.0)


def _service_report(si: int, s: Service, lat: _Latency) -> ServiceReplay:
    m = lat.svc == si
    total = int(m.sum())
    ok = lat.done & m & (lat.ttft <= s.slo.ttft_ms) & (lat.tpot <= s.slo.tpot_ms)
    att = float(ok.sum()) / total if total else 1.0
    return ServiceReplay(
        service=s.id, requests=total, completed=int((lat.done & m).sum()),
        dropped=int((~lat.done & m).sum()), preemptions=int(lat.pre[m].sum()),
        ttft_ms=percentiles(lat.ttft[m]), tpot_ms=percentiles(lat.tpot[m & (lat.out > 1)]),
        slo_ttft_ms=s.slo.ttft_ms, slo_tpot_ms=s.slo.tpot_ms, slo_percentile=s.slo.percentile,
        attainment=att, meets_slo=att >= s.slo.percentile / 100.0 - 1e-12,
    )


def build_report(
    requests: Requests,
    services: list[Service],
    groups: list[ReplicaGroup],
    busy_s: list[float],
    span_end: float,
    power: Callable[[float], dict[str, list[float]]],
    power_bin_s: float,
    step_times: str = "",
    checks: str = "",
) -> ReplayReport:
    """The report of a finished replay: ``busy_s`` per group (engine-seconds), ``power(span)`` watts per pool,
    ``step_times`` and ``checks`` in words."""
    lat = _Latency.of(requests)
    span = max(span_end - lat.t0, 1e-9)
    svcs = [_service_report(si, s, lat) for si, s in enumerate(services)]
    reps = [GroupReplay(service=g.service, pool=g.pool, configuration=g.configuration.label(), replicas=g.replicas,
                        utilisation=min(1.0, busy / (span * g.replicas * g.configuration.pp)))
            for g, busy in zip(groups, busy_s, strict=True)]
    cost = sum(g.cost_usd_per_hour for g in groups)
    tokens = int((lat.inp[lat.done] + lat.out[lat.done]).sum())
    usd = cost * span / 3600.0
    power_by_pool = power(span)
    nbins = max((len(v) for v in power_by_pool.values()), default=0)
    total_w = [sum(v[b] for v in power_by_pool.values() if b < len(v)) for b in range(nbins)]
    return ReplayReport(
        span_s=span, services=svcs, groups=reps, cost_usd_per_hour=cost, tokens=tokens,
        tokens_per_usd=tokens / usd if usd > 0 else 0.0, power_bin_s=power_bin_s,
        power_watts=total_w, power_by_pool_watts=power_by_pool,
        mean_power_watts=float(np.mean(total_w)) if total_w else 0.0,
        peak_power_watts=max(total_w, default=0.0),
        verified=all(s.meets_slo for s in svcs) and bool(svcs), step_times=step_times, checks=checks,
    )
