"""What capacity really costs: the quickstart fleet billed on demand, with the best savings-plan commitment, with
spot, and with both, over a year of hourly demand; and what a spot reclaim does to the SLO in replay.

Prices are the shipped AWS us-east-1 book (on demand, 1-year reserved and committed rates, spot discounts and
interruption frequencies, each tier with its source, printed first). Quickstart's AWS-priced pools (a100-b,
l4-a, l4-b, a10g-b) draw on the commitment; h100-a and h20-a keep their own (Google Cloud) prices. The spot
variants add a spot pool beside each AWS L4 and A10G pool (the book states their interruption frequency), as
many nodes as its on-demand sibling; every service survives losing any one spot pool.

Demand: the diurnal/weekly year of ``planner.whatif.commitment`` (or ``--forecast FILE.csv``) in ``--levels``
load levels; each variant's figure is its expected hourly bill (``commitment_whatif``: plans at each level, the
commitment that minimises the bill, each level planned again with it). The replay: the spot plan at the fleet's
own (peak) rates, then the same plan right after each spot pool it uses is reclaimed, load re-routed over the
replicas left (``planner.tolerance.verify_spot_reclaims``); beside it, the plan made without the spot rows.

Ends with one JSON line: on_demand_usd_per_hour, best_commitment_usd_per_hour, spot_usd_per_hour,
all_tiers_usd_per_hour, attainment_after_spot_reclaim (the least attainment of any service after any one spot
pool is reclaimed), and the figures behind them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from planner.catalog import builtin_catalog, fleet_catalog
from planner.io.fleetfile import load_fleet
from planner.pipeline import assemble_plan, build_inputs, fleet_planner, plan_fleet
from planner.schema import FleetSpec, Plan, Pool, PoolTiers, SpotTerms
from planner.solve import SolveOptions, solve
from planner.tiers.reclaim import after_reclaim, spot_pools_used
from planner.tolerance import trace_source, verify_plan, verify_spot_reclaims
from planner.whatif.commitment import HOURS_PER_MONTH, CommitmentReport, commitment_whatif, diurnal_weekly, parse_hourly

ROOT = Path(__file__).resolve().parents[1]
BOOK = "aws-us-east-1-2026q1"
SPOT_SIBLINGS = ("l4-a", "l4-b", "a10g-b")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def with_spot(fleet: FleetSpec) -> FleetSpec:
    """The fleet with a spot pool beside each AWS L4 and A10G pool (same device, zone, size and power domain)."""
    spot = [Pool.model_validate({**p.model_dump(), "id": f"{p.id}-spot", "tiers": PoolTiers(spot=SpotTerms())})
            for p in fleet.pools if p.id in SPOT_SIBLINGS]
    # the spot rows make the MILP harder (a second routing per loss): more time, so its plans are near optimal
    planner = fleet.planner.model_copy(update={"relative_gap": 0.002, "time_limit_s": 90.0})
    return fleet.model_copy(update={"pools": [*fleet.pools, *spot], "planner": planner, "name": f"{fleet.name}-spot"})


def print_sources() -> None:
    book = builtin_catalog().price_books[BOOK]
    print(f"Price book {book.id}: on demand per device-hour {book.usd_per_device_hour}")
    print(f"  on demand: {book.source} ({book.as_of})")
    for t in book.tiers:
        figures = t.discount or t.usd_per_device_hour
        extra = f"; interruption per month {t.interruption_probability}" if t.interruption_probability else ""
        print(f"  {t.tier} ({t.term}): discount {figures}{extra}\n    source: {' '.join(t.source.split())} "
              f"({t.as_of})")


def bill(report: CommitmentReport) -> float:
    """The expected bill with the report's best commitment (each level planned for it where it was)."""
    return report.best_replanned_usd_per_hour or report.best_usd_per_hour


def unprotected_plan(fleet: FleetSpec) -> Plan:
    """The spot fleet planned without the spot rows (no spare capacity for a reclaim): the contrast."""
    inputs = build_inputs(fleet)
    assert inputs.problem.tiers is not None
    bare = replace(inputs.problem, tiers=replace(inputs.problem.tiers, losses=()))
    opts = SolveOptions(relative_gap=fleet.planner.relative_gap, time_limit_s=fleet.planner.time_limit_s)
    return assemble_plan(fleet, replace(inputs, problem=bare), solve(bare, opts), opts, fleet_catalog(fleet), [], [],
                         None, "")


def reclaim_attainment(plan: Plan, fleet: FleetSpec, duration_s: float, protected: bool) -> dict[str, dict[str, float]]:
    """Per reclaimed spot pool, each service's SLO attainment in replay right after the reclaim."""
    source = trace_source("poisson", duration_s=duration_s)
    if protected:
        reports = verify_spot_reclaims(plan, fleet, source)
    else:
        inputs = build_inputs(fleet)
        with np.errstate(invalid="ignore"):  # a service that loses a bucket has no latencies to take percentiles of
            reports = {pool: verify_plan(after_reclaim(plan, inputs, [pool])[0], fleet, source)
                       for pool in spot_pools_used(plan, fleet)}
    return {pool: {s.service: round(s.attainment, 4) for s in r.services} for pool, r in reports.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fleet", default=str(ROOT / "examples" / "quickstart.yaml"))
    ap.add_argument("--forecast", help="hourly demand CSV (default: the diurnal/weekly generator)")
    ap.add_argument("--levels", type=int, default=4, help="load levels the year is planned at")
    ap.add_argument("--replay-s", type=float, default=180.0, help="seconds of Poisson traffic replayed")
    args = ap.parse_args()

    print_sources()
    fleet = load_fleet(args.fleet)
    spot_fleet = with_spot(fleet)
    services = [s.id for s in fleet.services]
    factors = (parse_hourly(Path(args.forecast).read_text(encoding="utf-8"), fleet) if args.forecast
               else diurnal_weekly(services))
    source = args.forecast or "diurnal/weekly generator"
    planner = fleet_planner(baselines=False, marginals=False)

    started = time.monotonic()
    log(f"on demand and commitment: {args.levels} load levels")
    od = commitment_whatif(fleet, factors, planner, levels=args.levels, forecast=source)
    log(f"  {time.monotonic() - started:.0f} s; spot and spot + commitment")
    sp = commitment_whatif(spot_fleet, factors, planner, levels=args.levels, forecast=source)
    log(f"  {time.monotonic() - started:.0f} s; the spot plan at peak and its replays")
    peak = plan_fleet(spot_fleet, baselines=False, marginals=False)
    normal = verify_plan(peak, spot_fleet, trace_source("poisson", duration_s=args.replay_s))
    protected = reclaim_attainment(peak, spot_fleet, args.replay_s, protected=True)
    bare = unprotected_plan(spot_fleet)  # the same fleet without the spot rows: no spare capacity
    unprotected = reclaim_attainment(bare, spot_fleet, args.replay_s, protected=False)
    elapsed = time.monotonic() - started

    rows = [("on demand only", od.on_demand_usd_per_hour, "no commitment, no spot"),
            ("best commitment", bill(od), f"commit ${od.best_commitment_usd_per_hour:.2f}/h"),
            ("spot", sp.on_demand_usd_per_hour, "spot pools beside l4-a, l4-b, a10g-b; N-1 over them"),
            ("spot + commitment", bill(sp), f"commit ${sp.best_commitment_usd_per_hour:.2f}/h")]
    base = od.on_demand_usd_per_hour
    print(f"\nExpected bill over {od.hours} hours ({source}, {args.levels} load levels) for {fleet.name}:")
    print(f"{'variant':<20} {'$/h':>9} {'$/month':>10} {'vs on demand':>13}  notes")
    for name, usd, note in rows:
        print(f"{name:<20} {usd:>9.2f} {usd * HOURS_PER_MONTH:>10,.0f} {usd / base - 1:>+12.1%}  {note}")
    print(f"\nAt peak (the fleet's own rates): on demand ${od.levels[-1].marginal_usd_per_hour:.2f}/h, with spot "
          f"${peak.cost_usd_per_hour:.2f}/h (solver {peak.solver.status}, gap {peak.solver.relative_gap or 0:.2%}, "
          f"{peak.solver.solve_seconds:.0f} s; devices {peak.billing.devices_by_tier if peak.billing else {}}), "
          f"without the spot headroom ${bare.cost_usd_per_hour:.2f}/h; spot risk "
          + ", ".join(f"{s} {r:.2g}" for s, r in (peak.billing.spot_risk if peak.billing else {}).items())
          + " per recovery window")
    print(f"Replay at peak ({args.replay_s:g} s Poisson), no reclaim: "
          + ", ".join(f"{s.service} {s.attainment:.1%}" for s in normal.services))
    worst = min((a for per in protected.values() for a in per.values()), default=1.0)
    worst_bare = min((a for per in unprotected.values() for a in per.values()), default=1.0)
    for pool, per in protected.items():
        print(f"  {pool} reclaimed, with spot headroom: " + ", ".join(f"{s} {a:.1%}" for s, a in per.items()))
    for pool, per in unprotected.items():
        print(f"  {pool} reclaimed, plan without it (${bare.cost_usd_per_hour:.2f}/h): "
              + ", ".join(f"{s} {a:.1%}" for s, a in per.items()))
    print(f"SLO attainment after any one spot pool is reclaimed: worst {worst:.1%} with headroom, {worst_bare:.1%} "
          f"without; SLO percentiles " + ", ".join(f"{s.id} {s.slo.percentile:g}%" for s in fleet.services))
    print(f"({elapsed:.0f} s)")
    print(json.dumps({
        "fleet": fleet.name, "forecast": source, "levels": args.levels,
        "on_demand_usd_per_hour": round(od.on_demand_usd_per_hour, 2),
        "best_commitment_usd_per_hour": round(bill(od), 2),
        "commitment_level_usd_per_hour": od.best_commitment_usd_per_hour,
        "spot_usd_per_hour": round(sp.on_demand_usd_per_hour, 2),
        "all_tiers_usd_per_hour": round(bill(sp), 2),
        "all_tiers_commitment_level_usd_per_hour": sp.best_commitment_usd_per_hour,
        "peak_on_demand_usd_per_hour": od.levels[-1].marginal_usd_per_hour,
        "peak_spot_usd_per_hour": peak.cost_usd_per_hour,
        "peak_spot_without_headroom_usd_per_hour": bare.cost_usd_per_hour,
        "attainment_after_spot_reclaim": worst,
        "attainment_after_spot_reclaim_without_headroom": worst_bare,
        "attainment_without_reclaim": round(min(s.attainment for s in normal.services), 4),
        "seconds": round(elapsed, 1),
    }))


if __name__ == "__main__":
    main()
