"""The simulated day's traffic: the history the forecast learns from keeps the clock of the day it forecasts."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from planner.control.simulate import WARM_S, generate_traffic
from planner.io.dayfile import load_day

ROOT = Path(__file__).resolve().parents[3]


def test_the_history_days_keep_the_clock_of_the_simulated_day() -> None:
    inputs = load_day(ROOT / "examples" / "days" / "quickstart-day-poisson.yaml")
    period = 900.0
    source, _, _ = generate_traffic(inputs, period)
    days = inputs.day.history_days
    for svc in ("chat", "summarise"):
        series = source.rates(svc, -WARM_S - days * 86400.0, 86400.0 - WARM_S, period).rates_rps
        history = np.log(series[: 96 * days].reshape(days, 96).mean(axis=0))
        day = np.log(series[96 * days:])  # the same 96 clock slots, one day later
        error = {lag: float(np.mean(np.abs(np.roll(history, -lag) - day))) for lag in range(-6, 7)}
        assert min(error, key=lambda lag: error[lag]) == 0, error  # an hour off: lag ±4
