"""A :class:`~planner.model.calibration.Calibration` as plain data and back: the layout of
``planner/data/calibration.yaml`` and of engine profile files (``medley perf calibrate`` writes them).

Every section is optional (a profile names only what it changes)::

    engine: vllm                       # the engine whose overheads and kernels apply
    source: where the values come from
    engines:                           # engines the file defines (shipped: vllm, vllm-2023, splitwise-2023)
      sglang: {base: vllm, custom_allreduce: true, custom_max_bytes: 8388608, host_overhead: step, max_num_seqs: 256,
               description: ...}
    devices:                           # kernel efficiencies per device
      a10g: {mfu: 0.5, mbu: 0.8, attn_mfu: 0.4, kernel_floor_us: 6, link_efficiency: 0.6, ar_base_us: 5, source: ...}
    overheads:                         # per-step host overhead per (engine, device, TP)
    - {engine: vllm, device: a10g, tp: 1, prefill_ms_per_layer: 0, decode_ms_per_layer: 0,
       prefill_step_ms: 1.2, decode_step_ms: 0.8, source: ...}
    links:                             # measured collectives per fabric (device id, or `pcie` for PCIe-only nodes)
      h100-sxm:
        link_gbps: 450
        all_reduce: {nccl: {8: [[65536, 18.6], ...]}, custom: {...}}   # gpus -> [[bytes, µs], ...]
        send: {intra: [[2048, 5.0], ...], inter: [...]}
        source: ...
    errors:                            # held-out error per (engine, device, phase)
    - {engine: vllm, device: l4, phase: decode, median_pct: 8.0, p90_pct: 19.0, points: 300, scored_on: ...}

Pure conversion of values; reading and writing files is ``planner.io.profiles``'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from planner.model.calibration import (
    ENGINE_SEEDS,
    Calibration,
    DeviceEfficiency,
    EngineProfile,
    ErrorBand,
    StepOverhead,
)
from planner.model.collectives import AR_BASE_US, CollectiveCurve, EngineCollectives, LinkProfile
from planner.model.perf import DEFAULT_ENGINE

_OVERHEAD_FIELDS = ("prefill_ms_per_layer", "decode_ms_per_layer", "prefill_step_ms", "decode_step_ms")


def _curve_points(c: CollectiveCurve) -> list[list[float]]:
    return [[round(b), round(t, 3)] for b, t in zip(c.bytes, c.us, strict=True)]


def _link_to_mapping(p: LinkProfile) -> dict[str, Any]:
    return {"link_gbps": p.link_gbps,
            "all_reduce": {k: {n: _curve_points(c) for n, c in sorted(by_n.items())}
                           for k, by_n in sorted(p.all_reduce.items())},
            "send": {k: _curve_points(c) for k, c in sorted(p.send.items())},
            "source": p.source}


def _engine_to_mapping(e: EngineProfile) -> dict[str, Any]:
    c = e.collectives
    return {"base": e.base, "custom_allreduce": c.custom_allreduce, "custom_max_bytes": int(c.custom_max_bytes),
            "custom_world_sizes": list(c.custom_world_sizes), "custom_pcie_max_gpus": c.custom_pcie_max_gpus,
            "host_overhead": e.host_overhead, "max_num_seqs": e.max_num_seqs, "description": e.description}


def calibration_to_mapping(cal: Calibration) -> dict[str, Any]:
    """Plain data for a calibration file (engines only where they differ from the shipped seeds)."""
    out: dict[str, Any] = {"engine": cal.engine, "source": cal.source}
    engines = {k: _engine_to_mapping(v) for k, v in sorted(cal.engines.items()) if ENGINE_SEEDS.get(k) != v}
    if engines:
        out["engines"] = engines
    out["devices"] = {k: {"mfu": round(v.mfu, 4), "mbu": round(v.mbu, 4), "attn_mfu": round(v.attn_mfu, 4),
                          "kernel_floor_us": round(v.kernel_floor_us, 2),
                          "link_efficiency": round(v.link_efficiency, 4), "ar_base_us": round(v.ar_base_us, 2),
                          "source": v.source}
                      for k, v in sorted(cal.devices.items())}
    out["overheads"] = [{"engine": k[0], "device": k[1], "tp": k[2],
                         **{f: round(getattr(v, f), 4) for f in _OVERHEAD_FIELDS}, "source": v.source}
                        for k, v in sorted(cal.overheads.items())]
    if cal.links:
        out["links"] = {k: _link_to_mapping(v) for k, v in sorted(cal.links.items())}
    if cal.errors:
        out["errors"] = [{"engine": k[0], "device": k[1], "phase": k[2], "median_pct": round(v.median_pct, 1),
                          "p90_pct": round(v.p90_pct, 1), "points": v.points, "scored_on": v.scored_on}
                         for k, v in sorted(cal.errors.items())]
    return out


def _num(where: str, value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: must be a number (got {value!r})") from None
    if out != out or out < 0:
        raise ValueError(f"{where}: must be a non-negative number (got {value!r})")
    return out


def _curve(where: str, gpus: int, points: Any) -> CollectiveCurve:
    if not isinstance(points, list) or not all(isinstance(p, list) and len(p) == 2 for p in points):
        raise ValueError(f"{where}: must be a list of [bytes, us] pairs")
    try:
        return CollectiveCurve(gpus, tuple(_num(where, p[0]) for p in points), tuple(_num(where, p[1]) for p in points))
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _link(name: str, d: Mapping[str, Any]) -> LinkProfile:
    where = f"links.{name}"
    all_reduce = {str(k): {int(n): _curve(f"{where}.all_reduce.{k}.{n}", int(n), pts) for n, pts in by_n.items()}
                  for k, by_n in (d.get("all_reduce") or {}).items()}
    send = {str(k): _curve(f"{where}.send.{k}", 2, pts) for k, pts in (d.get("send") or {}).items()}
    return LinkProfile(name, _num(f"{where}.link_gbps", d.get("link_gbps")), all_reduce, send, str(d.get("source", "")))


def _engine(name: str, d: Mapping[str, Any]) -> EngineProfile:
    """A shipped engine with the file's changes, or a new one that runs its base engine's kernels unless the
    file says otherwise."""
    base_name = d.get("base", DEFAULT_ENGINE)
    inherited = ENGINE_SEEDS.get(str(base_name), ENGINE_SEEDS[DEFAULT_ENGINE]).collectives
    seed = ENGINE_SEEDS.get(name, EngineProfile(name, inherited, base=DEFAULT_ENGINE))
    c = seed.collectives
    coll = EngineCollectives(bool(d.get("custom_allreduce", c.custom_allreduce)),
                             _num(f"engines.{name}.custom_max_bytes", d.get("custom_max_bytes", c.custom_max_bytes)),
                             tuple(int(x) for x in d.get("custom_world_sizes", c.custom_world_sizes)),
                             int(d.get("custom_pcie_max_gpus", c.custom_pcie_max_gpus)))
    base = d.get("base", seed.base)
    host = str(d.get("host_overhead", seed.host_overhead))
    if host not in ("step", "layer"):
        raise ValueError(f"engines.{name}.host_overhead: must be step or layer (got {host!r})")
    seqs = _num(f"engines.{name}.max_num_seqs", d.get("max_num_seqs", seed.max_num_seqs))
    if seqs < 1 or seqs != int(seqs):
        raise ValueError(f"engines.{name}.max_num_seqs: must be a whole number of at least 1 (got {seqs:g})")
    return EngineProfile(name, coll, None if base is None else str(base), str(d.get("description", seed.description)),
                         host, int(seqs))


def calibration_from_mapping(data: Mapping[str, Any]) -> Calibration:
    """Parse :func:`calibration_to_mapping`'s layout; ``ValueError('field: reason')`` on bad values."""
    devices = {}
    for k, v in (data.get("devices") or {}).items():
        w = f"devices.{k}"
        devices[str(k)] = DeviceEfficiency(
            _num(f"{w}.mfu", v.get("mfu")), _num(f"{w}.mbu", v.get("mbu")), _num(f"{w}.attn_mfu", v.get("attn_mfu")),
            _num(f"{w}.kernel_floor_us", v.get("kernel_floor_us")),
            _num(f"{w}.link_efficiency", v.get("link_efficiency", 0.7)),
            _num(f"{w}.ar_base_us", v.get("ar_base_us", AR_BASE_US)), str(v.get("source", "")))
    overheads = {}
    for i, o in enumerate(data.get("overheads") or []):
        w = f"overheads[{i}]"
        try:
            key = (str(o["engine"]), str(o["device"]), int(o["tp"]))
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{w}: needs engine, device and an integer tp") from None
        pre, dec, pre_s, dec_s = (_num(f"{w}.{f}", o.get(f, 0.0)) for f in _OVERHEAD_FIELDS)
        overheads[key] = StepOverhead(pre, dec, pre_s, dec_s, str(o.get("source", "")))
    links = {str(k): _link(str(k), v) for k, v in (data.get("links") or {}).items()}
    engines = {**ENGINE_SEEDS, **{str(k): _engine(str(k), v or {}) for k, v in (data.get("engines") or {}).items()}}
    errors = {}
    for i, e in enumerate(data.get("errors") or []):
        w = f"errors[{i}]"
        errors[(str(e.get("engine")), str(e.get("device")), str(e.get("phase")))] = ErrorBand(
            _num(f"{w}.median_pct", e.get("median_pct")), _num(f"{w}.p90_pct", e.get("p90_pct")),
            int(e.get("points", 0)), str(e.get("scored_on", "")))
    return Calibration(devices=devices, overheads=overheads, engine=str(data.get("engine", DEFAULT_ENGINE)),
                       source=str(data.get("source", "")), links=links, engines=engines, errors=errors)
