"""Accuracy of the performance model against public profiles, calibrating on some sources, scoring the others.

For each data source (Vidur operator profiles; Helix per-layer vLLM timings; DistServe's fitted vLLM
latency; Splitwise's characterisation runs) and device: median and p90 absolute % error of predicted against
measured times

* in-sample: the shipped calibration (fitted on every source);
* held out, generic seeds: fitted on the other sources; a device none of them covers starts from a
  generic seed read off its data sheet (the honest score), also split by phase;
* held out, REFERENCE seeds: the same, with the REFERENCE §1 seeds for uncovered devices (what the
  shipped model does for a device without data; the L4/T4 seeds were read off Helix, so Helix's score in
  this column is not independent).

Then the held-out (generic seeds) error per catalog device, pooled over the sources that measure it; the
collective and step-time checks the tests hold (measured all-reduce, TP4 vs TP8, same-chip cards, MI300X vs
H200); and the published reproductions, each with the engine its paper measured. Target: median ≤ 15%,
p90 ≤ 30% on held-out Vidur and Helix.
Run: ``.venv/bin/python benchmarks/perf_accuracy.py``; the last line is one JSON object of the figures.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.calibration_data import HELD_OUT_SOURCES, load_all, load_links  # noqa: E402
from benchmarks.reproductions import distserve_model  # noqa: E402
from planner.catalog import builtin_catalog  # noqa: E402
from planner.io.profiles import (  # noqa: E402
    calibration_for,
    default_perf_model,  # noqa: E402
    shipped_calibration,
)
from planner.model.capacity import replica_capacity  # noqa: E402
from planner.model.collectives import LinkProfile  # noqa: E402
from planner.model.fit import Group, abs_pct_errors, held_out_by_device_phase, leave_one_out, summarise  # noqa: E402
from planner.model.perf import ReplicaShape  # noqa: E402
from planner.schema import SLO, LengthBucket, Role  # noqa: E402

TARGET_MEDIAN, TARGET_P90 = 15.0, 30.0
TARGET_SOURCES = ("vidur", "helix")
KIB, MIB = 1024, 1024 * 1024


def _pooled(errors: dict[tuple[str, str], np.ndarray], source: str) -> tuple[float, float]:
    e = np.concatenate([v for (s, _), v in errors.items() if s == source])
    return float(np.median(e)), float(np.percentile(e, 90))


def reproductions() -> dict[str, float]:
    """The published numbers the model is checked against (see tests/planner/test_capacity.py)."""
    cat = builtin_catalog()

    def shape(m: str, d: str, tp: int, **kw: object) -> ReplicaShape:
        return ReplicaShape(model=cat.model(m), device=cat.device(d), tp=tp, **kw)  # type: ignore[arg-type]

    pm, pmsw = default_perf_model(), default_perf_model("splitwise-2023")
    fig1 = distserve_model()  # Figure 1's SLOs, TTFT at the prefill (DistServe's prototype returns it there)
    a100, h100 = shape("llama-2-70b", "a100-80gb", 8), shape("llama-2-70b", "h100-sxm", 8)
    lb, lslo = LengthBucket(input_tokens=6000, output_tokens=1000, share=1.0), SLO(ttft_ms=10_000, tpot_ms=200)
    tp4 = replica_capacity(pm, shape("llama-3-70b", "h100-sxm", 4), Role.DECODE, lb, lslo)
    off = replica_capacity(pm, shape("llama-3-70b", "h100-sxm", 2, memory_device=cat.device("h20"),
                                     memory_devices=4), Role.DECODE_OFFLOAD, lb, lslo)
    return {
        "distserve_prefill_only_rps": fig1["prefill"], "distserve_decode_only_rps": fig1["decode"],
        "distserve_colocated_rps": fig1["colocated"], "distserve_2p1d_per_gpu_rps": fig1["disaggregated"],
        "distserve_disagg_over_colocated": fig1["disaggregated"] / fig1["colocated"],
        "splitwise_ttft_ratio": pmsw.prefill_ms(a100, 1, 1500) / pmsw.prefill_ms(h100, 1, 1500),
        "splitwise_tbt_ratio": pmsw.decode_step_ms(a100, 1, 1600) / pmsw.decode_step_ms(h100, 1, 1600),
        "splitwise_ttft_ratio_vllm": pm.prefill_ms(a100, 1, 1500) / pm.prefill_ms(h100, 1, 1500),
        "lamina_per_dollar_ratio": (off.rps / (2 * 11.06 + 4 * 4.63)) / (tp4.rps / (4 * 11.06)),
    }


def physics_checks() -> dict[str, float]:
    """Measured all-reduce against the model, TP4 vs TP8 on NVLink, same-chip cards, MI300X vs H200."""
    cat = builtin_catalog()

    def ar_us(device: str, engine: str, message: float, n: int) -> float:
        return float(calibration_for(engine).collectives(cat.device(device)).all_reduce_ms(message, n)) * 1e3

    def shape(m: str, d: str, tp: int) -> ReplicaShape:
        return ReplicaShape(model=cat.model(m), device=cat.device(d), tp=tp)

    pm = default_perf_model()
    return {
        "ar_pcie8_512k_us": ar_us("a10g", "vllm", 0.5 * MIB, 8), "ar_pcie8_32m_us": ar_us("a10g", "vllm", 32 * MIB, 8),
        "ar_nvlink8_512k_custom_us": ar_us("h100-sxm", "vllm", 512 * KIB, 8),
        "ar_nvlink8_512k_nccl_us": ar_us("h100-sxm", "vllm-2023", 512 * KIB, 8),
        "llama2_70b_h100_b1_tp4_ms": pm.decode_step_ms(shape("llama-2-70b", "h100-sxm", 4), 1, 1024),
        "llama2_70b_h100_b1_tp8_ms": pm.decode_step_ms(shape("llama-2-70b", "h100-sxm", 8), 1, 1024),
        "llama2_70b_a100_40gb_tp8_ms": pm.decode_step_ms(shape("llama-2-70b", "a100-40gb", 8), 1, 1024),
        "llama2_70b_a100_80gb_tp8_ms": pm.decode_step_ms(shape("llama-2-70b", "a100-80gb", 8), 1, 1024),
        "llama3_8b_h200_over_mi300x": pm.decode_step_ms(shape("llama-3-8b", "h200-sxm", 1), 1, 1024)
        / pm.decode_step_ms(shape("llama-3-8b", "mi300x", 1), 1, 1024),
    }


def _cell(row: dict[str, float] | None) -> str:
    return f"{row['median_pct']:5.1f} / {row['p90_pct']:5.1f}" if row else "(trains)"


Errors = dict[tuple[str, str], np.ndarray]


def _print_sources(data: dict[str, list[Group]], held_generic: Errors, held_reference: Errors,
                   in_sample: Errors) -> dict[str, object]:
    rows = {(r["source"], r["device"]): r for r in summarise(in_sample)}
    gen = {(r["source"], r["device"]): r for r in summarise(held_generic)}
    ref = {(r["source"], r["device"]): r for r in summarise(held_reference)}
    print("Performance-model accuracy: absolute % error of predicted vs measured times (median / p90)")
    print(f"{'source':10s} {'device':10s} {'points':>6s}  {'in-sample':>13s}  {'held-out generic':>17s}  "
          f"{'held-out REFERENCE':>19s}")
    for key in sorted(rows):
        r = rows[key]
        g, f = gen.get(key), ref.get(key)
        print(f"{key[0]:10s} {key[1]:10s} {r['points']:6d}  {_cell(r):>13s}  {_cell(g):>17s}  {_cell(f):>19s}")
    print()
    figures: dict[str, object] = {}
    for src in HELD_OUT_SOURCES:
        med_g, p90_g = _pooled(held_generic, src)
        med_r, p90_r = _pooled(held_reference, src)
        ok = med_g <= TARGET_MEDIAN and p90_g <= TARGET_P90
        target = f"({'meets' if ok else 'misses'} ≤{TARGET_MEDIAN:.0f}%/≤{TARGET_P90:.0f}%)" if src in TARGET_SOURCES \
            else "(no target)"
        print(f"held out {src:10s}: generic seeds median {med_g:5.1f}% p90 {p90_g:5.1f}% {target}; "
              f"REFERENCE seeds median {med_r:5.1f}% p90 {p90_r:5.1f}%")
        figures[f"heldout_{src}_median_pct"] = round(med_g, 2)
        figures[f"heldout_{src}_p90_pct"] = round(p90_g, 2)
        figures[f"heldout_ref_{src}_median_pct"] = round(med_r, 2)
        figures[f"heldout_ref_{src}_p90_pct"] = round(p90_r, 2)
    for src in data:
        med, p90 = _pooled(in_sample, src)
        figures[f"insample_{src}_median_pct"] = round(med, 2)
        figures[f"insample_{src}_p90_pct"] = round(p90, 2)
    return figures


def _print_devices(data: dict[str, list[Group]], links: dict[str, LinkProfile]) -> dict[str, object]:
    """Held-out error per catalog device and phase, engine-level points (the calibration's error bands)."""
    figures: dict[str, object] = {}
    print("\nHeld out (generic seeds), per catalog device, engine-level points:")
    by_device: dict[tuple[str, str], list[float]] = {}
    for (engine, device, phase), e in sorted(held_out_by_device_phase(data, HELD_OUT_SOURCES, links).items()):
        print(f"  {device:10s} {engine:15s} {phase:8s} median {np.median(e):5.1f}% p90 {np.percentile(e, 90):5.1f}% "
              f"({len(e)} points)")
        by_device.setdefault((device, phase), []).extend(e.tolist())
    for (device, phase), e in sorted(by_device.items()):
        figures[f"heldout_device_{device}_{phase}_median_pct"] = round(float(np.median(e)), 2)
    return figures


def main() -> None:
    t0 = time.perf_counter()
    data = load_all()
    links = load_links()
    everything = [g for gs in data.values() for g in gs]
    in_sample = abs_pct_errors(everything, shipped_calibration())
    held_generic = leave_one_out(data, HELD_OUT_SOURCES, reference_seeds=False, links=links)
    held_reference = leave_one_out(data, HELD_OUT_SOURCES, reference_seeds=True, links=links)
    figures = _print_sources(data, held_generic, held_reference, in_sample)
    # Where the held-out error sits: engine prefill, engine decode, kernel (operator) or all-reduce points.
    by_phase = leave_one_out(data, HELD_OUT_SOURCES, reference_seeds=False, by_phase=True, links=links)
    for (src, phase), e in sorted(by_phase.items()):
        print(f"  held out {src:10s} {phase:9s}: median {np.median(e):5.1f}% p90 {np.percentile(e, 90):5.1f}% "
              f"({len(e)} points)")
        figures[f"heldout_{src}_{phase}_median_pct"] = round(float(np.median(e)), 2)
    figures.update(_print_devices(data, links))
    chk = physics_checks()
    print("\nChecks (measured in brackets):")
    print(f"  all-reduce, 8 PCIe GPUs (NCCL): 0.5 MiB {chk['ar_pcie8_512k_us']:.0f} µs [502.6], 32 MiB "
          f"{chk['ar_pcie8_32m_us'] / 1e3:.1f} ms [38.9]; 8×H100 512 KiB: vLLM custom "
          f"{chk['ar_nvlink8_512k_custom_us']:.1f} µs [12.0], NCCL {chk['ar_nvlink8_512k_nccl_us']:.1f} µs [19.5]")
    print(f"  Llama-2-70B decode, batch 1, H100 (vllm): TP4 {chk['llama2_70b_h100_b1_tp4_ms']:.1f} ms, "
          f"TP8 {chk['llama2_70b_h100_b1_tp8_ms']:.1f} ms; TP8 A100 40 GB {chk['llama2_70b_a100_40gb_tp8_ms']:.1f} "
          f"vs 80 GB {chk['llama2_70b_a100_80gb_tp8_ms']:.1f} ms; Llama-3-8B H200/MI300X step "
          f"{chk['llama3_8b_h200_over_mi300x']:.2f}x [parity]")
    figures.update({k: round(v, 3) for k, v in chk.items()})
    print()
    rep = reproductions()
    print("Reproductions (paper value in brackets):")
    print(f"  DistServe OPT-13B A100 512/64 at Figure 1's SLOs (TTFT 0.4 s / TPOT 0.04 s, first token at the "
          f"prefill; engine vllm-2023), req/s per GPU: prefill-only {rep['distserve_prefill_only_rps']:.2f} [5.6], "
          f"decode-only {rep['distserve_decode_only_rps']:.2f} [10], colocated {rep['distserve_colocated_rps']:.2f} "
          f"[1.6], 2P+1D {rep['distserve_2p1d_per_gpu_rps']:.2f} [3.3], disaggregated / colocated "
          f"{rep['distserve_disagg_over_colocated']:.2f}x [2.1x] (where the gap lies: benchmarks/reproductions.py)")
    print(f"  Splitwise Llama-2-70B TP8 H100 over A100 (engine splitwise-2023): "
          f"TTFT {rep['splitwise_ttft_ratio']:.2f}x [1.95], TBT {rep['splitwise_tbt_ratio']:.2f}x "
          f"[1.68; its measured steps give 1.50]; today's vllm TTFT {rep['splitwise_ttft_ratio_vllm']:.2f}x")
    print(f"  Lamina LLaMA3-70B 2xH100+4xH20 over 4xH100 TP4, throughput per dollar "
          f"{rep['lamina_per_dollar_ratio']:.2f}x [1.26-2.07x]")
    figures.update({k: round(v, 3) for k, v in rep.items()})
    figures["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
