"""Communication times of one replica by node topology: tensor-parallel all-reduce, logits gather, pipeline
send, attention-offload traffic.

Which wire a collective crosses decides its cost, not the link's data-sheet bandwidth alone:

* **NVLink/NVSwitch** (and Infinity Fabric): every device reaches every other at link speed; an all-reduce
  costs ``α_N + 2(N−1)/N · M / busbw`` with a few µs of latency, and engines run their own one-shot kernel
  on small messages (vLLM's custom all-reduce: 12 µs for 512 KiB on 8×H100 where NCCL takes 19.5 µs).
* **PCIe without NVLink** (A10G, L4, L40S nodes): the GPUs share the host's root complexes, and across the
  two sockets of an 8-GPU server the traffic crosses the inter-socket link; NCCL's bus bandwidth falls
  from ~19 GB/s on 2 GPUs to ~5 on 4 and ~1.5 on 8 (measured 8×L40S: 0.5 MiB in 503 µs, 32 MiB in 38.9 ms).
  vLLM runs its custom kernel there only on two GPUs with peer-to-peer access.
* **Across nodes**: the node's NICs, shared by its devices (AWS g5/g6 nodes have one NIC per node).

Where a fabric was measured, its time is the measured curve (:class:`CollectiveCurve`: log-log
interpolation in message size between the measured sizes, a flat latency floor below the smallest, the last
segment's bandwidth above the largest; log-log in the GPU count between measured counts). A device whose link
is slower than the measured machine's moves ``M`` bytes in the time the measured link moves
``M · BW_measured / BW_device`` (bandwidth-bound sizes scale, latency-bound ones do not). Fabrics without a
measurement use the ring formula with calibrated or seeded factors::

    AR(M, N) = α + 2(N−1)·λ + 2(N−1)/N · M / (BW_link·η_link)      ring all-reduce of M bytes over N devices
    send(M)  = α₀ + λ + M / (BW_link·η_link)                       one pipeline-stage hand-off (α₀ = 5 µs)
    t_net    = 2·L·λ_net + a_exp · (2 + 2/G)·e·h·L · B / (b·NIC_dev·η_net)   exposed offload network time per step

``λ`` is the link's latency (per kind); ``G`` is the query heads per KV head, ``e`` the activation bytes,
``a_exp`` the share of offload transfers not hidden behind the other micro-batch (Lamina), ``NIC_dev`` a
device's share of its node's NICs. A pipeline-stage hand-off between devices of one node costs what the
measured 2-GPU curve gives (a 2-GPU ring all-reduce moves the same bytes over each link as one send);
across nodes it crosses the NIC.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from planner.model.perf import ACTIVATION_BYTES, ArrayLike, FloatArray, ReplicaShape
from planner.schema import DeviceType, ModelSpec

LINK_LATENCY_US = {"nvlink": 2.0, "infinity-fabric": 3.0, "pcie": 6.0, "ethernet": 10.0}
DEFAULT_LINK_LATENCY_US = 6.0  # a link kind without a figure: PCIe's
AR_BASE_US = 5.0  # α of the all-reduce cost
NET_LATENCY_US = 10.0  # one RDMA transfer between offload partners
NET_EFFICIENCY = 0.8  # share of NIC line rate a transfer reaches
OFFLOAD_EXPOSED_SHARE = 0.2  # share of offload transfers not hidden behind the other micro-batch (Lamina α)
KERNELS = ("nccl", "custom")
SCALE_UP_LINKS = ("nvlink", "infinity-fabric")


@dataclass(frozen=True)
class CollectiveCurve:
    """Measured times (µs) of one collective against message size (bytes) on ``gpus`` devices."""

    gpus: int
    bytes: tuple[float, ...]
    us: tuple[float, ...]
    _log: tuple[FloatArray, FloatArray] = field(init=False, repr=False, compare=False)
    _us_per_byte: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.bytes) != len(self.us) or len(self.bytes) < 2:
            raise ValueError("curve: needs at least two (bytes, us) points of equal count")
        if any(b <= 0 for b in self.bytes) or any(t <= 0 for t in self.us):
            raise ValueError("curve: bytes and us must be positive")
        if list(self.bytes) != sorted(self.bytes):
            raise ValueError("curve: bytes must rise")
        # Log axes and the last segment's slope, computed once (the curve is evaluated in every step time).
        object.__setattr__(self, "_log", (np.log(np.array(self.bytes)), np.log(np.array(self.us))))
        slope = (self.us[-1] - self.us[-2]) / (self.bytes[-1] - self.bytes[-2])
        object.__setattr__(self, "_us_per_byte", max(slope, 0.0))

    def time_us(self, message_bytes: ArrayLike) -> ArrayLike:
        """Log-log interpolation inside the measured sizes; below: the smallest's time (latency-bound);
        above: the largest's plus the extra bytes at the last segment's bandwidth."""
        xs, ys = self._log
        m = np.maximum(np.asarray(message_bytes, dtype=float), 1.0)
        inside = np.exp(np.interp(np.log(m), xs, ys))
        beyond = self.us[-1] + self._us_per_byte * (m - self.bytes[-1])
        out = np.where(m > self.bytes[-1], beyond, inside)
        return out if isinstance(message_bytes, np.ndarray) else float(out)


def _over_gpus(curves: Mapping[int, CollectiveCurve], n: int, message_bytes: ArrayLike) -> ArrayLike:
    """A curve's time at ``n`` GPUs: the measured count's, else log-log interpolation (or extrapolation from
    the nearest two counts) in the GPU count at the same message size."""
    if n in curves:
        return curves[n].time_us(message_bytes)
    counts = sorted(curves)
    if len(counts) == 1:
        return curves[counts[0]].time_us(message_bytes)
    lo = max([c for c in counts if c < n] or counts[:1])
    hi = min([c for c in counts if c > n] or counts[-1:])
    if lo == hi:  # outside the measured counts: the nearest two
        lo, hi = (counts[0], counts[1]) if n < counts[0] else (counts[-2], counts[-1])
    t_lo, t_hi = curves[lo].time_us(message_bytes), curves[hi].time_us(message_bytes)
    w = (math.log(n) - math.log(lo)) / (math.log(hi) - math.log(lo))
    return np.exp((1 - w) * np.log(t_lo) + w * np.log(t_hi))


@dataclass(frozen=True)
class LinkProfile:
    """Measured collectives of one fabric: all-reduce curves by kernel and GPU count, send curves within a
    node (``intra``) and across nodes (``inter``), and the link bandwidth of the machine measured."""

    name: str
    link_gbps: float
    all_reduce: Mapping[str, Mapping[int, CollectiveCurve]] = field(default_factory=dict)
    send: Mapping[str, CollectiveCurve] = field(default_factory=dict)
    source: str = ""

    def bus_gbps(self, n: int, kernel: str = "nccl") -> float:
        """Bus bandwidth ``2(N−1)/N · ΔM/Δt`` of the largest measured messages on ``n`` GPUs, GB/s."""
        curves = self.all_reduce.get(kernel) or {}
        if not curves:
            return self.link_gbps
        c = curves.get(n) or curves[min(curves, key=lambda k: abs(k - n))]
        per_us = (c.bytes[-1] - c.bytes[-2]) / max(c.us[-1] - c.us[-2], 1e-9)
        return 2 * (n - 1) / n * per_us / 1e3

    def scaled(self, message_bytes: ArrayLike, device: DeviceType, n: int = 2) -> ArrayLike:
        """Message size on the measured machine that takes as long as ``message_bytes`` on ``device``.

        Where the measured bus bandwidth on ``n`` GPUs is above what the device's own (slower) link carries
        at the 2-GPU efficiency, the link is the bottleneck and bytes scale by the ratio; where the host path
        limits the measured machine already (4 or 8 PCIe GPUs), a slower device link changes nothing."""
        if device.link_gbps >= self.link_gbps or "nccl" not in self.all_reduce:
            return message_bytes
        device_bus = self.bus_gbps(2) * device.link_gbps / self.link_gbps
        return message_bytes * max(self.bus_gbps(n) / device_bus, 1.0)


@dataclass(frozen=True)
class EngineCollectives:
    """How an engine runs its collectives: whether it has a custom all-reduce kernel and when it uses it.

    vLLM (``custom_all_reduce.py``): world sizes 2, 4, 6, 8; messages up to 8 MiB; all devices joined by
    NVLink, or at most two PCIe devices with peer-to-peer access; NCCL otherwise.
    """

    custom_allreduce: bool = False
    custom_max_bytes: float = 8 * 1024 * 1024
    custom_world_sizes: tuple[int, ...] = (2, 4, 6, 8)
    custom_pcie_max_gpus: int = 2

    def uses_custom(self, device: DeviceType, n: int) -> bool:
        """Whether the custom kernel may run on ``n`` devices of this kind (size limit aside)."""
        if not self.custom_allreduce or n not in self.custom_world_sizes:
            return False
        if device.link_kind in SCALE_UP_LINKS and n <= device.all_to_all_domain:
            return True
        return device.link_kind == "pcie" and device.pcie_p2p and n <= self.custom_pcie_max_gpus


@dataclass(frozen=True)
class Collectives:
    """Collective times of one device kind under one engine: measured curves where the fabric was measured,
    the ring formula (with the device's calibrated ``η_link`` and ``α``) elsewhere. Times in ms."""

    device: DeviceType
    link_efficiency: float
    ar_base_us: float
    engine: EngineCollectives = field(default_factory=EngineCollectives)
    profile: LinkProfile | None = None

    def _ring_ms(self, message_bytes: ArrayLike, n: int) -> ArrayLike:
        lat_us = self.ar_base_us + 2 * (n - 1) * LINK_LATENCY_US.get(self.device.link_kind, DEFAULT_LINK_LATENCY_US)
        bw_bytes_per_ms = self.device.link_gbps * 1e6 * self.link_efficiency
        return lat_us / 1e3 + 2 * (n - 1) / n * message_bytes / bw_bytes_per_ms

    def all_reduce_ms(self, message_bytes: ArrayLike, n: int) -> ArrayLike:
        """All-reduce of ``message_bytes`` over ``n`` devices of one node, with the engine's kernel."""
        if n <= 1:
            return 0.0 * message_bytes
        prof = self.profile
        if prof is None or "nccl" not in prof.all_reduce:
            return self._ring_ms(message_bytes, n)
        m = prof.scaled(message_bytes, self.device, n)
        t = _over_gpus(prof.all_reduce["nccl"], n, m)
        if self.engine.uses_custom(self.device, n) and "custom" in prof.all_reduce:
            fast = _over_gpus(prof.all_reduce["custom"], n, m)
            t = np.where(np.asarray(message_bytes) <= self.engine.custom_max_bytes, fast, t)
            if not isinstance(message_bytes, np.ndarray):
                t = float(t)
        return t / 1e3

    def gather_ms(self, message_bytes: ArrayLike, n: int) -> ArrayLike:
        """Gather of ``message_bytes`` (the whole result) onto one of ``n`` devices: half the bytes of an
        all-reduce's two ring passes."""
        return self.all_reduce_ms(message_bytes / 2.0, n)

    def send_ms(self, message_bytes: ArrayLike, cross_node: bool = False) -> ArrayLike:
        """One pipeline-stage hand-off: the measured send, else the 2-GPU all-reduce curve within a node,
        else ``λ + M/BW``; across nodes the device's share of the node's NICs."""
        prof = self.profile
        if cross_node:
            if prof is not None and "inter" in prof.send:
                return prof.send["inter"].time_us(message_bytes) / 1e3
            nic_bytes_per_ms = self.device.nic_gbitps_per_device() / 8 * 1e6 * NET_EFFICIENCY
            return (AR_BASE_US + NET_LATENCY_US) / 1e3 + message_bytes / nic_bytes_per_ms
        if prof is not None and "intra" in prof.send:
            return prof.send["intra"].time_us(prof.scaled(message_bytes, self.device)) / 1e3
        if prof is not None and 2 in prof.all_reduce.get("nccl", {}):
            return prof.all_reduce["nccl"][2].time_us(prof.scaled(message_bytes, self.device)) / 1e3
        lat_us = AR_BASE_US + LINK_LATENCY_US.get(self.device.link_kind, DEFAULT_LINK_LATENCY_US)
        return lat_us / 1e3 + message_bytes / (self.device.link_gbps * 1e6 * self.link_efficiency)


def all_reduce_ms(message_bytes: ArrayLike, n: int, device: DeviceType, link_efficiency: float,
                  base_us: float = AR_BASE_US) -> ArrayLike:
    """Ring all-reduce ``α + 2(N−1)·λ + 2(N−1)/N · M / (BW_link·η)`` on a fabric without measurements."""
    return Collectives(device, link_efficiency, base_us).all_reduce_ms(message_bytes, n)


def send_ms(message_bytes: ArrayLike, device: DeviceType, link_efficiency: float) -> ArrayLike:
    """Point-to-point transfer between pipeline stages on a fabric without measurements: ``λ + M/BW``."""
    return Collectives(device, link_efficiency, AR_BASE_US).send_ms(message_bytes)


def pipeline_hops(shape: ReplicaShape) -> tuple[int, int]:
    """Stage boundaries of a replica within a node and across nodes (stages fill nodes in order)."""
    boundaries = shape.pp - 1
    per_node = shape.device.max_devices_per_node
    nodes = max(1, math.ceil(shape.tp * shape.pp / per_node))
    cross = min(boundaries, nodes - 1)
    return boundaries - cross, cross


def offload_bytes_per_token(model: ModelSpec) -> float:
    """Bytes sent between compute and memory devices per token per step: ``(2 + 2/G)·e·h·L``."""
    group = model.num_heads // model.num_kv_heads
    return (2 + 2 / group) * ACTIVATION_BYTES * model.hidden_size * model.num_layers


def replica_nic_gbitps(shape: ReplicaShape) -> float:
    """Scale-out line rate of a replica's compute devices: their share of their nodes' NICs, Gbit/s."""
    return shape.tp * shape.pp * shape.device.nic_gbitps_per_device()


def offload_net_ms(shape: ReplicaShape, batch: ArrayLike) -> ArrayLike:
    """Exposed network time of one offloaded decode step: a round trip per layer plus the unhidden bytes."""
    m = shape.model
    per_token = offload_bytes_per_token(m)
    nic_bytes_per_ms = replica_nic_gbitps(shape) / 8 * 1e6 * NET_EFFICIENCY
    return (m.num_layers * 2 * NET_LATENCY_US / 1e3
            + OFFLOAD_EXPOSED_SHARE * per_token * batch / nic_bytes_per_ms)
