"""DAY files (``medley simulate``): YAML → ``DayInputs`` — the day, its fleet file and the traces it names,
paths relative to the DAY file. Errors are ``DayError`` with one line: ``FILE: field: reason``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from pydantic import ValidationError

from planner.control.day import DaySpec
from planner.control.simulate import DayInputs
from planner.io.fleetfile import FleetError, load_fleet
from planner.io.traces import load_trace


class DayError(ValueError):
    """A DAY file that cannot be read or used; the message names the file and the field."""


def parse_day(text: str, file: str = "<day>") -> DaySpec:
    """A DAY file's text as a ``DaySpec``."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{file}:{mark.line + 1}" if mark is not None else file
        raise DayError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict):
        raise DayError(f"{file}: a DAY file is a mapping with at least 'fleet'")
    try:
        return DaySpec.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "(file)"
        raise DayError(f"{file}: {field}: {err['msg']}") from None


def load_day(path: str | Path) -> DayInputs:
    """Read a DAY file, its fleet and its traces."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise DayError(f"{path}: cannot read: {exc.strerror or exc}") from None
    day = parse_day(text, str(path))
    base = p.parent
    try:
        fleet = load_fleet(base / day.fleet)
    except FleetError as exc:
        raise DayError(f"{path}: fleet: {exc}") from None
    known = {s.id for s in fleet.services}
    traces = {}
    for svc, src in day.services.items():
        if svc not in known:
            names = ", ".join(sorted(known))
            raise DayError(f"{path}: services.{svc}: no such service in {day.fleet} (known: {names})")
        if src.trace is not None:
            try:
                traces[svc] = load_trace(base / src.trace)
            except (OSError, ValueError) as exc:
                raise DayError(f"{path}: services.{svc}.trace: {exc}") from None
            stamps = traces[svc].arrival_s
            if stamps is None or len(traces[svc]) < 2 or bool(np.isnan(stamps).any()):
                raise DayError(f"{path}: services.{svc}.trace: needs a TIMESTAMP column and two requests")
    for s in fleet.services:
        if s.traffic.trace_file is not None and s.id not in traces:
            raise DayError(f"{path}: services.{s.id}: its fleet traffic is a trace file; name a trace for it here")
    return DayInputs(day, fleet, traces)
