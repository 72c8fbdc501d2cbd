"""Mélange's case files read as fleet problems, with Mélange's semantics.

Mélange (one service, one device per replica, no headroom, unlimited devices) assigns whole slices of each
length bucket to one GPU type; we let a bucket's load split continuously across types, a relaxation, so the
cost is never above Mélange's on the same file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypedDict

from planner.schema import Role
from planner.solve import BackendName, Column, Demand, PoolSupply, Problem, SolveOptions, solve

# Mélange writes this throughput for a bucket a GPU cannot serve within the SLO.
CANNOT_SERVE_RPS = 1e-6
SERVICE = "melange"


class MelangeAnswer(TypedDict):
    """The answer in Mélange's own terms."""

    cost_per_hour: float | None
    allocation: dict[str, int]
    solve_seconds: float
    status: str


def problem_from_case(case: Mapping[str, Any]) -> Problem:
    """Mélange case (gpu_info, workload_distribution, total_request_rate) → fleet problem."""
    total = float(case["total_request_rate"])
    dist = case["workload_distribution"]
    rates = tuple(total * float(share) for row in dist for share in row)
    labels = tuple(f"in{i}/out{j}" for i, row in enumerate(dist) for j, _ in enumerate(row))
    pools = []
    columns = []
    for gpu, info in case["gpu_info"].items():
        cost = float(info["cost"])
        if not math.isfinite(cost) or cost < 0:
            raise ValueError(f"gpu_info.{gpu}.cost: must be a non-negative number of $/h (got {info['cost']!r})")
        pools.append(
            PoolSupply(
                id=gpu,
                zone="default",
                power_domain=None,
                devices_per_node=1,
                max_nodes=None,
                usd_per_device_hour=cost,
            )
        )
        tputs = [float(t) for row in info["tputs"] for t in row]
        if len(tputs) != len(rates):
            raise ValueError(f"{gpu}: {len(tputs)} throughputs for {len(rates)} buckets")
        caps = tuple(0.0 if t <= CANNOT_SERVE_RPS * 1.5 else t for t in tputs)
        columns.append(Column(key=gpu, service=SERVICE, role=Role.UNIFIED, pool=gpu, devices=1,
                              capacity_rps=caps, label=gpu))
    demand = Demand(service=SERVICE, bucket_rates_rps=rates, bucket_labels=labels, min_replicas=0)
    return Problem(pools=tuple(pools), columns=tuple(columns), demands=(demand,), headroom=1.0)


def solve_case_dict(case: Mapping[str, Any], backend: BackendName = "highs", time_limit_s: float = 60.0,
                    relative_gap: float = 1e-6) -> MelangeAnswer:
    """Solve a loaded Mélange case; the answer in Mélange's terms."""
    problem = problem_from_case(case)
    sol = solve(problem, SolveOptions(backend=backend, time_limit_s=time_limit_s, relative_gap=relative_gap))
    return {
        "cost_per_hour": None if sol.cost_usd_per_hour is None else round(sol.cost_usd_per_hour, 6),
        "allocation": {k: v for k, v in sol.replicas.items() if v > 0},
        "solve_seconds": sol.solve_seconds,
        "status": sol.status,
    }


def solve_case(path: str | Path, backend: BackendName = "highs") -> MelangeAnswer:
    """Read a Mélange case file and solve it."""
    return solve_case_dict(json.loads(Path(path).read_text()), backend)
