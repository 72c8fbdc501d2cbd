"""Which spot losses a service must survive, and the risk a plan leaves, against hand-computed probabilities."""

from __future__ import annotations

import math

import pytest

from planner.tiers.risk import HOURS_PER_MONTH, SpotRiskError, losses_to_cover, residual, tail, window_probability


def test_tail_is_the_poisson_binomial_tail() -> None:
    qs = [0.1, 0.2, 0.3]
    none = 0.9 * 0.8 * 0.7
    one = 0.1 * 0.8 * 0.7 + 0.9 * 0.2 * 0.7 + 0.9 * 0.8 * 0.3
    assert tail(qs, 0) == pytest.approx(1 - none)
    assert tail(qs, 1) == pytest.approx(1 - none - one)
    assert tail(qs, 2) == pytest.approx(0.1 * 0.2 * 0.3)
    assert tail(qs, 3) == 0.0


def test_a_monthly_probability_over_one_window() -> None:
    assert window_probability(0.2, HOURS_PER_MONTH) == pytest.approx(0.2)
    assert window_probability(0.2, 1.0) == pytest.approx(1 - 0.8 ** (1 / HOURS_PER_MONTH))
    assert window_probability(1.0, 1.0) == 1.0


def test_every_spot_user_survives_any_one_loss_and_more_when_the_target_asks() -> None:
    probs = {"a": 0.01, "b": 0.01, "c": 0.01}
    assert losses_to_cover(probs, 0.01) == [("a",), ("b",), ("c",)]  # P(≥2) ≈ 3e-4: one at a time
    assert losses_to_cover(probs, 1e-4) == [("a", "b"), ("a", "c"), ("b", "c")]  # P(≥3) = 1e-6
    assert losses_to_cover({"a": 0.5}, 0.1) == [("a",)]  # one spot pool: it must be able to go
    assert losses_to_cover({}, 0.1) == []


def test_too_many_loss_cases_are_refused() -> None:
    probs = {f"p{i}": 0.05 for i in range(12)}  # any 6 of 12: 924 cases
    with pytest.raises(SpotRiskError, match="loss cases"):
        losses_to_cover(probs, 1e-6)


def test_residual_risk_counts_the_uncovered_losses_among_the_pools_used() -> None:
    probs = {"a": 0.1, "b": 0.2, "c": 0.3}
    singles = [("a",), ("b",), ("c",)]
    assert residual(probs, ["a", "b"], singles) == pytest.approx(0.1 * 0.2)
    assert residual(probs, ["a", "b", "c"], singles) == pytest.approx(tail([0.1, 0.2, 0.3], 1))
    assert residual(probs, ["a"], []) == pytest.approx(0.1)
    assert residual(probs, [], singles) == 0.0
    many = {f"p{i}": 0.01 for i in range(20)}
    assert residual(many, many, [(p,) for p in many]) == pytest.approx(tail([0.01] * 20, 1))
    assert math.isclose(residual(probs, ["a", "b", "c"], [("a", "b", "c")]), 0.0, abs_tol=1e-15)
