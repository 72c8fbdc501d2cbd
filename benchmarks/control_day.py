"""The control loop against the static peak plan over a 24-hour diurnal day of the quickstart fleet.

The day is ``examples/days/quickstart-day.yaml``: the fleet's stated rates at the peak, a night at a quarter
of it, bursts, chat and code replaying the Azure LLM inference traces of 2023 stretched over the curve.
Every quarter-hour the loop observes, forecasts (ETS on log rates, the SLO percentile's upper quantile),
plans the next hour with the moves priced (start-up 5 min, drain, one move an hour per service,
hysteresis) and rolls the move out make-before-break; 90 s of each stretch with a different Ready set are
replayed against the Ready replicas and against the static plan sized for the peak.

What the replay checks: queueing under bursts, the forecast's misses, the loop's decisions and rollouts.
What it does not: step times — the replay steps replicas with the planner's own performance model, so a
model error moves both plans alike.

``python benchmarks/control_day.py examples/days/quickstart-day-poisson.yaml`` runs the same day with
Poisson arrivals and the buckets' lengths (the capacity model's own assumption) instead of the traces.

Prints the hour-by-hour table side by side and ends with one JSON line (``static_usd``, ``loop_usd``,
``static_attainment``, ``loop_attainment``, ``loop_worst_hour_attainment`` and more). Run time on two
cores: about ten minutes.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from planner.control.simulate import simulate_day  # noqa: E402
from planner.io.dayfile import load_day  # noqa: E402

DAY = ROOT / "examples" / "days" / "quickstart-day.yaml"


def main() -> None:
    day = Path(sys.argv[1]) if len(sys.argv) > 1 else DAY
    inputs = load_day(day)
    started = time.perf_counter()
    report = simulate_day(inputs, progress=lambda line: print(line, file=sys.stderr, flush=True))
    seconds = time.perf_counter() - started
    print(f"{'hour':>4}  {'static $':>9} {'loop $':>9}  {'static att':>10} {'loop att':>9}  "
          f"{'started':>7} {'stopped':>7}  {'requests':>8}")
    for h in report.hour_rows:
        print(f"{h.hour:>4}  {h.static_usd:>9.2f} {h.loop_usd:>9.2f}  {100 * h.static_attainment:>9.2f}% "
              f"{100 * h.loop_attainment:>8.2f}%  {h.started:>7} {h.stopped:>7}  {h.requests:>8}")
    print(f"day   {report.static_usd:>9.2f} {report.loop_usd:>9.2f}  {100 * report.static_attainment:>9.2f}% "
          f"{100 * report.loop_attainment:>8.2f}%  {report.started:>7} {report.stopped:>7}")
    print(f"static peak plan ${report.static_usd_per_hour:.2f}/h all day; the loop {100 * report.saving:.1f}% cheaper, "
          f"at {100 * report.attainment_ratio:.2f}% of the static plan's attainment; worst hour "
          f"{100 * report.loop_worst_hour_attainment:.2f}% (static {100 * report.static_worst_hour_attainment:.2f}%); "
          f"(service, hour) pairs under their SLO percentile: loop {report.loop_hours_below_slo}, static "
          f"{report.static_hours_below_slo}; stop waves leaving a service short: {report.short_waves}; "
          f"peak/trough {report.peak_to_trough:.2f}")
    print(json.dumps({**report.summary(), "wall_s": round(seconds, 1)}))


if __name__ == "__main__":
    main()
