"""Forecasts of a service's request rate: a seasonal model with a prediction interval, over plain values.

``seasonal.SeasonalForecaster`` fits ETS(A,N,A) on the log of the observed rates (statsmodels) and answers
the next steps' mean and the upper quantile a service plans for; ``seasonal.Forecast`` is its answer. No
I/O and no clock: the history comes in as numbers, the time as step indices.
"""

from planner.forecast.seasonal import Forecast, ForecastError, SeasonalForecaster, forecast_rates

__all__ = ["Forecast", "ForecastError", "SeasonalForecaster", "forecast_rates"]
