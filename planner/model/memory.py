"""Memory of one replica: weights, KV cache and reserve against device memory (REFERENCE §1).

Per compute device of a ``t·p`` replica::

    free      = M_dev·u − W/(t·p) − (r + r_nccl·[t·p > 1])
    kv/token  = kv_bytes_per_token / p · max(n_kv, t) / n_kv / t      (KV heads replicated when t > n_kv)
    tokens    = ⌊free / (kv/token)⌋;  fits ⇔ free ≥ 0 and tokens ≥ max_context_tokens

``M_dev`` is the memory the card reports to the runtime (``DeviceType.runtime_memory_gib``: an A10G exposes
23,028 MiB of its 24 GiB, an L4 23,034 MiB), ``u`` the share of it the engine manages (vLLM's
``gpu_memory_utilization``, 0.9). Under attention offload the KV cache
lives on the ``b`` memory devices instead: ``free = M_mem·u − r`` each, ``kv/token = kv_bytes_per_token ·
max(n_kv, b) / n_kv / b``.
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.model.perf import ReplicaShape
from planner.schema import DeviceType

GIB = 1024**3
GPU_MEMORY_UTILIZATION = 0.9  # vLLM default share of device memory it manages
RESERVE_GIB_PER_DEVICE = 1.5  # CUDA context, activations of the largest step
NCCL_RESERVE_GIB = 0.4  # NCCL buffers, only when the replica spans more than one device


def replica_free_gib(device: DeviceType, devices: int,
                     gpu_memory_utilization: float = GPU_MEMORY_UTILIZATION) -> float:
    """Memory ``devices`` devices of a replica leave for weights and KV cache after the engine's share and the
    runtime (and, across devices, NCCL) reserve, GiB."""
    reserve = RESERVE_GIB_PER_DEVICE + (NCCL_RESERVE_GIB if devices > 1 else 0.0)
    return devices * (device.runtime_memory_gib * gpu_memory_utilization - reserve)


@dataclass(frozen=True)
class MemoryFit:
    """Memory of one replica: weights per device, KV-cache capacity, and whether the model fits."""

    weights_gib_per_device: float
    kv_capacity_tokens: int
    fits: bool
    reason: str = ""
    kv_free_bytes_per_device: float = 0.0


def memory_fit(shape: ReplicaShape, gpu_memory_utilization: float = GPU_MEMORY_UTILIZATION) -> MemoryFit:
    """Weights + KV + reserve against device memory (REFERENCE §1); fits = one full-context request fits."""
    m, dev = shape.model, shape.device
    n = shape.tp * shape.pp
    weights = m.weight_bytes_total / n
    reserve = (RESERVE_GIB_PER_DEVICE + (NCCL_RESERVE_GIB if n > 1 else 0.0)) * GIB
    free = dev.runtime_memory_gib * GIB * gpu_memory_utilization - weights - reserve
    # KV heads are replicated when TP exceeds them; the per-device share never drops below one head.
    kv_per_token_per_device = m.kv_bytes_per_token / shape.pp * max(m.num_kv_heads, shape.tp) \
        / m.num_kv_heads / shape.tp
    if shape.offload:
        assert shape.memory_device is not None
        b = shape.memory_devices
        mfree = shape.memory_device.runtime_memory_gib * GIB * gpu_memory_utilization - RESERVE_GIB_PER_DEVICE * GIB
        kv_per_token_per_device = m.kv_bytes_per_token * max(m.num_kv_heads, b) / m.num_kv_heads / b
        kv_free = mfree
    else:
        kv_free = free
    weights_gib = weights / GIB
    if free < 0:
        return MemoryFit(weights_gib, 0, False,
                         f"weights {weights_gib:.1f} GiB per device and a {reserve / GIB:.1f} GiB reserve exceed "
                         f"the {dev.runtime_memory_gib * gpu_memory_utilization:.1f} GiB usable on {dev.id}", free)
    tokens = int(max(kv_free, 0.0) // kv_per_token_per_device)
    if tokens < m.max_context_tokens:
        return MemoryFit(weights_gib, tokens, False,
                         f"KV cache holds {tokens} tokens, fewer than one {m.max_context_tokens}-token request",
                         kv_free)
    return MemoryFit(weights_gib, tokens, True, "", kv_free)
