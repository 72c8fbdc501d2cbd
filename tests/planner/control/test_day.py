"""The day's traffic generator: the curve's peak and trough, arrivals that follow it and keep a trace's
burstiness, seeds that reproduce, and DAY files whose mistakes are one line naming the field."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from planner.control.day import DaySpec, Diurnal, day_arrivals, rate_curve, shape
from planner.io.dayfile import DayError, load_day, parse_day

ROOT = Path(__file__).resolve().parents[3]


def test_the_curve_spans_peak_to_trough_and_arrivals_follow_it() -> None:
    day = DaySpec(fleet="x.yaml", diurnal=Diurnal(peak_to_trough=4.0), bursts={"per_day": 0})
    s = shape(np.arange(0.0, 24.0, 0.25), day.diurnal)
    assert s.max() == pytest.approx(1.0, abs=1e-4) and s.min() == pytest.approx(0.25, rel=0.05)
    rng = np.random.default_rng(3)
    curve = rate_curve(10.0, day, 86400.0, rng)
    times, ins, outs = day_arrivals(curve, rng, buckets=_buckets())
    hourly = np.histogram(times, bins=np.arange(0, 86401, 3600))[0] / 3600.0
    expected = curve.mean_rates(0.0, 3600.0, 24)
    assert np.max(np.abs(hourly - expected) / expected) < 0.1
    assert set(ins.tolist()) <= {100, 1000}


def _buckets():
    from planner.schema import LengthBucket

    return [LengthBucket(input_tokens=100, output_tokens=10, share=0.5),
            LengthBucket(input_tokens=1000, output_tokens=100, share=0.5)]


def test_a_trace_stretched_over_the_curve_keeps_its_bursts() -> None:
    day = DaySpec(fleet="x.yaml", bursts={"per_day": 0})
    rng = np.random.default_rng(5)
    trace = np.sort(np.concatenate([np.repeat(np.arange(0.0, 3600.0, 60.0), 20), np.arange(0.0, 3600.0, 3.0)]))
    lengths = (np.full(trace.size, 100, dtype=np.int64), np.full(trace.size, 10, dtype=np.int64))
    curve = rate_curve(5.0, day, 7200.0, rng, offset_s=11 * 3600.0)
    times, _, _ = day_arrivals(curve, rng, trace_s=trace, trace_lengths=lengths)
    counts = np.histogram(times, bins=np.arange(0.0, 7201.0, 1.0))[0]
    assert counts.var() / counts.mean() > 3.0  # the 20-request clusters survive (Poisson would give 1)
    again, _, _ = day_arrivals(rate_curve(5.0, day, 7200.0, np.random.default_rng(5), offset_s=11 * 3600.0),
                               np.random.default_rng(5), trace_s=trace, trace_lengths=lengths)
    assert again.size > 0


def test_day_files_say_what_is_wrong_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(DayError, match=r"loop\.period_s"):
        parse_day("fleet: q.yaml\nloop: {period_s: 5}\n", "d.yaml")
    with pytest.raises(DayError, match="not valid YAML"):
        parse_day("fleet: [", "d.yaml")
    day = tmp_path / "d.yaml"
    day.write_text(f"fleet: {ROOT / 'examples' / 'quickstart.yaml'}\nservices: {{chta: {{}}}}\n")
    with pytest.raises(DayError, match=r"services\.chta: no such service"):
        load_day(day)
    shipped = load_day(ROOT / "examples" / "days" / "quickstart-day.yaml")
    assert set(shipped.traces) == {"chat", "code"} and shipped.day.loop.period_s == 900


def test_medley_simulate_refuses_a_bad_day_file_with_exit_2(tmp_path: Path) -> None:
    import typer

    from planner.cli.simulate import simulate_command

    app = typer.Typer()
    app.command("simulate")(simulate_command)
    app.command("other")(lambda: None)
    bad = tmp_path / "d.yaml"
    bad.write_text("fleet: nowhere.yaml\n")
    result = CliRunner().invoke(app, ["simulate", str(bad)])
    assert result.exit_code == 2 and "fleet: " in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(app, ["simulate", str(bad), "--plot", "x.svg"])
    assert result.exit_code == 2 and "--plot x.svg: write a .png file" in result.output
