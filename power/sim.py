"""Power simulator: a row of servers driven by a request trace (or a load profile), under the real loop.

Model (vectorised with numpy; one step is ``dt_s``):

* Each server is one replica over its GPUs (tensor parallel, so it runs at its slowest GPU's clock). Its
  prefill work is a FIFO backlog of prompt tokens served at ``prefill_tokens_per_s`` × clock share;
  ``u`` is the share of the step spent in prefill. Decode is on whenever a request is decoding.
* GPU watts ``idle + u·(prefill − idle)·f^a + (1 − u)·d·(decode − idle)·f^a`` with ``f`` the clock share
  (locked clock over maximum, lowered further by a binding power limit) and ``a = clock_power_exponent``
  (1.2: locking an A100 at 1110 of 1410 MHz then cuts about 20% of its prefill watts, as POLCA measured).
  Idle/prefill/decode watts per device come from the catalog (splitwise-sim seeds for A100/H100).
  Server overhead outside the GPUs is added per server.
* The meter shows the domain sum with independent ±``noise_share`` uniform error per board, averaged over
  ``meter_window_s`` (a PDU reports means, not instants), ``sensor_delay_s`` late. Cap actions take
  ``cap_latency_s`` to land; brake actions take the fast power-brake path (``brake_latency_s``;
  out-of-band BMC caps can take 40 s, the brake signal does not). A share of GPUs
  can silently ignore every action, nodes can reboot (their locks are lost), telemetry can be lost and the
  budget can change.
* Latency cost of caps comes from a :class:`~power.workloads.StepTimes` model of prefill throughput and TPOT
  at a clock share (``power.workloads``: the simple default, or a performance-model-backed one). TTFT comes
  from each server's processed-token curve; end-to-end latency adds ``output tokens × TPOT × decode
  slowdown``. Servers, step-time models and workload builders live in ``power.workloads`` and are
  re-exported here.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from power.actuators import Actuator, ApplyReport
from power.loop import Clock, ControlLoop, LoopConfig, StepResult, VirtualClock
from power.policy import UNCAPPED, CapAction, CapTarget, Gpu, Policy, PolicyConfig
from power.telemetry import PowerEnvelope, PowerReading, SimulatedTelemetry, Telemetry
from power.workloads import (
    F64,
    Requests,
    ServerSpec,
    SimpleStepTimes,
    StepTimes,
    Workload,
    activity_for_share,
    domain_budget_watts,
    load_azure_trace,
    profile_workload,
    row,
    server_overhead_watts,
    trace_workload,
    uncapped_watts,
)

CLOCK_GRID = np.linspace(0.05, 1.0, 96)


class _SpeedTables:
    """Per-server prefill throughput and TPOT tabulated over clock shares, interpolated per step."""

    def __init__(self, servers: Sequence[ServerSpec], step_times: StepTimes) -> None:
        self.tps = np.array([[step_times.prefill_tokens_per_s(s, float(f)) for f in CLOCK_GRID] for s in servers])
        self.tpot = np.array([[step_times.tpot_s(s, float(f)) for f in CLOCK_GRID] for s in servers])
        self.rows = np.arange(len(servers))
        self.base_tps = self.tps[:, -1].copy()
        self.base_tpot = self.tpot[:, -1].copy()

    def at(self, table: F64, share: F64) -> F64:
        x = (np.clip(share, CLOCK_GRID[0], 1.0) - CLOCK_GRID[0]) / (CLOCK_GRID[1] - CLOCK_GRID[0])
        i = np.minimum(x.astype(np.int64), CLOCK_GRID.size - 2)
        w = x - i
        return np.asarray(table[self.rows, i] * (1 - w) + table[self.rows, i + 1] * w, dtype=np.float64)


@dataclass(frozen=True)
class SimConfig:
    """Physics and fault knobs of the simulator."""

    dt_s: float = 0.1
    sensor_delay_s: float = 0.0
    meter_window_s: float = 1.0
    noise_share: float = 0.05
    cap_latency_s: float = 0.2
    brake_latency_s: float = 0.5
    ignore_share: float = 0.0
    clock_power_exponent: float = 1.2
    seed: int = 0



@dataclass(frozen=True)
class SimEvents:
    """Faults and changes at given times."""

    telemetry_lost: tuple[tuple[float, float], ...] = ()
    reboots: tuple[tuple[float, str, float], ...] = ()  # (time, node, seconds down)
    budget_changes: tuple[tuple[float, float], ...] = ()  # (time, watts)
    loop_restarts: tuple[float, ...] = ()  # the loop process starts afresh (new memory, new actuator)


class Actuation(Protocol):
    """How cap actions reach the plant: straight to it (the default), or through published intents and node
    agents (``power.sim_faults.AgentPath``)."""

    def actuator(self, plant: _Plant) -> Actuator: ...

    def tick(self, plant: _Plant, now_s: float) -> None: ...


class _Direct:
    """The loop drives the plant itself."""

    def actuator(self, plant: _Plant) -> Actuator:
        return plant

    def tick(self, plant: _Plant, now_s: float) -> None:
        return None


@dataclass
class SimResult:
    """Time series and request outcomes of one run."""

    dt_s: float
    power_watts: F64
    measured_watts: F64
    budget_watts: F64
    band: npt.NDArray[np.int64]
    capped_gpus: npt.NDArray[np.int64]
    brake_events: int
    cap_transitions: int
    steps: list[StepResult] = field(default_factory=list)
    ttft_s: F64 | None = None
    latency_s: F64 | None = None
    service_s: F64 | None = None
    request_priority: npt.NDArray[np.int64] | None = None

    @property
    def share(self) -> F64:
        return self.power_watts / self.budget_watts

    def over_budget_runs_s(self) -> F64:
        """Lengths (s) of every contiguous stretch with true power above the budget."""
        over = (self.power_watts > self.budget_watts).astype(np.int8)
        if not over.any():
            return np.zeros(0)
        edges = np.diff(np.concatenate([[0], over, [0]]))
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        return np.asarray((ends - starts) * self.dt_s, dtype=np.float64)

    def max_over_budget_s(self) -> float:
        """Longest stretch above budget (0 when never)."""
        runs = self.over_budget_runs_s()
        return float(runs.max()) if runs.size else 0.0


class _Plant:
    """The simulated hardware: GPU clocks and limits, pending actions, meter history."""

    def __init__(self, servers: Sequence[ServerSpec], cfg: SimConfig, steps: int, speeds: _SpeedTables) -> None:
        self.cfg = cfg
        self.servers = tuple(servers)
        gpu_server = np.repeat(np.arange(len(servers)), [s.gpus for s in servers])
        self.gpu_server = gpu_server
        self.server_start = np.concatenate([[0], np.cumsum([s.gpus for s in servers])[:-1]]).astype(np.int64)
        self.gpu_ids = [f"{s.node}/{i}" for s in servers for i in range(s.gpus)]
        self.index = {gid: i for i, gid in enumerate(self.gpu_ids)}
        self.node_gpus: dict[str, list[int]] = {}
        for i, gid in enumerate(self.gpu_ids):
            self.node_gpus.setdefault(gid.split("/")[0], []).append(i)
        dev = [servers[int(s)].device for s in gpu_server]
        self.idle = np.array([d.idle_watts for d in dev])
        self.prefill = np.array([d.prefill_power_watts for d in dev])
        self.decode = np.array([d.decode_power_watts for d in dev])
        self.fmax = np.array([d.sm_clock_mhz_max for d in dev])
        self.overhead = np.array([s.overhead_watts for s in servers])
        self.speeds = speeds
        g = len(self.gpu_ids)
        self.clock = self.fmax.copy()
        self.limit = np.full(g, np.inf)
        self.seq = np.zeros(g, dtype=np.int64)
        self.reported: dict[str, CapTarget] = {}
        self.up = np.ones(len(servers))
        self.up_gpu = np.ones(g)
        rng = np.random.default_rng(cfg.seed)
        self.ignores = rng.random(g) < cfg.ignore_share
        self.noise_rng = rng
        self.pending: list[tuple[float, int, int, float, float]] = []
        self._seq = 0
        self.now_s = 0.0
        self.k = 0
        self.measured = np.zeros(steps)
        self.lost: tuple[tuple[float, float], ...] = ()

    # ------------------------------------------------------------------ actuator side (Actuator protocol)

    def apply(self, actions: Sequence[CapAction]) -> ApplyReport:
        for a in actions:
            i = self.index[a.gpu_id]
            self._seq += 1
            self.reported[a.gpu_id] = a.target
            if self.ignores[i]:
                continue  # silently: the read-back still shows the target
            latency = min(self.cfg.cap_latency_s, self.cfg.brake_latency_s) if a.brake else self.cfg.cap_latency_s
            clock = a.target.clock_mhz if a.target.clock_mhz is not None else float(self.fmax[i])
            limit = a.target.power_limit_watts if a.target.power_limit_watts is not None else math.inf
            heapq.heappush(self.pending, (self.now_s + latency, self._seq, i, clock, limit))
        return ApplyReport(tuple(a.gpu_id for a in actions))

    def read_back(self) -> Mapping[str, CapTarget]:
        return dict(self.reported)

    def land_due(self) -> None:
        while self.pending and self.pending[0][0] <= self.now_s + 1e-9:
            _, seq, i, clock, limit = heapq.heappop(self.pending)
            if seq > self.seq[i] and self.up_gpu[i] > 0:  # a late, superseded command is dropped
                self.seq[i], self.clock[i], self.limit[i] = seq, clock, limit

    def reboot(self, node: str, down: bool) -> None:
        idx = self.node_gpus[node]
        s = int(self.gpu_server[idx[0]])
        self.up[s] = 0.0 if down else 1.0
        self.up_gpu[idx] = 0.0 if down else 1.0
        # Locked clocks and power limits do not survive a reboot.
        self.clock[idx], self.limit[idx] = self.fmax[idx], np.inf
        self.seq[idx] = self._seq
        for i in idx:
            self.reported[self.gpu_ids[i]] = UNCAPPED

    # ------------------------------------------------------------------ telemetry side

    def reading(self, k: int) -> PowerReading | None:
        if any(a <= self.now_s < b for a, b in self.lost):
            return None
        delay_steps = int(round(self.cfg.sensor_delay_s / self.cfg.dt_s))
        j = k - delay_steps
        if j < 0:
            return None
        # A row meter reports the mean of its last window, not one instant.
        w = max(1, int(round(self.cfg.meter_window_s / self.cfg.dt_s)))
        return PowerReading(float(self.measured[max(0, j - w + 1):j + 1].mean()), j * self.cfg.dt_s, "sim")


class _Physics:
    """Serving and power of every server for one step (the model in the module docstring)."""

    def __init__(self, plant: _Plant, workload: Workload, cfg: SimConfig) -> None:
        self.plant, self.workload, self.cfg = plant, workload, cfg
        steps, n = workload.steps, len(plant.servers)
        self.power = np.zeros(steps)
        self.cum = np.zeros((steps, n))
        self.dec_slow = np.ones((steps, n), dtype=np.float32)
        self.backlog = np.zeros(n)
        self.total = np.zeros(n)
        self.dyn_p = plant.prefill - plant.idle
        self.dyn_d = plant.decode - plant.idle

    def step(self, k: int) -> None:
        """Serve step ``k`` at the clocks and limits in force; record true and metered power."""
        plant, cfg, speeds, a = self.plant, self.cfg, self.plant.speeds, self.cfg.clock_power_exponent
        f_lock, lim = plant.clock / plant.fmax, plant.limit
        with np.errstate(divide="ignore", invalid="ignore"):
            f_lim_p = np.clip((lim - plant.idle) / self.dyn_p, 0.0, 1.0) ** (1 / a)
            f_lim_d = np.clip((lim - plant.idle) / self.dyn_d, 0.0, 1.0) ** (1 / a)
        f_p = np.maximum(np.minimum(f_lock, f_lim_p), 0.05)
        f_d = np.maximum(np.minimum(f_lock, f_lim_d), 0.05)
        speed = np.minimum.reduceat(f_p, plant.server_start)
        dspeed = np.minimum.reduceat(f_d, plant.server_start)
        cap_tokens = speeds.at(speeds.tps, speed) * plant.up * cfg.dt_s
        self.backlog += self.workload.prefill_tokens[k]
        processed = np.minimum(self.backlog, cap_tokens)
        self.backlog -= processed
        self.total += processed
        self.cum[k] = self.total
        self.dec_slow[k] = speeds.at(speeds.tpot, dspeed) / speeds.base_tpot
        with np.errstate(divide="ignore", invalid="ignore"):
            u = np.where(cap_tokens > 0, processed / np.maximum(cap_tokens, 1e-12), 0.0)
        ug = u[plant.gpu_server]
        dg = self.workload.decode_active[k][plant.gpu_server]
        pg = plant.idle + ug * self.dyn_p * f_p ** a + (1 - ug) * dg * self.dyn_d * f_d ** a
        pg = np.minimum(pg, np.maximum(lim, plant.idle)) * plant.up_gpu
        over = float(plant.overhead @ plant.up)
        self.power[k] = pg.sum() + over
        if cfg.noise_share > 0:
            pg = pg * (1 + plant.noise_rng.uniform(-cfg.noise_share, cfg.noise_share, pg.size))
        plant.measured[k] = pg.sum() + over


def simulate(servers: Sequence[ServerSpec], workload: Workload, budget_watts: float,
             policy_config: PolicyConfig | None = None, loop_config: LoopConfig | None = None,
             sim: SimConfig | None = None, events: SimEvents | None = None, control: bool = True,
             on_step: Callable[[StepResult, _Plant], None] | None = None, keep_steps: bool = False,
             step_times: StepTimes | None = None, meter: Callable[[Telemetry, Clock], Telemetry] | None = None,
             actuation: Actuation | None = None) -> SimResult:
    """Run the domain for ``workload.steps`` steps under the real control loop (or none when ``control``
    is false) and return power series and request latencies. ``meter`` wraps the simulated meter (fault
    injection); ``actuation`` carries actions to the plant (default: directly)."""
    cfg, ev, lcfg = sim or SimConfig(), events or SimEvents(), loop_config or LoopConfig()
    steps = workload.steps
    speeds = _SpeedTables(servers, step_times or SimpleStepTimes())
    plant = _Plant(servers, cfg, steps, speeds)
    plant.lost = ev.telemetry_lost
    gpus = [Gpu(gid, servers[int(plant.gpu_server[i])].node, servers[int(plant.gpu_server[i])].device,
                servers[int(plant.gpu_server[i])].priority) for i, gid in enumerate(plant.gpu_ids)]
    overhead = {s.node: s.overhead_watts for s in servers}
    clock = VirtualClock()
    telemetry: Telemetry = SimulatedTelemetry(lambda: plant.reading(plant.k))
    if meter is not None:
        telemetry = meter(telemetry, clock)
    act = actuation or _Direct()

    def start_loop(budget: float, run: int) -> ControlLoop:
        return ControlLoop("sim", budget, Policy(gpus, policy_config, overhead), telemetry, act.actuator(plant),
                           clock, lcfg, rng=random.Random(cfg.seed + run), envelope=PowerEnvelope.of(gpus, overhead))

    loop = start_loop(budget_watts, 0)
    physics = _Physics(plant, workload, cfg)
    period_steps = max(1, int(round(lcfg.period_s / cfg.dt_s)))
    budget = np.full(steps, float(budget_watts))
    band = np.zeros(steps, dtype=np.int64)
    capped = np.zeros(steps, dtype=np.int64)
    # (time, kind, node, down, watts): reboots and returns, budget changes, loop restarts, in time order.
    timeline = sorted([(t, 0, node, True, 0.0) for t, node, _ in ev.reboots] +
                      [(t + d, 0, node, False, 0.0) for t, node, d in ev.reboots] +
                      [(t, 1, "", False, w) for t, w in ev.budget_changes] +
                      [(t, 2, "", False, 0.0) for t in ev.loop_restarts])
    restarts = 0
    kept: list[StepResult] = []
    cur_band = cur_capped = transitions = brakes = 0
    for k in range(steps):
        plant.now_s = clock.t = now = k * cfg.dt_s
        plant.k = k
        while timeline and timeline[0][0] <= now + 1e-9:
            _, kind, node, down, watts = timeline.pop(0)
            if kind == 0:
                plant.reboot(node, down)
            elif kind == 1:
                loop.set_budget(watts)
            else:
                restarts += 1
                brakes += loop.brake_events
                loop = start_loop(loop.budget_watts, restarts)
        budget[k] = loop.budget_watts
        plant.land_due()
        physics.step(k)
        if control and k % period_steps == 0:
            res = loop.step()
            cur_band = int(res.decision.band)
            now_capped = sum(1 for t in res.decision.state.targets.values() if t.capped)
            transitions += int((now_capped > 0) != (cur_capped > 0))
            cur_capped = now_capped
            if on_step is not None:
                on_step(res, plant)
            if keep_steps:
                kept.append(res)
        act.tick(plant, now)
        band[k], capped[k] = cur_band, cur_capped
    result = SimResult(cfg.dt_s, physics.power, plant.measured, budget, band, capped, brakes + loop.brake_events,
                       transitions, kept)
    if workload.requests is not None:
        _latencies(result, workload, servers, physics.cum, physics.dec_slow, cfg.dt_s, speeds)
    return result


def _latencies(result: SimResult, workload: Workload, servers: Sequence[ServerSpec], cum: F64,
               dec_slow: npt.NDArray[np.float32], dt: float, speeds: _SpeedTables) -> None:
    req = workload.requests
    assert req is not None
    n = req.arrival_s.size
    ttft = np.full(n, np.nan)
    latency = np.full(n, np.nan)
    service = np.full(n, np.nan)
    steps = cum.shape[0]
    tps, tpot = speeds.base_tps, speeds.base_tpot
    for s in range(len(servers)):
        idx = np.flatnonzero(req.server == s)
        if idx.size == 0:
            continue
        idx = idx[np.argsort(req.arrival_s[idx], kind="stable")]
        key = np.cumsum(req.prompt_tokens[idx])
        curve = cum[:, s]
        k = np.searchsorted(curve, key - 1e-6)
        done = k < steps
        kk = k[done]
        prev = np.where(kk > 0, curve[np.maximum(kk - 1, 0)], 0.0)
        step_tokens = np.maximum(curve[kk] - prev, 1e-12)
        t_done = kk * dt + dt * np.clip((key[done] - prev) / step_tokens, 0.0, 1.0)
        ids = idx[done]
        ttft[ids] = np.maximum(t_done - req.arrival_s[ids], req.prompt_tokens[ids] / tps[s])
        slow = dec_slow[kk, s].astype(np.float64)
        latency[ids] = ttft[ids] + req.output_tokens[ids] * tpot[s] * slow
        # Service (GPU-occupied) time: prefill at the clock it ran at, decode at its slowdown.
        prefill_speed = np.clip((curve[kk] - prev) / (tps[s] * dt), 1e-3, 1.0)
        busy = (curve[kk] - prev) < tps[s] * dt * 0.999
        prefill_speed = np.where(busy, 1.0, prefill_speed)
        service[ids] = req.prompt_tokens[ids] / (tps[s] * prefill_speed) + req.output_tokens[ids] * tpot[s] * slow
    prio = np.array([s.priority for s in servers], dtype=np.int64)[req.server]
    result.ttft_s, result.latency_s, result.service_s, result.request_priority = ttft, latency, service, prio


def safety_bound_s(sim: SimConfig, loop: LoopConfig) -> float:
    """Longest the true domain power may stay above budget: the meter's delay and averaging window, one
    control period, the faster of the cap and brake paths, and one simulation step."""
    return sim.sensor_delay_s + sim.meter_window_s + loop.period_s + \
        min(sim.cap_latency_s, sim.brake_latency_s) + sim.dt_s


def telemetry_fault_bound_s(sim: SimConfig, loop: LoopConfig) -> float:
    """Longest over budget when the meter fails (silent, frozen, skewed or lying): :func:`safety_bound_s`
    when the load rises after the fault began; a rise inside the last meter window before it can add the
    blind windows' excess over one period, ``max(stuck_after_s, safe_after_s) − period_s``."""
    return safety_bound_s(sim, loop) + max(0.0, max(loop.stuck_after_s, loop.safe_after_s) - loop.period_s)


def peak_share(result: SimResult, window_s: float = 1.0) -> float:
    """Largest ``window_s`` mean of power over budget (the POLCA characterisation's peak)."""
    n = max(1, int(round(window_s / result.dt_s)))
    share = result.share
    usable = share[: share.size // n * n]
    if usable.size == 0:
        return float(share.max())
    return float(usable.reshape(-1, n).mean(axis=1).max())


def calibrate_load(trace: tuple[F64, F64, F64], servers: Sequence[ServerSpec], budget_watts: float,
                   target_peak_share: float = 0.79, dt_s: float = 0.2, duration_s: float | None = None,
                   seed: int = 0, iterations: int = 8, step_times: StepTimes | None = None) -> float:
    """Copies of the trace per server at which the uncapped domain peaks at ``target_peak_share`` of its
    budget (POLCA: inference rows peak at 79% of provisioned power); bisection on a log scale."""
    lo, hi = 1e-3, 2.0
    cfg = SimConfig(dt_s=dt_s, noise_share=0.0, seed=seed)
    for _ in range(iterations):
        mid = math.sqrt(lo * hi)
        wl = trace_workload(trace, servers, mid, dt_s=dt_s, duration_s=duration_s, seed=seed,
                            step_times=step_times)
        free = simulate(servers, wl, budget_watts, sim=cfg, control=False, step_times=step_times)
        if peak_share(free) > target_peak_share:
            hi = mid
        else:
            lo = mid
    return math.sqrt(lo * hi)


__all__ = ["F64", "Requests", "ServerSpec", "SimConfig", "SimEvents", "SimResult", "SimpleStepTimes", "StepTimes",
           "Workload", "activity_for_share", "calibrate_load", "domain_budget_watts", "load_azure_trace",
           "peak_share", "profile_workload", "row", "safety_bound_s", "server_overhead_watts", "simulate",
           "telemetry_fault_bound_s", "trace_workload", "uncapped_watts"]
