"""Accuracy of the performance model against public profiles, calibrating on some sources, scoring the others.

For each data source (Vidur operator profiles; Helix per-layer vLLM timings; DistServe's fitted vLLM
latency) and device: median and p90 absolute % error of predicted against measured times

* in-sample: the shipped calibration (fitted on every source);
* held out, generic seeds: fitted on the other sources; a device none of them covers starts from a
  generic seed read off its data sheet (the honest score), also split by phase;
* held out, REFERENCE seeds: the same, with the REFERENCE §1 seeds for uncovered devices (what the
  shipped model does for a device without data; the L4/T4 seeds were read off Helix, so Helix's score in
  this column is not independent).

Target: median ≤ 15%, p90 ≤ 30% on held-out sources. Also prints the published reproductions.
Run: ``.venv/bin/python benchmarks/perf_accuracy.py``; the last line is one JSON object of the figures.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.calibration_data import HELD_OUT_SOURCES, load_all  # noqa: E402
from planner.catalog import builtin_catalog  # noqa: E402
from planner.io.profiles import shipped_calibration  # noqa: E402
from planner.model.capacity import replica_capacity  # noqa: E402
from planner.model.fit import abs_pct_errors, leave_one_out, summarise  # noqa: E402
from planner.model.perf import ReplicaShape, default_perf_model  # noqa: E402
from planner.schema import SLO, LengthBucket, Role  # noqa: E402

TARGET_MEDIAN, TARGET_P90 = 15.0, 30.0


def _pooled(errors: dict[tuple[str, str], np.ndarray], source: str) -> tuple[float, float]:
    e = np.concatenate([v for (s, _), v in errors.items() if s == source])
    return float(np.median(e)), float(np.percentile(e, 90))


def reproductions() -> dict[str, float]:
    """The published numbers the model is checked against (see tests/planner/test_capacity.py)."""
    cat = builtin_catalog()

    def shape(m: str, d: str, tp: int, **kw: object) -> ReplicaShape:
        return ReplicaShape(model=cat.model(m), device=cat.device(d), tp=tp, **kw)  # type: ignore[arg-type]

    pm, pm23 = default_perf_model(), default_perf_model("vllm-2023")
    opt = shape("opt-13b", "a100-80gb", 1)
    b = LengthBucket(input_tokens=512, output_tokens=64, share=1.0)
    chat, tight = SLO(ttft_ms=200, tpot_ms=100), SLO(ttft_ms=400, tpot_ms=40)
    pre = replica_capacity(pm23, opt, Role.PREFILL, b, chat).rps
    dec = replica_capacity(pm23, opt, Role.DECODE, b, chat).rps
    uni = replica_capacity(pm23, opt, Role.UNIFIED, b, chat).rps
    pre_t = replica_capacity(pm23, opt, Role.PREFILL, b, tight).rps
    dec_t = replica_capacity(pm23, opt, Role.DECODE, b, tight).rps
    uni_t = replica_capacity(pm23, opt, Role.UNIFIED, b, tight).rps
    a100, h100 = shape("llama-2-70b", "a100-80gb", 8), shape("llama-2-70b", "h100-sxm", 8)
    lb, lslo = LengthBucket(input_tokens=6000, output_tokens=1000, share=1.0), SLO(ttft_ms=10_000, tpot_ms=200)
    tp4 = replica_capacity(pm, shape("llama-3-70b", "h100-sxm", 4), Role.DECODE, lb, lslo)
    off = replica_capacity(pm, shape("llama-3-70b", "h100-sxm", 2, memory_device=cat.device("h20"),
                                     memory_devices=4), Role.DECODE_OFFLOAD, lb, lslo)
    return {
        "distserve_prefill_only_rps": pre, "distserve_decode_only_rps": dec, "distserve_colocated_rps": uni,
        "distserve_2p1d_per_gpu_rps": min(2 * pre, dec) / 3,
        "distserve_tight_tpot_disagg_over_colocated": min(2 * pre_t, dec_t) / 3 / uni_t,
        "splitwise_ttft_ratio": pm.prefill_ms(a100, 1, 1500) / pm.prefill_ms(h100, 1, 1500),
        "splitwise_tbt_ratio": pm.decode_step_ms(a100, 1, 1600) / pm.decode_step_ms(h100, 1, 1600),
        "lamina_per_dollar_ratio": (off.rps / (2 * 11.06 + 4 * 4.63)) / (tp4.rps / (4 * 11.06)),
    }


def _cell(row: dict[str, float] | None) -> str:
    return f"{row['median_pct']:5.1f} / {row['p90_pct']:5.1f}" if row else "(trains)"


def main() -> None:
    t0 = time.perf_counter()
    data = load_all()
    everything = [g for gs in data.values() for g in gs]
    in_sample = abs_pct_errors(everything, shipped_calibration())
    held_generic = leave_one_out(data, HELD_OUT_SOURCES, reference_seeds=False)
    held_reference = leave_one_out(data, HELD_OUT_SOURCES, reference_seeds=True)
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
        print(f"held out {src:10s}: generic seeds median {med_g:5.1f}% p90 {p90_g:5.1f}% "
              f"({'meets' if ok else 'misses'} ≤{TARGET_MEDIAN:.0f}%/≤{TARGET_P90:.0f}%); "
              f"REFERENCE seeds median {med_r:5.1f}% p90 {p90_r:5.1f}%")
        figures[f"heldout_{src}_median_pct"] = round(med_g, 2)
        figures[f"heldout_{src}_p90_pct"] = round(p90_g, 2)
        figures[f"heldout_ref_{src}_median_pct"] = round(med_r, 2)
        figures[f"heldout_ref_{src}_p90_pct"] = round(p90_r, 2)
    # Where the held-out error sits: engine prefill, engine decode, or kernel (operator) points.
    by_phase = leave_one_out(data, HELD_OUT_SOURCES, reference_seeds=False, by_phase=True)
    for (src, phase), e in sorted(by_phase.items()):
        print(f"  held out {src:10s} {phase:8s}: median {np.median(e):5.1f}% p90 {np.percentile(e, 90):5.1f}% "
              f"({len(e)} points)")
        figures[f"heldout_{src}_{phase}_median_pct"] = round(float(np.median(e)), 2)
    for src in data:
        med, p90 = _pooled(in_sample, src)
        figures[f"insample_{src}_median_pct"] = round(med, 2)
        figures[f"insample_{src}_p90_pct"] = round(p90, 2)
    print()
    rep = reproductions()
    print("Reproductions (paper value in brackets):")
    print(f"  DistServe OPT-13B A100 512/64, TTFT 0.2 s / TPOT 0.1 s (engine vllm-2023): prefill-only "
          f"{rep['distserve_prefill_only_rps']:.2f} req/s [5.6], decode-only {rep['distserve_decode_only_rps']:.2f} "
          f"[10; DistServe's own fit gives ~28], colocated {rep['distserve_colocated_rps']:.2f} [1.6], "
          f"2P+1D {rep['distserve_2p1d_per_gpu_rps']:.2f} req/s/GPU [3.3]")
    print(f"  DistServe, TPOT 0.04 s: disaggregated / colocated per GPU "
          f"{rep['distserve_tight_tpot_disagg_over_colocated']:.2f}x [2.1x]")
    print(f"  Splitwise Llama-2-70B TP8 H100 over A100: TTFT {rep['splitwise_ttft_ratio']:.2f}x [1.95], "
          f"TBT {rep['splitwise_tbt_ratio']:.2f}x [1.68]")
    print(f"  Lamina LLaMA3-70B 2xH100+4xH20 over 4xH100 TP4, throughput per dollar "
          f"{rep['lamina_per_dollar_ratio']:.2f}x [1.26-2.07x]")
    figures.update({k: round(v, 3) for k, v in rep.items()})
    figures["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
