"""Calibration: loaders read the shipped profiles, the fit recovers known factors, the shipped file is current."""

from __future__ import annotations

import csv
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from planner.catalog import builtin_catalog
from planner.io.profiles import read_calibration_points, shipped_calibration
from planner.model.calibration import ENGINE_SEEDS, Calibration, DeviceEfficiency, StepOverhead
from planner.model.fit import (
    Group,
    abs_pct_errors,
    calibrate_profile,
    fit,
    fit_device,
    leave_one_out,
    predict,
    summarise,
)

# The profile loaders belong to the calibration tool in benchmarks/, outside the installed packages.
sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from benchmarks.calibration_data import (  # noqa: E402
    HELIX_MEASUREMENTS,
    SOURCES,
    helix_measurement_rows,
    load_all,
    load_distserve,
    load_helix,
    load_links,
    load_splitwise,
    load_vidur,
)


def test_loaders_read_every_source() -> None:
    data = load_all()
    assert set(data) == set(SOURCES)
    vidur = load_vidur()
    assert {g.label for g in vidur} == {"a100", "h100", "a40"}
    assert any(g.kind == "allreduce" for g in vidur)
    helix = load_helix()
    assert {g.label for g in helix} == {"a100", "l4", "l4x2", "t4", "t4x2", "t4x4"}
    assert {g.device for g in helix} == {"a100-40gb", "l4", "t4"}
    ds = load_distserve()
    assert {g.model.id for g in ds} == {"opt-13b", "opt-66b"}
    # decode samples stay inside the KV capacity DistServe measured
    for g in ds:
        if g.phase == "decode":
            assert (g.batch * g.tokens).max() <= 480_000
    sw = load_splitwise()
    assert {(g.device, g.tp) for g in sw} >= {("a100-80gb", 2), ("h100-sxm", 8)}
    assert {g.engine for g in sw} == {"splitwise-2023"} and {g.engine for g in ds} == {"vllm-2023"}
    for gs in data.values():
        for g in gs:
            assert len(g.measured_ms) > 0 and (g.measured_ms > 0).all()
    links = load_links()
    assert set(links) == {"h100-sxm", "a100-80gb", "pcie"}
    assert set(links["h100-sxm"].send) == {"intra", "inter"} and not links["pcie"].send


def _synthetic(truth: Calibration, groups: list[Group]) -> list[Group]:
    return [replace(g, measured_ms=predict(g, truth)) for g in groups]


def test_fit_recovers_known_kernel_factors() -> None:
    truth_eff = DeviceEfficiency(mfu=0.55, mbu=0.65, attn_mfu=0.5, kernel_floor_us=4.0, link_efficiency=0.5)
    truth = Calibration(devices={"a40": truth_eff})
    groups = _synthetic(truth, [g for g in load_vidur() if g.label == "a40"])
    eff, ovh = fit_device("a40", groups)
    assert not ovh
    assert eff.mfu == pytest.approx(0.55, rel=0.03)
    assert eff.mbu == pytest.approx(0.65, rel=0.03)


def test_fit_recovers_known_overheads() -> None:
    # Engine data alone cannot tell a slow kernel from a slow host, so the fit holds kernel factors near the
    # seed: the truth here is near it. The decode overhead is visible (it dominates small-batch decode).
    truth_eff = DeviceEfficiency(mfu=0.42, mbu=0.85, attn_mfu=0.35, kernel_floor_us=6.0, link_efficiency=0.5)
    truth = Calibration(devices={"l4": truth_eff},
                        overheads={("vllm", "l4", 1): StepOverhead(0.0, 0.0, 0.5, 0.8),
                                   ("vllm", "l4", 2): StepOverhead(0.0, 0.0, 0.3, 0.4)})
    groups = _synthetic(truth, [g for g in load_helix() if g.device == "l4"])
    eff, ovh = fit_device("l4", groups, reference_seeds=True)
    # Helix times one layer per step: the fitted constant is a per-step cost
    assert ovh[("vllm", "l4", 1)].decode_step_ms == pytest.approx(0.8, rel=0.25)
    assert ovh[("vllm", "l4", 2)].decode_step_ms == pytest.approx(0.4, rel=0.25)
    assert ovh[("vllm", "l4", 1)].decode_ms_per_layer == 0.0
    errs = abs_pct_errors(groups, Calibration(devices={"l4": eff}, overheads=ovh))
    assert max(float(np.median(e)) for e in errs.values()) < 3.0


def test_calibration_round_trips_through_yaml_mapping() -> None:
    cal = shipped_calibration()
    again = Calibration.from_mapping(cal.to_mapping())
    assert again.devices == cal.devices
    assert again.overheads == cal.overheads
    assert again.engine == cal.engine == "vllm"


def test_shipped_calibration_is_current() -> None:
    """``benchmarks/calibrate.py`` regenerates planner/data/calibration.yaml; it must match a fresh fit."""
    data = load_all()
    links = load_links()
    fresh = fit([g for gs in data.values() for g in gs], links=links)
    shipped = shipped_calibration()
    assert set(fresh.devices) == set(shipped.devices)
    for dev, eff in fresh.devices.items():
        assert shipped.devices[dev].mfu == pytest.approx(eff.mfu, abs=2e-3)
        assert shipped.devices[dev].mbu == pytest.approx(eff.mbu, abs=2e-3)
    assert set(fresh.overheads) == set(shipped.overheads)
    assert set(shipped.links) == set(links)
    for name, prof in links.items():
        assert shipped.links[name].all_reduce["nccl"][8].us == pytest.approx(prof.all_reduce["nccl"][8].us, abs=1e-2)
    rows = summarise(abs_pct_errors([g for gs in data.values() for g in gs], shipped))
    in_sample = {(r["source"], r["device"]): r for r in rows}
    assert in_sample[("vidur", "a100")]["median_pct"] < 10
    assert in_sample[("helix", "l4")]["median_pct"] < 15
    catalog = builtin_catalog()
    for dev in shipped.devices:
        assert dev in catalog.devices


def test_shipped_calibration_carries_held_out_error_bands() -> None:
    """Per (engine, device, phase): median and p90 error on a source left out of the fit, for every engine
    and device some held-out source measures; what the planner reads as the model's error band."""
    shipped = shipped_calibration()
    keys = set(shipped.errors)
    assert {("vllm", "l4", "decode"), ("vllm", "t4", "prefill"), ("vllm-2023", "a100-80gb", "decode"),
            ("splitwise-2023", "h100-sxm", "decode")} <= keys
    for band in shipped.errors.values():
        assert 0 <= band.median_pct <= band.p90_pct and band.points > 0 and "leave-one-source-out" in band.scored_on
    # A device's band is found through its chip (A100 40 GB data score the 80 GB card too); a device no
    # source scored gets the engine's widest band for the phase, and says so.
    assert shipped.error_band("a100-80gb", "decode", "vllm") is shipped.errors[("vllm", "a100-40gb", "decode")]
    unknown = shipped.error_band("mi300x", "decode", "vllm")
    assert unknown is not None and "no held-out data for mi300x" in unknown.scored_on
    assert unknown.p90_pct == max(b.p90_pct for k, b in shipped.errors.items() if k[0] == "vllm" and k[2] == "decode")


def test_engines_split_the_host_bound_2023_engines_from_today() -> None:
    """Splitwise's engine held Llama-2-70B decode steps at ~45 ms (A100) and ~30 ms (H100) at TP4 and TP8
    whatever the batch; the fit reproduces them there, and the TP8 step of today's vLLM is not held back."""
    sw = [g for g in load_splitwise() if g.phase == "decode" and g.model.id == "llama-2-70b" and g.tp in (4, 8)]
    shipped = shipped_calibration()
    for errs in abs_pct_errors(sw, shipped).values():
        assert float(np.median(errs)) < 10.0
    vllm, old = (replace(shipped, engine=e) for e in ("vllm", "splitwise-2023"))
    assert vllm.overhead("h100-sxm", 8).decode_ms_per_layer < old.overhead("h100-sxm", 8).decode_ms_per_layer


def test_helix_held_out_meets_target_from_data_sheet_seeds() -> None:
    """Helix's L4/T4 appear in no other source: scored held out, they start from the generic seed read off
    their data sheets (slot-powered cards), engine ``vllm`` has no other data (its host work is taken as
    hidden), and Helix meets median ≤ 15% / p90 ≤ 30%."""
    data = load_all()
    errs = leave_one_out(data, ("helix",), reference_seeds=False, by_phase=True, links=load_links())
    assert set(errs) == {("helix", "prefill"), ("helix", "decode")}
    pooled = np.concatenate(list(errs.values()))
    assert float(np.median(pooled)) <= 15.0
    assert float(np.percentile(pooled, 90)) <= 30.0


def test_calibrate_held_out_error_on_public_measurements() -> None:
    """``medley perf calibrate`` on Helix's measured vLLM per-layer times of Llama-2-70B (A100-40GB, L4, T4 at
    TP1; 2×L4, 2×T4, 4×T4): fit on TP1 and batches ≤ 5, score the other 435 points. Scored honestly: the base
    calibration is fitted without Helix (generic data-sheet seeds for L4/T4), so no held-out point was seen.
    Target: held-out median ≤ 12%."""
    data = load_all()
    base = fit([g for s, gs in data.items() if s != "helix" for g in gs], reference_seeds=False, links=load_links())
    groups = read_calibration_points(HELIX_MEASUREMENTS, builtin_catalog(), source="helix")
    result = calibrate_profile(groups, base, ENGINE_SEEDS["vllm"], "helix", train_max_batch=5)
    held = result.held_out_pct()
    assert result.train_points == 66 and result.test_points == 435
    assert {tp for _, tp, _ in result.held_out} == {1, 2, 4}
    assert float(np.median(held)) <= 12.0
    # The profile stores those held-out errors as its error bands.
    assert ("vllm", "t4", "decode") in result.profile.errors


def test_shipped_helix_measurements_match_their_conversion() -> None:
    rows = helix_measurement_rows()
    with HELIX_MEASUREMENTS.open(newline="", encoding="utf-8") as fh:
        shipped = list(csv.DictReader(fh))
    assert len(shipped) == len(rows)
    assert all(str(r[k]) == s[k] for r, s in zip(rows, shipped, strict=True) for k in ("device", "batch", "tokens"))
