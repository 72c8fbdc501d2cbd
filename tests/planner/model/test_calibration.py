"""Calibration: loaders read the shipped profiles, the fit recovers known factors, the shipped file is current."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from planner.catalog import builtin_catalog
from planner.io.profiles import shipped_calibration
from planner.model.calibration import Calibration, DeviceEfficiency, StepOverhead
from planner.model.fit import Group, abs_pct_errors, fit, fit_device, leave_one_out, predict, summarise

# The profile loaders belong to the calibration tool in benchmarks/, outside the installed packages.
sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from benchmarks.calibration_data import (  # noqa: E402
    SOURCES,
    load_all,
    load_anchors,
    load_distserve,
    load_helix,
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
    for gs in data.values():
        for g in gs:
            assert len(g.measured_ms) > 0 and (g.measured_ms > 0).all()


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
    fresh = fit([g for gs in data.values() for g in gs])
    shipped = shipped_calibration()
    assert set(fresh.devices) == set(shipped.devices)
    for dev, eff in fresh.devices.items():
        assert shipped.devices[dev].mfu == pytest.approx(eff.mfu, abs=2e-3)
        assert shipped.devices[dev].mbu == pytest.approx(eff.mbu, abs=2e-3)
    assert set(fresh.overheads) == set(shipped.overheads)
    rows = summarise(abs_pct_errors([g for gs in data.values() for g in gs], shipped))
    in_sample = {(r["source"], r["device"]): r for r in rows}
    assert in_sample[("vidur", "a100")]["median_pct"] < 10
    assert in_sample[("helix", "l4")]["median_pct"] < 15
    catalog = builtin_catalog()
    for dev in shipped.devices:
        assert dev in catalog.devices


def test_helix_held_out_meets_target_from_data_sheet_seeds() -> None:
    """Helix's L4/T4 appear in no other source: scored held out, they start from the generic seed read off
    their data sheets (slot-powered cards), and Helix meets median ≤ 15% / p90 ≤ 30% (27%/42% in prefill
    with one generic constant)."""
    data = load_all()
    errs = leave_one_out(data, ("helix",), reference_seeds=False, by_phase=True)
    assert set(errs) == {("helix", "prefill"), ("helix", "decode")}
    pooled = np.concatenate(list(errs.values()))
    assert float(np.median(pooled)) <= 15.0
    assert float(np.percentile(pooled, 90)) <= 30.0


def test_tp8_prefill_overhead_is_fitted_on_its_own_data() -> None:
    """Splitwise's single-request TTFTs give TP8 prefill data of its own: the TP8 prefill overhead is no
    longer tied to the decode one, and the fit reproduces those TTFTs within 10%."""
    prefill = [g for g in load_anchors() if g.phase == "prefill"]
    assert {(g.device, g.tp) for g in prefill} == {("a100-80gb", 8), ("h100-sxm", 8)}
    shipped = shipped_calibration()
    for dev in ("a100-80gb", "h100-sxm"):
        ovh = shipped.overheads[("vllm", dev, 8)]
        assert ovh.prefill_ms_per_layer != pytest.approx(ovh.decode_ms_per_layer, rel=0.05)
    for errs in abs_pct_errors(prefill, shipped).values():
        assert float(errs.max()) < 10.0
