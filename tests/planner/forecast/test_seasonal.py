"""The seasonal forecast: it learns a day's shape, its interval covers about what it says, and it falls back
to the prior (the fleet's rate) until it has two days of history."""

from __future__ import annotations

import numpy as np
import pytest

from planner.forecast import ForecastError, SeasonalForecaster, forecast_rates
from planner.forecast.seasonal import interval, interval_coverage

SEASON = 24


def _day(rng: np.random.Generator, days: int, noise: float = 0.05) -> np.ndarray:
    t = np.arange(days * SEASON)
    base = 10.0 * (0.3 + 0.7 * np.exp(-0.5 * (((t % SEASON) - 13.0) / 3.0) ** 2))
    return np.asarray(base * np.exp(rng.normal(0.0, noise, t.size)), dtype=float)


def test_the_forecast_follows_the_morning_ramp_and_its_interval_covers_about_its_quantile() -> None:
    rng = np.random.default_rng(1)
    series = _day(rng, 6)
    history, future = series[: 5 * SEASON], series[5 * SEASON:]
    f = forecast_rates(history, SEASON, SEASON, quantile=0.9)
    assert f.method == "ets" and len(f) == SEASON
    # The ramp from night to peak is forecast, not the last value repeated.
    assert f.median_rps[13] > 2.5 * f.median_rps[2]
    assert np.all(f.upper_rps >= f.median_rps) and np.all(f.lower_rps <= f.median_rps)
    assert np.max(np.abs(np.log(f.median_rps / future))) < 0.25
    assert interval_coverage(future, f.upper_rps) >= 0.75


def test_parameters_are_kept_between_refits_and_the_state_follows_every_observation() -> None:
    rng = np.random.default_rng(2)
    series = _day(rng, 5)
    fc = SeasonalForecaster(SEASON, refit_every=3)
    fc.forecast(series[: 4 * SEASON], 1, 0.9)
    fitted = fc._params
    again = fc.forecast(series[: 4 * SEASON + 1], 1, 0.9)
    assert fc._params is fitted  # filtered with the same parameters, not fitted again
    surged = series[: 4 * SEASON + 1].copy()
    surged[-4:] *= 3.0  # a surge moves the filtered level at once, without a refit
    assert fc.forecast(surged, 1, 0.9).median_rps[0] > again.median_rps[0]
    fc.forecast(series[: 4 * SEASON + 2], 1, 0.9)
    assert fc._params is not fitted  # the third forecast since the fit refits


def test_without_two_days_of_history_the_prior_is_the_forecast() -> None:
    f = forecast_rates(np.full(30, 3.0), SEASON * 2, 4, 0.9, prior_rps=24.0)
    assert f.method == "prior" and np.allclose(f.upper_rps, 24.0)
    assert forecast_rates(np.full(3, 3.0), SEASON, 2, 0.9).method == "last"


@pytest.mark.parametrize(("history", "horizon", "quantile", "field"), [
    (np.array([1.0, -1.0]), 1, 0.9, "history"), (np.ones(50), 0, 0.9, "horizon"),
    (np.ones(50), 1, 1.0, "quantile"), (np.array([1.0, np.nan]), 1, 0.9, "history")])
def test_bad_arguments_name_the_field(history: np.ndarray, horizon: int, quantile: float, field: str) -> None:
    with pytest.raises(ForecastError, match=field):
        forecast_rates(history, SEASON, horizon, quantile)


def test_given_the_step_the_interval_is_of_the_rate_not_of_a_steps_count() -> None:
    """Counts of Poisson arrivals around a smooth daily rate: the interval of the count over-covers the rate
    (it holds the sampling noise the capacity model already queues for); the rate's is narrower and still
    covers about its quantile."""
    rng = np.random.default_rng(4)
    step_s = 20.0  # 60–200 requests a step: a sampling noise of 7–13% on the log
    t = np.arange(7 * SEASON)
    rate = 10.0 * (0.3 + 0.7 * np.exp(-0.5 * (((t % SEASON) - 13.0) / 3.0) ** 2)) * np.exp(rng.normal(0, 0.03, t.size))
    counts = rng.poisson(rate * step_s) / step_s
    history, future = counts[: 6 * SEASON], rate[6 * SEASON:]
    of_count = SeasonalForecaster(SEASON).forecast(history, SEASON, 0.9)
    of_rate = SeasonalForecaster(SEASON, step_s=step_s).forecast(history, SEASON, 0.9)
    assert np.allclose(of_rate.median_rps, of_count.median_rps)
    assert np.all(of_rate.upper_rps < of_count.upper_rps) and np.all(of_rate.lower_rps > of_count.lower_rps)
    assert interval_coverage(future, of_count.upper_rps) == 1.0
    assert interval_coverage(future, of_rate.upper_rps) >= 0.75


def test_the_variance_counts_the_states_the_history_set_and_keeps_a_floor() -> None:
    z = 1.2815515655446004  # the 0.9 quantile of the standard normal
    mean, upper = np.zeros(2), np.full(2, z)  # the model's one-σ² interval
    _, up = interval(mean, upper, np.full(48, 5.0), 0.9, 24, None)
    assert up == pytest.approx(np.full(2, z * np.sqrt(48 / 21)))  # 24 seasonal states + level + α, γ
    _, up = interval(mean, upper, np.full(48, 5.0), 0.9, 24, step_s=1e6)  # counts of millions: no noise
    assert up == pytest.approx(np.full(2, z * np.sqrt(48 / 21)), rel=1e-5)
    _, up = interval(mean, 0.1 * upper, np.full(48, 0.5), 0.9, 24, step_s=2.0)  # one request a step: all noise
    assert up == pytest.approx(np.full(2, 0.1 * z * np.sqrt(48 / 21 / 4)))  # the floor


def test_planning_for_the_median_gives_the_median_as_the_bound() -> None:
    series = _day(np.random.default_rng(3), 3)
    f = SeasonalForecaster(SEASON, step_s=60.0).forecast(series, 4, 0.5)
    assert np.all(np.isfinite(f.upper_rps)) and np.allclose(f.upper_rps, f.median_rps)
