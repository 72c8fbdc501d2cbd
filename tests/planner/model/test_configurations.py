"""The configuration enumerator: one list behind the planner's candidates and ``medley capacity``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from planner.catalog import fleet_catalog
from planner.cli.main import app
from planner.io.fleetfile import load_fleet
from planner.io.profiles import default_perf_model
from planner.model.candidates import DROP_NO_BUCKET
from planner.model.configurations import (
    DROP_MEMORY,
    DROP_NODE,
    CandidateStats,
    fleet_configurations,
)
from planner.model.perf import check_shape
from planner.pipeline import build_inputs
from planner.schema import Role

QUICKSTART = Path(__file__).resolve().parents[3] / "examples" / "quickstart.yaml"


def _restricted(tmp_path: Path) -> Path:
    """Quickstart with a service's own TP options, allowed pools (with a memory pool) and allowed roles."""
    data = yaml.safe_load(QUICKSTART.read_text(encoding="utf-8"))
    by_id = {s["id"]: s for s in data["services"]}
    by_id["chat"]["tp_options"] = [1, 2]
    by_id["code"]["allowed_pools"] = ["h100-a", "h20-a", "l4-b"]
    by_id["summarise"]["allowed_roles"] = ["decode+offload", "prefill"]
    path = tmp_path / "restricted.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def _capacity_json(path: Path) -> list[dict[str, Any]]:
    result = CliRunner().invoke(app, ["capacity", str(path), "--format", "json"])
    assert result.exit_code == 0, result.output
    rows: list[dict[str, Any]] = json.loads(result.stdout)
    return rows


@pytest.mark.parametrize("restricted", [False, True], ids=["quickstart", "tp-options-allowed-pools-roles"])
def test_capacity_lists_exactly_the_planners_configurations(tmp_path: Path, restricted: bool) -> None:
    """``medley capacity`` lists every configuration the planner enumerates (before the SLO filter), and the
    rows it marks ``candidate`` are exactly the planner's candidates (the MILP's columns before pruning),
    with the same capacities."""
    path = _restricted(tmp_path) if restricted else QUICKSTART
    fleet = load_fleet(str(path))
    inputs = build_inputs(fleet, base_dir=path.parent)
    planner = {(c.service.id, c.pool.id, c.configuration.label(), c.memory_pool.id if c.memory_pool else None): c
               for c in inputs.candidates.values()}
    rows = _capacity_json(path)
    listed: dict[tuple[str, str, str, str | None], list[dict[str, Any]]] = {}
    for r in rows:
        listed.setdefault((r["service"], r["pool"], r["configuration"], r["memory_pool"]), []).append(r)
    candidates = {k for k, rs in listed.items() if rs[0]["candidate"]}
    assert candidates == set(planner)
    assert len(listed) - len(candidates) == inputs.stats.dropped[DROP_NO_BUCKET]
    for key, cand in planner.items():
        assert [r["rps"] for r in listed[key]] == [round(c.rps, 3) for c in cand.capacities]
    for rs in listed.values():  # a non-candidate serves no bucket, a candidate at least one
        assert rs[0]["candidate"] == any(r["rps"] > 0 for r in rs)
    if restricted:
        assert {r["configuration"].split()[1] for r in rows if r["service"] == "chat"} == {"tp1", "tp2"}
        assert {r["pool"] for r in rows if r["service"] == "code"} == {"h100-a", "l4-b"}
        assert {r["memory_pool"] for r in rows if r["service"] == "code"} == {None, "h20-a"}
        assert {r["configuration"].split()[-2 if r["memory_pool"] else -1] for r in rows
                if r["service"] == "summarise"} == {"decode+offload", "prefill"}


def test_configurations_honour_the_service_and_count_what_they_drop() -> None:
    fleet = load_fleet(str(QUICKSTART))
    code = next(s for s in fleet.services if s.id == "code")
    code = code.model_copy(update={"tp_options": [2, 4, 16], "allowed_roles": [Role.DECODE, Role.DECODE_OFFLOAD],
                                   "allowed_pools": ["h100-a", "h20-a", "a100-b", "l4-a"]})
    fleet = fleet.model_copy(update={"services": [code]})
    catalog, perf, stats = fleet_catalog(fleet), default_perf_model(), CandidateStats()
    options = list(fleet_configurations(fleet, catalog, perf, stats))
    assert options
    zones = {p.id: p.zone for p in fleet.pools}
    for o in options:
        cfg = o.configuration
        assert cfg.tp in (2, 4) and cfg.role in (Role.DECODE, Role.DECODE_OFFLOAD)
        assert o.pool.id in ("h100-a", "a100-b", "l4-a")
        check_shape(o.shape)
        assert perf.memory(o.shape).fits
        if cfg.role is Role.DECODE_OFFLOAD:
            assert o.memory_pool is not None and o.memory_pool.id == "h20-a"
            assert zones[o.memory_pool.id] == zones[o.pool.id] and cfg.pp == 1
        else:
            assert o.memory_pool is None
    assert not any(o.pool.id == "a100-b" and o.configuration.role is Role.DECODE_OFFLOAD for o in options)
    assert stats.dropped[DROP_NODE] == 3 * len(fleet.planner.pp_options)  # TP16 on three 8-device pools
    assert stats.dropped[DROP_MEMORY] >= 1  # codellama-34b's weights at TP2 PP1 exceed an L4
    assert not any(o.pool.id == "l4-a" and o.configuration.devices == 2 for o in options)
    assert len({o.key for o in options}) == len(options)
