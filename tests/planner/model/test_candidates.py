"""Candidate generation: tables computed together equal tables computed one by one; the candidates equal a
configuration-by-configuration computation; pricing cut short at its deadline keeps unified replicas for every
bucket and counts what it left out."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
from pytest import MonkeyPatch

from planner.catalog import fleet_catalog
from planner.clock import Deadline, FakeClock
from planner.io.fleetfile import load_fleet
from planner.io.profiles import default_perf_model, fleet_perf_model
from planner.model.candidates import (
    DROP_NO_BUCKET,
    DROP_UNPRICED,
    CandidatesLate,
    fleet_limits,
    generate_candidates,
)
from planner.model.capacity import ServingLimits, capacity_table, replica_power_watts, shapes_capacity_tables
from planner.model.configurations import CandidateStats, fleet_configurations
from planner.model.handoff import handoff_nic_gbitps
from planner.pipeline import service_buckets
from planner.schema import SLO, FleetSpec, Role
from planner.solve import Column

QUICKSTART = Path(__file__).resolve().parents[3] / "examples" / "quickstart.yaml"


def test_tables_computed_together_equal_tables_one_by_one() -> None:
    """Every role, several shapes, limits and SLOs (two percentiles) in one call: each table as capacity_table
    gives it."""
    fleet = load_fleet(QUICKSTART)
    perf = default_perf_model()
    buckets = service_buckets(fleet)
    options = list(fleet_configurations(fleet, fleet_catalog(fleet), perf, CandidateStats()))
    slos = [SLO(ttft_ms=800, tpot_ms=60), SLO(ttft_ms=3000, tpot_ms=150), SLO(ttft_ms=2000, tpot_ms=90, percentile=90)]
    for role in (Role.UNIFIED, Role.PREFILL, Role.DECODE, Role.DECODE_OFFLOAD):
        mine = [o for o in options if o.configuration.role is role and o.service.id == "chat"][:12]
        assert mine, role
        shapes = list({id(o.shape): o.shape for o in mine}.values())
        limits = [ServingLimits(), ServingLimits(max_num_seqs=32, prefill_slowdown=1.2, decode_slowdown=1.3,
                                                 cross_zone_handoff=True), ServingLimits(handoff_in_ttft=False)]
        wanted = [(s, lim, slos) for s in shapes for lim in limits]
        together = shapes_capacity_tables(perf, role, buckets["chat"], wanted)
        served = 0
        for (shape, lim, _), tables in zip(wanted, together, strict=True):
            for slo, table in zip(slos, tables, strict=True):
                alone = capacity_table(perf, shape, role, buckets["chat"], slo, lim)
                assert table.capacities() == alone
                assert table.rates() == tuple(c.rps for c in alone)
                served += any(c.rps > 0 for c in alone)
        assert served > 0, role  # the comparison covers tables that serve, not only empty ones


def test_pricing_cut_at_its_deadline_keeps_unified_replicas_for_every_bucket() -> None:
    fleet = load_fleet(QUICKSTART)
    cat, perf, buckets = fleet_catalog(fleet), fleet_perf_model(fleet), service_buckets(fleet)
    limits = fleet_limits(fleet, perf.calibration)
    full, full_stats = generate_candidates(fleet, cat, perf, buckets, limits)
    clock = FakeClock()
    # Past its share with no deadline to finish by, pricing stops after the unified replicas.
    cut, stats = generate_candidates(fleet, cat, perf, buckets, limits, None, price_by=Deadline.after(0.0, clock))
    # With a deadline far off and pricing that takes no time on this clock, it goes on to the end.
    whole, whole_stats = generate_candidates(fleet, cat, perf, buckets, limits, Deadline.after(60.0, clock),
                                             price_by=Deadline.after(0.0, clock))
    assert len(whole) == len(full) and DROP_UNPRICED not in whole_stats.dropped
    assert DROP_UNPRICED not in full_stats.dropped
    assert stats.dropped[DROP_UNPRICED] > 0
    roles = {c.configuration.role for c in cut}
    assert Role.UNIFIED in roles and len(cut) < len(full)
    for svc in fleet.services:
        mine = [c for c in cut if c.service.id == svc.id]
        for b in range(len(buckets[svc.id])):
            assert any(c.column.capacity_rps[b] > 0 and c.configuration.role is Role.UNIFIED for c in mine), (svc.id, b)
    # The candidates kept are the full run's own, with the same capacities.
    by_key = {c.column.key: c.column.capacity_rps for c in full}
    assert all(by_key[c.column.key] == c.column.capacity_rps for c in cut)


def _mixed_fleet() -> FleetSpec:
    """The quickstart with services that share a model and some of an SLO (a target, a percentile, all of it),
    one that may hand off across zones and one limited to two roles, planned against the p90 error band."""
    fleet = load_fleet(QUICKSTART)
    chat = next(s for s in fleet.services if s.id == "chat")
    slo = chat.slo
    variants = [
        ("chat-same", {}),
        ("chat-tpot", {"slo": slo.model_copy(update={"tpot_ms": 90})}),
        ("chat-ttft", {"slo": slo.model_copy(update={"ttft_ms": 3000})}),
        ("chat-p99", {"slo": slo.model_copy(update={"percentile": 99})}),
        ("chat-cross", {"kv_handoff": "cross-zone"}),
        ("chat-split", {"allowed_roles": [Role.PREFILL, Role.DECODE]}),
    ]
    services = [*fleet.services, *(chat.model_copy(update={"id": sid, **change}) for sid, change in variants)]
    planner = fleet.planner.model_copy(update={"robustness": "p90"})
    return fleet.model_copy(update={"services": services, "planner": planner})


def test_candidates_equal_a_configuration_by_configuration_computation() -> None:
    """Every candidate, in order, is what the configuration alone gives: its key, capacities (capacity_table
    under its limits), price, watts, label and hand-off rate; the others are dropped as serving no bucket."""
    fleet = _mixed_fleet()
    cat, perf, buckets = fleet_catalog(fleet), fleet_perf_model(fleet), service_buckets(fleet)
    limits = fleet_limits(fleet, perf.calibration)
    got, stats = generate_candidates(fleet, cat, perf, buckets, limits)
    expected_stats = CandidateStats()
    want = []
    for o in fleet_configurations(fleet, cat, perf, expected_stats):
        cfg, mpool = o.configuration, o.memory_pool
        lim = limits(cfg.device, o.service.kv_handoff)
        caps = capacity_table(perf, o.shape, cfg.role, buckets[o.service.id], o.service.slo, lim)
        if not any(c.rps > 0 for c in caps):
            expected_stats.drop(DROP_NO_BUCKET)
            continue
        expected_stats.kept += 1
        idle, active = replica_power_watts(o.shape, cfg.role)
        handoff = handoff_nic_gbitps(o.shape) if cfg.role in (Role.PREFILL, Role.DECODE, Role.DECODE_OFFLOAD) else 0.0
        price = cat.pool_price(o.pool) * cfg.devices + (cat.pool_price(mpool) * cfg.memory_devices if mpool else 0.0)
        column = Column(key=o.key, service=o.service.id, role=cfg.role, pool=o.pool.id, devices=cfg.devices,
                        capacity_rps=tuple(c.rps for c in caps), idle_watts=idle, active_watts=active,
                        memory_pool=mpool.id if mpool else None, memory_devices=cfg.memory_devices,
                        label=cfg.label(), handoff_gbitps=handoff)
        want.append((column, o.service, o.pool, mpool, cfg, price, lim, tuple(caps)))
    assert len(got) == len(want) > 0
    for c, (column, service, pool, mpool, cfg, price, lim, caps) in zip(got, want, strict=True):
        assert c.column == column
        assert (c.service, c.pool, c.memory_pool, c.configuration) == (service, pool, mpool, cfg)
        assert c.usd_per_hour == price and c.limits == lim and c.capacities == caps
    assert stats == expected_stats
    # The variants reach every branch: limits by device and hand-off, SLOs sharing a target, several roles.
    assert len({c.limits for c in got}) > 2 and {c.configuration.role for c in got} == set(Role)
    assert any(c.limits.cross_zone_handoff for c in got)


def test_candidate_generation_leaves_the_cycle_collector_as_it_found_it() -> None:
    fleet = load_fleet(QUICKSTART)
    cat, perf, buckets = fleet_catalog(fleet), fleet_perf_model(fleet), service_buckets(fleet)
    was = gc.isenabled()
    try:
        for enabled in (True, False):
            gc.enable() if enabled else gc.disable()
            generate_candidates(fleet, cat, perf, buckets)
            assert gc.isenabled() is enabled
    finally:
        gc.enable() if was else gc.disable()


def test_pricing_leaves_the_time_to_make_the_candidates_before_the_deadline(monkeypatch: MonkeyPatch) -> None:
    """Making the candidates from the priced tables looks at no deadline, so pricing stops that long before it:
    a deadline closer than that (here: the quickstart's configurations at a second each) raises at once."""
    import planner.model.candidates as candidates

    fleet = load_fleet(QUICKSTART)
    cat, perf, buckets = fleet_catalog(fleet), fleet_perf_model(fleet), service_buckets(fleet)
    limits = fleet_limits(fleet, perf.calibration)
    clock = FakeClock()
    assert generate_candidates(fleet, cat, perf, buckets, limits, Deadline.after(60.0, clock))[0]
    monkeypatch.setattr(candidates, "_BUILD_S_PER_CONFIGURATION", 1.0)
    with pytest.raises(CandidatesLate):
        generate_candidates(fleet, cat, perf, buckets, limits, Deadline.after(60.0, clock))
