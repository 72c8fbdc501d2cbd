"""Explanations in words with their numbers: why a fleet has no plan (each family's structural check, then an
elastic re-solve whose slacks the families read), and what one more unit of a binding pool or power budget is
worth (each family's probe, solved again)."""

from __future__ import annotations

from dataclasses import replace

from planner.clock import Deadline
from planner.schema import Finding
from planner.solve.backends import backend_for
from planner.solve.formulation import FAMILIES, Probe, build, cover, handoff, min_replicas, spread
from planner.solve.problem import Problem, Solution, SolveOptions
from planner.solve.replan import beside_others, solved_by_service
from planner.solve.strategies.by_service import pruned_part
from planner.solve.strategies.choose import solve
from planner.solve.strategies.services import decomposable, service_problem


def power_structural(problem: Problem) -> list[Finding]:
    """Power domains whose budget cannot host a single node of any of their pools (so those pools are lost)."""
    out = []
    for k in problem.power_budgets:
        members = [p for p in problem.pools if p.power_domain == k.id and (p.max_nodes is None or p.max_nodes > 0)]
        plate_limit = k.oversubscription_ratio * k.budget_watts
        idle_limit = k.expected_share * k.budget_watts
        if not members or any(p.nameplate_watts_per_node <= plate_limit and p.node_idle_watts <= idle_limit
                              for p in members):
            continue
        smallest = min(members, key=lambda p: p.nameplate_watts_per_node)
        out.append(Finding(
            kind="infeasible", constraint=f"power_nameplate[{k.id}]", value=smallest.nameplate_watts_per_node,
            message=(f"power domain {k.id}: its {k.budget_watts:g} W budget cannot host one node of any of its "
                     f"pools ({', '.join(p.id for p in members)}): the smallest, {smallest.id}, has "
                     f"{smallest.nameplate_watts_per_node:.0f} W of nameplate against {plate_limit:.0f} W allowed "
                     f"({k.oversubscription_ratio:g}× the budget)")))
    return out


def structural_findings(problem: Problem) -> list[Finding]:
    """Rows no plan can meet whatever the pools hold: power domains that host nothing, uncovered buckets and
    hand-offs, then each service's floors."""
    out = power_structural(problem)
    out += [f for d in problem.demands for f in (*cover.structural(problem, d), *handoff.structural(problem, d))]
    for d in problem.demands:
        out += [*min_replicas.structural(problem, d), *spread.structural(problem, d)]
    return out


def explain_infeasible(problem: Problem, options: SolveOptions | None = None, *,
                       deadline: Deadline | None = None) -> list[Finding]:
    """Say which constraints make the fleet infeasible, in words with the numbers (elastic re-solve on the
    backend asked for, by ``deadline``: default options.time_limit_s from now)."""
    opts = options or SolveOptions()
    findings = structural_findings(problem)
    if any(f.constraint.startswith(("cover_", "handoff[")) for f in findings):
        return findings
    built = build(problem, elastic=True)
    backend = backend_for(opts.backend)
    raw = backend.solve(built.m, opts, deadline or Deadline.after(opts.time_limit_s))
    if raw.values is None:
        return findings or [Finding(kind="infeasible", constraint="model",
                                    message=f"the relaxed fleet has no solution either ({raw.message})")]
    v = raw.values
    replicas = {k: int(round(v[i])) for k, i in built.n.items()}
    explains = {kind: family for family in FAMILIES for kind in family.slacks}
    for name, idx in built.slack.items():
        excess = float(v[idx])
        if excess <= 1e-6:
            continue
        kind, target = name.split("[", 1)
        family = explains.get(kind)
        if family is not None and family.shortfall is not None:
            findings.append(family.shortfall(problem, kind, target.rstrip("]"), excess, replicas))
    if not findings:
        findings.append(Finding(kind="infeasible", constraint="model",
                                message="no single constraint explains it: the solver found no plan in time"))
    return findings


def marginal_values(problem: Problem, solution: Solution, options: SolveOptions | None = None, *,
                    deadline: Deadline | None = None) -> list[Finding]:
    """Binding pools and power budgets, each with what one more node or kilowatt would save per hour.

    Each loosened problem is solved from the plan (which still fits it) in an even share of what is left of
    ``deadline`` (default: options.time_limit_s from now); a probe without time left says so. A probe of one
    service's row is solved for that service alone where the plan was solved by service (_probe_alone)."""
    # Each probe starts from the plan, so HiGHS has the plan to beat: it is left to prove the bound.
    opts = replace(options or SolveOptions(), highs_heuristics=False)
    if solution.objective is None:
        return []
    until = deadline or Deadline.after(opts.time_limit_s)
    base = solution.objective
    probes = [probe for family in FAMILIES for probe in (family.probes(problem, solution) if family.probes else [])]
    out: list[Finding] = []
    for k, probe in enumerate(probes):
        out.append(probe.binding)
        if until.remaining() <= 0:
            out.append(Finding(kind="note", constraint=probe.constraint,
                               message=f"{probe.unit}: not valued (no time left)"))
            continue
        share = until.share(1.0 / (len(probes) - k))
        found = _probe_alone(problem, solution, probe, opts, share)
        if found is None:
            alt = solve(probe.relaxed, opts, deadline=share, start=solution)
            if alt.objective is None:
                continue
            found = max(0.0, base - alt.objective), _proven(alt, opts)
        saving, proven = found
        words = f"saves ${saving:.2f}/h" if saving >= 0.005 else "would not lower the cost"
        if not proven:
            words += " (found in its time share, not proven)"
        out.append(Finding(kind="marginal", constraint=probe.constraint, message=f"{probe.unit} {words}",
                           value=saving))
    return out


def _proven(solution: Solution, options: SolveOptions) -> bool:
    return solution.relative_gap is not None and solution.relative_gap <= options.relative_gap + 1e-12


def _probe_alone(problem: Problem, solution: Solution, probe: Probe, options: SolveOptions,
                 deadline: Deadline) -> tuple[float, bool] | None:
    """A probe of one service's row, solved for that service alone: (saving, proven), or None where the plan
    is not the union of the services' own plans, or the service's new plan does not fit beside the others'.

    A plan solved service by service (every stage of its solve ran per service, no repair, no whole model)
    holds each service's own best plan, and the services share only pool and power rows. Loosening one
    service's row then changes only that service's best plan: the others' plans stay, and where its new plan
    fits beside them the saving is its part of the plan less its new optimum. (Any plan that fits is a plan
    of the loosened fleet, so the saving is never overstated; it is proven when the service's solve and the
    plan both are.) The service's problem is pruned as in the pass by service (by_service.pruned_part)."""
    if probe.service is None or not solved_by_service(solution) or not decomposable(probe.relaxed):
        return None
    i = next(j for j, d in enumerate(probe.relaxed.demands) if d.service == probe.service)
    whole = service_problem(probe.relaxed, i)
    sub, part = pruned_part(solution, whole)
    if part is None or part.objective is None:
        return None
    alt = solve(sub, options, deadline=deadline, start=part)
    if alt.objective is None:
        return None
    if beside_others(probe.relaxed, solution, [c.key for c in whole.columns], [alt]) is None:
        return None
    return max(0.0, part.objective - alt.objective), _proven(alt, options) and _proven(solution, options)
