"""SLO feedback: a miss of the SLO beyond sampling noise derates, a period within the SLO does not, a period
well above it recovers slowly; the correction is keyed by service and role, not by configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from planner.control.feedback import Feedback, update_factor
from planner.control.loop import ControlLoop, factor_key
from planner.io.fleetfile import load_fleet
from planner.observe.source import Attainment
from planner.pipeline import build_inputs

RULE = Feedback()
ROOT = Path(__file__).resolve().parents[3]


def test_a_miss_beyond_noise_derates_at_once() -> None:
    seen = Attainment(ttft=0.70, tpot=0.99, requests=400)
    assert update_factor(1.0, "unified", seen, 90.0, RULE) < 0.8


def test_a_period_that_meets_the_percentile_keeps_the_capacity() -> None:
    seen = Attainment(ttft=0.91, tpot=0.99, requests=400)  # meets p90, inside the dead band
    assert update_factor(0.8, "unified", seen, 90.0, RULE) == pytest.approx(0.8)


def test_a_small_sample_miss_is_not_believed() -> None:
    seen = Attainment(ttft=0.85, tpot=1.0, requests=40)  # 6 misses of 40 can be chance at p90
    assert update_factor(1.0, "unified", seen, 90.0, RULE) == pytest.approx(1.0)


def test_well_above_the_target_recovers_slowly() -> None:
    seen = Attainment(ttft=0.99, tpot=0.99, requests=400)
    after = update_factor(0.5, "unified", seen, 90.0, RULE)
    assert 0.5 < after < 0.55


def test_a_prefill_group_answers_for_ttft_a_decode_group_for_tpot() -> None:
    seen = Attainment(ttft=0.60, tpot=0.99, requests=400)
    assert update_factor(1.0, "prefill", seen, 90.0, RULE) < 1.0
    assert update_factor(1.0, "decode", seen, 90.0, RULE) == pytest.approx(1.0)


def test_the_correction_is_shared_by_every_configuration_of_a_service_role() -> None:
    fleet = load_fleet(ROOT / "examples" / "quickstart.yaml")
    inputs = build_inputs(fleet)
    loop = ControlLoop(fleet, inputs, menu=frozenset({"none"}))
    loop.factors[factor_key("code", "unified")] = 0.5
    rates = {s.id: s.traffic.rate_rps for s in fleet.services}
    derated = {c.key: c for c in loop.problem_at(rates, restrict=False).columns}
    touched = 0
    for c in inputs.problem.columns:
        want = 0.5 if (c.service, c.role) == ("code", "unified") else 1.0
        touched += want < 1.0
        assert derated[c.key].capacity_rps == pytest.approx(tuple(x * want for x in c.capacity_rps))
    assert touched > 1  # more than the one configuration that ran

