"""Placement at fleet scale: 2,000 nodes (16,000 devices), 50 services.

1. Place a plan that fills about 70% of the devices from scratch (time to a feasible placement).
2. Change traffic by 10% (replica counts of a random half of the groups up or down) and re-place from the
   first placement; compare its moves with the fewest possible, found by the same model with moves as the
   only objective.

Prints one JSON line: {"nodes", "devices", "services", "groups", "first_s", "replace_s", "moves",
"fewest_moves", "moves_excess_share", ...}.
"""

from __future__ import annotations

import argparse
import json
import random
import time

from planner.catalog import builtin_catalog
from planner.place import place, placed_plan
from planner.schema import (
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--nodes", type=int, default=2000)
    ap.add_argument("--services", type=int, default=50)
    ap.add_argument("--fill", type=float, default=0.7)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--time-limit-s", type=float, default=8.0)  # whole call, model building included
    args = ap.parse_args()
    catalog = builtin_catalog()
    fleet, plan = build(args.nodes, args.services, args.fill, args.seed)
    t0 = time.perf_counter()
    first = place(plan, fleet, catalog, time_limit_s=args.time_limit_s)
    first_s = time.perf_counter() - t0
    current = placed_plan(plan, first)
    new = change(plan, 0.10, args.seed)
    t0 = time.perf_counter()
    again = place(new, fleet, catalog, current=current, time_limit_s=args.time_limit_s)
    replace_s = time.perf_counter() - t0
    fewest = place(new, fleet, catalog, current=current, objective="moves", time_limit_s=args.time_limit_s)
    changed = sum(abs(a.replicas - b.replicas) for a, b in zip(plan.replica_groups, new.replica_groups,
                                                               strict=True))
    devices = sum(p.max_nodes * p.devices_per_node for p in fleet.pools)
    used = sum(g.replicas * g.configuration.devices for g in plan.replica_groups)
    print(json.dumps({
        "nodes": sum(p.max_nodes for p in fleet.pools), "devices": devices, "services": len(fleet.services),
        "groups": len(plan.replica_groups), "replicas": sum(g.replicas for g in plan.replica_groups),
        "device_fill": round(used / devices, 3), "first_status": first.status, "first_s": round(first_s, 2),
        "replace_status": again.status, "replace_s": round(replace_s, 2), "replicas_changed": changed,
        "moves": again.moves, "fewest_moves": fewest.moves,
        "moves_excess_share": round((again.moves - fewest.moves) / max(1, fewest.moves), 4),
        "nodes_used": sum(again.nodes_used_by_pool.values()),
        "nodes_used_moves_only": sum(fewest.nodes_used_by_pool.values()),
    }))


if __name__ == "__main__":
    main()
