"""Capacity under SLO: queueing formulas, role models, and the published reproductions (printed)."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest

from planner.catalog import builtin_catalog
from planner.io.profiles import default_perf_model
from planner.model.capacity import (
    Capacity,
    ServingLimits,
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
    """TTFT = M/D/1 wait + prefill + KV hand-off at the replica's NIC share + two decode steps of admission;
    the wait is checked at the 95th percentile so that 90% of requests meet TTFT and TPOT together."""
    pm = default_perf_model()
    s, slo = shape("llama-2-13b", "a100-80gb"), SLO(ttft_ms=500, tpot_ms=100)
    cap = replica_capacity(pm, s, Role.PREFILL, bucket(1024, 128), slo)
    d = pm.prefill_ms(s, 1, 1024)
    # 1024 tokens × 800 KiB at one A100's share of its node's 8 × 200 Gbit/s NICs, at 80% of line rate
    x = 1024 * s.model.kv_bytes_per_token * 8 / (200e9 * 0.8) * 1e3
    fixed = d + x + 2 * min(100.0, 500 / 4)
    assert cap.handoff_ms == pytest.approx(x) and cap.ttft_ms == pytest.approx(fixed)
    assert cap.rps == pytest.approx(md1_max_load((500 - fixed) / d, 95) / d * 1000, rel=0.02)
    assert cap.limited_by == "ttft"
    # DistServe's prototype returns the first token from the prefill instance: TTFT ends at the prefill.
    theirs = replica_capacity(pm, s, Role.PREFILL, bucket(1024, 128), slo, ServingLimits(handoff_in_ttft=False))
    assert theirs.ttft_ms == pytest.approx(d)
    assert theirs.rps == pytest.approx(md1_max_load((500 - d) / d, 95) / d * 1000, rel=0.02)


def test_slow_nics_make_long_prompts_infeasible_to_hand_off() -> None:
    """An AWS g5 node shares one 100 Gbit/s NIC among 8 A10Gs: a TP1 replica's share moves a 3,072-token
    Llama-3-8B prompt (384 MiB) in 322 ms, so with a ~0.9 s prefill the 1 s TTFT cannot hold; a TP2 replica
    has twice the share."""
    pm = default_perf_model()
    slo = SLO(ttft_ms=1000, tpot_ms=60)
    one = replica_capacity(pm, shape("llama-3-8b", "a10g"), Role.PREFILL, bucket(3072, 512), slo)
    assert one.rps == 0 and "hand-off" in one.limited_by
    assert one.handoff_ms == pytest.approx(3072 * 131072 * 8 / (12.5e9 * 0.8) * 1e3)
    two = replica_capacity(pm, shape("llama-3-8b", "a10g", 2), Role.PREFILL, bucket(3072, 512), slo)
    assert two.handoff_ms == pytest.approx(one.handoff_ms / 2)


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
    z = 1.6448536269514722  # the 95th percentile: 90% of requests meet both targets
    assert (cap.batch + z * math.sqrt(cap.batch)) * 4000 == pytest.approx(kv, rel=1e-3)


def test_unified_is_below_both_pure_roles() -> None:
    pm = default_perf_model()
    s, b, slo = shape("llama-3-8b", "a100-80gb"), bucket(1024, 256), SLO(ttft_ms=400, tpot_ms=50)
    caps = {r: replica_capacity(pm, s, r, b, slo) for r in (Role.PREFILL, Role.DECODE, Role.UNIFIED)}
    assert 0 < caps[Role.UNIFIED].rps < min(caps[Role.PREFILL].rps, caps[Role.DECODE].rps)
    assert caps[Role.UNIFIED].tpot_ms <= 50 + 1e-6 and caps[Role.UNIFIED].ttft_ms < 400


def test_capacity_table_matches_single_calls() -> None:
    """A table over 30 buckets gives what one call per bucket gives, for every shape and role (its speed is the
    candidate generation's, measured by benchmarks/solver_scaling.py, not timed here)."""
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
    assert len(shapes) > 20
    other = SLO(ttft_ms=1400, tpot_ms=90)
    for x in shapes:
        for role in (Role.PREFILL, Role.DECODE, Role.UNIFIED):
            rows = capacity_table(pm, x, role, buckets, other)
            assert len(rows) == len(buckets)
            for b in (0, 13, 29):
                assert rows[b] == replica_capacity(pm, x, role, buckets[b], other)


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


FIG1 = SLO(ttft_ms=400, tpot_ms=40, percentile=90)
DISTSERVE_SEMANTICS = ServingLimits(handoff_in_ttft=False)  # its prototype returns the first token at prefill


def test_distserve_opt13b_prefill_and_decode_only() -> None:
    """DistServe (OSDI'24) Fig. 1: OPT-13B on one A100-80GB, 512 in / 64 out, P90 TTFT 0.4 s / TPOT 0.04 s:
    prefill-only 5.6, decode-only 10 req/s (its real system).

    With the engine DistServe measured (``vllm-2023``, whose 512-token prefill takes 88 ms), TTFT counted at the
    prefill as DistServe does, and 90% of requests meeting both targets (each at its 95th percentile), the
    prefill-only rate is 7.5 req/s (1.34× the paper). Decode-only is Little's law on the TPOT-limited batch:
    16.5 req/s, as Little's law on DistServe's own fitted decode latency gives (16.8): the paper's 10 is not in
    its fits (see ``benchmarks/reproductions.py`` for the replay on those fits).
    """
    pm23 = default_perf_model("vllm-2023")
    s, b = shape("opt-13b", "a100-80gb"), bucket(512, 64)
    pre = replica_capacity(pm23, s, Role.PREFILL, b, FIG1, DISTSERVE_SEMANTICS)
    dec = replica_capacity(pm23, s, Role.DECODE, b, FIG1, DISTSERVE_SEMANTICS)
    ref_decode = _distserve_fit_decode_rps(40.0)
    print(f"\nDistServe OPT-13B A100 512/64 at 0.4 s / 0.04 s: prefill-only {pre.rps:.2f} req/s (paper 5.6); "
          f"decode-only {dec.rps:.2f} ({dec.limited_by}; Little's law on DistServe's fit {ref_decode:.1f}; paper 10)")
    assert pre.rps == pytest.approx(7.5, rel=0.05)
    assert 1.0 < pre.rps / 5.6 < 1.5
    assert dec.rps == pytest.approx(ref_decode, rel=0.05) and dec.limited_by == "tpot"


def test_distserve_disaggregation_beats_colocation_when_tpot_is_tight() -> None:
    """DistServe's 2 prefill + 1 decode GPUs ≈ 3.3 req/s per GPU vs 1.6 colocated (2.1×), at Figure 1's SLOs.

    The model gives 2P+1D 5.0 and colocated 2.24 req/s per GPU (DistServe's TTFT; 1.52× and 1.40× the paper)
    and 2.2× between them: prefills that stall the decode batch bind the colocated replica (TPOT) while a
    decode-only replica is unaffected. With vLLM's TTFT (first token from the decode replica, after the KV
    hand-off and admission) disaggregation keeps 1.85×. At the chatbot SLOs (0.2 s / 0.1 s) vLLM's TTFT leaves
    no room for the hand-off: prefill + hand-off + admission exceed 0.2 s, and only colocation serves.
    """
    pm = default_perf_model("vllm-2023")
    s, b = shape("opt-13b", "a100-80gb"), bucket(512, 64)
    out = {}
    for name, lim in (("distserve", DISTSERVE_SEMANTICS), ("vllm", ServingLimits())):
        p, d, u = (replica_capacity(pm, s, r, b, FIG1, lim) for r in (Role.PREFILL, Role.DECODE, Role.UNIFIED))
        out[name] = (min(2 * p.rps, d.rps) / 3, u.rps, u.limited_by)
        print(f"\n{name} TTFT: prefill {p.rps:.2f}, decode {d.rps:.2f}, colocated {u.rps:.2f} ({u.limited_by}); "
              f"2P+1D {out[name][0]:.2f} req/s/GPU = {out[name][0] / u.rps:.2f}x colocated")
    assert out["distserve"][0] == pytest.approx(5.0, rel=0.05) and out["distserve"][1] == pytest.approx(2.24, rel=0.05)
    assert out["distserve"][0] / out["distserve"][1] >= 2.0 and out["distserve"][2] == "tpot"
    assert out["vllm"][0] / out["vllm"][1] >= 1.8
    chat = replica_capacity(pm, s, Role.PREFILL, b, CHATBOT)
    assert chat.rps == 0 and "hand-off" in chat.limited_by


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


# ---------------------------------------------------------------------------------------------- pipelines, batch cap


CHAT = SLO(ttft_ms=1000, tpot_ms=60)
CHAT_BUCKETS = [LengthBucket(input_tokens=i, output_tokens=o, share=1 / 3) for i, o in ((256, 128), (1024, 256),
                                                                                        (3072, 512))]


def _per_device(pm: object, s: ReplicaShape, role: Role, limits: ServingLimits | None = None) -> list[float]:
    return [c.rps / s.devices for c in capacity_table(pm, s, role, CHAT_BUCKETS, CHAT, limits)]  # type: ignore[arg-type]


@pytest.mark.parametrize("device", ["a100-80gb", "h100-sxm"])
def test_pipeline_prefill_per_device_matches_tp1_replicas(device: str) -> None:
    """A pipeline does the same work per device as separate replicas: Llama-3-8B (fits one device) prefill
    per device on PP2 and PP4 within 10% of TP1 (measured here: A100 41.7 / 12.1 / 2.70 req/s per device on
    the 256 / 1,024 / 3,072-token buckets for TP1, PP2 and PP4 alike; H100 96 / 34 / 11.1)."""
    pm = default_perf_model()
    tp1 = _per_device(pm, shape("llama-3-8b", device), Role.PREFILL)
    for pp in (2, 4):
        got = _per_device(pm, shape("llama-3-8b", device, 1, pp), Role.PREFILL)
        print(f"\n{device} prefill per device, TP1 {[round(x, 2) for x in tp1]} vs PP{pp} {[round(x, 2) for x in got]}")
        assert all(g <= 1.10 * t and g >= 0.90 * t for g, t in zip(got, tp1, strict=True))


def test_pipeline_no_longer_doubles_a10g_prefill() -> None:
    """The chat 3,072-token bucket on A10G, TTFT counted at the prefill (no hand-off): TP1 and PP4 serve the
    same per device (the pooled-pipeline model gave PP4 2.1×: 1.405 against 0.662). With the hand-off the
    pipeline sends its KV cache over four devices' NIC shares, each stage its own layers, so on the 1,024-token
    bucket it is up to 12% ahead of TP1 on g5's shared NIC; that is the NIC, not the queue."""
    pm = default_perf_model()
    tp1 = _per_device(pm, shape("llama-3-8b", "a10g"), Role.PREFILL, DISTSERVE_SEMANTICS)
    pp4 = _per_device(pm, shape("llama-3-8b", "a10g", 1, 4), Role.PREFILL, DISTSERVE_SEMANTICS)
    print(f"\nA10G prefill per device, no hand-off: TP1 {tp1}, PP4 {pp4}")
    assert all(abs(p - t) <= 0.05 * t for p, t in zip(pp4, tp1, strict=True))
    with_handoff = [_per_device(pm, shape("llama-3-8b", "a10g", 1, pp), Role.PREFILL)[1] for pp in (1, 4)]
    assert 1.0 < with_handoff[1] / with_handoff[0] < 1.15


def test_pipeline_decode_runs_micro_batches() -> None:
    """PP decode: p engines (micro-batches in flight), each with the full step latency, 1/p of the KV cache
    and 1/p of max_num_seqs; so the replica's rate is p engines' and no engine's batch exceeds its cap."""
    pm = default_perf_model()
    s1, s2 = shape("llama-3-8b", "h100-sxm"), shape("llama-3-8b", "h100-sxm", 1, 2)
    b = bucket(256, 128)
    one, two = (replica_capacity(pm, s, Role.DECODE, b, CHAT) for s in (s1, s2))
    z = 1.6448536269514722
    for cap, s in ((one, s1), (two, s2)):
        engine_cap = 256 // s.pp
        assert cap.limited_by == "max-num-seqs"
        assert cap.batch + z * math.sqrt(cap.batch) == pytest.approx(engine_cap, rel=1e-6)
        step = pm.decode_step_ms(s, round(cap.batch), 256 + 64)
        assert cap.rps == pytest.approx(s.pp * cap.batch / (128 * step / 1000), rel=0.03)
    # a bigger cap lifts the limit until TPOT or the KV cache binds
    more = replica_capacity(pm, s1, Role.DECODE, b, CHAT, ServingLimits(max_num_seqs=1024))
    assert more.rps > one.rps and more.limited_by != "max-num-seqs"


def test_robust_slowdown_lowers_capacity() -> None:
    pm = default_perf_model()
    s, b = shape("llama-3-8b", "a10g", 2), bucket(1024, 256)
    base = replica_capacity(pm, s, Role.UNIFIED, b, CHAT)
    slow = replica_capacity(pm, s, Role.UNIFIED, b, CHAT, ServingLimits(prefill_slowdown=1.2, decode_slowdown=1.2))
    print(f"\nA10G TP2 unified 1024/256: {base.rps:.2f} req/s, {slow.rps:.2f} with steps 20% slower")
    assert 0 < slow.rps < 0.9 * base.rps
