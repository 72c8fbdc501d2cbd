"""Published results the planner reproduces on the shipped examples (figures printed with -s)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest


def _bench() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "reproductions.py"
    spec = importlib.util.spec_from_file_location("reproductions", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["reproductions"] = mod
    spec.loader.exec_module(mod)
    return mod


bench = _bench()


def test_distserve_planner_disaggregates_about_two_prefill_per_decode() -> None:
    r = bench.distserve(400, 40)
    print(f"DistServe fig.1 SLOs: {r['per_gpu_rps']:.2f} rps/GPU vs colocated {r['colocated_per_gpu_rps']:.2f} "
          f"(x{r['ratio']:.2f}), prefill:decode {r['prefill_gpus']}:{r['decode_gpus']}")
    # Mostly disaggregated (one colocated GPU rounds the mix off): 16 prefill : 6 decode : 1 unified GPU.
    assert r["unified_gpus"] <= 0.1 * (r["prefill_gpus"] + r["decode_gpus"])
    assert r["ratio"] >= 1.8
    assert 1.5 <= r["prefill_gpus"] / r["decode_gpus"] <= 3.0


def test_distserve_chatbot_slos_never_lose_to_colocation() -> None:
    r = bench.distserve(200, 100)
    print(f"DistServe chatbot SLOs: x{r['ratio']:.2f} over colocated")
    # The planner may mix roles but is never worse than colocation alone (it is one of its options). With
    # vLLM's TTFT (first token from the decode replica) 0.2 s leaves no room for the hand-off: all colocated.
    assert r["ratio"] >= 1.0


def test_distserve_gap_is_in_the_fits_not_the_queues() -> None:
    """The planner's per-GPU rates on DistServe's own fits sit above the paper's (4.35 disaggregated and 2.22
    colocated against 3.3 and 1.6). The queueing is not why: with TTFT counted as DistServe counts it, the
    capacity model gives what a replay of DistServe's fitted vLLM step times gives (within 10%), and the paper
    reads 0.66-0.74 of that replay for all four rates. The fits do not carry the speed of the system Figure 1
    measured: its steps ran about 12% slower than fitted, and with that slowdown the model meets all four
    rates within 25%."""
    paper = bench.DISTSERVE_PAPER
    model, fit = bench.distserve_model(), bench.distserve_replay("vllm")
    slowed = bench.distserve_model(bench.DISTSERVE_STEP_SLOWDOWN)
    for k in paper:
        print(f"{k}: paper {paper[k]:.2f}, model {model[k]:.2f}, replay of the fit {fit[k]:.2f}, "
              f"model x{bench.DISTSERVE_STEP_SLOWDOWN} {slowed[k]:.2f}")
        assert model[k] == pytest.approx(fit[k], rel=0.10)
        assert 0.6 <= paper[k] / fit[k] <= 0.8
        assert slowed[k] == pytest.approx(paper[k], rel=0.25)


def test_lamina_offload_beats_h100_only_per_dollar() -> None:
    r = bench.lamina()
    print(f"Lamina: {r['offload_configuration']}, throughput per $ x{r['throughput_per_usd_ratio']:.2f}")
    assert "decode+offload" in str(r["offload_configuration"])
    assert float(r["throughput_per_usd_ratio"]) >= 1.16


def test_melange_mixed_plan_never_costs_more_than_best_single_type() -> None:
    rows = bench.melange([8, 16], ["melange-2024", "aws-us-east-1-2026q1"])
    for r in rows:
        print(f"Mélange mixed {r['prices']} {r['rate_rps']} rps: saving {float(r['saving']):.1%} ({r['mix']})")
        assert float(r["mixed_usd_per_hour"]) <= float(r["single_usd_per_hour"]) + 1e-6
    # At 16 req/s short requests go to small GPUs (A10G or L4: with its 70 TFLOPS tensor peak the A10G no
    # longer outruns the L4 in prefill by the A10's 125) and long ones to A100s.
    mixes = [str(r["mix"]) for r in rows if r["rate_rps"] == 16]
    assert all(("a10g" in m or "l4" in m) and "a100-80gb" in m for m in mixes)
    assert max(float(r["saving"]) for r in rows) >= 0.10

