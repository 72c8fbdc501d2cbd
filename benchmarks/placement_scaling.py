"""Placement at fleet scale: 2,000, 5,000 and 10,000 nodes of 8 devices, 50 services, within a time limit.

For each size:
1. place a plan that fills about 70% of the devices from scratch;
2. re-place from that placement after a 10% traffic change (replica counts of a random half of the groups up
   or down), and again after the same change with every 37th node of each pool lost (``--fail-every``), which
   leaves pipeline replicas with a stage on a lost node;
3. compare each re-placement's moves with the fewest possible, where that is proven: by counting (units a
   group needs beyond those it still runs must start; a placement that meets this bound is optimal), or else
   by solving each component whole, moves only, to CP-SAT's proven optimum (``--reference-limit-s`` at most).
   Where neither proves it the row says "unproven" and shows the counted bound; it never compares a
   placement with itself.

Each placement call gets ``--time-limit-s`` for the whole call (model building included), through one
``Deadline``; "wall/limit" is the slower of the row's two calls over that limit. Parts are the problems the
components were cut into (rack blocks in large pools): "counted/CP-SAT" says how many a counted bound proved
optimal without a solve and how many CP-SAT solved; "fallback parts" how many kept their first-fit start
because CP-SAT had no time (first placement, re-placement). "fewest moves" says how it is proven: "counted"
(the placement meets the counted bound) or "CP-SAT" (the moves-only optimum of whole components).

Prints a table and ends with one JSON line: {"limit_s", "rows": [{"nodes", "case", "first_s", "replace_s",
"wall_over_limit", "moves", "moves_bound", "fewest_moves" (null when unproven), "fewest_moves_proven",
"moves_excess_share" (null when unproven), "nodes_used", "parts", "counted_parts", "cpsat_parts",
"fallback_parts", ...}]}.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from planner.catalog import Catalog, builtin_catalog  # noqa: E402
from planner.clock import Deadline  # noqa: E402
from planner.place import PlacementResult, place, placed_plan  # noqa: E402
from planner.schema import (  # noqa: E402
    SLO,
    Configuration,
    FleetSpec,
    LengthBucket,
    Plan,
    Pool,
    ReplicaGroup,
    Role,
    Service,
    SolverReport,
    Traffic,
)

POOLS = [("h100", "h100-sxm"), ("a100", "a100-80gb"), ("l40s", "l40s"), ("l4", "l4")]


def build(nodes: int, services: int, fill: float, seed: int) -> tuple[FleetSpec, Plan]:
    """A fleet of ``nodes`` 8-device nodes in four pools and a plan using ``fill`` of its devices."""
    rng = random.Random(seed)
    per_pool = nodes // len(POOLS)
    pools = [Pool(id=pid, device=dev, devices_per_node=8, max_nodes=per_pool, price_usd_per_device_hour=2.0,
                  zone=f"zone-{i % 2}") for i, (pid, dev) in enumerate(POOLS)]
    traffic = Traffic(rate_rps=1.0, buckets=[LengthBucket(input_tokens=512, output_tokens=128, share=1.0)])
    svcs = [Service(id=f"svc-{i:02d}", model="llama-3-8b", traffic=traffic, slo=SLO(ttft_ms=500, tpot_ms=80))
            for i in range(services)]
    groups: list[ReplicaGroup] = []
    budget = {pid: int(per_pool * 8 * fill) for pid, _ in POOLS}
    for i, s in enumerate(svcs):
        for k in range(2):
            pid, dev = POOLS[(i + k) % len(POOLS)]
            tp = rng.choice([1, 2, 4, 8])
            pp = 2 if rng.random() < 0.1 else 1
            role = Role.UNIFIED if k == 0 else rng.choice([Role.UNIFIED, Role.DECODE])
            groups.append(ReplicaGroup(service=s.id, pool=pid, configuration=Configuration(
                device=dev, tp=tp, pp=pp, role=role), replicas=0, cost_usd_per_hour=0.0, expected_watts=0.0,
                utilisation=0.7))
    # share each pool's device budget among its groups
    by_pool: dict[str, list[int]] = {}
    for gi, g in enumerate(groups):
        by_pool.setdefault(g.pool, []).append(gi)
    for pid, gis in by_pool.items():
        weights = [rng.uniform(0.5, 1.5) for _ in gis]
        total = sum(weights)
        for gi, w in zip(gis, weights, strict=True):
            g = groups[gi]
            reps = max(1, int(budget[pid] * w / total / g.configuration.devices))
            groups[gi] = g.model_copy(update={"replicas": reps})
    fleet = FleetSpec(pools=pools, services=svcs)
    plan = Plan(fleet="scale", replica_groups=groups, cost_usd_per_hour=0.0,
                solver=SolverReport(backend="synthetic", status="optimal"))
    return fleet, plan


def change(plan: Plan, share: float, seed: int) -> Plan:
    """Move about ``share`` of the devices: half of the groups grow or shrink."""
    rng = random.Random(seed + 1)
    groups = []
    for g in plan.replica_groups:
        reps = g.replicas
        if rng.random() < 0.5:
            delta = max(1, round(reps * 2 * share))
            reps = max(1, reps + (delta if rng.random() < 0.45 else -delta))
        groups.append(g.model_copy(update={"replicas": reps, "nodes": []}))
    return plan.model_copy(update={"replica_groups": groups})


def cpu_s() -> float:
    """CPU seconds of this process so far (CP-SAT's threads included)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def timed(call: Callable[..., PlacementResult], *args: object,
          **kwargs: object) -> tuple[PlacementResult, float, float]:
    """The result, wall seconds and CPU seconds of one placement call."""
    wall, cpu = time.perf_counter(), cpu_s()
    res = call(*args, **kwargs)
    return res, time.perf_counter() - wall, cpu_s() - cpu


def fewest_moves(again: PlacementResult, case: Case, limit_s: float) -> tuple[int | None, str]:
    """The fewest moves there are, and how that is known; None where it is not proven."""
    if again.moves_proven:
        return again.moves, "counted bound met"
    exact = place(case.new, case.fleet, case.catalog, current=case.current, failed=case.failed, objective="moves",
                  part_size=sys.maxsize, deadline=Deadline.after(limit_s))
    if exact.status == "placed" and exact.optimal:
        return exact.moves, "CP-SAT optimum, moves only, whole components"
    return None, "unproven"


@dataclass(frozen=True)
class Case:
    """A re-placement: the new plan on the fleet from the current placement, with nodes lost."""

    name: str
    fleet: FleetSpec
    catalog: Catalog
    new: Plan
    current: Plan
    failed: tuple[str, ...]


def replace_row(case: Case, first: PlacementResult, first_s: float, first_cpu: float,
                args: argparse.Namespace) -> dict[str, object]:
    """Re-place one case and compare its moves with the proven fewest."""
    again, replace_s, replace_cpu = timed(place, case.new, case.fleet, case.catalog, current=case.current,
                                          failed=case.failed, time_limit_s=args.time_limit_s)
    fewest, how = fewest_moves(again, case, args.reference_limit_s)
    plan, fleet = case.current, case.fleet
    devices = sum(p.max_nodes * p.devices_per_node for p in fleet.pools)
    used = sum(g.replicas * g.configuration.devices for g in plan.replica_groups)
    solved = again.parts - again.counted_parts - len(again.fallbacks)
    return {
        "nodes": sum(p.max_nodes for p in fleet.pools), "case": case.name, "failed_nodes": len(case.failed),
        "devices": devices, "services": len(fleet.services), "groups": len(plan.replica_groups),
        "replicas": sum(g.replicas for g in plan.replica_groups), "device_fill": round(used / devices, 3),
        "first_status": first.status, "first_s": round(first_s, 2), "first_cpu_s": round(first_cpu, 2),
        "replace_status": again.status, "replace_s": round(replace_s, 2), "replace_cpu_s": round(replace_cpu, 2),
        "wall_over_limit": round(max(first_s, replace_s) / args.time_limit_s, 3),
        "replicas_changed": sum(abs(a.replicas - b.replicas)
                                for a, b in zip(plan.replica_groups, case.new.replica_groups, strict=True)),
        "moves": again.moves, "moves_bound": again.moves_bound, "fewest_moves": fewest,
        "fewest_moves_proven": fewest is not None, "fewest_moves_how": how,
        "moves_excess_share": None if fewest is None else round((again.moves - fewest) / max(1, fewest), 4),
        "nodes_used": sum(again.nodes_used_by_pool.values()),
        "parts": [first.parts, again.parts], "counted_parts": [first.counted_parts, again.counted_parts],
        "cpsat_parts": [first.parts - first.counted_parts - len(first.fallbacks), solved],
        "fallback_parts": [len(first.fallbacks), len(again.fallbacks)],
    }


def run(nodes: int, args: argparse.Namespace, catalog: Catalog) -> list[dict[str, object]]:
    """One size: the first placement, then each re-placement case from it."""
    fleet, plan = build(nodes, args.services, args.fill, args.seed)
    first, first_s, first_cpu = timed(place, plan, fleet, catalog, time_limit_s=args.time_limit_s)
    current = placed_plan(plan, first)
    new = change(plan, 0.10, args.seed)
    cases = [Case("traffic", fleet, catalog, new, current, ())]
    if args.fail_every:
        lost = tuple(f"{p.id}-{i:04d}" for p in fleet.pools for i in range(3, p.max_nodes, args.fail_every))
        cases.append(Case(f"traffic, 1/{args.fail_every} nodes lost", fleet, catalog, new, current, lost))
    return [replace_row(case, first, first_s, first_cpu, args) for case in cases]


def table(rows: list[dict[str, object]], limit_s: float) -> str:
    """The rows as a plain-text table."""
    head = ("nodes", "re-placement", "first s", "re-place s", "wall/limit", "moves", "fewest moves", "nodes used",
            "parts counted/CP-SAT", "fallback parts")
    widths = [max(len(h), 7) for h in head]
    widths[1], widths[6] = 24, 20
    lines = [f"time limit {limit_s:g} s per placement call (first placement, then each re-placement)",
             " | ".join(h.rjust(w) for h, w in zip(head, widths, strict=True))]
    for r in rows:
        proof = "counted" if r["fewest_moves_how"] == "counted bound met" else "CP-SAT"
        fewest = f"{r['fewest_moves']} ({proof})" if r["fewest_moves_proven"] else f"unproven (≥ {r['moves_bound']})"
        parts, counted, cpsat, falls = r["parts"], r["counted_parts"], r["cpsat_parts"], r["fallback_parts"]
        assert isinstance(parts, list) and isinstance(counted, list) and isinstance(cpsat, list)
        assert isinstance(falls, list)
        cells = (r["nodes"], r["case"], r["first_s"], r["replace_s"], r["wall_over_limit"], r["moves"], fewest,
                 r["nodes_used"], f"{counted[0]}/{cpsat[0]}, {counted[1]}/{cpsat[1]}",
                 f"{falls[0]}/{parts[0]}, {falls[1]}/{parts[1]}")
        lines.append(" | ".join(str(c).rjust(w) for c, w in zip(cells, widths, strict=True)))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", default="2000,5000,10000", help="comma-separated fleet sizes")
    ap.add_argument("--services", type=int, default=50)
    ap.add_argument("--fill", type=float, default=0.7)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--time-limit-s", type=float, default=8.0, help="per placement call, model building included")
    ap.add_argument("--fail-every", type=int, default=37,
                    help="also re-place with every N-th node of each pool lost (0: traffic change only)")
    ap.add_argument("--reference-limit-s", type=float, default=600.0,
                    help="most time for the exact moves-only reference, where the counted bound is not met")
    args = ap.parse_args()
    catalog = builtin_catalog()
    rows = [row for n in args.nodes.split(",") for row in run(int(n), args, catalog)]
    print(table(rows, args.time_limit_s))
    print(json.dumps({"limit_s": args.time_limit_s, "rows": rows}))


if __name__ == "__main__":
    main()
