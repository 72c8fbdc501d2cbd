"""Communication times of one replica: tensor-parallel all-reduce, pipeline send, attention-offload traffic.

::

    AR(M, N) = α + 2(N−1)·λ + 2(N−1)/N · M / (BW_link·η_link)      ring all-reduce of M bytes over N devices
    send(M)  = α₀ + λ + M / (BW_link·η_link)                       one pipeline-stage hand-off (α₀ = 5 µs)
    t_net    = 2·L·λ_net + a_exp · (2 + 2/G)·e·h·L · B / (t·p·NIC·η_net)   exposed offload network time per step

``λ`` is the link's latency (per kind), ``α`` and ``η_link`` come from the device's calibration; ``G`` is the
query heads per KV head, ``e`` the activation bytes, ``a_exp`` the share of offload transfers not hidden
behind the other micro-batch (Lamina).
"""

from __future__ import annotations

from planner.model.perf import ACTIVATION_BYTES, ArrayLike, ReplicaShape
from planner.schema import DeviceType, ModelSpec

LINK_LATENCY_US = {"nvlink": 2.0, "infinity-fabric": 3.0, "pcie": 6.0, "ethernet": 10.0}
DEFAULT_LINK_LATENCY_US = 6.0  # a link kind without a figure: PCIe's
AR_BASE_US = 5.0  # α of the all-reduce cost
NET_LATENCY_US = 10.0  # one RDMA transfer between offload partners
NET_EFFICIENCY = 0.8  # share of NIC line rate a transfer reaches
OFFLOAD_EXPOSED_SHARE = 0.2  # share of offload transfers not hidden behind the other micro-batch (Lamina α)


def all_reduce_ms(message_bytes: ArrayLike, n: int, device: DeviceType, link_efficiency: float,
                  base_us: float = AR_BASE_US) -> ArrayLike:
    """Ring all-reduce ``α + 2(N−1)·λ + 2(N−1)/N · M / (BW_link·η)``; zero for one device."""
    if n <= 1:
        return 0.0 * message_bytes
    lat_us = base_us + 2 * (n - 1) * LINK_LATENCY_US.get(device.link_kind, DEFAULT_LINK_LATENCY_US)
    bw_bytes_per_ms = device.link_gbps * 1e6 * link_efficiency
    return lat_us / 1e3 + 2 * (n - 1) / n * message_bytes / bw_bytes_per_ms


def send_ms(message_bytes: ArrayLike, device: DeviceType, link_efficiency: float) -> ArrayLike:
    """Point-to-point transfer between pipeline stages: ``λ + M/BW``."""
    lat_us = AR_BASE_US + LINK_LATENCY_US.get(device.link_kind, DEFAULT_LINK_LATENCY_US)
    return lat_us / 1e3 + message_bytes / (device.link_gbps * 1e6 * link_efficiency)


def offload_bytes_per_token(model: ModelSpec) -> float:
    """Bytes sent between compute and memory devices per token per step: ``(2 + 2/G)·e·h·L``."""
    group = model.num_heads // model.num_kv_heads
    return (2 + 2 / group) * ACTIVATION_BYTES * model.hidden_size * model.num_layers


def offload_net_ms(shape: ReplicaShape, batch: ArrayLike) -> ArrayLike:
    """Exposed network time of one offloaded decode step: a round trip per layer plus the unhidden bytes."""
    m = shape.model
    per_token = offload_bytes_per_token(m)
    nic_bytes_per_ms = shape.tp * shape.pp * shape.device.nic_gbitps / 8 * 1e6 * NET_EFFICIENCY
    return (m.num_layers * 2 * NET_LATENCY_US / 1e3
            + OFFLOAD_EXPOSED_SHARE * per_token * batch / nic_bytes_per_ms)
