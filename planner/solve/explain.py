"""Explanations in words with their numbers: why a fleet has no plan (each family's structural check, then an
elastic re-solve whose slacks the families read), and what one more unit of a binding pool or power budget is
worth (each family's probe, solved again)."""

from __future__ import annotations

from planner.clock import Deadline
from planner.schema import Finding
from planner.solve.backends import backend_for
from planner.solve.formulation import FAMILIES, build, cover, handoff, min_replicas, spread
from planner.solve.problem import Problem, Solution, SolveOptions
from planner.solve.strategies.choose import solve


def structural_findings(problem: Problem) -> list[Finding]:
    """Rows no plan can meet whatever the pools hold: uncovered buckets first, then each service's floors."""
    out = [f for d in problem.demands for f in (*cover.structural(problem, d), *handoff.structural(problem, d))]
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


def marginal_values(problem: Problem, solution: Solution, options: SolveOptions | None = None) -> list[Finding]:
    """Binding pools and power budgets, each with what one more node or kilowatt would save per hour."""
    opts = options or SolveOptions()
    if solution.objective is None:
        return []
    base = solution.objective
    out: list[Finding] = []
    for family in FAMILIES:
        for probe in family.probes(problem, solution) if family.probes is not None else []:
            out.append(probe.binding)
            alt = solve(probe.relaxed, opts)
            if alt.objective is not None:
                saving = max(0.0, base - alt.objective)
                words = f"saves ${saving:.2f}/h" if saving >= 0.005 else "would not lower the cost"
                out.append(Finding(kind="marginal", constraint=probe.constraint, message=f"{probe.unit} {words}",
                                   value=saving))
    return out
