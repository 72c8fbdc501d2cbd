"""Capacity under SLO: queueing formulas, role models, and the published reproductions (printed)."""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

import numpy as np
import pytest

from planner.catalog import builtin_catalog
from planner.io.profiles import default_perf_model
from planner.model.capacity import (
    Capacity,
    capacity_table,
    md1_max_load,
    md1_wait_cdf,
    replica_capacity,
    replica_power_watts,
)
from planner.model.perf import ReplicaShape
from planner.schema import SLO, LengthBucket, Role

CAT = builtin_catalog()
DATA = Path(__file__).resolve().parents[3] / "benchmarks" / "data" / "profiles" / "distserve"


def shape(model: str, device: str, tp: int = 1, pp: int = 1, **kw: object) -> ReplicaShape:
    return ReplicaShape(model=CAT.model(model), device=CAT.device(device), tp=tp, pp=pp, **kw)  # type: ignore[arg-type]


def bucket(s_in: int, s_out: int) -> LengthBucket:
    return LengthBucket(input_tokens=s_in, output_tokens=s_out, share=1.0)


# ---------------------------------------------------------------------------------------------- queueing


def test_md1_cdf_at_zero_is_idle_probability() -> None:
    assert md1_wait_cdf(0.3, 0.0) == pytest.approx(0.7)
    assert md1_wait_cdf(0.0, 0.0) == 1.0


@pytest.mark.parametrize("load", [0.2, 0.5, 0.8])
def test_md1_cdf_mean_matches_pollaczek_khinchine(load: float) -> None:
    # E[W] = ∫ P(W > x) dx must equal ρD/(2(1−ρ)) with D = 1
    xs = np.linspace(0, 25, 5001)
    survival = np.array([1 - md1_wait_cdf(load, x) for x in xs])
    mean = float(np.sum((survival[1:] + survival[:-1]) / 2 * np.diff(xs)))
    assert mean == pytest.approx(load / (2 * (1 - load)), rel=0.01)


def test_md1_max_load_against_simulation() -> None:
    # At the returned utilisation the simulated 90th-percentile wait sits at the allowed slack.
    slack, pct = 1.2, 90.0
    rho = md1_max_load(slack, pct)
    rng = random.Random(7)
    wait, waits = 0.0, []
    for _ in range(200_000):
        gap = rng.expovariate(rho)  # service time 1
        wait = max(0.0, wait + 1.0 - gap)
        waits.append(wait)
    p90 = float(np.percentile(waits[5000:], pct))
    print(f"\nM/D/1 slack {slack} D -> max load {rho:.3f}; simulated p90 wait {p90:.3f} D")
    assert p90 == pytest.approx(slack, rel=0.05)
    assert md1_max_load(2.0, pct) > rho > md1_max_load(0.5, pct)
    assert md1_max_load(slack, 50.0) > rho  # a looser percentile admits more load


# ---------------------------------------------------------------------------------------------- roles


def test_prefill_capacity_is_md1_in_prefill_times() -> None:
    pm = default_perf_model()
    s, slo = shape("llama-2-13b", "a100-80gb"), SLO(ttft_ms=500, tpot_ms=100)
    cap = replica_capacity(pm, s, Role.PREFILL, bucket(1024, 128), slo)
    d = pm.prefill_ms(s, 1, 1024)
    assert cap.ttft_ms == pytest.approx(d)
    assert cap.rps == pytest.approx(md1_max_load((500 - d) / d, 90) / d * 1000, rel=0.02)
    assert cap.limited_by == "ttft"


def test_prefill_slower_than_slo_has_no_capacity() -> None:
    cap = replica_capacity(default_perf_model(), shape("llama-2-70b", "a100-80gb", 4), Role.PREFILL,
                           bucket(8000, 64), SLO(ttft_ms=100, tpot_ms=100))
    assert cap.rps == 0.0


def test_decode_capacity_obeys_littles_law_and_slo() -> None:
    pm = default_perf_model()
    s, slo = shape("llama-2-7b", "h100-sxm"), SLO(ttft_ms=1000, tpot_ms=15)
    b = bucket(512, 256)
    cap = replica_capacity(pm, s, Role.DECODE, b, slo)
    assert cap.rps > 0 and cap.tpot_ms <= slo.tpot_ms + 1e-6
    assert cap.rps * b.output_tokens * cap.tpot_ms / 1000 == pytest.approx(cap.batch, rel=1e-3)
    assert cap.tpot_ms == pytest.approx(pm.decode_step_ms(s, max(1, round(cap.batch)), 640), rel=0.05)
    # the inbound KV transfer is what the rate implies
    assert cap.kv_transfer_gbps == pytest.approx(cap.rps * 512 * s.model.kv_bytes_per_token * 8 / 1e9)
    assert cap.limited_by == "tpot"
    looser = replica_capacity(pm, s, Role.DECODE, b, SLO(ttft_ms=1000, tpot_ms=20))
    assert looser.rps > cap.rps


def test_decode_long_context_is_kv_limited() -> None:
    pm = default_perf_model()
    s = shape("llama-2-70b", "a100-80gb", 4)
    cap = replica_capacity(pm, s, Role.DECODE, bucket(3500, 500), SLO(ttft_ms=5000, tpot_ms=500))
    kv = pm.memory(s).kv_capacity_tokens
    assert cap.limited_by == "kv-capacity"
    z = 1.2815515655446004
    assert (cap.batch + z * math.sqrt(cap.batch)) * 4000 == pytest.approx(kv, rel=1e-3)


def test_unified_is_below_both_pure_roles() -> None:
    pm = default_perf_model()
    s, b, slo = shape("llama-3-8b", "a100-80gb"), bucket(1024, 256), SLO(ttft_ms=400, tpot_ms=50)
    caps = {r: replica_capacity(pm, s, r, b, slo) for r in (Role.PREFILL, Role.DECODE, Role.UNIFIED)}
    assert 0 < caps[Role.UNIFIED].rps < min(caps[Role.PREFILL].rps, caps[Role.DECODE].rps)
    assert caps[Role.UNIFIED].tpot_ms <= 50 + 1e-6 and caps[Role.UNIFIED].ttft_ms < 400


def test_capacity_table_matches_single_calls_and_is_fast() -> None:
    pm = default_perf_model()
    buckets = [LengthBucket(input_tokens=i, output_tokens=o, share=1 / 30)
               for i in (64, 128, 256, 512, 1024, 2048) for o in (16, 64, 256, 512, 1024)]
    slo = SLO(ttft_ms=1500, tpot_ms=80)
    s = shape("llama-3-8b", "l40s")
    table = capacity_table(pm, s, Role.UNIFIED, buckets, slo)
    assert table[7] == replica_capacity(pm, s, Role.UNIFIED, buckets[7], slo)
    shapes = [shape(m, d, tp) for m in ("llama-2-7b", "llama-2-13b", "llama-3-8b")
              for d in ("a100-80gb", "h100-sxm", "l4", "a10g", "l40s", "t4") for tp in (1, 2, 4)]
    shapes = [x for x in shapes if pm.memory(x).fits]
    t0 = time.perf_counter()
    n = 0
    for x in shapes:
        for role in (Role.PREFILL, Role.DECODE, Role.UNIFIED):
            capacity_table(pm, x, role, buckets, SLO(ttft_ms=1400, tpot_ms=90))
            n += len(buckets)
    per_k = (time.perf_counter() - t0) / n * 1000 * 1000
    print(f"\ncapacity: {n} (configuration, bucket) evaluations, {per_k:.1f} ms per 1000")
    assert per_k < 200  # generous: shared CI machines; typical is 20–60 ms per 1000


def test_memory_misfit_gives_zero_and_says_why() -> None:
    caps = capacity_table(default_perf_model(), shape("llama-2-70b", "l4"), Role.DECODE, [bucket(100, 100)],
                          SLO(ttft_ms=1000, tpot_ms=100))
    assert caps[0].rps == 0 and caps[0].limited_by.startswith("memory")


def test_offload_role_needs_memory_devices() -> None:
    with pytest.raises(ValueError, match="memory_devices"):
        replica_capacity(default_perf_model(), shape("llama-3-70b", "h100-sxm", 4), Role.DECODE_OFFLOAD,
                         bucket(100, 100), SLO(ttft_ms=1000, tpot_ms=100))


def test_power_watts_from_catalog() -> None:
    s = shape("llama-2-70b", "h100-sxm", 4)
    idle, active = replica_power_watts(s, Role.PREFILL)
    assert idle == 4 * 75 and active == 4 * 700
    assert replica_power_watts(s, Role.DECODE)[1] == 4 * 380
    off = shape("llama-3-70b", "h100-sxm", 2, memory_device=CAT.device("h20"), memory_devices=4)
    assert replica_power_watts(off, Role.DECODE_OFFLOAD) == (2 * 75 + 4 * 60, 2 * 380 + 4 * 300)


# ---------------------------------------------------------------------------------------------- reproductions

CHATBOT = SLO(ttft_ms=200, tpot_ms=100, percentile=90)


def _distserve_fit_decode_rps(tpot_ms: float) -> float:
    """Little's law on DistServe's own fitted vLLM decode latency and KV capacity (OPT-13B, A100, 512/64)."""
    coef = json.loads((DATA / "profiler-a100-80g.vllm.json").read_text())["facebook/opt-13b"]["1"]
    kv_tokens = 66144  # max_num_tokens.csv, OPT-13B tp1 pp1
    best = 0.0
    for b in range(1, 400):
        if b * (512 + 64) > kv_tokens:
            break
        a, k_ctx, k_b = coef["decoding_smallbs"] if b < coef["decoding_large_small_bs_threshold"] \
            else coef["decoding_largebs"]
        t = a + k_ctx * b * (512 + 32) + k_b * b
        if t <= tpot_ms:
            best = max(best, b / (64 * t / 1000))
    return best


def test_distserve_opt13b_prefill_and_decode_only() -> None:
    """DistServe (OSDI'24) Fig. 1: OPT-13B on one A100-80GB, 512 in / 64 out.

    Prefill-only 5.6 req/s under P90 TTFT 0.2 s: reproduced with the engine DistServe measured (mid-2023
    vLLM, whose prefill of 512 tokens took ~90 ms; its fitted coefficients calibrate ``vllm-2023``) and
    the exact M/D/1 waiting time at the 90th percentile, one prompt at a time. Today's vLLM (the default
    engine, no DistServe host overhead) prefills in ~65 ms and serves ~9 req/s.

    Decode-only: the paper's 10 req/s under TPOT 0.1 s is NOT reproduced, and cannot be from DistServe's
    own fitted decode latency: Little's law on those coefficients and its KV capacity gives ~27 req/s
    (the KV cache, not TPOT, binds). We check the model against that.
    """
    pm23, pm = default_perf_model("vllm-2023"), default_perf_model()
    s, b = shape("opt-13b", "a100-80gb"), bucket(512, 64)
    pre23 = replica_capacity(pm23, s, Role.PREFILL, b, CHATBOT)
    pre = replica_capacity(pm, s, Role.PREFILL, b, CHATBOT)
    dec23 = replica_capacity(pm23, s, Role.DECODE, b, CHATBOT)
    ref_decode = _distserve_fit_decode_rps(100.0)
    print(f"\nDistServe OPT-13B A100 512/64: prefill-only {pre23.rps:.2f} req/s (vllm-2023; paper 5.6), "
          f"{pre.rps:.2f} (default vllm); decode-only {dec23.rps:.2f} req/s, limited by {dec23.limited_by} "
          f"(Little's law on DistServe's fit {ref_decode:.1f}; paper 10)")
    assert pre23.rps == pytest.approx(5.6, rel=0.20)
    assert dec23.rps == pytest.approx(ref_decode, rel=0.20)


def test_distserve_disaggregation_beats_colocation_when_tpot_is_tight() -> None:
    """DistServe's 2 prefill + 1 decode GPUs ≈ 3.3 req/s per GPU vs 1.6 colocated (2.1×).

    The model reproduces the per-GPU disaggregated figure under the chatbot SLO (3.4) but not the
    colocated 1.6: with vLLM's prefill-priority scheduling a colocated replica is TTFT-bound at ~4 req/s
    (each prompt waits an M/D/1 queue plus one decode step), so under 0.2 s / 0.1 s colocation comes out
    ahead (2P+1D is 0.85× of it). The 2× advantage appears when TPOT is tight (0.04 s): prefills that
    stall the decode batch then bind the colocated replica while a decode-only replica is unaffected.
    """
    pm = default_perf_model("vllm-2023")
    s, b = shape("opt-13b", "a100-80gb"), bucket(512, 64)
    out = {}
    for name, slo in (("chatbot 0.2/0.1", CHATBOT), ("tight 0.4/0.04", SLO(ttft_ms=400, tpot_ms=40))):
        p, d, u = (replica_capacity(pm, s, r, b, slo) for r in (Role.PREFILL, Role.DECODE, Role.UNIFIED))
        disagg = min(2 * p.rps, d.rps) / 3
        out[name] = (p.rps, d.rps, u.rps, disagg, disagg / u.rps, u.limited_by)
        print(f"\n{name}: prefill {p.rps:.2f}, decode {d.rps:.2f}, colocated {u.rps:.2f} ({u.limited_by}); "
              f"2P+1D {disagg:.2f} req/s/GPU = {disagg / u.rps:.2f}x colocated")
    assert out["chatbot 0.2/0.1"][3] == pytest.approx(3.3, rel=0.20)
    assert out["tight 0.4/0.04"][4] >= 1.8
    assert out["tight 0.4/0.04"][5] == "tpot"


def test_splitwise_h100_over_a100_ratios() -> None:
    """Splitwise: Llama-2-70B, DGX (TP8), one coding request (~1500 prompt tokens), with the engine Splitwise
    measured (``splitwise-2023``).

    TTFT 185 → 95 ms (1.95×) and time between tokens 52 → 31 ms (1.68×), both within 20%. Neither is an
    independent check: Splitwise's own characterisation runs (the data behind these figures) calibrate that
    engine. Its measured TP8 decode steps (45 / 30 ms) give 1.50×, below the paper's coding-trace 1.68×."""
    pm = default_perf_model("splitwise-2023")
    a100, h100 = shape("llama-2-70b", "a100-80gb", 8), shape("llama-2-70b", "h100-sxm", 8)
    ttft = pm.prefill_ms(a100, 1, 1500) / pm.prefill_ms(h100, 1, 1500)
    tbt = pm.decode_step_ms(a100, 1, 1600) / pm.decode_step_ms(h100, 1, 1600)
    print(f"\nSplitwise: TTFT A100 {pm.prefill_ms(a100, 1, 1500):.0f} ms / H100 {pm.prefill_ms(h100, 1, 1500):.0f}"
          f" ms = {ttft:.2f}x (paper 1.95); TBT {pm.decode_step_ms(a100, 1, 1600):.1f} / "
          f"{pm.decode_step_ms(h100, 1, 1600):.1f} ms = {tbt:.2f}x (paper 1.68)")
    assert tbt == pytest.approx(52 / 31, rel=0.20)
    assert ttft == pytest.approx(185 / 95, rel=0.20)


def test_lamina_offload_beats_tp4_per_dollar() -> None:
    """Lamina: LLaMA3-70B long-context decode, 2×H100 + 4×H20 ($40.64/h) vs 4×H100 TP4 ($44.24/h).

    Lamina reports +16–90% throughput and a 2.39× larger batch. The offload replica holds 2.4× the KV
    cache, so its batch is 2.4× larger; each step is slower (the compute devices read their weights
    once per micro-batch), so throughput rises less than the batch.
    """
    pm = default_perf_model()
    h100, h20 = 11.06, 4.63
    b, slo = bucket(6000, 1000), SLO(ttft_ms=10_000, tpot_ms=200)
    tp4 = replica_capacity(pm, shape("llama-3-70b", "h100-sxm", 4), Role.DECODE, b, slo)
    off = replica_capacity(pm, shape("llama-3-70b", "h100-sxm", 2, memory_device=CAT.device("h20"),
                                     memory_devices=4), Role.DECODE_OFFLOAD, b, slo)
    per_dollar = (off.rps / (2 * h100 + 4 * h20)) / (tp4.rps / (4 * h100))
    print(f"\nLamina: TP4 {tp4.rps:.2f} req/s (batch {tp4.batch:.0f}, {tp4.tpot_ms:.0f} ms); offload "
          f"{off.rps:.2f} req/s (batch {off.batch:.0f}, {off.tpot_ms:.0f} ms); throughput "
          f"{off.rps / tp4.rps:.2f}x, per dollar {per_dollar:.2f}x, batch {off.batch / tp4.batch:.2f}x")
    assert per_dollar >= 1.16
    assert off.batch / tp4.batch == pytest.approx(2.39, rel=0.2)
    assert off.limited_by != "offload-link"
    assert isinstance(off, Capacity)


def test_azure_code_trace_buckets_and_rate() -> None:
    from planner.io.traces import bucket_trace

    trace = Path(__file__).resolve().parents[3] / "benchmarks" / "data" / "traces" / "azure_llm_2023" / \
        "AzureLLMInferenceTrace_code.csv"
    summary = bucket_trace(trace)
    assert summary.requests == pytest.approx(8819, abs=50)
    assert sum(b.share for b in summary.buckets) == pytest.approx(1.0)
    assert summary.mean_rate_rps == pytest.approx(2.57, rel=0.05)  # REFERENCE §5
    # every bucket is a valid capacity input
    caps = capacity_table(default_perf_model(), shape("llama-2-70b", "h100-sxm", 8), Role.UNIFIED,
                          summary.buckets, SLO(ttft_ms=3000, tpot_ms=100))
    assert len(caps) == len(summary.buckets) and any(c.rps > 0 for c in caps)
