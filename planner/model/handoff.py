"""KV-cache hand-off between a prefill replica and a decode replica: its bytes, its time over the NICs, what
another zone adds, and the decode admission the client waits for.

* **Bytes**: the prompt's KV cache, ``s_in · kv_bytes_per_token`` (Llama-3-70B: 320 KiB a token, so a
  6,000-token prompt moves 1.8 GiB).
* **Rate**: every device of a replica holds a shard of that cache (TP splits heads, PP splits layers) and
  moves its own shard, so an end moves the prompt at its replica's share of its nodes' scale-out NICs
  (``collectives.replica_nic_gbitps``: AWS g5/g6 nodes share one 100 Gbit/s NIC among 8 GPUs, so one A10G
  replica gets 12.5 Gbit/s) at ``NET_EFFICIENCY`` of line rate. A decode+offload replica keeps the cache on
  its memory devices, which receive it on theirs. The transfer runs at the slower end; the planner pairs a
  prefill only with decodes that receive at least as fast as it sends (``planner.solve.formulation.handoff``),
  so the prefill's own rate times the hand-off.
* **Another zone**: one more network hop (``INTER_ZONE_LATENCY_MS``) and the provider's inter-zone transfer
  price, paid on both sides (``INTER_ZONE_USD_PER_GB``).
* **Decode admission**: vLLM's disaggregated serving streams the client's tokens from the decode replica, so
  the first token comes after the step in flight when the cache lands (at most one step) and the first
  decode step: ``ADMISSION_STEPS`` decode steps. A decode step of a disaggregated service is held to
  ``min(TPOT target, TTFT target / 4)``, so admission takes at most half the TTFT target.

Pure functions of values.
"""

from __future__ import annotations

from planner.model.collectives import NET_EFFICIENCY, replica_nic_gbitps
from planner.model.perf import ArrayLike, ReplicaShape
from planner.schema import SLO, ModelSpec

# Between availability zones of one region: AWS quotes single-digit milliseconds round trip (typically under
# 2 ms); a hand-off is one RDMA/TCP transfer set-up plus the bytes, so one round trip is charged.
INTER_ZONE_LATENCY_MS = 2.0
# AWS EC2 on-demand pricing, "Data transfer within the same AWS Region": $0.01/GB out of one Availability Zone
# and $0.01/GB into the other (aws.amazon.com/ec2/pricing/on-demand, 2026); GCP charges $0.01/GiB between
# zones of a region. Per GB moved across zones.
INTER_ZONE_USD_PER_GB = 0.02
ADMISSION_STEPS = 2  # the decode step in flight when the KV cache lands (at most one) and the first step
ADMISSION_SHARE_OF_TTFT = 0.25  # a disaggregated decode step is at most this share of the TTFT target


def handoff_bytes(model: ModelSpec, prompt_tokens: ArrayLike) -> ArrayLike:
    """Bytes of KV cache a prompt of ``prompt_tokens`` tokens hands from prefill to decode."""
    return prompt_tokens * model.kv_bytes_per_token


def handoff_nic_gbitps(shape: ReplicaShape) -> float:
    """Line rate at which a replica sends or receives a KV cache: its devices' (or, under attention offload,
    its memory devices') share of their nodes' NICs, Gbit/s."""
    if shape.offload:
        assert shape.memory_device is not None
        return shape.memory_devices * shape.memory_device.nic_gbitps_per_device()
    return replica_nic_gbitps(shape)


def handoff_ms(nbytes: ArrayLike, nic_gbitps: float, cross_zone: bool = False) -> ArrayLike:
    """Time to move ``nbytes`` at ``nic_gbitps`` line rate (at ``NET_EFFICIENCY``), plus a zone hop."""
    wire = nbytes * 8 / (nic_gbitps * 1e9 * NET_EFFICIENCY) * 1e3
    return wire + (INTER_ZONE_LATENCY_MS if cross_zone else 0.0)


def admission_step_ms(slo: SLO) -> float:
    """The longest decode step a disaggregated service's decode replicas may run: the TPOT target, or a
    quarter of the TTFT target where that is shorter (the client waits ``ADMISSION_STEPS`` of them)."""
    return min(slo.tpot_ms, ADMISSION_SHARE_OF_TTFT * slo.ttft_ms)


def admission_ms(slo: SLO) -> float:
    """What decode admission adds to a disaggregated request's TTFT at most."""
    return ADMISSION_STEPS * admission_step_ms(slo)
