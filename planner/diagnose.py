"""Why a fleet cannot be planned, said before the solver runs: the constraint that really binds, with its numbers.

``preflight`` looks at the fleet and its candidate columns and names, in this order:

* **services**: a fleet without services has nothing to plan;
* **availability**: a service whose every accelerator pool has ``max_nodes: 0``;
* **configurations**: a service none of whose configurations can run in its pools (a TP group larger than
  a node, parallelism that does not divide the model, a model that does not fit), with the count per reason;
* **SLO**: a service whose configurations all run but none serves any length bucket within its SLO, with
  the best single-request TTFT and TPOT its configurations reach;
* **demand**: a service whose rate needs more devices than its pools hold even at the best capacity per
  device any of its configurations reaches in each bucket (a lower bound: the rate over that capacity at
  the planner's headroom, summed over buckets), so absurd rates are named instead of handed to the solver.

Each is a :class:`Finding`; an empty list means the solver decides.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from planner.catalog import Catalog
from planner.model.configurations import CandidateStats, ServiceConfiguration, service_configurations
from planner.model.perf import PerfModel
from planner.schema import DeviceKind, Finding, FleetSpec, LengthBucket, Service
from planner.solve.problem import Problem
from planner.solve.table import ColumnTable


def preflight(fleet: FleetSpec, catalog: Catalog, perf: PerfModel, problem: Problem,
              buckets: Mapping[str, Sequence[LengthBucket]]) -> list[Finding]:
    """Findings that make the fleet infeasible whatever the solver does (module docstring), or none."""
    if not fleet.services:
        return [Finding(kind="infeasible", constraint="services",
                        message="the fleet has no services: there is nothing to plan")]
    with_columns = {c.service for c in problem.columns}
    table = problem.table
    index = {d.service: i for i, d in enumerate(problem.demands)}
    out: list[Finding] = []
    for svc in fleet.services:
        if svc.id not in with_columns:
            out.append(_no_columns(svc, fleet, catalog, perf, buckets[svc.id]))
        elif svc.traffic.rate_rps > 0 and svc.id in index:
            short = _demand(svc, table, table.by_service[index[svc.id]], problem, buckets[svc.id])
            if short is not None:
                out.append(short)
    return out


def _no_columns(svc: Service, fleet: FleetSpec, catalog: Catalog, perf: PerfModel,
                buckets: Sequence[LengthBucket]) -> Finding:
    """Why a service has no candidate at all: no nodes, no configuration that runs, or none within its SLO."""
    allowed = [p for p in fleet.pools if (svc.allowed_pools is None or p.id in svc.allowed_pools)
               and catalog.devices.get(p.device) is not None
               and catalog.device(p.device).kind is DeviceKind.ACCELERATOR]
    if allowed and all(p.max_nodes == 0 for p in allowed):
        return Finding(kind="infeasible", constraint=f"availability[{svc.id}]",
                       message=f"service {svc.id}: every accelerator pool it may use has no nodes (max_nodes 0: "
                               + ", ".join(p.id for p in allowed) + ")")
    stats = CandidateStats()
    options = list(service_configurations(svc, fleet, catalog, perf, stats))
    if not options:
        reasons = "; ".join(f"{why}: {n}" for why, n in sorted(stats.dropped.items(), key=lambda kv: -kv[1]))
        return Finding(kind="infeasible", constraint=f"configurations[{svc.id}]",
                       message=f"service {svc.id}: none of the {stats.considered} pool × TP × PP shapes it may use "
                               f"can run ({reasons or 'no accelerator pool'})")
    return _slo(svc, options, perf, buckets)


def _slo(svc: Service, options: list[ServiceConfiguration], perf: PerfModel,
         buckets: Sequence[LengthBucket]) -> Finding:
    """No configuration meets the SLO for any bucket: the best single-request latencies they reach."""
    prompt = min((b.input_tokens for b in buckets), default=1)
    shapes = {(o.shape.device.id, o.shape.tp, o.shape.pp): o.shape for o in options if not o.shape.offload}
    slo = svc.slo
    detail = ""
    if shapes:
        ttft, ttft_at = min((perf.prefill_ms(s, 1, prompt), k) for k, s in shapes.items())
        tpot, tpot_at = min((perf.decode_step_ms(s, 1, prompt), k) for k, s in shapes.items())
        detail = (f"; one request alone at its shortest prompt ({prompt} tokens) takes at best {ttft:.0f} ms to "
                  f"the first token ({_shape(ttft_at)}) and {tpot:.1f} ms per token ({_shape(tpot_at)})")
    return Finding(kind="infeasible", constraint=f"slo[{svc.id}]",
                   message=f"service {svc.id}: no configuration meets its SLO (TTFT {slo.ttft_ms:g} ms, TPOT "
                           f"{slo.tpot_ms:g} ms at p{slo.percentile:g}) for any length bucket" + detail)


def _shape(key: tuple[str, int, int]) -> str:
    device, tp, pp = key
    return f"{device} tp{tp}" + (f" pp{pp}" if pp > 1 else "")


def _demand(svc: Service, table: ColumnTable, rows: np.ndarray, problem: Problem,
            buckets: Sequence[LengthBucket]) -> Finding | None:
    """A lower bound on the devices the service's rate needs against what its pools hold (None when it fits).

    ``rows`` are the service's columns in the problem's table (arrays, so a service with thousands of
    columns costs one maximum per bucket)."""
    if not len(rows):
        return None
    used_ix = np.unique(np.concatenate([table.pool[rows], table.memory_pool[rows]]))
    used = [problem.pools[int(i)] for i in used_ix if i >= 0]
    if any(p.max_nodes is None for p in used):
        return None
    held = sum(p.devices_per_node * (p.max_nodes or 0) for p in used)
    per_device = table.caps[rows] / (table.devices[rows] + table.memory_devices[rows])[:, None]
    best_per_bucket = per_device.max(axis=0)
    need = 0.0
    for b, bucket in enumerate(buckets):
        rate = svc.traffic.rate_rps * bucket.share
        if rate <= 0:
            continue
        best = float(best_per_bucket[b]) if b < len(best_per_bucket) else 0.0
        if best <= 0:
            return None  # the cover check names an unserved bucket
        need += rate / (best * problem.headroom)
    if not math.isfinite(need) or need > held:
        shown = f"at least {need:,.0f}" if math.isfinite(need) and need < 1e15 else "more than 10^15"
        return Finding(kind="infeasible", constraint=f"availability[{svc.id}]",
                       message=f"service {svc.id}: {svc.traffic.rate_rps:.4g} req/s needs {shown} devices "
                               f"even at the best capacity per device of its configurations (headroom "
                               f"{problem.headroom:g}), but the pools it may use hold {held:,} "
                               f"({', '.join(sorted(p.id for p in used))})",
                       value=need if math.isfinite(need) else None)
    return None
