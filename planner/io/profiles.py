"""Reading performance profiles: measured step tables (CSV) and the shipped calibration file.

Measured tables, one row per measurement, header required::

    model,device,tp,pp,phase,batch,tokens,time_ms
    llama-2-7b,a100-80gb,1,1,prefill,1,512,31.5
    llama-2-7b,a100-80gb,1,1,decode,16,1024,14.2

``model``/``device`` are catalog ids; what ``phase``, ``tokens`` and ``time_ms`` mean, and where a table
covers a point, is in ``planner.model.measured``. The shipped calibration is ``planner/data/calibration.yaml``
(written by ``benchmarks/calibrate.py``); without it the model runs on its seeds.
"""

from __future__ import annotations

import csv
from functools import cache
from importlib import resources
from pathlib import Path

import yaml

from planner.model.calibration import Calibration
from planner.model.measured import PHASES, MeasuredPoint

MEASURED_COLUMNS = ("model", "device", "tp", "pp", "phase", "batch", "tokens", "time_ms")


def read_measured_csv(path: Path) -> list[MeasuredPoint]:
    """Read a measured table (format in the module docstring); ``ValueError('FILE:LINE: field: reason')``."""
    out: list[MeasuredPoint] = []
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = set(MEASURED_COLUMNS) - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}:1: columns: missing {', '.join(sorted(missing))}")
        for i, row in enumerate(reader, start=2):
            try:
                p = MeasuredPoint(row["model"].strip(), row["device"].strip(), int(row["tp"]), int(row["pp"]),
                                  row["phase"].strip(), int(row["batch"]), int(row["tokens"]),
                                  float(row["time_ms"]))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{path}:{i}: row: {exc}") from None
            if p.phase not in PHASES:
                raise ValueError(f"{path}:{i}: phase: must be prefill or decode (got {p.phase!r})")
            if p.batch < 1 or p.tokens < 0 or p.tp < 1 or p.pp < 1 or not p.time_ms > 0:
                raise ValueError(f"{path}:{i}: row: batch/tp/pp must be ≥ 1, tokens ≥ 0, time_ms > 0")
            out.append(p)
    return out


@cache
def shipped_calibration() -> Calibration:
    """The fitted factors shipped in ``planner/data/calibration.yaml`` (seeds when the file is absent)."""
    res = resources.files("planner").joinpath("data", "calibration.yaml")
    if not res.is_file():
        return Calibration()
    return Calibration.from_mapping(yaml.safe_load(res.read_text(encoding="utf-8")) or {})
