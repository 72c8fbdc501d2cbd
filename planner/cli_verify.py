"""``medley verify`` and ``medley plan --place``: the command-line edges of placement and replay."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal

import typer

from planner.capacity import MAX_BATCH
from planner.catalog import Catalog, fleet_catalog
from planner.fleetfile import load_fleet
from planner.inventory import fleet_inventory
from planner.perf import default_perf_model
from planner.place import PlacementResult, Tolerate, node_count_feedback, place, placed_plan
from planner.schema import Finding, FleetSpec, Plan
from planner.verify import PerfStepTimes, ReplayOptions, ReplayReport, TraceSource, build_workload, replay

# The engine the capacity model assumes: a step is all prompts or all decodes (prompts first), and up to
# capacity.MAX_BATCH sequences run at once.
PLANNER_ENGINE = ReplayOptions(chunked_prefill=False, max_batched_tokens=8192, max_batch=MAX_BATCH)


class PlacementFailed(Exception):
    """The plan's replicas cannot be put on the fleet's nodes; the message says why, ``result`` holds more."""

    def __init__(self, message: str, result: PlacementResult) -> None:
        super().__init__(message)
        self.result = result
        self.node_counts = node_count_feedback(result)  # max_nodes per pool for a re-solve


def place_plan(
    plan: Plan,
    fleet: FleetSpec,
    catalog: Catalog,
    tolerate: Tolerate = "none",
    failed: Iterable[str] = (),
    current: Plan | None = None,
) -> Plan:
    """The plan with nodes filled in; placement notes become findings. Raises PlacementFailed."""
    res = place(plan, fleet, catalog, current=current, tolerate=tolerate, failed=failed)
    if res.status != "placed":
        detail = "; ".join(res.explanations) or res.status
        raise PlacementFailed(f"placement {res.status}: {detail}", res)
    notes = [Finding(kind="note", constraint="placement", message=m) for m in res.explanations]
    notes.append(Finding(kind="note", constraint="placement",
                         message=f"{res.moves} replica unit(s) started, {res.kept} kept; nodes in use "
                                 + ", ".join(f"{p} {n}" for p, n in sorted(res.nodes_used_by_pool.items())),
                         value=float(res.moves)))
    placed = placed_plan(plan, res)
    return placed.model_copy(update={"findings": [*placed.findings, *notes]})


def plan_and_place(
    fleet: FleetSpec,
    catalog: Catalog,
    *,
    tolerate: Tolerate = "none",
    failed: Iterable[str] = (),
    current: Plan | None = None,
    planner: Callable[[FleetSpec, Plan | None], Plan] | None = None,
    rounds: int = 4,
) -> Plan:
    """Plan on the nodes that are usable, place, and re-plan with the node counts placement can realise."""
    if planner is None:
        from planner.plan import plan_fleet

        def planner(f: FleetSpec, cur: Plan | None) -> Plan:
            return plan_fleet(f, current=cur, catalog=catalog)

    failed = list(failed)
    usable = Counter(n.pool for n in fleet_inventory(fleet, failed=failed).nodes if n.usable)
    limits = {p.id: min(p.max_nodes, usable[p.id]) for p in fleet.pools}
    notes: list[Finding] = []
    for _ in range(rounds):
        pools = [p.model_copy(update={"max_nodes": limits[p.id]}) for p in fleet.pools]
        plan = planner(fleet.model_copy(update={"pools": pools}), current)
        try:
            placed = place_plan(plan, fleet, catalog, tolerate=tolerate, failed=failed, current=current)
        except PlacementFailed as err:
            if not err.node_counts or all(limits[p] <= n for p, n in err.node_counts.items()):
                raise
            for pool, n in err.node_counts.items():
                limits[pool] = min(limits[pool], n)
                notes.append(Finding(kind="note", constraint=f"placement[{pool}]", value=float(n),
                                     message=f"pool {pool}: replicas did not pack on its nodes; re-planned "
                                             f"with {n} node(s)"))
            continue
        return placed.model_copy(update={"findings": [*placed.findings, *notes]})
    raise PlacementFailed(f"placement still short after {rounds} re-plans", place(
        plan, fleet, catalog, current=current, tolerate=tolerate, failed=failed))


def verify_plan(plan: Plan, fleet: FleetSpec, source: TraceSource, base_dir: Path | None = None) -> ReplayReport:
    """Replay the source's traffic against the plan with the shipped performance model."""
    catalog = fleet_catalog(fleet)
    times = PerfStepTimes(default_perf_model(fleet.planner.perf_engine), fleet, catalog)
    return replay(plan, fleet, catalog, times, build_workload(fleet, source, base_dir), PLANNER_ENGINE)


def _table(report: ReplayReport) -> str:
    lines = [f"{'service':<20} {'reqs':>6} {'TTFT p50/p90/p99 ms':>24} {'TPOT p50/p90/p99 ms':>22} "
             f"{'attain':>7} {'SLO':>5}"]
    for s in report.services:
        ttft = f"{s.ttft_ms.p50:.0f}/{s.ttft_ms.p90:.0f}/{s.ttft_ms.p99:.0f}"
        tpot = f"{s.tpot_ms.p50:.1f}/{s.tpot_ms.p90:.1f}/{s.tpot_ms.p99:.1f}"
        lines.append(f"{s.service:<20} {s.requests:>6} {ttft:>24} {tpot:>22} {s.attainment:>7.3f} "
                     f"{'ok' if s.meets_slo else 'MISS':>5}")
    for g in report.groups:
        lines.append(f"  {g.service} {g.pool} {g.configuration} x{g.replicas}: utilisation {g.utilisation:.2f}")
    lines.append(f"cost ${report.cost_usd_per_hour:.2f}/h, {report.tokens_per_usd:,.0f} tokens/$, "
                 f"power mean {report.mean_power_watts / 1e3:.1f} kW peak {report.peak_power_watts / 1e3:.1f} kW")
    lines.append("verified" if report.verified else "NOT verified: a service misses its SLO")
    return "\n".join(lines)


def verify_command(
    plan_path: Path,
    fleet_path: Path,
    trace: str,
    rate_scale: float = 1.0,
    format: Literal["table", "json"] = "table",  # noqa: A002 - the CLI option's name
    duration_s: float = 600.0,
    seed: int = 0,
) -> int:
    """``medley verify PLAN.json --trace FILE|poisson|bursty``: print the replay; exit 0 only if verified."""
    plan = Plan.model_validate_json(Path(plan_path).read_text(encoding="utf-8"))
    fleet = load_fleet(fleet_path)
    if trace in ("poisson", "bursty"):
        source = TraceSource(kind="poisson" if trace == "poisson" else "bursty", rate_scale=rate_scale,
                             duration_s=duration_s, seed=seed)
    else:
        path = Path(trace)
        if not path.is_file():
            raise typer.BadParameter(f"{trace}: not a file, and not 'poisson' or 'bursty'", param_hint="--trace")
        source = TraceSource(kind="file", path=path, rate_scale=rate_scale, seed=seed)
    report = verify_plan(plan, fleet, source, base_dir=Path(fleet_path).parent)
    if format == "json":
        typer.echo(json.dumps(report.model_dump(mode="json")))
    else:
        typer.echo(_table(report))
    return 0 if report.verified else 1
