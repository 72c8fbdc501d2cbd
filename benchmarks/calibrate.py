"""Fit the performance model's efficiency factors and per-step overheads on the public profiles, and write
the shipped ``planner/data/calibration.yaml``.

The profiles and how they are read: ``benchmarks/calibration_data.py``; the fit: ``planner.model.fit``.
Run from the repository root::

    .venv/bin/python benchmarks/calibrate.py             # writes planner/data/calibration.yaml
    .venv/bin/python benchmarks/calibrate.py -o FILE     # writes FILE instead

It prints the in-sample error per (source, device) and stores, per (engine, device, phase), the model's error
on each source when that source is left out of the fit (the error bands plans report); the measured fabrics
(``links:``) are written beside the fitted factors. ``benchmarks/perf_accuracy.py`` prints the held-out
figures in full.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.calibration_data import HELD_OUT_SOURCES, PROFILES, load_all, load_links  # noqa: E402
from planner.model.calibration import Calibration  # noqa: E402
from planner.model.fit import abs_pct_errors, error_bands, fit, held_out_by_device_phase, summarise  # noqa: E402

SHIPPED = ROOT / "planner" / "data" / "calibration.yaml"
COMMAND = ".venv/bin/python benchmarks/calibrate.py"


def calibration_yaml(cal: Calibration) -> str:
    """The calibration file's text: a header naming how to regenerate it, then the fitted factors."""
    header = ("# Fitted efficiency factors and per-step overheads of the performance model (planner.model), the\n"
              "# measured collectives of each fabric (links) and the held-out error per engine/device/phase (errors).\n"
              f"# Regenerate: {COMMAND} (fits on {PROFILES.relative_to(ROOT)}).\n"
              "# Devices not listed use the seeds in planner/model/calibration.py (REFERENCE §1) and say so.\n")
    return header + yaml.safe_dump(cal.to_mapping(), sort_keys=False, width=110)


def main(argv: list[str] | None = None) -> None:
    """Fit on every source, write the calibration file, print the in-sample errors."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=SHIPPED, help="where to write (default: shipped)")
    args = parser.parse_args(argv)
    data = load_all()
    links = load_links()
    groups = [g for gs in data.values() for g in gs]
    used = "+".join(sorted(data))
    cal = fit(groups, source=f"benchmarks/calibrate.py fit on {used} ({PROFILES.relative_to(ROOT)})", links=links)
    held = held_out_by_device_phase(data, HELD_OUT_SOURCES, links)
    cal = replace(cal, errors=error_bands(held, "leave-one-source-out over " + "+".join(HELD_OUT_SOURCES)
                                          + " (generic seeds for devices the other sources lack)"))
    args.output.write_text(calibration_yaml(cal), encoding="utf-8")
    for row in summarise(abs_pct_errors(groups, cal)):
        print(f"{row['source']:10s} {row['device']:12s} n={row['points']:4d} "
              f"median {row['median_pct']:5.1f}%  p90 {row['p90_pct']:5.1f}%  (in-sample)")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
