"""Reading performance profiles: measured step tables, a user's benchmark results, engine profiles and the
shipped calibration file.

**Measured tables** (``TablePerfModel`` overrides the model where they cover a point), one row per
measurement, header required::

    model,device,tp,pp,phase,batch,tokens,time_ms
    llama-2-7b,a100-80gb,1,1,prefill,1,512,31.5
    llama-2-7b,a100-80gb,1,1,decode,16,1024,14.2

**Measurements to calibrate on** (``medley perf calibrate``): the same columns, with two more phases and
three optional columns::

    model,device,tp,pp,phase,batch,tokens,time_ms,output_tokens,scope,file
    llama-3-8b,a10g,1,1,latency,8,512,,128,,runs/bs8.json      # vllm bench latency --output-json
    llama-3-8b,a10g,1,1,decode,16,1024,23.5,,,                  # a step time you measured
    llama-3-8b,a10g,1,1,decode,16,1024,,,,runs/serve16.json     # vllm bench serve --save-result

* ``phase``: ``prefill`` (``time_ms`` = prefill of ``batch`` prompts of ``tokens`` tokens, e.g. TTFT of a
  batch arriving together), ``decode`` (one decode step of ``batch`` sequences holding ``tokens`` tokens of
  context: TPOT/ITL at a steady batch), ``latency`` (a whole batch end to end: ``batch`` prompts of
  ``tokens`` tokens, ``output_tokens`` generated each, as ``vllm bench latency --batch-size B --input-len
  I --output-len O`` measures);
* ``scope``: ``step`` (default) or ``layer`` (one decoder layer per step, as layer-wise profilers report);
* ``file``: a benchmark result to read ``time_ms`` from, relative to the CSV: ``vllm bench latency
  --output-json`` (``avg_latency``, seconds) or ``vllm bench serve --save-result`` (``median_ttft_ms`` for
  prefill, ``median_tpot_ms`` for decode; run it with ``--max-concurrency`` equal to ``batch``, so the
  batch is steady and TTFT does not queue). Other tools (genai-perf, guidellm) report the same quantities:
  write their TTFT/TPOT medians into ``time_ms``.

``model``/``device`` are catalog ids (a fleet's own included); what ``phase``, ``tokens`` and ``time_ms``
mean for tables, and where a table covers a point, is in ``planner.model.measured``.

**Engine profiles** (``planner.perf_profile`` in a fleet file; ``medley perf calibrate`` writes them) and the
shipped ``planner/data/calibration.yaml`` (written by ``benchmarks/calibrate.py``) share one layout,
``planner.model.calibration_mapping``; a profile overlays the shipped values. Without the shipped file the
model runs on its seeds.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import yaml

from planner.catalog import Catalog
from planner.io.strict import safe_load
from planner.model.calibration import Calibration
from planner.model.measured import PHASES, MeasuredPoint
from planner.model.roofline import RooflinePerfModel
from planner.schema import FleetSpec

if TYPE_CHECKING:  # the fitter (and scipy) load only when measurements are read
    from planner.model.fit import Group

MEASURED_COLUMNS = ("model", "device", "tp", "pp", "phase", "batch", "tokens", "time_ms")
CALIBRATE_PHASES = (*PHASES, "latency")
SCOPES = {"step": "step", "": "step", "layer": "layer"}


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


# ---------------------------------------------------------------------------------------------- benchmark results


def benchmark_time_ms(path: Path, phase: str) -> float:
    """The time a vLLM benchmark result gives for ``phase`` (module docstring); ``ValueError`` naming the key."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"file: cannot read {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"file: {path} is not JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise ValueError(f"file: {path} holds no benchmark result object")
    if "avg_latency" in data:  # vllm bench latency --output-json: seconds for the whole batch
        return float(data["avg_latency"]) * 1000.0
    key = {"prefill": "median_ttft_ms", "decode": "median_tpot_ms"}.get(phase)
    if key is not None and key in data:  # vllm bench serve --save-result
        return float(data[key])
    want = "avg_latency" if phase == "latency" else f"avg_latency or {key}"
    raise ValueError(f"file: {path} has no {want} (vllm bench latency --output-json or vllm bench serve "
                     "--save-result)")


@dataclass(frozen=True)
class _Row:
    model: str
    device: str
    tp: int
    kind: str
    phase: str
    batch: int
    tokens: int
    output_tokens: int
    time_ms: float


def _parse_row(row: Mapping[str, str], where: str, base: Path) -> _Row:
    phase = (row.get("phase") or "").strip()
    if phase not in CALIBRATE_PHASES:
        raise ValueError(f"{where}: phase: must be one of {', '.join(CALIBRATE_PHASES)} (got {phase!r})")
    scope = (row.get("scope") or "").strip()
    if scope not in SCOPES:
        raise ValueError(f"{where}: scope: must be step or layer (got {scope!r})")
    try:
        tp, pp, batch, tokens = (int(row[k]) for k in ("tp", "pp", "batch", "tokens"))
        out = int(row.get("output_tokens") or 0)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: row: tp, pp, batch, tokens, output_tokens must be integers") from None
    if pp != 1:
        raise ValueError(f"{where}: pp: calibration fits pp 1 replicas (got {pp})")
    if tp < 1 or batch < 1 or tokens < 1:
        raise ValueError(f"{where}: row: tp, batch and tokens must be at least 1")
    if phase == "latency" and (out < 1 or scope == "layer"):
        raise ValueError(f"{where}: output_tokens: a latency row needs output_tokens ≥ 1 (and scope step)")
    file_ = (row.get("file") or "").strip()
    try:
        time_ms = benchmark_time_ms(base / file_, phase) if file_ else float(row.get("time_ms") or "nan")
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    if not time_ms > 0:
        raise ValueError(f"{where}: time_ms: must be a positive number (or give file)")
    return _Row(row["model"].strip(), row["device"].strip(), tp, SCOPES[scope] if phase != "latency" else "latency",
                phase, batch, tokens, out, time_ms)


def read_calibration_points(path: Path, catalog: Catalog, source: str = "user") -> list[Group]:
    """A user's measurements (module docstring) as fit groups, one per (model, device, TP, kind, phase);
    ``ValueError('FILE:LINE: field: reason')`` on the first bad row."""
    try:
        fh = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"{path}:0: (file): cannot read: {exc.strerror or exc}") from None
    rows: list[_Row] = []
    with fh:
        reader = csv.DictReader(fh)
        missing = set(MEASURED_COLUMNS) - {"time_ms"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}:1: columns: missing {', '.join(sorted(missing))}")
        for i, row in enumerate(reader, start=2):
            r = _parse_row(row, f"{path}:{i}", path.parent)
            for field, known in (("model", catalog.models), ("device", catalog.devices)):
                if getattr(r, field) not in known:
                    raise ValueError(f"{path}:{i}: {field}: unknown {field} {getattr(r, field)!r}")
            rows.append(r)
    if not rows:
        raise ValueError(f"{path}:2: rows: no measurements")
    from planner.model.fit import Group

    by_key: dict[tuple[str, str, int, str, str], list[_Row]] = {}
    for r in rows:
        by_key.setdefault((r.model, r.device, r.tp, r.kind, "prefill" if r.kind == "latency" else r.phase),
                          []).append(r)
    groups = []
    for (model, device, tp, kind, phase), rs in sorted(by_key.items()):
        groups.append(Group(source, f"{device}-tp{tp}", catalog.device(device), catalog.model(model), tp, kind, phase,
                            np.array([r.batch for r in rs], dtype=float), np.array([r.tokens for r in rs], dtype=float),
                            np.array([r.time_ms for r in rs]),
                            output_tokens=np.array([r.output_tokens for r in rs], dtype=float)
                            if kind == "latency" else None))
    return groups


# ---------------------------------------------------------------------------------------------- calibrations


@cache
def shipped_calibration() -> Calibration:
    """The fitted factors shipped in ``planner/data/calibration.yaml`` (seeds when the file is absent)."""
    res = resources.files("planner").joinpath("data", "calibration.yaml")
    if not res.is_file():
        return Calibration()
    return Calibration.from_mapping(safe_load(res.read_text(encoding="utf-8")) or {})


def load_profile(path: Path) -> Calibration:
    """An engine profile file (only the values it names); ``ValueError('FILE: field: reason')``."""
    from planner.io.files import OPEN, FileRefused
    from planner.io.strict import YamlProblem, load_yaml

    try:
        data, _ = load_yaml(OPEN.read_text(path))
    except FileRefused as exc:
        raise ValueError(f"{path}: (file): {exc.reason}") from None
    except YamlProblem as exc:
        raise ValueError(f"{path}:{exc.line}: {exc.field}: {exc.reason}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: (file): an engine profile is a mapping (engine, devices, overheads, ...)")
    try:
        return Calibration.from_mapping(data)
    except (ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: {exc}") from None


def profile_yaml(cal: Calibration, header: str = "") -> str:
    """An engine profile's text: comment lines, then the values."""
    lines = "".join(f"# {line}\n" for line in header.splitlines())
    return lines + yaml.safe_dump(cal.to_mapping(), sort_keys=False, width=110, allow_unicode=True)


def write_profile(cal: Calibration, path: Path, header: str = "") -> None:
    """Write an engine profile (:func:`profile_yaml`)."""
    path.write_text(profile_yaml(cal, header), encoding="utf-8")


def calibration_for(engine: str | None = None, profile: Path | None = None) -> Calibration:
    """The shipped calibration, with ``profile`` on top when given, for ``engine`` (default: the profile's
    engine, else ``vllm``)."""
    cal = shipped_calibration()
    if profile is not None:
        cal = cal.overlay(load_profile(profile))
    if engine is not None and engine != cal.engine:
        cal = replace(cal, engine=engine)
    return cal


def known_engines(cal: Calibration) -> set[str]:
    """Engines a calibration can model: those it defines and those it has fitted overheads for."""
    return set(cal.engines) | {k[0] for k in cal.overheads}


def fleet_calibration(fleet: FleetSpec) -> Calibration:
    """The calibration a fleet asks for: its ``planner.perf_profile`` over the shipped one, for its
    ``planner.perf_engine`` (the profile's engine when the fleet names a profile but no engine)."""
    opts = fleet.planner
    profile = Path(opts.perf_profile) if opts.perf_profile else None
    engine = opts.perf_engine if profile is None or "perf_engine" in opts.model_fields_set else None
    return calibration_for(engine, profile)


def fleet_perf_model(fleet: FleetSpec) -> RooflinePerfModel:
    """The performance model a fleet file asks for (:func:`fleet_calibration`)."""
    return RooflinePerfModel(fleet_calibration(fleet))


def default_perf_model(engine: str | None = None) -> RooflinePerfModel:
    """The roofline with the shipped calibration; ``engine`` picks whose per-step overheads apply."""
    return RooflinePerfModel(calibration_for(engine))
