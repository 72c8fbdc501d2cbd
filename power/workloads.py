"""Servers and workloads of the power simulator: server specs, step-time models and load builders.

* A server is one replica over its GPUs (tensor parallel). Full-clock prefill is
  ``GPUs·TFLOPS·0.5 / (2·70e9)`` tokens/s and TPOT the measured vLLM Llama-2-70B A100 step (45 ms,
  REFERENCE §1) scaled by memory bandwidth.
* :class:`SimpleStepTimes` is a documented simple model of what a lowered clock costs: prefill is
  compute-bound (time ∝ ``f_max/f``), a decode step is memory-bound except for 10% (``0.9 + 0.1/f``). A
  performance-model-backed ``StepTimes`` can be passed to the simulator instead.
* Workloads: an Azure 2023 trace scaled to a row (:func:`trace_workload`), or a fluid load whose uncapped
  power follows a share of the budget (:func:`profile_workload`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from planner.io.traces import load_trace
from planner.schema import DeviceType

F64 = npt.NDArray[np.float64]

A100_TPOT_S = 0.045  # vLLM Llama-2-70B decode step on A100 TP4/TP8, REFERENCE §1
A100_MEMORY_TBPS = 2.039
MODEL_PARAMS = 70e9  # Llama-2-70B-class replica
PREFILL_MFU = 0.5


@dataclass(frozen=True)
class ServerSpec:
    """One server of the domain: a replica over ``gpus`` devices of one type."""

    node: str
    device: DeviceType
    gpus: int = 8
    priority: int = 1
    overhead_watts: float = 1500.0

    @property
    def max_watts(self) -> float:
        """Most the server can draw in the model (every GPU in prefill, plus overhead)."""
        return self.gpus * self.device.prefill_power_watts + self.overhead_watts

    @property
    def prefill_tokens_per_s(self) -> float:
        """Prompt tokens per second at full clock: ``gpus·TFLOPS·MFU / (2·params)``."""
        return self.gpus * self.device.bf16_tflops * 1e12 * PREFILL_MFU / (2 * MODEL_PARAMS)

    @property
    def tpot_s(self) -> float:
        """Decode step time at full clock."""
        return A100_TPOT_S * A100_MEMORY_TBPS / self.device.memory_tbps


def server_overhead_watts(device: DeviceType) -> float:
    """Server power outside the GPUs: 1.5 kW (DGX-A100), 2.8 kW (DGX-H100), else scaled by GPU TDP."""
    return 2800.0 if device.tdp_watts >= 700 else 1500.0 * max(0.25, device.tdp_watts / 400)


class StepTimes(Protocol):
    """Speed of one server's replica at a clock share (locked clock over maximum)."""

    def prefill_tokens_per_s(self, server: ServerSpec, clock_share: float) -> float: ...

    def tpot_s(self, server: ServerSpec, clock_share: float) -> float: ...


@dataclass(frozen=True)
class SimpleStepTimes:
    """Documented simple model: prefill is compute-bound (time ∝ f_max/f); a decode step is memory-bound
    except for ``1 − memory_bound_share`` of it."""

    memory_bound_share: float = 0.9

    def prefill_tokens_per_s(self, server: ServerSpec, clock_share: float) -> float:
        """Full-clock prompt throughput times the clock share."""
        return server.prefill_tokens_per_s * clock_share

    def tpot_s(self, server: ServerSpec, clock_share: float) -> float:
        """Full-clock TPOT stretched by the compute-bound part of the step."""
        m = self.memory_bound_share
        return server.tpot_s * (m + (1 - m) / clock_share)



@dataclass(frozen=True)
class Requests:
    """A request trace assigned to servers."""

    arrival_s: F64
    server: npt.NDArray[np.int64]
    prompt_tokens: F64
    output_tokens: F64


@dataclass(frozen=True)
class Workload:
    """Per step and server: prompt tokens arriving and decode activity (0..1); the requests if any."""

    prefill_tokens: F64
    decode_active: F64
    requests: Requests | None = None

    @property
    def steps(self) -> int:
        return int(self.prefill_tokens.shape[0])



# ---------------------------------------------------------------------------------------------- workloads


def load_azure_trace(path: str | Path) -> tuple[F64, F64, F64]:
    """(arrival seconds from the first request, prompt tokens, output tokens) of an Azure 2023 trace CSV, in
    file order (read by ``planner.io.traces``, the one trace reader)."""
    trace = load_trace(Path(path))
    if trace.arrival_s is None or np.isnan(trace.arrival_s).any():
        raise ValueError(f"{path}: TIMESTAMP: every request needs one")
    return trace.arrival_s, trace.input_tokens.astype(np.float64), trace.output_tokens.astype(np.float64)


def trace_workload(trace: tuple[F64, F64, F64], servers: Sequence[ServerSpec], copies_per_server: float,
                   dt_s: float = 0.1, duration_s: float | None = None, jitter_s: float = 5.0,
                   seed: int = 0, step_times: StepTimes | None = None) -> Workload:
    """Scale a trace to a domain: ``copies_per_server × servers`` jittered copies of it, each request sent to
    a server at random in proportion to the server's prefill throughput."""
    rng = np.random.default_rng(seed)
    t0, p0, o0 = trace
    span = float(duration_s if duration_s is not None else t0.max() + 1.0)
    keep = t0 < span
    t0, p0, o0 = t0[keep], p0[keep], o0[keep]
    total = copies_per_server * len(servers)
    whole = int(math.floor(total))
    parts_t, parts_p, parts_o = [], [], []
    for c in range(whole + 1):
        frac = 1.0 if c < whole else total - whole
        if frac <= 0:
            break
        pick = rng.random(t0.size) < frac
        jit = rng.uniform(-jitter_s, jitter_s, int(pick.sum()))
        parts_t.append(np.mod(t0[pick] + jit, span))
        parts_p.append(p0[pick])
        parts_o.append(o0[pick])
    arrival = np.concatenate(parts_t) if parts_t else np.zeros(0)
    prompt = np.concatenate(parts_p) if parts_p else np.zeros(0)
    output = np.concatenate(parts_o) if parts_o else np.zeros(0)
    st = step_times or SimpleStepTimes()
    weight = np.array([st.prefill_tokens_per_s(s, 1.0) for s in servers])
    server = rng.choice(len(servers), size=arrival.size, p=weight / weight.sum()).astype(np.int64)
    steps = int(math.ceil(span / dt_s))
    step = np.minimum((arrival / dt_s).astype(np.int64), steps - 1)
    prefill = np.zeros((steps, len(servers)))
    np.add.at(prefill, (step, server), prompt)
    # Decode activity: from the end of an unqueued prefill for output × TPOT (power barely depends on batch).
    tps = weight[server]
    tpot = np.array([st.tpot_s(s, 1.0) for s in servers])[server]
    start = np.minimum(((arrival + prompt / tps) / dt_s).astype(np.int64), steps)
    end = np.minimum(((arrival + prompt / tps + output * tpot) / dt_s).astype(np.int64) + 1, steps)
    active = np.zeros((steps + 1, len(servers)))
    np.add.at(active, (start, server), 1.0)
    np.add.at(active, (end, server), -1.0)
    decode = (np.cumsum(active, axis=0)[:steps] > 0.5).astype(np.float64)
    return Workload(prefill, decode, Requests(arrival, server, prompt, output))


def uncapped_watts(servers: Sequence[ServerSpec], prefill_share: float, decode_share: float) -> float:
    """Domain watts with every server spending ``prefill_share`` of its time in prefill and decoding
    ``decode_share`` of the rest, at full clock."""
    total = 0.0
    for s in servers:
        d = s.device
        gpu = d.idle_watts + prefill_share * (d.prefill_power_watts - d.idle_watts) + \
            (1 - prefill_share) * decode_share * (d.decode_power_watts - d.idle_watts)
        total += s.gpus * gpu + s.overhead_watts
    return total


def activity_for_share(servers: Sequence[ServerSpec], budget_watts: float, share: float) -> tuple[float, float]:
    """(prefill share, decode share) that make the uncapped domain draw ``share`` of the budget."""
    target = share * budget_watts
    idle = uncapped_watts(servers, 0.0, 0.0)
    dec = uncapped_watts(servers, 0.0, 1.0)
    pre = uncapped_watts(servers, 1.0, 1.0)
    if target <= dec:
        return 0.0, float(np.clip((target - idle) / (dec - idle), 0.0, 1.0))
    return float(np.clip((target - dec) / (pre - dec), 0.0, 1.0)), 1.0


def profile_workload(servers: Sequence[ServerSpec], budget_watts: float, share_at: Callable[[float], float],
                     duration_s: float, dt_s: float = 0.1,
                     burst: Callable[[float], bool] | None = None,
                     step_times: StepTimes | None = None) -> Workload:
    """A fluid workload whose uncapped power follows ``share_at(t)`` of the budget; during ``burst(t)`` every
    server gets prompts (8k-token bursts) 20% faster than it can serve them."""
    steps = int(math.ceil(duration_s / dt_s))
    st = step_times or SimpleStepTimes()
    tps = np.array([st.prefill_tokens_per_s(s, 1.0) for s in servers])
    prefill = np.zeros((steps, len(servers)))
    decode = np.zeros((steps, len(servers)))
    for k in range(steps):
        t = k * dt_s
        if burst is not None and burst(t):
            pre, dec = 1.0, 1.0
            # 8k-token prompts arriving together, 20% faster than a server at full clock can take them.
            prefill[k] = 1.2 * tps * dt_s
        else:
            pre, dec = activity_for_share(servers, budget_watts, share_at(t))
            prefill[k] = pre * tps * dt_s
        decode[k] = dec
    return Workload(prefill, decode)


def row(device: DeviceType, servers: int, low_priority_share: float = 0.5, gpus: int = 8,
        prefix: str = "node") -> list[ServerSpec]:
    """``servers`` identical servers, the first ``low_priority_share`` of them low priority (0), the rest 1."""
    n_low = int(round(servers * low_priority_share))
    return [ServerSpec(f"{prefix}-{i:03d}", device, gpus, 0 if i < n_low else 1, server_overhead_watts(device))
            for i in range(servers)]


def domain_budget_watts(servers: Sequence[ServerSpec]) -> float:
    """Budget provisioned for these servers at their modelled maximum draw."""
    return float(sum(s.max_watts for s in servers))


