"""Replay of traffic against a plan: a discrete-event, iteration-level simulator of continuous batching.

Every replica of every replica group is an engine that runs iterations one after another:

- ``unified``: continuous batching with a chunked-prefill token budget (``max_batched_tokens``, decode
  tokens count against it) or, with ``chunked_prefill=False``, whole prompts first (prefill priority, as
  vLLM before chunking and DistServe's colocated baseline). A mixed iteration costs
  ``prefill_ms + decode_step_ms − decode_step_ms(0, 0)``: the fixed step overhead is paid once.
- ``prefill``: prompts only; at the end of its prefill a request's KV cache moves to a decode replica
  (``kv_transfer_ms``), chosen by the router.
- ``decode`` and ``decode+offload``: admit requests whose KV cache fits, step the batch; the offload pair's
  step (dense on compute devices, attention on memory devices) is whatever the latency function says for
  that group.

KV cache: a request is admitted when its tokens fit (a 1% watermark kept free); when the running batch
outgrows the cache the newest request is preempted (recomputed on a unified replica, swapped back into the
admission queue on a decode replica). A replica with ``pp`` pipeline stages is ``pp`` engines, each with
1/pp of the KV cache and the full step latency (micro-batches in flight: pp× throughput, same latency).

Router: for each request, the plan's group for its length bucket by smooth weighted round robin over the
plan's shares (``prefill_share`` picks a unified or prefill group; after a prefill group, ``decode_share``
picks the decode group), then, inside the group, the engine with the least outstanding work in seconds
(outstanding tokens over the engine's token rate). A plan without load shares is routed by replicas.

Speed: requests live in flat lists, a replica's running batch is a heap of finish steps with the context
sum kept as an aggregate, and a decode-only stretch is advanced as one event covering all iterations up to
the next finish (cut short when a request arrives): no per-token Python work.

Step times come from a :class:`StepTimes` (the performance model, or a fitted profile such as DistServe's),
so the replay is only as good as the latency function behind it.
"""

from __future__ import annotations

import bisect
import csv
import heapq
import json
import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from planner.catalog import Catalog
from planner.model.perf import PerfModel, ReplicaShape
from planner.roles import DECODE_ONLY_ROLES, PREFILL_ROLES
from planner.schema import FleetSpec, Plan, ReplicaGroup, Role, Service, Value

# ---------------------------------------------------------------------------------------------- latency


class StepTimes(Protocol):
    """Latency of one engine iteration of a replica group (milliseconds) and its KV-cache size."""

    def prefill_ms(self, group: ReplicaGroup, prompt_lens: Sequence[int]) -> float:
        """One prefill iteration over prompts (or prompt chunks) of these lengths."""
        ...

    def decode_step_ms(self, group: ReplicaGroup, batch: int, sum_ctx_tokens: int) -> float:
        """One decode iteration of ``batch`` requests holding ``sum_ctx_tokens`` tokens of context."""
        ...

    def kv_capacity_tokens(self, group: ReplicaGroup) -> int:
        """Tokens of KV cache one replica holds."""
        ...

    def kv_transfer_ms(self, src: ReplicaGroup, dst: ReplicaGroup, tokens: int) -> float:
        """Moving ``tokens`` of KV cache from a prefill replica to a decode replica."""
        ...


@dataclass(frozen=True)
class FittedStepTimes:
    """DistServe-style fitted latency: prefill ``a + b·Σlen + c·Σlen²``; decode ``a + b·Σctx + c·batch``.

    Decode has a small-batch and a large-batch fit switching at ``decode_threshold``; one set of
    coefficients per TP degree. A pipeline's step takes the same time (its stages run in sequence); the
    replay runs ``pp`` micro-batches at once, which is where pipelining gains throughput.
    """

    prefill: Mapping[int, tuple[float, float, float]]
    decode_small: Mapping[int, tuple[float, float, float]]
    decode_large: Mapping[int, tuple[float, float, float]]
    decode_threshold: Mapping[int, int]
    kv_tokens: Mapping[tuple[int, int], int]  # (tp, pp) → KV-cache tokens of one replica
    kv_transfer_gbps: float = 0.0  # 0: transfer not modelled (prefill and decode share a node's NVLink)
    kv_bytes_per_token: float = 0.0

    @staticmethod
    def from_distserve(profile_json: Path, max_tokens_csv: Path, model: str) -> FittedStepTimes:
        """Read DistServe's ``profiler-*.json`` and ``max_num_tokens.csv`` for one model."""
        data = json.loads(profile_json.read_text(encoding="utf-8"))[model]
        kv: dict[tuple[int, int], int] = {}
        with max_tokens_csv.open(encoding="utf-8") as f:
            for row in csv.DictReader(f):
                if row["model"] == model:
                    kv[(int(row["tp"]), int(row["pp"]))] = int(row["max_num_tokens"])

        def coef(tp: str, key: str) -> tuple[float, float, float]:
            a, b, c = data[tp][key]
            return float(a), float(b), float(c)

        return FittedStepTimes(
            prefill={int(tp): coef(tp, "prefill") for tp in data},
            decode_small={int(tp): coef(tp, "decoding_smallbs") for tp in data},
            decode_large={int(tp): coef(tp, "decoding_largebs") for tp in data},
            decode_threshold={int(tp): int(data[tp]["decoding_large_small_bs_threshold"]) for tp in data},
            kv_tokens=kv,
        )

    def prefill_ms(self, group: ReplicaGroup, prompt_lens: Sequence[int]) -> float:
        """``a + b·Σlen + c·Σlen²``."""
        a, b, c = self.prefill[group.configuration.tp]
        total = sum(prompt_lens)
        squares = sum(x * x for x in prompt_lens)
        return a + b * total + c * squares

    def decode_step_ms(self, group: ReplicaGroup, batch: int, sum_ctx_tokens: int) -> float:
        """``a + b·Σctx + c·batch`` with the small- or large-batch fit."""
        tp = group.configuration.tp
        a, b, c = self.decode_small[tp] if batch < self.decode_threshold[tp] else self.decode_large[tp]
        return a + b * sum_ctx_tokens + c * batch

    def kv_capacity_tokens(self, group: ReplicaGroup) -> int:
        """The profiled KV-token capacity for the group's (TP, PP)."""
        c = group.configuration
        got = self.kv_tokens.get((c.tp, c.pp))
        return got if got is not None else self.kv_tokens[(c.tp, 1)] * c.pp

    def kv_transfer_ms(self, src: ReplicaGroup, dst: ReplicaGroup, tokens: int) -> float:
        """Bytes over the configured link, or 0 when not modelled."""
        if self.kv_transfer_gbps <= 0:
            return 0.0
        return tokens * self.kv_bytes_per_token / (self.kv_transfer_gbps * 1e9 / 8) * 1e3


class PerfStepTimes:
    """The performance model behind the replay: ``PerfModel`` answers cached per (group, batch, context).

    A batch of mixed prompt lengths is timed as ``batch`` prompts of the mean length; decode contexts are
    rounded to ``ctx_quantum_tokens`` per request so repeated steps hit the cache.
    """

    def __init__(self, perf: PerfModel, fleet: FleetSpec, catalog: Catalog, *, ctx_quantum_tokens: int = 32) -> None:
        self.perf, self.catalog, self.quantum = perf, catalog, ctx_quantum_tokens
        self.models = {s.id: s.model for s in fleet.services}
        self._shapes: dict[int, ReplicaShape] = {}
        self._decode: dict[tuple[int, int, int], float] = {}
        self._prefill: dict[tuple[int, int, int], float] = {}

    def shape(self, group: ReplicaGroup) -> ReplicaShape:
        """The replica shape of a group (model from its service)."""
        key = id(group)
        got = self._shapes.get(key)
        if got is None:
            c = group.configuration
            got = ReplicaShape(
                model=self.catalog.model(self.models[group.service]), device=self.catalog.device(c.device),
                tp=c.tp, pp=c.pp,
                memory_device=self.catalog.device(c.memory_device) if c.memory_device else None,
                memory_devices=c.memory_devices if c.memory_device else 0,
            )
            self._shapes[key] = got
        return got

    def prefill_ms(self, group: ReplicaGroup, prompt_lens: Sequence[int]) -> float:
        """Prefill of ``len(prompt_lens)`` prompts of their mean length."""
        n = len(prompt_lens)
        mean = max(1, round(sum(prompt_lens) / n))
        key = (id(group), n, mean)
        got = self._prefill.get(key)
        if got is None:
            got = self.perf.prefill_ms(self.shape(group), n, mean)
            self._prefill[key] = got
        return got

    def decode_step_ms(self, group: ReplicaGroup, batch: int, sum_ctx_tokens: int) -> float:
        """One decode step, the per-request context rounded up to the quantum."""
        if batch <= 0:
            return 0.0  # no overhead credit for a mixed step: the model does not expose its intercept
        q = self.quantum
        ctx = max(1, -(-sum_ctx_tokens // (batch * q))) * q
        key = (id(group), batch, ctx)
        got = self._decode.get(key)
        if got is None:
            got = self.perf.decode_step_ms(self.shape(group), batch, ctx)
            self._decode[key] = got
        return got

    def kv_capacity_tokens(self, group: ReplicaGroup) -> int:
        """KV tokens from the model's memory fit."""
        return int(self.perf.memory(self.shape(group)).kv_capacity_tokens)

    def kv_transfer_ms(self, src: ReplicaGroup, dst: ReplicaGroup, tokens: int) -> float:
        """KV bytes over the slower side's NICs (one per device)."""
        a, b = self.shape(src), self.shape(dst)
        gbitps = min(a.device.nic_gbitps * a.devices, b.device.nic_gbitps * b.devices)
        return tokens * a.model.kv_bytes_per_token * 8 / (gbitps * 1e9) * 1e3


# ---------------------------------------------------------------------------------------------- workload


@dataclass(frozen=True)
class Arrivals:
    """Requests of one service: arrival times (s from 0) and lengths."""

    arrival_s: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray

    def __len__(self) -> int:
        return int(self.arrival_s.shape[0])

    @property
    def mean_rate_rps(self) -> float:
        """Requests per second over the span of the arrivals."""
        if len(self) < 2:
            return 0.0
        span = float(self.arrival_s[-1] - self.arrival_s[0])
        return (len(self) - 1) / span if span > 0 else math.inf


def load_azure_trace(path: Path) -> Arrivals:
    """Read an Azure LLM 2023 trace (TIMESTAMP, ContextTokens, GeneratedTokens), times from 0."""
    stamps: list[str] = []
    ins: list[int] = []
    outs: list[int] = []
    with path.open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            stamps.append(row["TIMESTAMP"].strip().replace(" ", "T"))
            ins.append(int(row["ContextTokens"]))
            outs.append(int(row["GeneratedTokens"]))
    t = np.array(stamps, dtype="datetime64[ns]")
    order = np.argsort(t, kind="stable")
    seconds = (t[order] - t[order][0]).astype(np.int64) / 1e9
    return Arrivals(
        arrival_s=seconds.astype(np.float64),
        input_tokens=np.maximum(np.array(ins, dtype=np.int64)[order], 1),
        output_tokens=np.maximum(np.array(outs, dtype=np.int64)[order], 1),
    )


def rescale(arrivals: Arrivals, rate_rps: float) -> Arrivals:
    """The same requests with times stretched so the mean rate is ``rate_rps`` (bursts keep their shape)."""
    current = arrivals.mean_rate_rps
    if rate_rps <= 0 or current <= 0 or not math.isfinite(current):
        return arrivals
    return Arrivals(arrivals.arrival_s * (current / rate_rps), arrivals.input_tokens, arrivals.output_tokens)


def _sample_lengths(
    service: Service, n: int, rng: np.random.Generator, trace_lengths: Arrivals | None
) -> tuple[np.ndarray, np.ndarray]:
    if trace_lengths is not None and len(trace_lengths):
        idx = rng.integers(0, len(trace_lengths), size=n)
        return trace_lengths.input_tokens[idx], trace_lengths.output_tokens[idx]
    buckets = service.traffic.length_buckets()
    shares = np.array([b.share for b in buckets], dtype=np.float64)
    pick = rng.choice(len(buckets), size=n, p=shares / shares.sum())
    ins = np.array([b.input_tokens for b in buckets], dtype=np.int64)[pick]
    outs = np.array([b.output_tokens for b in buckets], dtype=np.int64)[pick]
    return ins, outs


def synthetic_arrivals(
    service: Service,
    rate_rps: float,
    duration_s: float,
    *,
    process: Literal["poisson", "bursty"] = "poisson",
    burst_cv: float = 3.0,
    seed: int = 0,
    trace_lengths: Arrivals | None = None,
) -> Arrivals:
    """Poisson arrivals, or bursty ones (Gamma gaps with coefficient of variation ``burst_cv``)."""
    rng = np.random.default_rng(seed)
    if rate_rps <= 0:
        empty = np.zeros(0, dtype=np.int64)
        return Arrivals(np.zeros(0), empty, empty)
    n_max = int(rate_rps * duration_s * 1.5 + 50)
    if process == "poisson":
        gaps = rng.exponential(1.0 / rate_rps, size=n_max)
    else:
        shape = 1.0 / (burst_cv * burst_cv)
        gaps = rng.gamma(shape, 1.0 / (rate_rps * shape), size=n_max)
    times = np.cumsum(gaps)
    times = times[times < duration_s]
    ins, outs = _sample_lengths(service, int(times.shape[0]), rng, trace_lengths)
    return Arrivals(times, ins, outs)


TraceKind = Literal["file", "poisson", "bursty"]


@dataclass(frozen=True)
class TraceSource:
    """What drives the replay: a trace file (its lengths and burst shape) or a synthetic process."""

    kind: TraceKind
    path: Path | None = None
    rate_scale: float = 1.0
    duration_s: float = 600.0  # synthetic processes only
    keep_trace_rate: bool = False  # a trace file replays at its own rate × rate_scale, not the service's
    seed: int = 0


def build_workload(fleet: FleetSpec, source: TraceSource, base_dir: Path | None = None) -> dict[str, Arrivals]:
    """Arrivals per service at ``rate_rps × rate_scale`` (a trace file keeps its burst shape and lengths)."""
    out: dict[str, Arrivals] = {}
    trace = load_azure_trace(source.path) if source.kind == "file" and source.path else None
    for i, svc in enumerate(fleet.services):
        rate = svc.traffic.rate_rps * source.rate_scale
        if trace is not None:
            out[svc.id] = (
                rescale(trace, trace.mean_rate_rps * source.rate_scale)
                if source.keep_trace_rate
                else rescale(trace, rate)
            )
            continue
        own: Arrivals | None = None
        if svc.traffic.trace_file:
            p = Path(svc.traffic.trace_file)
            own = load_azure_trace(p if p.is_absolute() or base_dir is None else base_dir / p)
        process: Literal["poisson", "bursty"] = "bursty" if source.kind == "bursty" else "poisson"
        out[svc.id] = synthetic_arrivals(
            svc, rate, source.duration_s, process=process, seed=source.seed + 7919 * i, trace_lengths=own
        )
    return out


# ---------------------------------------------------------------------------------------------- report


class Percentiles(Value):
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


# ---------------------------------------------------------------------------------------------- engine


@dataclass(frozen=True)
class ReplayOptions:
    """Engine knobs shared by every replica (vLLM-like defaults)."""

    chunked_prefill: bool = True
    max_batched_tokens: int = 8192
    max_batch: int = 256
    kv_watermark: float = 0.01
    max_macro_steps: int = 4096
    power_bin_s: float = 10.0


_ARRIVE, _ITER_END, _KV_ARRIVE = 0, 1, 2
_FRONT = PREFILL_ROLES


class _Wrr:
    """Smooth weighted round robin: picks follow the weights exactly, with no randomness."""

    def __init__(self, weighted: list[tuple[int, float]]) -> None:
        self.groups = [g for g, _ in weighted]
        self.weights = [w for _, w in weighted]
        self.total = sum(self.weights)
        self.current = [0.0] * len(weighted)

    def next(self) -> int:
        best = 0
        for i, w in enumerate(self.weights):
            self.current[i] += w
            if self.current[i] > self.current[best]:
                best = i
        self.current[best] -= self.total
        return self.groups[best]


@dataclass(frozen=True)
class _Routes:
    log_in: np.ndarray
    log_out: np.ndarray
    front: list[_Wrr]  # per bucket: unified or prefill groups
    back: list[_Wrr]  # per bucket: decode groups (after a prefill group)


@dataclass
class _Replica:
    idx: int
    group: int
    role: Role
    kv_cap: int
    speed_tps: float  # tokens of work per second, for the router
    waiting: deque[int] = field(default_factory=deque)
    running: list[tuple[int, int]] = field(default_factory=list)  # heap of (finish step, rid)
    order: list[int] = field(default_factory=list)  # running rids in admission order (for preemption)
    n_run: int = 0
    ctx_base: int = 0  # Σ (ctx at join − join step): Σctx = ctx_base + n_run·step
    step: int = 0
    kv_prefill: int = 0  # KV tokens held by prompts being prefilled
    work: float = 0.0  # outstanding tokens
    busy: bool = False
    version: int = 0
    # the iteration (or decode stretch) in flight
    start_s: float = 0.0
    ends_s: list[float] = field(default_factory=list)
    chunks: list[tuple[int, int]] = field(default_factory=list)  # (rid, tokens) prefilled in this iteration
    decoding: bool = False
    busy_s: float = 0.0

    def sum_ctx(self) -> int:
        return self.ctx_base + self.n_run * self.step


@dataclass
class _Requests:
    service: list[int] = field(default_factory=list)
    arrival: list[float] = field(default_factory=list)
    input: list[int] = field(default_factory=list)
    output: list[int] = field(default_factory=list)
    prompt_left: list[int] = field(default_factory=list)  # tokens still to prefill
    prompt_need: list[int] = field(default_factory=list)  # prompt to (re)compute
    generated: list[int] = field(default_factory=list)  # tokens generated before joining the batch
    join_step: list[int] = field(default_factory=list)
    join_ctx: list[int] = field(default_factory=list)
    alive: list[int] = field(default_factory=list)  # version bumped on preemption (lazy heap deletion)
    first_token: list[float] = field(default_factory=list)
    finish: list[float] = field(default_factory=list)
    preempted: list[int] = field(default_factory=list)
    running_on: list[int] = field(default_factory=list)  # replica whose running batch holds it, else -1


class _Sim:
    """One replay; mutable state lives here and nowhere else."""

    def __init__(
        self,
        plan: Plan,
        fleet: FleetSpec,
        catalog: Catalog,
        times: StepTimes,
        workload: Mapping[str, Arrivals],
        opts: ReplayOptions,
    ) -> None:
        self.plan, self.fleet, self.catalog, self.times, self.opts = plan, fleet, catalog, times, opts
        self.services = [s for s in fleet.services if s.id in workload]
        self.svc_index = {s.id: i for i, s in enumerate(self.services)}
        self.groups = [g for g in plan.replica_groups if g.replicas > 0 and g.service in self.svc_index]
        self.replicas: list[_Replica] = []
        self.group_replicas: list[list[int]] = []
        for gi, g in enumerate(self.groups):
            ids = []
            # A pipeline of pp stages runs pp micro-batches at once: pp engines, each with 1/pp of the KV
            # cache and the full (all-stage) step latency, so throughput is pp× and latency unchanged.
            pp = g.configuration.pp
            cap = int(times.kv_capacity_tokens(g)) // pp
            speed = self._speed(g)
            for _ in range(g.replicas * pp):
                rep = _Replica(idx=len(self.replicas), group=gi, role=g.configuration.role, kv_cap=cap,
                               speed_tps=speed)
                ids.append(rep.idx)
                self.replicas.append(rep)
            self.group_replicas.append(ids)
        self.req = _Requests()
        self.events: list[tuple[float, int, int, int, int]] = []
        self.seq = 0
        self.dropped = [0] * len(self.services)
        # router tables per service: buckets and the groups with a share of each
        self.routes = [self._route_table(i) for i in range(len(self.services))]
        self.span_end = 0.0
        # power: device-seconds busy per pool and bin, split by phase
        self.bins_prefill: dict[str, list[float]] = {}
        self.bins_decode: dict[str, list[float]] = {}
        self.workload = workload
        self._pending_join: list[int] = []

    # ------------------------------------------------------------------ setup

    def _speed(self, g: ReplicaGroup) -> float:
        """Tokens of outstanding work a replica clears per second (router weight)."""
        if g.configuration.role is Role.PREFILL:
            return 2048 / max(self.times.prefill_ms(g, [2048]), 1e-6) * 1e3
        batch = 32
        return batch / max(self.times.decode_step_ms(g, batch, batch * 1024), 1e-6) * 1e3

    def _route_table(self, si: int) -> _Routes:
        """Per length bucket, the groups that serve it with the plan's shares (replicas where it has none)."""
        sid = self.services[si].id
        mine = [gi for gi, g in enumerate(self.groups) if g.service == sid]
        keys = sorted({(b.input_tokens, b.output_tokens) for gi in mine for b in self.groups[gi].load}) or [(1, 1)]
        front: list[_Wrr] = []
        back: list[_Wrr] = []
        for key in keys:
            f_w: list[tuple[int, float]] = []
            b_w: list[tuple[int, float]] = []
            for gi in mine:
                g = self.groups[gi]
                share = next(((b.prefill_share, b.decode_share) for b in g.load
                              if (b.input_tokens, b.output_tokens) == key), (0.0, 0.0))
                role = g.configuration.role
                if role in _FRONT and share[0] > 0:
                    f_w.append((gi, share[0]))
                elif role in DECODE_ONLY_ROLES and share[1] > 0:
                    b_w.append((gi, share[1]))
            if not f_w:  # the plan gives this bucket to no one (or carries no load split): by replicas
                f_w = [(gi, float(self.groups[gi].replicas)) for gi in mine
                       if self.groups[gi].configuration.role in _FRONT]
            if not b_w:
                b_w = [(gi, float(self.groups[gi].replicas)) for gi in mine
                       if self.groups[gi].configuration.role in DECODE_ONLY_ROLES]
            front.append(_Wrr(f_w))
            back.append(_Wrr(b_w))
        return _Routes(np.log([k[0] for k in keys]), np.log([k[1] for k in keys]), front, back)

    # ------------------------------------------------------------------ events

    def _push(self, t: float, kind: int, a: int, b: int) -> None:
        self.seq += 1
        heapq.heappush(self.events, (t, self.seq, kind, a, b))

    def _work_now(self, rep: _Replica, now: float) -> float:
        if rep.busy and rep.decoding and len(rep.ends_s) > 1:
            done = bisect.bisect_right(rep.ends_s, now)
            return rep.work - rep.n_run * done
        return rep.work

    def _pick(self, group_ids: list[int], now: float, need_tokens: int) -> int:
        best, best_score = -1, math.inf
        for gi in group_ids:
            for ri in self.group_replicas[gi]:
                rep = self.replicas[ri]
                if rep.kv_cap < need_tokens:
                    continue
                score = self._work_now(rep, now) / rep.speed_tps
                if score < best_score:
                    best, best_score = ri, score
        return best

    def _bucket(self, si: int, rid: int) -> int:
        routes = self.routes[si]
        if len(routes.log_in) == 1:
            return 0
        d = (np.abs(routes.log_in - math.log(self.req.input[rid]))
             + np.abs(routes.log_out - math.log(self.req.output[rid])))
        return int(np.argmin(d))

    def _route(self, wrr: _Wrr, now: float, need_tokens: int) -> int:
        """The plan's group for the next request (weighted round robin), then its least-loaded engine."""
        if not wrr.groups:
            return -1
        ri = self._pick([wrr.next()], now, need_tokens)
        if ri < 0:  # too long for that group's KV cache: any group of the bucket that can hold it
            ri = self._pick(wrr.groups, now, need_tokens)
        return ri

    def _arrive(self, rid: int, now: float) -> None:
        si = self.req.service[rid]
        ri = self._route(self.routes[si].front[self._bucket(si, rid)], now, self.req.input[rid] + 1)
        if ri < 0:
            self.dropped[si] += 1
            return
        rep = self.replicas[ri]
        rep.waiting.append(rid)
        rep.work += self.req.input[rid] + (self.req.output[rid] - 1 if rep.role is Role.UNIFIED else 0)
        self._wake(rep, now)

    def _to_decode(self, rid: int, src: _Replica, now: float) -> None:
        si = self.req.service[rid]
        ri = self._route(self.routes[si].back[self._bucket(si, rid)], now, self.req.input[rid] + 1)
        if ri < 0:
            self.dropped[si] += 1
            self.req.finish[rid] = -1.0
            return
        dst = self.replicas[ri]
        dst.work += self.req.output[rid] - 1
        delay = self.times.kv_transfer_ms(self.groups[src.group], self.groups[dst.group], self.req.input[rid])
        self._push(now + delay / 1e3, _KV_ARRIVE, rid, ri)

    def _wake(self, rep: _Replica, now: float) -> None:
        """A replica got new work: start it if idle, or cut a decode stretch at the next iteration."""
        if not rep.busy:
            self._start(rep, now)
            return
        if rep.decoding and len(rep.ends_s) > 1:
            i = bisect.bisect_left(rep.ends_s, now)
            if i < len(rep.ends_s) - 1:
                del rep.ends_s[i + 1:]
                rep.version += 1
                self._push(rep.ends_s[-1], _ITER_END, rep.idx, rep.version)

    # ------------------------------------------------------------------ engine iterations

    def _kv_used(self, rep: _Replica) -> int:
        return rep.sum_ctx() + rep.kv_prefill

    def _join(self, rep: _Replica, rid: int) -> None:
        """Put a request whose prompt is in the KV cache into the running batch."""
        r = self.req
        left = r.output[rid] - r.generated[rid]
        if left <= 0:
            return
        ctx = r.input[rid] + r.generated[rid]
        r.join_step[rid] = rep.step
        r.join_ctx[rid] = ctx
        heapq.heappush(rep.running, (rep.step + left, rid * 1024 + (r.alive[rid] & 1023)))
        rep.order.append(rid)
        rep.n_run += 1
        rep.ctx_base += ctx - rep.step
        r.running_on[rid] = rep.idx

    def _leave(self, rep: _Replica, rid: int) -> None:
        self.req.running_on[rid] = -1
        rep.n_run -= 1
        rep.ctx_base -= self.req.join_ctx[rid] - self.req.join_step[rid]

    def _preempt_until_fits(self, rep: _Replica, extra: int) -> None:
        limit = rep.kv_cap
        r = self.req
        while rep.n_run > 1 and self._kv_used(rep) + rep.n_run + extra > limit:
            rid = rep.order.pop()
            if r.running_on[rid] != rep.idx:
                continue
            gen = r.generated[rid] + (rep.step - r.join_step[rid])
            self._leave(rep, rid)
            r.alive[rid] += 1  # invalidates its heap entry
            r.generated[rid] = gen
            r.preempted[rid] += 1
            if rep.role is Role.UNIFIED:
                r.prompt_need[rid] = r.input[rid] + gen
                r.prompt_left[rid] = r.prompt_need[rid]
                rep.work += r.prompt_need[rid]
            rep.waiting.appendleft(rid)

    def _admit_decode(self, rep: _Replica) -> None:
        r = self.req
        free = rep.kv_cap * (1 - self.opts.kv_watermark) - self._kv_used(rep)
        while rep.waiting and rep.n_run < self.opts.max_batch:
            rid = rep.waiting[0]
            need = r.input[rid] + r.generated[rid] + 1
            if need > free:
                if rep.n_run == 0 and need > rep.kv_cap:  # can never fit here
                    rep.waiting.popleft()
                    self.dropped[r.service[rid]] += 1
                    r.finish[rid] = -1.0
                    continue
                break
            rep.waiting.popleft()
            self._join(rep, rid)
            free -= need

    def _start(self, rep: _Replica, now: float) -> None:
        g = self.groups[rep.group]
        opts = self.opts
        r = self.req
        rep.chunks = []
        rep.decoding = False
        if rep.role in DECODE_ONLY_ROLES:
            self._admit_decode(rep)
            self._preempt_until_fits(rep, 0)
        else:
            self._preempt_until_fits(rep, 0)
            budget = opts.max_batched_tokens - (rep.n_run if opts.chunked_prefill else 0)
            free = int(rep.kv_cap * (1 - opts.kv_watermark)) - self._kv_used(rep) - rep.n_run
            seqs = rep.n_run
            for rid in rep.waiting:
                if budget <= 0 or seqs >= opts.max_batch:
                    break
                left = r.prompt_left[rid]
                take = min(left, budget) if opts.chunked_prefill else left
                if not opts.chunked_prefill and take > budget and rep.chunks:
                    break
                need = r.prompt_need[rid] + 1 if left == r.prompt_need[rid] else take
                if need > free:
                    if rep.n_run == 0 and not rep.chunks and r.prompt_need[rid] + 1 > rep.kv_cap:
                        take = -1  # never fits: dropped below
                    else:
                        break
                if take < 0:
                    break
                rep.chunks.append((rid, take))
                budget -= take
                free -= need
                seqs += 1
            if not rep.chunks and rep.waiting and rep.n_run == 0:
                rid = rep.waiting.popleft()  # too long for this replica's KV cache
                self.dropped[r.service[rid]] += 1
                r.finish[rid] = -1.0
                rep.work -= r.prompt_left[rid]
                self._start(rep, now)
                return
        for rid, take in rep.chunks:
            rep.kv_prefill += take if r.prompt_left[rid] != r.prompt_need[rid] else take + 1
        decode_now = rep.n_run > 0 and (opts.chunked_prefill or not rep.chunks)
        if rep.chunks:
            dt = self.times.prefill_ms(g, [c for _, c in rep.chunks])
            if decode_now:
                dt += self.times.decode_step_ms(g, rep.n_run, rep.sum_ctx() + rep.n_run) - \
                    self.times.decode_step_ms(g, 0, 0)
            rep.ends_s = [now + max(dt, 1e-3) / 1e3]
            rep.decoding = decode_now
        elif rep.n_run > 0:
            rep.decoding = True
            # a decode stretch: every iteration up to the next finish, bounded by the KV cache
            next_finish = rep.running[0][0] - rep.step
            kv_room = (rep.kv_cap - self._kv_used(rep)) // rep.n_run
            k = max(1, min(next_finish, kv_room, opts.max_macro_steps))
            ends = []
            t = now
            ctx = rep.sum_ctx()
            n = rep.n_run
            step_ms = self.times.decode_step_ms
            for _ in range(k):
                ctx += n
                t += step_ms(g, n, ctx) / 1e3
                ends.append(t)
            rep.ends_s = ends
        else:
            rep.busy = False
            return
        rep.busy = True
        rep.start_s = now
        rep.version += 1
        self._push(rep.ends_s[-1], _ITER_END, rep.idx, rep.version)

    def _book_power(self, rep: _Replica, t0: float, t1: float, prefill: bool) -> None:
        g = self.groups[rep.group]
        rep.busy_s += t1 - t0
        width = self.opts.power_bin_s
        pp = g.configuration.pp  # an engine is one micro-batch of the pipeline: 1/pp of the devices' time
        for pool, devs in ((g.pool, g.configuration.devices / pp),
                           (g.memory_pool, g.configuration.memory_devices / pp)):
            if pool is None or devs == 0:
                continue
            table = self.bins_prefill if prefill else self.bins_decode
            bins = table.setdefault(pool, [])
            b0, b1 = int(t0 // width), int(t1 // width)
            if b1 >= len(bins):
                bins.extend([0.0] * (b1 + 1 - len(bins)))
            for b in range(b0, b1 + 1):
                lo, hi = max(t0, b * width), min(t1, (b + 1) * width)
                if hi > lo:
                    bins[b] += (hi - lo) * devs

    def _end(self, rep: _Replica, now: float) -> None:
        r = self.req
        steps = len(rep.ends_s) if rep.decoding else 0
        self._book_power(rep, rep.start_s, now, prefill=bool(rep.chunks))
        # prefill chunks
        for rid, take in rep.chunks:
            r.prompt_left[rid] -= take
            rep.work -= take
            if r.prompt_left[rid] > 0:
                continue
            if rep.waiting and rep.waiting[0] == rid:
                rep.waiting.popleft()
            else:
                rep.waiting.remove(rid)
            rep.kv_prefill -= r.prompt_need[rid] + 1
            if r.first_token[rid] < 0:
                r.first_token[rid] = now
                r.generated[rid] = max(r.generated[rid], 1)
            if rep.role is Role.PREFILL:
                self._to_decode(rid, rep, now)
            elif r.output[rid] - r.generated[rid] <= 0:
                r.finish[rid] = now
            else:
                self._pending_join.append(rid)
        # decode steps
        if steps:
            rep.step += steps
            rep.work -= rep.n_run * steps
            while rep.running and rep.running[0][0] <= rep.step:
                _, key = heapq.heappop(rep.running)
                rid, ver = divmod(key, 1024)
                if r.running_on[rid] != rep.idx or (r.alive[rid] & 1023) != ver:
                    continue
                self._leave(rep, rid)
                r.finish[rid] = now
            if len(rep.order) > 4 * rep.n_run + 64:
                rep.order = [x for x in rep.order if r.running_on[x] == rep.idx]
        for rid in self._pending_join:
            self._join(rep, rid)
        self._pending_join.clear()
        rep.busy = False
        self._start(rep, now)

    # ------------------------------------------------------------------ run

    def run(self) -> None:
        r = self.req
        merged: list[tuple[float, int, int, int]] = []
        for sid, arr in self.workload.items():
            if sid not in self.svc_index:
                continue
            si = self.svc_index[sid]
            for t, i, o in zip(arr.arrival_s.tolist(), arr.input_tokens.tolist(), arr.output_tokens.tolist(),
                               strict=True):
                merged.append((t, si, int(i), int(o)))
        merged.sort()
        for t, si, i, o in merged:
            r.service.append(si)
            r.arrival.append(t)
            r.input.append(i)
            r.output.append(o)
            r.prompt_left.append(i)
            r.prompt_need.append(i)
            r.generated.append(0)
            r.join_step.append(0)
            r.join_ctx.append(0)
            r.alive.append(0)
            r.first_token.append(-1.0)
            r.finish.append(-2.0)  # -2: not finished, -1: dropped
            r.preempted.append(0)
            r.running_on.append(-1)
        n = len(merged)
        nxt = 0
        events = self.events
        now = 0.0
        while nxt < n or events:
            if nxt < n and (not events or r.arrival[nxt] <= events[0][0]):
                now = r.arrival[nxt]
                self._arrive(nxt, now)
                nxt += 1
                continue
            now, _, kind, a, b = heapq.heappop(events)
            if kind == _ITER_END:
                rep = self.replicas[a]
                if b == rep.version and rep.busy:
                    self._end(rep, now)
            elif kind == _KV_ARRIVE:
                rep = self.replicas[b]
                rep.waiting.append(a)
                self._wake(rep, now)
        self.span_end = now

    # ------------------------------------------------------------------ report

    def report(self) -> ReplayReport:
        r = self.req
        arrival = np.array(r.arrival)
        first = np.array(r.first_token)
        finish = np.array(r.finish)
        out = np.array(r.output, dtype=np.float64)
        inp = np.array(r.input, dtype=np.float64)
        svc = np.array(r.service, dtype=np.int64)
        pre = np.array(r.preempted, dtype=np.int64)
        done = finish >= 0
        ttft = np.where(done, (first - arrival) * 1e3, np.inf)
        tpot = np.where(done & (out > 1), (finish - first) * 1e3 / np.maximum(out - 1, 1), 0.0)
        tpot = np.where(done, tpot, np.inf)
        t0 = float(arrival.min()) if arrival.size else 0.0
        span = max(self.span_end - t0, 1e-9)
        services = []
        for si, s in enumerate(self.services):
            m = svc == si
            total = int(m.sum())
            ok = done & m & (ttft <= s.slo.ttft_ms) & (tpot <= s.slo.tpot_ms)
            att = float(ok.sum()) / total if total else 1.0
            services.append(ServiceReplay(
                service=s.id, requests=total, completed=int((done & m).sum()),
                dropped=int((~done & m).sum()), preemptions=int(pre[m].sum()),
                ttft_ms=_pct(ttft[m]), tpot_ms=_pct(tpot[m & (out > 1)]),
                slo_ttft_ms=s.slo.ttft_ms, slo_tpot_ms=s.slo.tpot_ms, slo_percentile=s.slo.percentile,
                attainment=att, meets_slo=att >= s.slo.percentile / 100.0 - 1e-12,
            ))
        groups = []
        for gi, g in enumerate(self.groups):
            busy = sum(self.replicas[ri].busy_s for ri in self.group_replicas[gi])
            groups.append(GroupReplay(service=g.service, pool=g.pool, configuration=g.configuration.label(),
                                      replicas=g.replicas,
                                      utilisation=min(1.0, busy / (span * g.replicas * g.configuration.pp))))
        cost = sum(g.cost_usd_per_hour for g in self.groups)
        tokens = int((inp[done] + out[done]).sum())
        usd = cost * span / 3600.0
        power_by_pool = self._power(span)
        nbins = max((len(v) for v in power_by_pool.values()), default=0)
        total_w = [sum(v[b] for v in power_by_pool.values() if b < len(v)) for b in range(nbins)]
        return ReplayReport(
            span_s=span, services=services, groups=groups, cost_usd_per_hour=cost, tokens=tokens,
            tokens_per_usd=tokens / usd if usd > 0 else 0.0, power_bin_s=self.opts.power_bin_s,
            power_watts=total_w, power_by_pool_watts=power_by_pool,
            mean_power_watts=float(np.mean(total_w)) if total_w else 0.0,
            peak_power_watts=max(total_w, default=0.0),
            verified=all(s.meets_slo for s in services) and bool(services),
        )

    def _power(self, span: float) -> dict[str, list[float]]:
        """Mean watts per bin per pool: idle for every placed device plus the busy share above idle."""
        width = self.opts.power_bin_s
        nbins = max(1, int(math.ceil(span / width)))
        devices: dict[str, int] = {}
        for g in self.groups:
            devices[g.pool] = devices.get(g.pool, 0) + g.replicas * g.configuration.devices
            if g.memory_pool and g.configuration.memory_devices:
                devices[g.memory_pool] = devices.get(g.memory_pool, 0) + g.replicas * g.configuration.memory_devices
        pools = {p.id: p for p in self.fleet.pools}
        out: dict[str, list[float]] = {}
        for pool_id, count in devices.items():
            pool = pools.get(pool_id)
            dev = self.catalog.devices.get(pool.device) if pool else None
            if dev is None:
                continue
            pre = self.bins_prefill.get(pool_id, [])
            dec = self.bins_decode.get(pool_id, [])
            # servers draw their overhead whatever the devices do (nodes as placed, else as packed)
            assert pool is not None
            nodes = self.plan.nodes_by_pool.get(pool_id) or math.ceil(count / pool.devices_per_node)
            base = count * dev.idle_watts + nodes * pool.node_overhead_watts
            series = []
            for b in range(nbins):
                p_s = pre[b] if b < len(pre) else 0.0
                d_s = dec[b] if b < len(dec) else 0.0
                watts = base + (
                    p_s * (dev.prefill_power_watts - dev.idle_watts)
                    + d_s * (dev.decode_power_watts - dev.idle_watts)
                ) / width
                series.append(round(watts, 1))
            out[pool_id] = series
        return out


def _pct(x: np.ndarray) -> Percentiles:
    if x.size == 0:
        return Percentiles(mean=0.0, p50=0.0, p90=0.0, p99=0.0)
    finite = x[np.isfinite(x)]
    p50, p90, p99 = np.percentile(x, [50, 90, 99])
    mean = float(finite.mean()) if finite.size == x.size else math.inf
    return Percentiles(mean=mean, p50=float(p50), p90=float(p90), p99=float(p99))


def replay(
    plan: Plan,
    fleet: FleetSpec,
    catalog: Catalog,
    times: StepTimes,
    workload: Mapping[str, Arrivals],
    options: ReplayOptions | None = None,
) -> ReplayReport:
    """Replay arrivals per service against the plan's replica groups and report what they saw."""
    sim = _Sim(plan, fleet, catalog, times, workload, options or ReplayOptions())
    sim.run()
    return sim.report()


def max_rate_meeting_slo(
    attains: Callable[[float], bool], lo_rps: float, hi_rps: float, *, tolerance_rps: float = 0.05
) -> float:
    """Largest rate in ``[lo, hi]`` for which ``attains(rate)`` holds, by bisection (monotone assumed)."""
    if not attains(lo_rps):
        return 0.0
    while hi_rps - lo_rps > tolerance_rps:
        mid = 0.5 * (lo_rps + hi_rps)
        if attains(mid):
            lo_rps = mid
        else:
            hi_rps = mid
    return lo_rps
