r"""A seasonal forecast of a service's request rate with a prediction interval.

Model: ETS(A,N,A) — additive error, no trend, additive season of ``season_steps`` (one day of steps) — on
``y_t = log(max(λ_t, floor))``, from statsmodels (``statsmodels.tsa.exponential_smoothing.ets.ETSModel``):

    y_t = ℓ_{t−1} + s_{t−m} + ε_t,   ℓ_t = ℓ_{t−1} + α ε_t,   s_t = s_{t−m} + γ ε_t,   ε_t ~ N(0, σ²)

The h-step forecast is ``ℓ_T + s_{T+h−m}``, its variance ``σ²(1 + (h−1)α² + ⌊(h−1)/m⌋ γ(2α + γ))``
(Hyndman et al., *Forecasting with Exponential Smoothing*, class 1), so the interval is analytic. The rate's
``q``-quantile is ``exp`` of the log's ``q``-quantile (a monotone map keeps quantiles), and the plan is
sized for that quantile, the service's ``slo.percentile`` unless the loop is told otherwise.

Why this model: a day's traffic swings by a factor, not by an amount (the night is a fraction of the day),
which the log turns into an additive season whose interval stays positive; ETS is the model class with
closed-form intervals for that shape, fits a day of 96 quarter-hours in about 0.25 s and filters a new
observation with fixed parameters in about 0.05 s. SARIMAX with a 96-step season fits one to two orders of
magnitude slower; Prophet brings a Stan toolchain; a Kalman random walk has no season. statsmodels is
maintained, BSD-licensed and already pulls only numpy, scipy, pandas and patsy.

Two corrections make the interval cover what it claims. The maximum-likelihood σ² is the in-sample mean
square of n residuals, whose states the history itself set — m seasonal states and the level from the first
two seasons, α and γ by the fit — so it understates the error of a forecast by about n/(n − m − 3); the
variance is scaled by that (v_h ← v_h · n/(n − m − 3)). And the plan carries the period's *rate*, while the
capacity model already queues Poisson arrivals at that rate: the observed rate of a step is a count over
``step_s`` seconds, whose log carries a sampling variance of about 1/(λ·step_s) on top of the rate's own.
Given ``step_s``, the interval is the rate's: the variance less the history's mean sampling variance
s̄ = mean_t 1/(λ_t·step_s) (ETS fits one σ² for both), kept at no less than a quarter of it
(``RATE_SHARE_MIN``) so a noisy history never collapses the interval:
``upper = exp(μ_h + z_q·√max(v_h − s̄, v_h/4))``.

Parameters (α, γ) are estimated by maximum likelihood every ``refit_every`` steps and kept in between; each
forecast filters the whole history with them (statsmodels' ``smooth``), so every observation counts at once.
The initial level and season come from the first two seasons (statsmodels' ``heuristic``), so the model
needs ``2·season_steps`` observations; with fewer the forecast is the prior (the fleet's stated rate) or,
without one, the last observation, and says so in ``method``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
RATE_SHARE_MIN = 0.25  # the rate's variance is kept at no less than this share of the observation's


class ForecastError(ValueError):
    """The history or the request cannot be forecast (the message names the argument)."""


@dataclass(frozen=True)
class Forecast:
    """Rates of the next steps: the median, and the central interval whose upper end is ``quantile``."""

    median_rps: FloatArray
    lower_rps: FloatArray
    upper_rps: FloatArray
    quantile: float
    method: str  # "ets", "prior" or "last"

    def __len__(self) -> int:
        return int(self.median_rps.shape[0])


def _check(history: FloatArray, horizon: int, quantile: float, season_steps: int) -> None:
    if history.ndim != 1 or not np.all(np.isfinite(history)) or np.any(history < 0):
        raise ForecastError("history: rates must be a finite, non-negative 1-D series")
    if horizon < 1:
        raise ForecastError(f"horizon: must be at least 1 step (got {horizon})")
    if not 0.5 <= quantile < 1.0:
        raise ForecastError(f"quantile: must be in [0.5, 1) (got {quantile})")
    if season_steps < 2:
        raise ForecastError(f"season_steps: must be at least 2 (got {season_steps})")


def _model(log_rates: FloatArray, season_steps: int) -> object:
    import pandas as pd
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel

    # statsmodels' prediction frame needs an indexed series (a bare array fails with pandas 3).
    return ETSModel(pd.Series(log_rates), error="add", trend=None, seasonal="add", seasonal_periods=season_steps,
                    initialization_method="heuristic")


def _fallback(history: FloatArray, horizon: int, quantile: float, prior_rps: float | None) -> Forecast:
    level = prior_rps if prior_rps is not None else (float(history[-1]) if history.size else 0.0)
    flat = np.full(horizon, level, dtype=np.float64)
    return Forecast(flat, flat.copy(), flat.copy(), quantile, "prior" if prior_rps is not None else "last")


@dataclass
class SeasonalForecaster:
    """ETS(A,N,A) on log rates; parameters re-estimated every ``refit_every`` forecasts (default: a season)."""

    season_steps: int
    refit_every: int | None = None
    floor_rps: float = 0.01
    step_s: float | None = None  # seconds per step: the interval is of the rate, less the counts' sampling noise
    _params: FloatArray | None = field(default=None, repr=False)
    _since_fit: int = 0

    def forecast(self, history_rps: FloatArray, horizon: int, quantile: float,
                 prior_rps: float | None = None) -> Forecast:
        """The next ``horizon`` steps after ``history_rps`` (oldest first), with the ``quantile`` upper bound."""
        history = np.asarray(history_rps, dtype=np.float64)
        _check(history, horizon, quantile, self.season_steps)
        if history.size < 2 * self.season_steps:
            return _fallback(history, horizon, quantile, prior_rps)
        y = np.log(np.maximum(history, self.floor_rps))
        model = _model(y, self.season_steps)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence chatter of the optimiser; the fit is checked below
            every = self.refit_every or self.season_steps
            if self._params is None or self._since_fit >= every:
                result = model.fit(disp=False)  # type: ignore[attr-defined]
                self._params = np.asarray(result.params, dtype=np.float64)
                self._since_fit = 0
            else:
                result = model.smooth(self._params)  # type: ignore[attr-defined]
            self._since_fit += 1
            frame = result.get_prediction(start=y.size, end=y.size + horizon - 1).summary_frame(
                alpha=2.0 * (1.0 - quantile))
        mean = np.asarray(frame["mean"], dtype=np.float64)
        upper = np.asarray(frame["pi_upper"], dtype=np.float64)
        lower = np.asarray(frame["pi_lower"], dtype=np.float64)
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(upper))):
            return _fallback(history, horizon, quantile, prior_rps)
        lower, upper = interval(mean, upper, history, quantile, self.season_steps, self.step_s)
        return Forecast(np.exp(mean), np.exp(lower), np.exp(upper), quantile, "ets")


def interval(mean: FloatArray, upper: FloatArray, history_rps: FloatArray, quantile: float, season_steps: int,
             step_s: float | None) -> tuple[FloatArray, FloatArray]:
    """(lower, upper) log bounds: the model's h-step variance for the residuals' degrees of freedom, less the
    counts' mean sampling variance over the history when ``step_s`` is given (see the module docstring)."""
    from scipy.stats import norm

    z = float(norm.ppf(quantile))
    if z <= 0.0:  # the median: no interval above it to widen
        return mean.copy(), mean.copy()
    n = int(np.asarray(history_rps).size)
    var = ((upper - mean) / z) ** 2 * n / max(n - season_steps - 3, 1)
    if step_s is not None:
        counts = np.maximum(np.asarray(history_rps, dtype=np.float64) * step_s, 1.0)
        var = np.maximum(var - float(np.mean(1.0 / counts)), RATE_SHARE_MIN * var)
    half = z * np.sqrt(var)
    return mean - half, mean + half


def forecast_rates(history_rps: FloatArray, season_steps: int, horizon: int, quantile: float,
                   prior_rps: float | None = None) -> Forecast:
    """One forecast with freshly estimated parameters (see :class:`SeasonalForecaster`)."""
    return SeasonalForecaster(season_steps).forecast(history_rps, horizon, quantile, prior_rps)


def interval_coverage(actual_rps: FloatArray, upper_rps: FloatArray) -> float:
    """Share of steps whose actual rate stayed at or under the forecast's upper bound."""
    actual = np.asarray(actual_rps, dtype=np.float64)
    upper = np.asarray(upper_rps, dtype=np.float64)
    if actual.shape != upper.shape or actual.size == 0:
        return math.nan
    return float(np.mean(actual <= upper + 1e-12))
