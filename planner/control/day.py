r"""A day of traffic for the control loop: the DAY file's vocabulary and the documented generator behind it.

Rate of service s at time t (hours, t ∈ [0, 24)):  λ_s(t) = peak_s · shape(t) · burst_s(t) · level_d, with

* ``shape(t) = 1/r + (1 − 1/r) · g(t) / max g``, ``g(t) = Σ_k height_k · exp(−½ (δ(t, hour_k) / width_k)²)``,
  δ the distance on the 24-hour circle and r = ``peak_to_trough``: a floor at night and Gaussian bumps
  (morning, afternoon) reaching the fleet's stated rate ``peak_s`` (the fleet spec is the day's peak);
* ``burst_s(t)``: a documented stand-in for BurstGPT's bursts (its data are not shipped here): per service a
  Poisson number of bursts (mean ``bursts.per_day``) at uniform times, each lasting U(``duration_min``)
  minutes and multiplying the rate by U(``amplitude``) for that time (a flat top);
* ``level_d``: the day's level, 1 on the simulated day and N(1, ``day_to_day``) on the history days.

Arrivals keep a trace's burst shape (the Azure LLM inference traces of 2023): the trace's arrival times,
normalised to one request per unit and tiled end to end (each copy rotated by a random offset) until they
cover the day, are mapped through the inverse of the cumulative rate Λ(t) = ∫₀ᵗ λ(u) du — time rescaling,
so a 1-second cluster in the trace stays a cluster, stretched or squeezed by the local rate. A service
without a trace gets Gamma gaps (coefficient of variation ``burst_cv``, 1 = Poisson) with lengths from its
buckets. The history days before the simulated one are per-step counts, Poisson around ∫ λ over the step,
on the clock of the requests that follow them (``history_rates``' ``offset_s``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from pydantic import ConfigDict, Field, model_validator

from planner.schema import LengthBucket, Value

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
GRID_S = 10.0  # resolution of the cumulative rate Λ(t)


class Bump(Value):
    """One Gaussian bump of the diurnal curve."""

    hour: float = Field(ge=0, lt=24)
    width_h: float = Field(gt=0, le=12)
    height: float = Field(gt=0, le=10)


class Diurnal(Value):
    """The day's shape: a floor of 1/peak_to_trough of the peak and bumps reaching 1."""

    peak_to_trough: float = Field(default=4.0, ge=1.0, le=100.0)
    bumps: list[Bump] = Field(default_factory=lambda: [Bump(hour=11.0, width_h=2.5, height=1.0),
                                                       Bump(hour=16.0, width_h=2.5, height=0.9)], min_length=1)


class Bursts(Value):
    """Bursts on top of the curve (see the module docstring)."""

    per_day: float = Field(default=6.0, ge=0, le=200)
    duration_min: tuple[float, float] = (2.0, 8.0)
    amplitude: tuple[float, float] = (1.15, 1.4)

    @model_validator(mode="after")
    def _ranges(self) -> Bursts:
        if not 0 < self.duration_min[0] <= self.duration_min[1] <= 240:
            raise ValueError("duration_min: needs 0 < low ≤ high ≤ 240 minutes")
        if not 1 <= self.amplitude[0] <= self.amplitude[1] <= 10:
            raise ValueError("amplitude: needs 1 ≤ low ≤ high ≤ 10")
        return self


class DayService(Value):
    """Where a service's requests come from: a trace file (its burst shape and lengths) or its buckets."""

    trace: str | None = Field(default=None, description="trace CSV, relative to the DAY file")
    burst_cv: float = Field(default=1.0, ge=0.1, le=10, description="gaps' coefficient of variation without a trace")


class LoopConfig(Value):
    """The control loop's knobs (see planner.solve.formulation.transition for the prices)."""

    period_s: float = Field(default=900.0, ge=60, le=3600)
    horizon_periods: int = Field(default=4, ge=1, le=24)
    startup_s: float = Field(default=300.0, ge=0, le=3600, description="model load until Ready")
    drain_s: float = Field(default=60.0, ge=0, le=3600)
    start_usd: float = Field(default=0.0, ge=0)
    dwell_periods: int = Field(default=4, ge=1, le=96)
    hysteresis: float = Field(default=0.1, ge=0, le=1)
    quantile: float | None = Field(default=None, ge=0.5, lt=1.0,
                                   description="forecast quantile to plan for (default: each service's SLO percentile)")
    solve_time_s: float = Field(default=5.0, gt=0, le=120)
    relative_gap: float = Field(default=0.01, ge=0, lt=1)


class DaySpec(Value):
    """A DAY file: which fleet, how its traffic moves over the day, and how the loop and the replay run."""

    api_version: str = Field(default="medley.dev/v1alpha1", alias="apiVersion")
    kind: str = "Day"
    fleet: str = Field(description="fleet file, relative to the DAY file; its rates are the day's peak")
    seed: int = 0
    hours: float = Field(default=24.0, gt=0, le=24)
    history_days: int = Field(default=4, ge=2, le=28)
    day_to_day: float = Field(default=0.05, ge=0, le=0.5, description="relative spread of a history day's level")
    diurnal: Diurnal = Field(default_factory=Diurnal)
    bursts: Bursts = Field(default_factory=Bursts)
    services: dict[str, DayService] = Field(default_factory=dict)
    loop: LoopConfig = Field(default_factory=LoopConfig)
    sample_s: float = Field(default=120.0, gt=0, le=3600,
                            description="seconds of each period replayed on each plan in force")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def shape(hours: FloatArray, diurnal: Diurnal) -> FloatArray:
    """The diurnal curve at ``hours`` (max 1 over the day, floor 1/peak_to_trough)."""
    grid = np.arange(0.0, 24.0, 1.0 / 60.0)

    def bumps(h: FloatArray) -> FloatArray:
        g = np.zeros_like(h)
        for b in diurnal.bumps:
            d = np.abs(((h - b.hour) + 12.0) % 24.0 - 12.0)
            g += b.height * np.exp(-0.5 * (d / b.width_h) ** 2)
        return g

    top = float(bumps(grid).max())
    floor = 1.0 / diurnal.peak_to_trough
    return np.asarray(floor + (1.0 - floor) * bumps(np.asarray(hours, dtype=float) % 24.0) / top, dtype=float)


def burst_factor(times_s: FloatArray, bursts: Bursts, span_s: float, rng: np.random.Generator) -> tuple[
        FloatArray, list[tuple[float, float, float]]]:
    """The burst multiplier at ``times_s`` and the bursts drawn (start s, duration s, amplitude)."""
    count = int(rng.poisson(bursts.per_day * span_s / 86400.0))
    drawn = []
    factor = np.ones_like(times_s)
    for _ in range(count):
        start = float(rng.uniform(0.0, span_s))
        length = float(rng.uniform(*bursts.duration_min)) * 60.0
        amp = float(rng.uniform(*bursts.amplitude))
        drawn.append((start, length, amp))
        factor = np.where((times_s >= start) & (times_s < start + length), factor * amp, factor)
    return factor, drawn


@dataclass(frozen=True)
class RateCurve:
    """λ(t) on a grid of ``GRID_S`` from 0, and its integral Λ."""

    grid_s: FloatArray
    rate_rps: FloatArray
    bursts: tuple[tuple[float, float, float], ...] = ()

    @property
    def cumulative(self) -> FloatArray:
        """Λ at the grid points (requests since 0)."""
        steps = np.diff(self.grid_s, prepend=self.grid_s[0])
        return np.asarray(np.cumsum(self.rate_rps * steps), dtype=float)

    def mean_rates(self, start_s: float, step_s: float, steps: int) -> FloatArray:
        """Mean rate over consecutive steps (∫ λ over the step / step)."""
        edges = start_s + step_s * np.arange(steps + 1)
        lam = np.interp(edges, self.grid_s, self.cumulative)
        return np.asarray(np.diff(lam) / step_s, dtype=float)


def rate_curve(peak_rps: float, day: DaySpec, span_s: float, rng: np.random.Generator,
               level: float = 1.0, offset_s: float = 0.0) -> RateCurve:
    """λ(t) over ``[0, span_s)`` of a day whose clock starts at ``offset_s`` into the 24-hour curve."""
    grid = np.arange(0.0, span_s + GRID_S, GRID_S)
    factor, drawn = burst_factor(grid, day.bursts, span_s, rng)
    rate = peak_rps * level * shape((grid + offset_s) / 3600.0, day.diurnal) * factor
    return RateCurve(grid, np.asarray(rate, dtype=float), tuple(drawn))


def _unit_times(trace_s: FloatArray, needed: float, rng: np.random.Generator) -> tuple[FloatArray, IntArray]:
    """Trace arrivals normalised to one per unit, tiled (each copy rotated) to reach ``needed``; and which
    trace row each came from."""
    n = trace_s.shape[0]
    span = float(trace_s[-1] - trace_s[0]) if n > 1 else 1.0
    unit = (trace_s - trace_s[0]) * (n / span) if span > 0 else np.arange(n, dtype=float)
    gaps = np.diff(unit, append=unit[-1] + 1.0)
    times: list[FloatArray] = []
    rows: list[IntArray] = []
    at = 0.0
    while at < needed:
        shift = int(rng.integers(0, n))
        order = np.roll(np.arange(n), -shift)
        t = at + np.concatenate([[0.0], np.cumsum(gaps[order])[:-1]])
        times.append(t)
        rows.append(order.astype(np.int64))
        at = float(t[-1] + gaps[order][-1])
    return np.concatenate(times), np.concatenate(rows)


def day_arrivals(curve: RateCurve, rng: np.random.Generator, *, trace_s: FloatArray | None = None,
                 trace_lengths: tuple[IntArray, IntArray] | None = None, buckets: Sequence[LengthBucket] = (),
                 burst_cv: float = 1.0) -> tuple[FloatArray, IntArray, IntArray]:
    """Arrival times and lengths over the curve's span (see the module docstring)."""
    total = float(curve.cumulative[-1])
    if trace_s is not None and trace_lengths is not None and trace_s.shape[0] > 1:
        unit, rows = _unit_times(np.sort(trace_s), total, rng)
        ins, outs = trace_lengths[0][rows], trace_lengths[1][rows]
    else:
        shape_k = 1.0 / (burst_cv * burst_cv)
        count = int(total * 1.3 + 100)
        unit = np.cumsum(rng.gamma(shape_k, 1.0 / shape_k, size=count))
        while unit[-1] < total:
            unit = np.concatenate([unit, unit[-1] + np.cumsum(rng.gamma(shape_k, 1.0 / shape_k, size=count))])
        shares = np.asarray([b.share for b in buckets], dtype=float)
        pick = rng.choice(len(buckets), size=unit.shape[0], p=shares / shares.sum())
        ins = np.asarray([b.input_tokens for b in buckets], dtype=np.int64)[pick]
        outs = np.asarray([b.output_tokens for b in buckets], dtype=np.int64)[pick]
    keep = unit < total
    times = np.interp(unit[keep], curve.cumulative, curve.grid_s)
    return (np.asarray(times, dtype=float), np.maximum(np.asarray(ins[keep], dtype=np.int64), 1),
            np.maximum(np.asarray(outs[keep], dtype=np.int64), 1))


def history_rates(peak_rps: float, day: DaySpec, step_s: float, rng: np.random.Generator,
                  offset_s: float = 0.0) -> FloatArray:
    """Observed per-step rates of the ``history_days`` before the simulated day (Poisson counts); the series
    starts ``offset_s`` into the 24-hour curve, so it keeps the clock of the requests that follow it."""
    out = []
    steps = int(round(86400.0 / step_s))
    for _ in range(day.history_days):
        level = max(0.1, float(rng.normal(1.0, day.day_to_day)))
        curve = rate_curve(peak_rps, day, 86400.0, rng, level=level, offset_s=offset_s)
        expected = curve.mean_rates(0.0, step_s, steps) * step_s
        out.append(rng.poisson(expected) / step_s)
    return np.concatenate(out).astype(np.float64) if out else np.zeros(0)


def peak_to_trough(curve: RateCurve, step_s: float = 3600.0) -> float:
    """Highest over lowest mean rate per ``step_s`` of a curve (bursts included)."""
    steps = max(1, int(math.floor(float(curve.grid_s[-1]) / step_s)))
    rates = curve.mean_rates(0.0, step_s, steps)
    return float(rates.max() / max(rates.min(), 1e-12))
