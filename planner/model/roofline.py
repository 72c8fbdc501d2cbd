"""Roofline per operator: prefill and decode step times of one replica (REFERENCE §1).

Summed over the operators of a layer rather than one max over the step::

    t_op   = max(FLOPs / (t·F_peak·mfu), bytes / (t·BW·mbu), kernel_floor)
    layer  = Σ_op t_op + 2·AR(N·h·b_a, t)                 (two all-reduces per layer under TP)
    step   = p·(L/p)·layer + lm_head + gather(B·V·b_a, t) + (p−1)·send(N·h·b_a) + overhead(engine, device, tp)

(the max is a smooth one, ``(c^k + m^k)^(1/k)`` with ``k = ROOF_SHARPNESS``, floored at the kernel floor;
``AR``, ``gather`` and ``send`` are in ``planner.model.collectives``: measured curves by fabric and the
engine's kernel choice; a stage boundary between nodes crosses the NICs). Prefill attention costs
``2·h·Σs²/t`` FLOPs per layer (causal), decode attention reads the KV cache ``Σctx·2·n_kv·d·b_kv/t`` bytes
per layer. The overhead (host scheduling, kernel launches, sampling) is a fitted ``ms_per_layer·L +
step_ms`` per (engine, device, TP): the 2023 engines Splitwise and DistServe measured held Llama-2-70B
decode steps at 43–46 ms on A100 whatever the batch, which a constant-efficiency roofline cannot
reproduce; today's vLLM (CUDA graphs) leaves far less. Efficiencies and overheads come from a
:class:`~planner.model.calibration.Calibration`.

Attention offload (Lamina): ``a = tp·pp`` compute devices hold the weights and run the dense layers;
``b`` memory devices hold the KV cache and run attention, split by head. With two staggered micro-batches
``TBT ≈ max(t_dense(B; a), t_attn(B, ctx; b)) + t_net``.
"""

from __future__ import annotations

import numpy as np

from planner.model.calibration import Calibration, DeviceEfficiency
from planner.model.collectives import Collectives, offload_net_ms, pipeline_hops
from planner.model.memory import MemoryFit, memory_fit
from planner.model.perf import ACTIVATION_BYTES, ArrayLike, ReplicaShape, check_counts, check_shape
from planner.schema import DeviceType, ModelSpec

ELEMENTWISE_KERNELS_PER_LAYER = 5  # 2 norms, 2 residual adds, rope
ROOF_SHARPNESS = 2  # exponent of the smooth roofline maximum (larger = sharper corner)


def _op_ms(flops: ArrayLike, bytes_: ArrayLike, device: DeviceType, eff: DeviceEfficiency,
           mfu: float | None = None) -> ArrayLike:
    flops_per_ms = device.bf16_tflops * 1e9 * (eff.mfu if mfu is None else mfu)
    bytes_per_ms = device.memory_tbps * 1e9 * eff.mbu
    c, m = flops / flops_per_ms, bytes_ / bytes_per_ms
    # A smooth maximum: near the ridge point neither roof is reached (measured GEMMs bend, not kink).
    return np.maximum((c**ROOF_SHARPNESS + m**ROOF_SHARPNESS) ** (1.0 / ROOF_SHARPNESS), eff.kernel_floor_us / 1e3)


def experts_touched(model: ModelSpec, tokens: ArrayLike) -> ArrayLike:
    """Expected distinct experts a batch of ``tokens`` routes to (uniform routing)."""
    e, k = model.num_experts, model.experts_per_token
    if e == 1:
        return 1.0 + 0.0 * tokens
    return e * (1.0 - (1.0 - k / e) ** np.maximum(tokens, 0.0))


def dense_layer_ms(model: ModelSpec, device: DeviceType, eff: DeviceEfficiency, tp: int,
                   tokens: ArrayLike, include_comm: bool = True, coll: Collectives | None = None) -> ArrayLike:
    """One layer's projections, MLP and element-wise kernels for ``tokens`` tokens on one of ``tp`` devices,
    plus its two all-reduces (``coll``; the ring formula on the device's factors when not given)."""
    h, d, f = model.hidden_size, model.head_dim, model.ffn_hidden_size
    n_h, n_kv = model.num_heads, max(model.num_kv_heads, tp)  # KV heads are replicated when tp > n_kv
    bw, ba = model.weight_bytes, ACTIVATION_BYTES
    n = tokens
    w_qkv = h * (n_h + 2 * n_kv) * d / tp
    w_out = n_h * d * h / tp
    t = _op_ms(2 * n * w_qkv, w_qkv * bw + n * (h + (n_h + 2 * n_kv) * d / tp) * ba, device, eff)
    t = t + _op_ms(2 * n * w_out, w_out * bw + n * (h + n_h * d / tp) * ba, device, eff)
    up_mats = 2 if model.gated_mlp else 1
    touched = experts_touched(model, n)
    k = model.experts_per_token if model.num_experts > 1 else 1
    w_up = up_mats * h * f / tp
    w_down = h * f / tp
    t = t + _op_ms(2 * n * k * w_up, touched * w_up * bw + n * k * (h + up_mats * f / tp) * ba, device, eff)
    t = t + _op_ms(0.0 * n, n * k * (up_mats + 1) * f / tp * ba, device, eff)  # activation
    t = t + _op_ms(2 * n * k * w_down, touched * w_down * bw + n * k * (f / tp + h) * ba, device, eff)
    elementwise_bytes = n * h * ba * 10.0 + n * (n_h + n_kv) * d / tp * ba * 2.0
    t = t + np.maximum(elementwise_bytes / (device.memory_tbps * 1e9 * eff.mbu),
                       ELEMENTWISE_KERNELS_PER_LAYER * eff.kernel_floor_us / 1e3)
    if tp > 1 and include_comm:
        coll = coll or Collectives(device, eff.link_efficiency, eff.ar_base_us)
        t = t + 2 * coll.all_reduce_ms(n * h * ba, tp)
    return t


def prefill_attention_ms(model: ModelSpec, device: DeviceType, eff: DeviceEfficiency, tp: int,
                         tokens: ArrayLike, sum_sq_tokens: ArrayLike) -> ArrayLike:
    """Causal prefill attention of one layer: ``2·h·Σs²/t`` FLOPs, Q/K/V/O traffic."""
    d = model.head_dim
    n_kv = max(model.num_kv_heads, tp)
    flops = 2.0 * model.hidden_size * sum_sq_tokens / tp
    bytes_ = tokens * (2 * model.num_heads + 2 * n_kv) * d / tp * ACTIVATION_BYTES
    return _op_ms(flops, bytes_, device, eff, mfu=eff.attn_mfu)


def decode_attention_ms(model: ModelSpec, device: DeviceType, eff: DeviceEfficiency, shards: int,
                        batch: ArrayLike, sum_context: ArrayLike) -> ArrayLike:
    """Decode attention of one layer split over ``shards`` devices: reads the KV cache of ``Σctx`` tokens."""
    d = model.head_dim
    n_kv = max(model.num_kv_heads, shards)
    kv_bytes = sum_context * 2 * n_kv * d / shards * model.kv_bytes
    flops = 4.0 * model.num_heads * d * sum_context / shards
    return _op_ms(flops, kv_bytes + batch * 2 * model.hidden_size / shards * ACTIVATION_BYTES, device, eff)


def lm_head_ms(model: ModelSpec, device: DeviceType, eff: DeviceEfficiency, tp: int,
               seqs: ArrayLike, coll: Collectives | None = None) -> ArrayLike:
    """Logits of the last token of each sequence (vocabulary split over ``tp``), gathered onto one device."""
    w = model.vocab_size * model.hidden_size / tp
    t = _op_ms(2 * seqs * w, w * model.weight_bytes + seqs * model.vocab_size / tp * 4, device, eff)
    if tp > 1 and coll is not None:
        t = t + coll.gather_ms(seqs * model.vocab_size * ACTIVATION_BYTES, tp)
    return t


def pipeline_send_ms(shape: ReplicaShape, coll: Collectives, tokens: ArrayLike) -> ArrayLike:
    """Activations of ``tokens`` tokens handed across the stage boundaries: within a node over its link,
    between nodes over the NICs."""
    if shape.pp <= 1:
        return 0.0 * tokens
    intra, cross = pipeline_hops(shape)
    message = tokens * shape.model.hidden_size * ACTIVATION_BYTES
    return intra * coll.send_ms(message) + cross * coll.send_ms(message, cross_node=True)


# ---------------------------------------------------------------------------------------------- models


class RooflinePerfModel:
    """Roofline per operator with fitted efficiencies and per-step overhead (see module docstring)."""

    def __init__(self, calibration: Calibration | None = None) -> None:
        self.calibration = calibration if calibration is not None else Calibration()

    # -- vectorised cores (numpy arrays of batch/tokens broadcast together) --------------------------

    def prefill_ms_array(self, shape: ReplicaShape, batch: ArrayLike, prompt_tokens: ArrayLike) -> ArrayLike:
        """Prefill time of ``batch`` requests of ``prompt_tokens`` each (arrays broadcast)."""
        m, dev, tp = shape.model, shape.device, shape.tp
        eff = self.calibration.efficiency(dev.id, dev)
        ovh = self.calibration.overhead(dev.id, tp)
        coll = self.calibration.collectives(dev)
        tokens = batch * prompt_tokens
        layer = dense_layer_ms(m, dev, eff, tp, tokens, coll=coll) + prefill_attention_ms(
            m, dev, eff, tp, tokens, batch * prompt_tokens * prompt_tokens)
        t = m.num_layers * layer + lm_head_ms(m, dev, eff, tp, batch, coll) + pipeline_send_ms(shape, coll, tokens)
        return t + ovh.prefill_step_ms + m.num_layers * ovh.prefill_ms_per_layer

    def decode_step_ms_array(self, shape: ReplicaShape, batch: ArrayLike, context_tokens: ArrayLike) -> ArrayLike:
        """One decode step for ``batch`` requests of ``context_tokens`` each (arrays broadcast)."""
        m, dev, tp = shape.model, shape.device, shape.tp
        eff = self.calibration.efficiency(dev.id, dev)
        ovh = self.calibration.overhead(dev.id, tp)
        coll = self.calibration.collectives(dev)
        sum_ctx = batch * context_tokens
        if shape.offload:
            assert shape.memory_device is not None
            mdev = shape.memory_device
            meff = self.calibration.efficiency(mdev.id, mdev)
            b = shape.memory_devices
            # Two staggered micro-batches of B/2 keep both sides busy (Lamina): the slower side sets the
            # pace, and each side runs twice per layer, so the compute devices read their weights twice.
            half = batch / 2.0
            dense_half = dense_layer_ms(m, dev, eff, tp, half, coll=coll)
            attn_half = decode_attention_ms(m, mdev, meff, b, half, sum_ctx / 2.0)
            t_dense = 2 * m.num_layers * dense_half + lm_head_ms(m, dev, eff, tp, batch, coll)
            t_attn = 2 * m.num_layers * attn_half
            t = np.maximum(t_dense, t_attn) + offload_net_ms(shape, batch)
        else:
            dense = dense_layer_ms(m, dev, eff, tp, batch, coll=coll)
            attn = decode_attention_ms(m, dev, eff, tp, batch, sum_ctx)
            t = (m.num_layers * (dense + attn) + lm_head_ms(m, dev, eff, tp, batch, coll)
                 + pipeline_send_ms(shape, coll, batch))
        return t + ovh.decode_step_ms + m.num_layers * ovh.decode_ms_per_layer

    # -- the PerfModel protocol ------------------------------------------------------------------------

    def prefill_ms(self, shape: ReplicaShape, batch: int, prompt_tokens: int) -> float:
        """Time to prefill ``batch`` prompts of ``prompt_tokens`` tokens each, ms."""
        check_shape(shape)
        check_counts(batch, prompt_tokens, "prompt_tokens")
        return float(self.prefill_ms_array(shape, float(batch), float(prompt_tokens)))

    def decode_step_ms(self, shape: ReplicaShape, batch: int, context_tokens: int) -> float:
        """Time of one decode step of ``batch`` requests holding ``context_tokens`` tokens each, ms."""
        check_shape(shape)
        check_counts(batch, context_tokens, "context_tokens")
        return float(self.decode_step_ms_array(shape, float(batch), float(context_tokens)))

    def memory(self, shape: ReplicaShape) -> MemoryFit:
        """Weights per device, KV capacity in tokens, and whether one full-context request fits."""
        return memory_fit(shape)
