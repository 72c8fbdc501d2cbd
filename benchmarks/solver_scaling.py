"""How planning scales: time to a first plan, the gap at a 10 s and a 30 s limit, wall time against the limit,
and peak memory, for real fleets from 20 to 500 services (`scaling_fleets.real_fleet`).

Each run is the planning command without baselines or marginal values (`plan_fleet`): one deadline from the
start of candidate generation, so the times include the candidates. Every run is its own process, so its peak
RSS is that fleet's. Fleets: 20/50/100/200/500 services × 12 device types × 30 buckets with pools grown with
the services, 50/100/200 with the 20-service fleet's pools ("fixed"), and 100 × 24 × 60; the 20-service fleet
runs five times at 10 s. A run whose pricing was cut short (only unified configurations priced by 40% of the
limit) has a plan but no bound for the fleet: its gap reads n/a and the table says so. Then `medley plan`
itself: CPU seconds on the 20-service fleet (baselines and marginal values included, median of 3 runs) and on
the quickstart (median of 5).

`--quick`: the 20-service fleet once at 10 s (a smoke run). `--synthetic`: the synthetic fleets whose pools
bind and Mélange-format instances (400 buckets × 16 types), solved from their problems.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.scaling_fleets import random_melange_case, real_fleet, synthetic_fleet  # noqa: E402
from planner.clock import SYSTEM_CLOCK, Deadline  # noqa: E402
from planner.melange import problem_from_case  # noqa: E402
from planner.pipeline import InfeasibleFleet, plan_fleet  # noqa: E402
from planner.solve import SolveOptions, prune_dominated, solve  # noqa: E402
from planner.solve.progress import Progress  # noqa: E402

# name → (services, device types, buckets, fixed pools)
FLEETS: dict[str, tuple[int, int, int, bool]] = {
    "20x12x30": (20, 12, 30, False),
    "50x12x30": (50, 12, 30, False),
    "100x12x30": (100, 12, 30, False),
    "200x12x30": (200, 12, 30, False),
    "500x12x30": (500, 12, 30, False),
    "50x12x30-fixed": (50, 12, 30, True),
    "100x12x30-fixed": (100, 12, 30, True),
    "200x12x30-fixed": (200, 12, 30, True),
    "100x24x60": (100, 24, 60, False),
}
LIMITS = (10.0, 30.0)
REPEATS_20 = 5
GOAL_FIRST_PLAN_S = 2.0
GOAL_GAP_30S = 0.01
GOAL_GAP_20_AT_10S = 0.005
GOAL_OVERRUN = 0.10
GOAL_PLAN_CPU_S = 15.0
GOAL_QUICKSTART_CPU_S = 1.0
# `medley plan` runs this many times per command; the goals hold for the median.
CPU_RUNS_20 = 3
CPU_RUNS_QUICKSTART = 5


def run_one(name: str, limit_s: float, seed: int = 0) -> dict[str, Any]:
    """One planning command on a fleet under ``limit_s``: what it found and what it took."""
    n_s, n_d, n_b, fixed = FLEETS[name]
    fleet = real_fleet(n_s, n_d, n_b, seed=seed, fixed_pools=fixed, time_limit_s=limit_s)
    record = Progress(SYSTEM_CLOCK)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    until = Deadline.after(limit_s)
    row: dict[str, Any] = {"fleet": name, "limit_s": limit_s, "seed": seed}
    try:
        plan = plan_fleet(fleet, baselines=False, marginals=False, deadline=until, progress=record)
        rep = plan.solver
        row.update(status=rep.status, objective=rep.objective, bound=rep.best_bound, gap=rep.relative_gap,
                   variables=rep.variables, constraints=rep.constraints, candidates=rep.candidates,
                   pruned=rep.candidates_pruned, backends=rep.backends,
                   unpriced=int(sum(f.value or 0 for f in plan.findings if f.constraint == "time_limit")))
    except InfeasibleFleet as exc:
        row.update(status="no plan", objective=None, bound=None, gap=None, error=exc.findings[0].message)
    wall = time.perf_counter() - wall0
    row.update(wall_s=round(wall, 3), cpu_s=round(time.process_time() - cpu0, 3),
               wall_over_limit=round(wall / limit_s - 1.0, 4),
               candidates_s=record.seconds_at("candidates"), first_plan_s=record.first_plan_seconds(),
               peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
               progress=[[p.seconds, p.incumbent, p.bound, p.stage] for p in record.points])
    return row


def _child(name: str, limit_s: float, seed: int) -> dict[str, Any]:
    """run_one in its own process (its own peak RSS); a run that dies or hangs is reported as such."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--limit", str(limit_s),
           "--seed", str(seed)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=3 * limit_s + 300, env=env, check=False)
    except subprocess.TimeoutExpired:
        return {"fleet": name, "limit_s": limit_s, "seed": seed, "status": "killed (hung)", "gap": None}
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"fleet": name, "limit_s": limit_s, "seed": seed, "status": f"failed: {tail}", "gap": None}
    row: dict[str, Any] = json.loads(lines[-1])
    return row


def _cpu_of(cmd: list[str]) -> tuple[float, int]:
    """CPU seconds (user + system) a child command took, and its exit code."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return round(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, 2), done.returncode


def plan_command_cpu() -> dict[str, Any]:
    """`medley plan` (baselines and marginal values included) on the 20-service fleet and the quickstart, each
    run several times (CPU time on a shared machine varies by a third between identical runs): the median,
    every run's figure, and the first non-zero exit code (0 when every run succeeded)."""
    import statistics

    import yaml

    medley = [sys.executable, "-c", "from planner.cli import main; main()", "plan"]

    def runs(cmd: list[str], times: int) -> tuple[float, list[float], int]:
        done = [_cpu_of(cmd) for _ in range(times)]
        cpu = [c for c, _ in done]
        return round(statistics.median(cpu), 2), cpu, next((rc for _, rc in done if rc != 0), 0)

    with tempfile.TemporaryDirectory(prefix="medley-scale-") as tmp:
        path = Path(tmp) / "fleet-20x12x30.yaml"
        fleet = real_fleet(20, 12, 30)
        path.write_text(yaml.safe_dump(fleet.model_dump(mode="json", by_alias=True, exclude_defaults=True)))
        fleet_cpu, fleet_runs, fleet_rc = runs([*medley, str(path), "--format", "json"], CPU_RUNS_20)
    quick_cpu, quick_runs, quick_rc = runs(
        [*medley, str(ROOT / "examples" / "quickstart.yaml"), "--format", "json"], CPU_RUNS_QUICKSTART)
    return {"plan_20x12x30_cpu_s": fleet_cpu, "plan_20x12x30_cpu_runs": fleet_runs, "plan_20x12x30_exit": fleet_rc,
            "quickstart_cpu_s": quick_cpu, "quickstart_cpu_runs": quick_runs, "quickstart_exit": quick_rc}


def pct(share: float | None) -> str:
    """A share as a percentage, or n/a where the solver gave none (never a made-up 0%)."""
    return "n/a" if share is None else f"{share:.2%}"


def secs(value: float | None) -> str:
    """Seconds with two decimals, or n/a."""
    return "n/a" if value is None else f"{value:.2f}"


def money(usd: float | None) -> str:
    """$/h with two decimals, or n/a."""
    return "n/a" if usd is None else f"{usd:.2f}"


def _summary(name: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One fleet's figures over its runs: the first plan and gap of the 10 s runs (worst of them), the gap of
    the 30 s run, the worst overrun and the peak RSS."""
    at10 = [r for r in runs if r["limit_s"] == LIMITS[0]]
    at30 = [r for r in runs if r["limit_s"] == LIMITS[1]]

    def worst(rows: list[dict[str, Any]], key: str) -> float | None:
        values = [r.get(key) for r in rows]
        return None if not rows or any(v is None for v in values) else max(float(v) for v in values if v is not None)

    first = runs[0] if runs else {}
    return {"fleet": name, "columns": first.get("candidates"), "variables": first.get("variables"),
            "candidates_s": worst(at10, "candidates_s"), "first_plan_s": worst(at10, "first_plan_s"),
            "gap_at_10s": worst(at10, "gap"), "gap_at_30s": worst(at30, "gap"),
            "gaps_at_10s": [r.get("gap") for r in at10],
            "wall_over_limit": worst(runs, "wall_over_limit"), "peak_rss_mb": worst(runs, "peak_rss_mb"),
            "objective_at_30s": at30[0].get("objective") if at30 else None,
            "unpriced_runs": sum(1 for r in runs if r.get("unpriced")),
            "statuses": sorted({str(r.get("status")) for r in runs})}


def _print_table(summaries: list[dict[str, Any]]) -> None:
    print(f"{'fleet':<16} {'columns':>8} {'variables':>9} {'cands s':>7} {'1st plan s':>10} {'gap@10s':>8} "
          f"{'gap@30s':>8} {'wall/limit':>10} {'RSS MB':>7}  status")
    for s in summaries:
        over = s["wall_over_limit"]
        print(f"{s['fleet']:<16} {s['columns'] or 0:>8} {s['variables'] or 0:>9} {secs(s['candidates_s']):>7} "
              f"{secs(s['first_plan_s']):>10} {pct(s['gap_at_10s']):>8} {pct(s['gap_at_30s']):>8} "
              f"{'n/a' if over is None else f'{1 + over:.2f}':>10} {s['peak_rss_mb'] or 0:>7.0f}  "
              f"{', '.join(s['statuses'])}"
              + (f"; {s['unpriced_runs']} run(s) priced unified replicas only, no bound" if s["unpriced_runs"] else ""))


def _goals(summaries: list[dict[str, Any]], cpu: dict[str, Any]) -> dict[str, bool]:
    """The scaling goals, each met or not on this run."""
    by = {s["fleet"]: s for s in summaries}
    upto200 = [s for name, s in by.items() if FLEETS[name][0] <= 200 and FLEETS[name][1] == 12]
    goals = {
        "first plan <= 2 s up to 200 services": all(
            s["first_plan_s"] is not None and s["first_plan_s"] <= GOAL_FIRST_PLAN_S for s in upto200),
        "gap <= 1% at 30 s up to 200 services": all(
            s["gap_at_30s"] is not None and s["gap_at_30s"] <= GOAL_GAP_30S for s in upto200),
        "20x12x30 <= 0.5% at 10 s in every run": "20x12x30" in by and all(
            g is not None and g <= GOAL_GAP_20_AT_10S for g in by["20x12x30"]["gaps_at_10s"]),
        "no run over its limit by more than 10%": all(
            s["wall_over_limit"] is not None and s["wall_over_limit"] <= GOAL_OVERRUN for s in summaries),
    }
    if cpu:  # a command that failed meets no goal, however little it took
        goals["medley plan 20x12x30 <= 15 s CPU"] = (cpu["plan_20x12x30_exit"] == 0
                                                     and cpu["plan_20x12x30_cpu_s"] <= GOAL_PLAN_CPU_S)
        goals["medley plan quickstart <= 1 s CPU"] = (cpu["quickstart_exit"] == 0
                                                      and cpu["quickstart_cpu_s"] <= GOAL_QUICKSTART_CPU_S)
    return goals


def main_scaling(quick: bool) -> None:
    """The real fleets, each run in its own process; the table, the goals and a JSON line."""
    load = os.getloadavg()
    plan: list[tuple[str, float]] = [("20x12x30", LIMITS[0])]
    if not quick:
        plan += [("20x12x30", LIMITS[0])] * (REPEATS_20 - 1) + [("20x12x30", LIMITS[1])]
        plan += [(name, limit) for name in FLEETS if name != "20x12x30" for limit in LIMITS]
    runs: dict[str, list[dict[str, Any]]] = {}
    for name, limit in plan:
        row = _child(name, limit, 0)
        runs.setdefault(name, []).append(row)
        print(f"  {name:<16} limit {limit:>4.0f} s: {row.get('status')}, gap {pct(row.get('gap'))}, first plan "
              f"{secs(row.get('first_plan_s'))} s, wall {secs(row.get('wall_s'))} s", file=sys.stderr, flush=True)
    summaries = [_summary(name, rows) for name, rows in runs.items()]
    _print_table(summaries)
    cpu = {} if quick else plan_command_cpu()
    if cpu:
        fr, qr = cpu["plan_20x12x30_cpu_runs"], cpu["quickstart_cpu_runs"]
        print(f"medley plan on 20x12x30 (baselines, marginal values): median {cpu['plan_20x12x30_cpu_s']:.1f} s CPU "
              f"of {len(fr)} runs ({min(fr):.1f}-{max(fr):.1f} s, exit {cpu['plan_20x12x30_exit']}); quickstart: "
              f"median {cpu['quickstart_cpu_s']:.2f} s CPU of {len(qr)} runs ({min(qr):.2f}-{max(qr):.2f} s, "
              f"exit {cpu['quickstart_exit']})")
    goals = _goals(summaries, cpu)
    for goal, met in goals.items():
        print(f"goal {'met    ' if met else 'NOT met'}  {goal}")
    print(f"load average at the start {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} on {os.cpu_count()} cores; "
          f"at the end {os.getloadavg()[0]:.1f}")
    print(json.dumps({"benchmark": "solver_scaling", "quick": quick, "load_start": load, "load_end": os.getloadavg(),
                      "fleets": {s["fleet"]: s for s in summaries}, "goals": goals, **cpu,
                      "runs": [r for rows in runs.values() for r in rows]}))


def main_synthetic() -> None:
    """Synthetic fleets whose pools bind, and Mélange-format instances, solved from their problems."""
    opts = SolveOptions(backend="highs", time_limit_s=10.0, relative_gap=0.005, threads=2)
    sizes = ((2, 4, 6), (5, 6, 12), (10, 8, 20), (20, 12, 30))
    fleet_rows = []
    print(f"{'services':>8} {'types':>5} {'buckets':>7} {'columns':>7} {'pruned':>6} {'variables':>9} "
          f"{'rows':>7} {'prune+solve s':>13} {'gap':>7} {'status':<8} {'$/h':>9} {'bound $/h':>9}  bound")
    for n_s, n_d, n_b in sizes:
        problem = synthetic_fleet(n_s, n_d, n_b)
        t0 = time.perf_counter()
        pruned, count = prune_dominated(problem)
        sol = solve(pruned, opts)
        total_s = time.perf_counter() - t0
        fleet_rows.append({"services": n_s, "device_types": n_d, "buckets": n_b, "columns": len(problem.columns),
                           "pruned": count, "variables": sol.variables, "constraints": sol.constraints,
                           "seconds": round(total_s, 3), "gap": sol.relative_gap, "status": sol.status,
                           "usd_per_hour": sol.cost_usd_per_hour, "best_bound": sol.best_bound,
                           "backends": sol.backends})
        print(f"{n_s:>8} {n_d:>5} {n_b:>7} {len(problem.columns):>7} {count:>6} {sol.variables:>9} "
              f"{sol.constraints:>7} {total_s:>13.2f} {pct(sol.relative_gap):>7} {sol.status:<8} "
              f"{money(sol.cost_usd_per_hour):>9} {money(sol.best_bound):>9}  {bound_kind(sol.message)}")
    print()
    print(f"{'Mélange-format':<16} {'buckets':>7} {'types':>5} {'solve s':>8} {'status':<8} {'$/h':>9}")
    mel_rows = []
    for seed in range(3):
        problem = problem_from_case(random_melange_case(400, 16, seed))
        # One pool per type and no shared limits: the x ≤ n rows buy little here and cost time.
        sol = solve(problem, SolveOptions(time_limit_s=10.0, relative_gap=0.005, link_rows=False))
        mel_rows.append({"seed": seed, "buckets": 400, "device_types": 16, "seconds": round(sol.solve_seconds, 3),
                         "status": sol.status, "gap": sol.relative_gap, "usd_per_hour": sol.cost_usd_per_hour,
                         "backends": sol.backends})
        print(f"{'seed ' + str(seed):<16} {400:>7} {16:>5} {sol.solve_seconds:>8.3f} {sol.status:<8} "
              f"{money(sol.cost_usd_per_hour):>9}  gap {pct(sol.relative_gap)}")
    largest = fleet_rows[-1]
    print(json.dumps({
        "benchmark": "solver_scaling_synthetic", "load": os.getloadavg(),
        "largest_fleet_seconds": largest["seconds"], "largest_fleet_gap": largest["gap"],
        "largest_fleet_variables": largest["variables"], "largest_fleet_constraints": largest["constraints"],
        "melange_400x16_max_seconds": max(float(r["seconds"] or 0.0) for r in mel_rows),
        "fleets": fleet_rows, "melange": mel_rows,
    }))


def bound_kind(message: str) -> str:
    """Which bound the gap is measured against: the solver's own, or the priced model's (see planner.solve)."""
    parts = message.split("; ")
    return parts[1] if len(parts) > 1 else "solver"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the 20-service fleet once at 10 s (smoke run)")
    parser.add_argument("--synthetic", action="store_true", help="synthetic fleets and Mélange-format instances")
    parser.add_argument("--child", choices=sorted(FLEETS), help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=float, default=LIMITS[0], help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(args.child, args.limit, args.seed)))
    elif args.synthetic:
        main_synthetic()
    else:
        main_scaling(args.quick)


if __name__ == "__main__":
    main()
