"""Fleet planning end to end: fleet → candidates → MILP → a ``Plan`` with baselines and findings.

``plan_fleet`` is the one function every front door (CLI, REST API, controller) calls; ``fleet_planner`` binds
its options into the :class:`planner.ports.Planner` that what-if and N-1 planning call in their loops.

One deadline, ``planner.time_limit_s`` from the start of candidate generation, covers the whole command: the
candidates (pricing stops at ``PRICING_SHARE`` of it where what is priced serves every bucket), the solve
(which always has the greedy plan to hand back), and then, in the time the solve left or at least
``EXTRAS_SHARE`` of it, the marginal values and the baselines, each of which stops at its share. The solve (and,
where a quick plan exists, the candidates) end early by the time making the plan takes (``FINISH_SHARE``,
``FINISH_S_PER_SERVICE``), so the command ends by its deadline, not after it.

A large fleet (``QUICK_MIN_CONFIGURATIONS`` configurations to price) first gets a quick pass: its unified,
single-stage configurations alone priced and planned greedily, a plan within seconds. It starts the full solve
where every row of the full model holds for it, and it is the answer when pricing every configuration or the
solve does not end in time, or finds nothing cheaper, or would not get past its set-up in the time left
(``SOLVE_SETUP_S_PER_SERVICE``); a finding says so, and the full model's bound (or, with no solve, the sum of
the services' bucket floors) gives its gap where one holds for the fleet.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import cast

from planner.catalog import Catalog, fleet_catalog
from planner.clock import Deadline
from planner.diagnose import preflight
from planner.fingerprint import fleet_digest, fleet_snapshot
from planner.heap import planning_heap
from planner.io.profiles import fleet_calibration, fleet_perf_model
from planner.model.calibration import Calibration
from planner.model.candidates import (
    DROP_UNPRICED,
    Candidate,
    CandidatesLate,
    CandidateStats,
    column_key,
    fleet_limits,
    generate_candidates,
)
from planner.model.handoff import INTER_ZONE_USD_PER_GB
from planner.model.perf import PerfModel
from planner.model.roofline import RooflinePerfModel
from planner.plan_notes import GroupLoad, groups_notes, pipeline_finding, pipeline_unchecked_finding, plan_findings
from planner.ports import Planner
from planner.roles import SERVING_ROLES
from planner.schema import (
    Baseline,
    BucketLoad,
    Finding,
    FleetSpec,
    LengthBucket,
    ModelErrorBand,
    Plan,
    ReplicaGroup,
    Role,
    ServiceDemand,
    SolverProgress,
    SolverReport,
)
from planner.solve import (
    BackendName,
    Demand,
    PoolSupply,
    PowerBudget,
    Problem,
    Solution,
    SolveOptions,
    Status,
    explain_infeasible,
    marginal_values,
    prune_dominated,
    solve,
    uncovered_buckets,
)
from planner.solve.baselines import Shape, TypePlan, homogeneous, single_type
from planner.solve.bounds import fleet_floor
from planner.solve.formulation.handoff import cross_zone_usd_per_hour
from planner.solve.incumbent import checked_greedy_plan, covers, plan_violations
from planner.solve.problem import with_lower_bound
from planner.solve.progress import Progress
from planner.solve.replan import without_columns
from planner.tiers import TierError, with_billing, with_tiers

_SERVING = SERVING_ROLES
# With baselines or marginal values asked for, the solve leaves them at least this share of the time after the
# candidates (they get whatever it leaves), the marginal values first and at most half of it.
EXTRAS_SHARE = 0.2
# Pricing the candidates may take this share of the time limit; then the configurations not priced yet are left
# out where the priced ones serve every bucket (unified replicas are priced first), so the solve has time left.
PRICING_SHARE = 0.4
# Making the plan from a solution (loads, error bands, the fleet's snapshot) and letting go of the inputs take
# about 3 ms a service here (0.6 s at 200 services, 1.5 s at 500): the candidates and the solve end this long
# before the deadline, at least FINISH_SHARE of the time limit and at most a quarter of it, so the command's
# wall time is what the limit promises.
FINISH_SHARE = 0.05
FINISH_S_PER_SERVICE = 0.003
# Where a quick plan exists, a solve starts only with at least this long left: setting up the solve by
# service (each service's problem, its part of the start, its bucket bound) takes about 5 ms a service here,
# and a solve that cannot run past its set-up only delays the quick plan.
MIN_SOLVE_S = 0.5
SOLVE_SETUP_S_PER_SERVICE = 0.006
# Dropping dominated columns (``prune_dominated``, with the column table it builds) takes about 6 µs a column
# here (2.6 s for the 430,000 columns of 500 services). It only speeds the solve up, so where a quick plan is
# the answer anyway (no solve would get past its set-up after it) the columns are kept as they are.
PRUNE_S_PER_COLUMN = 6e-6
# The fleet's column table (the arrays preflight, the bucket floors and a solve work on) and the floors take
# about 5 µs a column here: where a quick plan is the answer and this is more than the time left, the answer
# goes without the full model's bound rather than past the deadline.
TABLE_S_PER_COLUMN = 5e-6
# Fleets with at least this many configurations to price (services × pools × TP × PP × roles, before the
# memory and SLO checks) first get a plan of unified, single-stage replicas alone (``quick_fleet``): a plan
# within seconds however long pricing every configuration takes, and the start of the full solve.
QUICK_MIN_CONFIGURATIONS = 10_000


class InfeasibleFleet(Exception):
    """No plan meets every SLO within the fleet's limits; ``findings`` say which constraint binds."""

    def __init__(self, findings: Sequence[Finding]):
        self.findings = list(findings)
        super().__init__(self.findings[0].message if self.findings else "the fleet is infeasible")


@dataclass(frozen=True)
class PlanInputs:
    """Everything the MILP needs, with the candidates that give its columns meaning, and the performance
    model and calibration they were sized with."""

    problem: Problem
    candidates: dict[str, Candidate]
    buckets: dict[str, list[LengthBucket]]
    stats: CandidateStats
    pruned: int
    perf: PerfModel | None = None
    calibration: Calibration | None = None


def service_buckets(fleet: FleetSpec, base_dir: Path | None = None) -> dict[str, list[LengthBucket]]:
    """Length buckets of every service (trace files are bucketed relative to ``base_dir``)."""
    out: dict[str, list[LengthBucket]] = {}
    for svc in fleet.services:
        if svc.traffic.trace_file is not None:
            from planner.io.traces import bucket_trace

            path = Path(svc.traffic.trace_file)
            if base_dir is not None and not path.is_absolute():
                path = base_dir / path
            out[svc.id] = bucket_trace(path).buckets
        else:
            out[svc.id] = svc.traffic.length_buckets()
    return out


def build_inputs(fleet: FleetSpec, *, catalog: Catalog | None = None, perf: PerfModel | None = None,
                 current: Plan | None = None, base_dir: Path | None = None,
                 deadline: Deadline | None = None, price_by: Deadline | None = None,
                 prune_if: Callable[[int], bool] | None = None) -> PlanInputs:
    """Candidates, pools, demands and budgets of a fleet as a MILP problem (dominated columns pruned, unless
    ``prune_if``, given the number of columns, says no).

    Raises CandidatesLate when ``deadline`` passes before the candidates are computed; configurations not
    priced by ``price_by`` are left out where the others serve every bucket (``generate_candidates``)."""
    cat = catalog or fleet_catalog(fleet)
    model = perf or fleet_perf_model(fleet)
    cal = model.calibration if isinstance(model, RooflinePerfModel) else fleet_calibration(fleet)
    buckets = service_buckets(fleet, base_dir)
    cands, stats = generate_candidates(fleet, cat, model, buckets, fleet_limits(fleet, cal), deadline, price_by)
    pools = []
    for p in fleet.pools:
        dev = cat.device(p.device)
        pools.append(PoolSupply(
            id=p.id, zone=p.zone, power_domain=p.power_domain, devices_per_node=p.devices_per_node,
            max_nodes=p.max_nodes, usd_per_device_hour=cat.pool_price(p), billing=p.billing,
            nameplate_watts_per_node=p.devices_per_node * dev.tdp_watts + p.node_overhead_watts,
            node_idle_watts=p.node_overhead_watts))
    demands = []
    for svc in fleet.services:
        bs = buckets[svc.id]
        rates = tuple(svc.traffic.rate_rps * b.share for b in bs)
        tokens = sum(r * (b.input_tokens + b.output_tokens) for r, b in zip(rates, bs, strict=True))
        cross = svc.kv_handoff == "cross-zone"
        kv_per_token = cat.model(svc.model).kv_bytes_per_token
        # $/h if every hand-off of the bucket crossed zones: λ · KV GB per request · $/GB · 3600 s.
        crossing = tuple(r * b.input_tokens * kv_per_token / 1e9 * INTER_ZONE_USD_PER_GB * 3600.0
                         for r, b in zip(rates, bs, strict=True)) if cross else ()
        demands.append(Demand(service=svc.id, bucket_rates_rps=rates,
                              bucket_labels=tuple(f"{b.input_tokens}/{b.output_tokens}" for b in bs),
                              min_replicas=svc.min_replicas, spread_zones=svc.spread_zones,
                              tokens_per_s=tokens, max_configurations=fleet.planner.max_configurations_per_service,
                              cross_zone_handoff=cross, handoff_usd_per_hour=crossing))
    budgets = [PowerBudget(id=d.id, budget_watts=d.budget_watts,
                           oversubscription_ratio=d.oversubscription_ratio,
                           expected_share=d.thresholds.t1_share)
               for d in fleet.power_domains]
    current_replicas: dict[str, int] = {}
    if current is not None:
        for g in current.replica_groups:
            key = column_key(g.service, g.pool, g.configuration, g.memory_pool)
            current_replicas[key] = current_replicas.get(key, 0) + g.replicas
    problem = Problem(pools=tuple(pools), columns=tuple(c.column for c in cands), demands=tuple(demands),
                      power_budgets=tuple(budgets), headroom=fleet.planner.headroom,
                      current_replicas=current_replicas,
                      churn_usd_per_replica_change=fleet.planner.churn_usd_per_replica_change)
    pruned_problem, pruned = prune_dominated(problem) if prune_if is None or prune_if(len(problem.columns)) \
        else (problem, 0)
    try:
        pruned_problem = with_tiers(pruned_problem, fleet, cat)
    except TierError as exc:
        raise InfeasibleFleet([Finding(kind="infeasible", constraint="tiers", message=str(exc))]) from None
    return PlanInputs(problem=pruned_problem, candidates={c.column.key: c for c in cands}, buckets=buckets,
                      stats=stats, pruned=pruned, perf=model, calibration=cal)


def configuration_count(fleet: FleetSpec) -> int:
    """How many configurations pricing the fleet would look at, before the memory and SLO checks:
    Σ over services of allowed pools × TP × PP × roles (an upper estimate of the candidates)."""
    o = fleet.planner
    total = 0
    for svc in fleet.services:
        pools = sum(1 for p in fleet.pools if p.max_nodes != 0 and (svc.allowed_pools is None
                                                                     or p.id in svc.allowed_pools))
        roles = sum(1 for r in o.roles if svc.allowed_roles is None or r in svc.allowed_roles)
        total += pools * len(svc.tp_options or o.tp_options) * len(o.pp_options) * roles
    return total


def quick_fleet(fleet: FleetSpec) -> FleetSpec | None:
    """The fleet with unified, single-stage replicas only (the quick pass's configurations), or None where a
    service may not run unified replicas."""
    if Role.UNIFIED not in fleet.planner.roles or any(
            s.allowed_roles is not None and Role.UNIFIED not in s.allowed_roles for s in fleet.services):
        return None
    opts = fleet.planner.model_copy(update={"roles": [Role.UNIFIED], "pp_options": [1]})
    return fleet.model_copy(update={"planner": opts})


@dataclass(frozen=True)
class QuickPlan:
    """The quick pass's answer: its inputs (unified single-stage candidates) and its greedy plan."""

    inputs: PlanInputs
    solution: Solution


def quick_plan(fleet: FleetSpec, cat: Catalog, model: PerfModel, current: Plan | None, base_dir: Path | None,
               deadline: Deadline) -> QuickPlan | None:
    """A plan of unified single-stage replicas, greedy (``incumbent.checked_greedy_plan``), where the fleet is
    large enough (``QUICK_MIN_CONFIGURATIONS``) that pricing every configuration takes long; None where the
    fleet is small, a service may not run unified, or those replicas serve not every bucket."""
    small = quick_fleet(fleet) if configuration_count(fleet) >= QUICK_MIN_CONFIGURATIONS else None
    if small is None:
        return None
    try:
        inputs = build_inputs(small, catalog=cat, perf=model, current=current, base_dir=base_dir, deadline=deadline)
    except (CandidatesLate, InfeasibleFleet):
        return None
    if uncovered_buckets(inputs.problem):
        return None
    plan = checked_greedy_plan(inputs.problem, deadline)
    return None if plan is None else QuickPlan(inputs, plan)


def _options(fleet: FleetSpec, backend: str | None, progress: Progress | None = None) -> SolveOptions:
    o = fleet.planner
    return SolveOptions(backend=cast(BackendName, backend or o.solver), time_limit_s=o.time_limit_s,
                        relative_gap=o.relative_gap, progress=progress)


def plan_fleet(fleet: FleetSpec, *, current: Plan | None = None, catalog: Catalog | None = None,
               perf: PerfModel | None = None, backend: str | None = None, baselines: bool = True,
               marginals: bool = True, base_dir: Path | None = None, created_at: str = "",
               deadline: Deadline | None = None, progress: Progress | None = None) -> Plan:
    """The cheapest plan that meets every service's SLO inside the fleet's pools and power budgets.

    ``deadline`` (default: planner.time_limit_s from now) covers the whole command, see the module docstring;
    ``progress`` records (and shows) the plan and bound as they improve. ``baselines`` and ``marginals``
    (binding rows and marginal values) solve again within what the main solve leaves; drafts that are not the
    answer skip them."""
    with planning_heap() as built:  # the collector paused while the inputs are built, then they are frozen
        return _plan_fleet(fleet, current, catalog, perf, backend, baselines, marginals, base_dir, created_at,
                           deadline, progress, built)


def _plan_fleet(fleet: FleetSpec, current: Plan | None, catalog: Catalog | None, perf: PerfModel | None,
                backend: str | None, baselines: bool, marginals: bool, base_dir: Path | None, created_at: str,
                deadline: Deadline | None, progress: Progress | None, built: Callable[[], None]) -> Plan:
    until = deadline or Deadline.after(fleet.planner.time_limit_s)
    record = progress or Progress(until.clock)
    limit = max(until.remaining(), 0.0)
    finish = min(max(FINISH_SHARE * limit, FINISH_S_PER_SERVICE * len(fleet.services)), 0.25 * limit) \
        if math.isfinite(limit) else 0.0
    cat = catalog or fleet_catalog(fleet)
    model = perf or fleet_perf_model(fleet)
    opts = _options(fleet, backend, record)
    quick = quick_plan(fleet, cat, model, current, base_dir, until)
    if quick is not None:
        record.report(quick.solution.objective, None, "quick")
    # With a quick plan to fall back on, the candidates too end in time to make the plan.
    priced_by = Deadline(until.end - finish, until.clock) if quick is not None else until

    def prune_if(columns: int) -> bool:
        """Whether a solve could still follow pruning (without a quick plan one always does)."""
        return quick is None or (priced_by.remaining() - (PRUNE_S_PER_COLUMN + TABLE_S_PER_COLUMN) * columns
                                 >= _solve_setup_s(fleet))

    try:
        inputs = build_inputs(fleet, catalog=cat, perf=model, current=current, base_dir=base_dir,
                              deadline=priced_by, price_by=until.share(PRICING_SHARE), prune_if=prune_if)
    except CandidatesLate as exc:
        if quick is None:
            raise InfeasibleFleet([Finding(kind="infeasible", constraint="time_limit",
                                           message=f"{exc}: no plan within {fleet.planner.time_limit_s:g} s; raise "
                                                   "planner.time_limit_s")]) from exc
        return _quick_answer(fleet, quick, opts, cat, current, created_at, record, None, str(exc))
    record.mark("candidates")
    built()
    if quick is not None:
        # No solve would get past its set-up: the quick plan is the answer, with the full model's bound (the
        # services' floors) where there is time to compute it. Preflight is not needed: the plan exists.
        left = until.end - until.now()
        table_s = TABLE_S_PER_COLUMN * len(inputs.problem.columns)
        if left - finish - table_s < _solve_setup_s(fleet):
            return _unsolved_answer(fleet, quick, inputs, opts, cat, current, created_at, record,
                                    left - FINISH_S_PER_SERVICE * len(fleet.services) >= table_s)
    blocked = preflight(fleet, cat, model, inputs.problem, inputs.buckets)
    if blocked:
        raise InfeasibleFleet(blocked)
    extras = baselines or marginals
    left = until.end - until.now()
    solve_until = Deadline(until.end - min(finish, 0.5 * max(left, 0.0)) - (EXTRAS_SHARE * left if extras else 0.0),
                           until.clock) if math.isfinite(left) else until
    if quick is not None and solve_until.remaining() < _solve_setup_s(fleet):
        return _unsolved_answer(fleet, quick, inputs, opts, cat, current, created_at, record, True)
    start = quick.solution if quick is not None and _starts(inputs.problem, quick.solution) else None
    sol = solve(inputs.problem, opts, deadline=solve_until, start=start)
    if sol.status not in ("optimal", "feasible"):
        if sol.status == "infeasible":
            raise InfeasibleFleet(explain_infeasible(inputs.problem, replace(opts, progress=None),
                                                     deadline=until))
        if quick is None:
            raise InfeasibleFleet([Finding(kind="infeasible", constraint="solver",
                                           message=_no_solution(sol, opts))])
        return _quick_answer(fleet, quick, opts, cat, current, created_at, record, None, _no_solution(sol, opts))
    quiet = replace(opts, progress=None)
    inputs, sol, findings = _prefer_no_pipelines(inputs, sol, quiet, until.share(0.5), _solve_setup_s(fleet))
    unpriced = inputs.stats.dropped.get(DROP_UNPRICED, 0)
    if unpriced:
        # The solver's bound holds for the configurations it was given, not for the fleet: none is reported.
        sol = replace(sol, best_bound=None, relative_gap=None, status="feasible",
                      message=f"{sol.message}; {unpriced} configurations unpriced, so no bound for the fleet")
        findings.append(Finding(
            kind="note", constraint="time_limit", value=float(unpriced),
            message=f"{unpriced} configurations were not priced within {PRICING_SHARE:.0%} of the time limit "
                    "(unified replicas were, first): a plan with them may cost less, and the plan has no proven "
                    "gap; raise planner.time_limit_s"))
    if quick is not None and _cheaper(quick.solution, sol):
        return _quick_answer(fleet, quick, opts, cat, current, created_at, record, sol.best_bound,
                             "the full model found nothing cheaper in time")
    if marginals:
        share = until.share(0.5) if baselines else until
        findings += marginal_values(inputs.problem, sol, quiet, deadline=share)
    base = _baselines(inputs, quiet, until) if baselines else []
    plan = assemble_plan(fleet, inputs, sol, opts, cat, base, findings, current, created_at, record)
    return with_billing(plan, inputs.problem, sol.replicas, fleet, cat)


def _solve_setup_s(fleet: FleetSpec) -> float:
    """The least time left worth starting a solve with, where a quick plan exists (``MIN_SOLVE_S``,
    ``SOLVE_SETUP_S_PER_SERVICE``)."""
    return max(MIN_SOLVE_S, SOLVE_SETUP_S_PER_SERVICE * len(fleet.services))


def _unsolved_answer(fleet: FleetSpec, quick: QuickPlan, inputs: PlanInputs, opts: SolveOptions, cat: Catalog,
                     current: Plan | None, created_at: str, record: Progress, time_to_bound: bool) -> Plan:
    """The quick plan where pricing every configuration left no time to solve: against the services' bucket
    floors where every configuration was priced and ``time_to_bound`` (their column table fits in the time
    left), else without a bound."""
    bounded = time_to_bound and not inputs.stats.dropped.get(DROP_UNPRICED, 0)
    return _quick_answer(fleet, quick, opts, cat, current, created_at, record,
                         fleet_floor(inputs.problem) if bounded else None,
                         "pricing every configuration left no time to solve"
                         + ("" if time_to_bound else " or to bound the plan"))


def _starts(problem: Problem, plan: Solution) -> bool:
    """Whether a plan of the quick pass is one of the full problem (its columns kept, every row met)."""
    return covers(problem, plan) and not plan_violations(problem, plan)


def _cheaper(plan: Solution, than: Solution) -> bool:
    """Whether ``plan`` costs less than ``than`` (by more than rounding)."""
    a, b = plan.objective, than.objective
    return a is not None and (b is None or a < b - 1e-6 * max(1.0, abs(b)))


def _quick_answer(fleet: FleetSpec, quick: QuickPlan, opts: SolveOptions, cat: Catalog, current: Plan | None,
                  created_at: str, record: Progress, bound: float | None, why: str) -> Plan:
    """The quick pass's plan as the answer (the full model gave nothing cheaper, or nothing, in time), against
    the full model's bound where one holds for the fleet; without binding rows, marginal values or baselines,
    which would describe the quick pass's smaller model, not the fleet."""
    sol = quick.solution
    gap = None
    if bound is not None and sol.objective is not None:
        bound = min(bound, sol.objective)
        gap = max(0.0, (sol.objective - bound) / max(abs(sol.objective), 1e-9))
    status: Status = "optimal" if gap is not None and gap <= opts.relative_gap + 1e-12 else "feasible"
    sol = replace(sol, status=status, best_bound=bound, relative_gap=gap,
                  message=f"greedy plan of unified single-stage replicas ({why})")
    record.report(sol.objective, bound, "answer")
    record.close("answer")
    note = Finding(kind="note", constraint="time_limit", message=(
        f"the plan uses unified single-stage replicas only: {why} within {fleet.planner.time_limit_s:g} s; "
        "binding rows, marginal values and baselines were skipped; raise planner.time_limit_s for a plan over "
        "every configuration"))
    plan = assemble_plan(fleet, quick.inputs, sol, opts, cat, [], [note], current, created_at, record)
    return with_billing(plan, quick.inputs.problem, sol.replicas, fleet, cat)


def _no_solution(sol: Solution, opts: SolveOptions) -> str:
    """Why the solver returned no plan: its time ran out, or it failed (with its own message)."""
    if sol.status == "time_limit_no_solution":
        return f"the solver found no plan within {opts.time_limit_s:g} s; raise planner.time_limit_s"
    detail = f": {sol.message}" if sol.message else ""
    return f"the solver stopped after {sol.solve_seconds:.1f} s without a plan ({sol.status}{detail})"


def _solved_cost(sol: Solution) -> float | None:
    """The plan's $/h when the solver found one, else None."""
    if sol.status in ("optimal", "feasible") and sol.cost_usd_per_hour is not None:
        return sol.cost_usd_per_hour
    return None


def _needless_pipelines(inputs: PlanInputs, keys: Collection[str]) -> set[str]:
    """Pipeline columns among ``keys`` whose model has a candidate of the same device, TP and role without a
    pipeline (it fits and meets the SLO without one)."""
    flat = {(c.service.id, c.configuration.device, c.configuration.tp, c.configuration.role)
            for c in inputs.candidates.values() if c.configuration.pp == 1}
    out = set()
    for k in keys:
        c = inputs.candidates[k]
        if c.configuration.pp > 1 and (c.service.id, c.configuration.device, c.configuration.tp,
                                       c.configuration.role) in flat:
            out.add(k)
    return out


def _prefer_no_pipelines(inputs: PlanInputs, sol: Solution, opts: SolveOptions, deadline: Deadline,
                         min_s: float = 0.0) -> tuple[PlanInputs, Solution, list[Finding]]:
    """A pipeline where the model fits without one stays only when it is cheaper: the plan is solved again
    without such pipelines and that plan is taken unless it costs more than the gap; otherwise a finding says
    what the pipelines save. A plan solved service by service solves only the services that ran such pipelines
    again (replan.without_columns); else the whole fleet is solved again, only when ``deadline`` leaves it
    ``min_s`` past building its column table. When neither finds a plan, a finding says the pipelines were not
    compared."""
    used = _needless_pipelines(inputs, [k for k, n in sol.replicas.items() if n > 0])
    if not used:
        return inputs, sol, []
    drop = _needless_pipelines(inputs, [c.key for c in inputs.problem.columns])
    flat = replace(inputs.problem, columns=tuple(c for c in inputs.problem.columns if c.key not in drop))
    # Solved service by service, only the services that ran such pipelines need solving again.
    alt = without_columns(inputs.problem, sol, flat, {inputs.candidates[k].service.id for k in used}, opts,
                          deadline)
    if alt is None and deadline.remaining() >= min_s + TABLE_S_PER_COLUMN * len(flat.columns):
        alt = solve(flat, opts, deadline=deadline)
        if sol.best_bound is not None:
            # The first solve's bound holds here too (no plan of fewer columns beats the whole fleet's optimum),
            # and a re-solve in half the time left may prove less: 100 × 12 × 30 with fixed pools at 400 s
            # reported $897.74/h where the first solve had proven $906.30/h.
            alt = with_lower_bound(alt, sol.best_bound, opts.relative_gap)
    cost, alt_cost = _solved_cost(sol), _solved_cost(alt) if alt is not None else None
    if alt is not None and alt_cost is not None and cost is not None \
            and alt_cost <= cost * (1 + opts.relative_gap) + 1e-9:
        return replace(inputs, problem=flat), alt, []
    out: list[Finding] = []
    for k in sorted(used):
        c = inputs.candidates[k]
        label = c.configuration.label()
        out.append(pipeline_finding(c.service.id, label, alt_cost - cost, cost) if alt_cost is not None
                   and cost is not None else pipeline_unchecked_finding(c.service.id, label))
    return inputs, sol, out


def fleet_planner(*, catalog: Catalog | None = None, perf: PerfModel | None = None, backend: str | None = None,
                  baselines: bool = True, marginals: bool = True, base_dir: Path | None = None,
                  created_at: str = "") -> Planner:
    """``plan_fleet`` with these options, as the :class:`planner.ports.Planner` that loops and front doors call."""

    def planner(fleet: FleetSpec, *, current: Plan | None = None) -> Plan:
        return plan_fleet(fleet, current=current, catalog=catalog, perf=perf, backend=backend, baselines=baselines,
                          marginals=marginals, base_dir=base_dir, created_at=created_at)

    return planner


def _shapes(inputs: PlanInputs) -> dict[str, Shape]:
    """Each column's device type, TP, PP and whether it offloads (what the baselines restrict on)."""
    return {key: Shape(c.configuration.device, c.configuration.tp, c.configuration.pp,
                       c.configuration.memory_devices > 0) for key, c in inputs.candidates.items()}


def _baselines(inputs: PlanInputs, opts: SolveOptions, deadline: Deadline) -> list[Baseline]:
    """Best single-device-type plans: one config per service, and free TP/PP/roles (homogeneous)."""
    shapes = _shapes(inputs)
    single = single_type(inputs.problem, shapes, opts, deadline.share(0.3))
    homog = homogeneous(inputs.problem, shapes, opts, deadline)
    return [_baseline("single-type", single, "one device type, unified replicas, one TP/PP per service", inputs),
            _baseline("homogeneous", homog, "one device type, free TP/PP and roles", inputs)]


def _baseline(name: str, best: TypePlan | None, description: str, inputs: PlanInputs) -> Baseline:
    """A baseline row: the cheapest device type found, or infeasible when none serves every service."""
    if best is None:
        return Baseline(name=name, description="no single device type serves every service (or none was "
                                               "settled in time)", cost_usd_per_hour=None, feasible=False)
    gap = best.gap
    proof = "" if gap is not None and gap <= 1e-9 else (
        "; not proven: it may be lower by up to " + ("an unknown amount" if gap is None else f"{gap:.2%}"))
    devices = _devices_by_type(inputs, best.replicas)
    return Baseline(name=f"{name}:{best.device}", cost_usd_per_hour=round(best.cost, 4), feasible=True,
                    devices_by_type=devices, relative_gap=None if gap is None else round(gap, 6),
                    description=f"{description}; availability, zone spread and power limits lifted{proof}")


def _devices_by_type(inputs: PlanInputs, replicas: Mapping[str, int]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for key, n in replicas.items():
        if n <= 0:
            continue
        c = inputs.candidates[key]
        out[c.configuration.device] += n * c.configuration.devices
        if c.configuration.memory_device:
            out[c.configuration.memory_device] += n * c.configuration.memory_devices
    return dict(sorted(out.items()))


def plan_id(fleet_name: str, groups: Sequence[ReplicaGroup]) -> str:
    """Content address of a plan: same fleet and same replicas give the same id."""
    canon = json.dumps([g.model_dump(mode="json", exclude={"nodes"}) for g in groups], sort_keys=True)
    return "plan-" + hashlib.sha256(f"{fleet_name}\n{canon}".encode()).hexdigest()[:12]


def assemble_plan(fleet: FleetSpec, inputs: PlanInputs, sol: Solution, opts: SolveOptions, cat: Catalog,
                  baselines: list[Baseline], findings: list[Finding], current: Plan | None,
                  created_at: str, progress: Progress | None = None) -> Plan:
    """Turn a MILP solution into the Plan a platform team reads (with the progress of its solve, if given)."""
    rates = {d.service: d.bucket_rates_rps for d in inputs.problem.demands}
    rows: list[tuple[Candidate, int, list[BucketLoad], float]] = []
    for key, n in sorted(sol.replicas.items()):
        if n <= 0:
            continue
        c = inputs.candidates[key]
        load, busy = _group_load(c, inputs.buckets[c.service.id], rates[c.service.id], sol)
        rows.append((c, n, load, min(busy / n, 1.0)))
    notes: list[tuple[ModelErrorBand | None, float | None]] = [(None, None)] * len(rows)
    if inputs.perf is not None and inputs.calibration is not None:
        notes = groups_notes(inputs.perf, cat, inputs.calibration, [
            GroupLoad(c, inputs.buckets[c.service.id], rates[c.service.id], load, n) for c, n, load, _ in rows])
    groups = [ReplicaGroup(
        service=c.service.id, pool=c.pool.id, memory_pool=c.memory_pool.id if c.memory_pool else None,
        configuration=c.configuration, replicas=n, cost_usd_per_hour=round(c.usd_per_hour * n, 4),
        expected_watts=round(n * (c.column.idle_watts + util * (c.column.active_watts - c.column.idle_watts)), 1),
        utilisation=round(util, 4), load=load, error_band=band, utilisation_at_p90_error=util90)
        for (c, n, load, util), (band, util90) in zip(rows, notes, strict=True)]
    devices_by_pool: dict[str, int] = defaultdict(int)
    for g in groups:
        devices_by_pool[g.pool] += g.replicas * g.configuration.devices
        if g.memory_pool:
            devices_by_pool[g.memory_pool] += g.replicas * g.configuration.memory_devices
    tokens_per_hour = sum(d.tokens_per_s for d in inputs.problem.demands) * 3600
    snapshot = fleet_snapshot(fleet)
    cost = sol.cost_usd_per_hour or 0.0
    report = SolverReport(backend=opts.backend, status=sol.status, objective=sol.objective,
                          best_bound=sol.best_bound, relative_gap=sol.relative_gap,
                          solve_seconds=round(sol.solve_seconds, 4), variables=sol.variables,
                          constraints=sol.constraints, candidates=len(inputs.candidates),
                          candidates_pruned=inputs.pruned, backends=sol.backends,
                          progress=[SolverProgress(seconds=p.seconds, incumbent=p.incumbent, bound=p.bound,
                                                   stage=p.stage) for p in (progress.points if progress else [])],
                          seconds=round(progress.clock.now() - progress.start, 4) if progress else 0.0)
    return Plan(
        id=plan_id(fleet.name, groups), fleet=fleet.name, created_at=created_at,
        previous_plan_id=current.id if current is not None else None,
        replica_groups=groups, cost_usd_per_hour=round(cost, 4),
        usd_per_million_tokens=round(cost / tokens_per_hour * 1e6, 4) if tokens_per_hour > 0 else None,
        devices_by_type=_devices_by_type(inputs, sol.replicas), devices_by_pool=dict(sorted(devices_by_pool.items())),
        nodes_by_pool={k: v for k, v in sorted(sol.nodes.items()) if v > 0},
        watts_by_power_domain={k: round(v, 1) for k, v in sorted(sol.expected_watts.items())},
        solver=report, baselines=baselines, findings=[*findings, *plan_findings(
            fleet.planner, inputs.problem.headroom,
            {f"{g.service} {g.pool} {g.configuration.label()}": g.utilisation_at_p90_error for g in groups},
            cross_zone_usd_per_hour(inputs.problem, sol))],
        demand=[ServiceDemand(service=s.id, rate_rps=s.traffic.rate_rps, buckets=inputs.buckets[s.id])
                for s in fleet.services],
        fleet_digest=fleet_digest(fleet, snapshot), fleet_snapshot=snapshot)


def _group_load(c: Candidate, buckets: Sequence[LengthBucket], rates: Sequence[float],
                sol: Solution) -> tuple[list[BucketLoad], float]:
    """A column's share of each bucket in a solution, and the replicas' worth of load it carries."""
    key = c.column.key
    load = []
    busy = 0.0
    for b_idx, b in enumerate(buckets):
        ps = sol.prefill_share.get((key, b_idx), 0.0)
        ds = sol.decode_share.get((key, b_idx), 0.0)
        if ps > 1e-9 or ds > 1e-9:
            load.append(BucketLoad(input_tokens=b.input_tokens, output_tokens=b.output_tokens,
                                   prefill_share=round(min(ps, 1.0), 6), decode_share=round(min(ds, 1.0), 6)))
        cap = c.column.capacity_rps[b_idx]
        if cap > 0:
            share = ps if c.configuration.role is Role.PREFILL else ds
            busy += rates[b_idx] * share / cap
    return load, busy


def serving_replicas(plan: Plan) -> Mapping[str, int]:
    """Replicas that produce tokens (unified, decode, decode+offload) per service."""
    out: dict[str, int] = defaultdict(int)
    for g in plan.replica_groups:
        if g.configuration.role in _SERVING:
            out[g.service] += g.replicas
    return dict(out)
