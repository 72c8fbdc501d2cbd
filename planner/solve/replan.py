"""Some services of a plan solved service by service, solved again alone while the others keep their parts.

A plan solved service by service (every stage of its solve ran per service: no repair, no whole model) holds
each service's own best plan, and the services share only pool and power rows. When a few services lose
columns, only their best plans change: each is solved again alone, and where the new plans fit beside the
others' parts, the union is the new fleet's plan. The plan's bound still holds (the fleet lost columns, so no
plan got cheaper); its gap widens by what the services' new plans cost more.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import replace

from planner.clock import Deadline
from planner.solve.incumbent import restrict
from planner.solve.problem import (
    Problem,
    Solution,
    SolveOptions,
    Status,
    expected_watts,
    nodes_used,
    plan_cost_usd_per_hour,
    pool_usage,
)
from planner.solve.prune import prune_roomy_pools
from planner.solve.strategies.by_service import Shares, overused, union
from planner.solve.strategies.services import decomposable, service_problem


def solved_by_service(solution: Solution) -> bool:
    """Whether every stage of the plan's solve ran per service (the backends of its stages say)."""
    return bool(solution.backends) and all(k.startswith("services/") for k in solution.backends)


def beside_others(problem: Problem, solution: Solution, keys: Collection[str],
                  new: Sequence[Solution]) -> tuple[dict[str, int], Shares, Shares] | None:
    """The plan's replicas and shares with those of the columns ``keys`` replaced by the plans ``new``; None
    where they overrun a pool or power domain of ``problem``."""
    mine = set(keys)
    others = replace(solution, replicas={k: n for k, n in solution.replicas.items() if k not in mine},
                     prefill_share={kb: v for kb, v in solution.prefill_share.items() if kb[0] not in mine},
                     decode_share={kb: v for kb, v in solution.decode_share.items() if kb[0] not in mine})
    replicas, pre, dec = union([others, *new])
    return None if any(overused(problem, replicas, pre | dec)) else (replicas, pre, dec)


def without_columns(problem: Problem, solution: Solution, fewer: Problem, services: Collection[str],
                    options: SolveOptions, deadline: Deadline) -> Solution | None:
    """The plan of ``fewer`` (``problem`` less some columns of ``services``) with those services solved again
    alone, each in an even share of the time left, and the others' parts kept. None where the plan was not
    solved by service, the fleet does not fall apart into services, a service has no plan in its time, or the
    new plans overrun a pool or power domain beside the others."""
    if solution.objective is None or not solved_by_service(solution) or not decomposable(fewer):
        return None
    todo = [i for i, d in enumerate(fewer.demands) if d.service in services]
    before = {d.service: i for i, d in enumerate(problem.demands)}
    dropped: set[str] = set()
    objective = solution.objective
    new: list[Solution] = []
    for k, i in enumerate(todo):
        old = service_problem(problem, before[fewer.demands[i].service])
        part = restrict(solution, old, old)
        alt = _solve(prune_roomy_pools(service_problem(fewer, i)), options, deadline.share(1.0 / (len(todo) - k)))
        if part is None or part.objective is None or alt.objective is None:
            return None
        dropped |= {c.key for c in old.columns}
        objective += alt.objective - part.objective
        new.append(alt)
    fits = beside_others(fewer, solution, dropped, new)
    if fits is None:
        return None
    replicas, pre, dec = fits
    bound = None if solution.best_bound is None else min(objective, solution.best_bound)
    gap = None if bound is None else max(0.0, (objective - bound) / max(abs(objective), 1e-9))
    status: Status = "optimal" if gap is not None and gap <= options.relative_gap + 1e-12 else "feasible"
    nodes = nodes_used(fewer, pool_usage(fewer, replicas))
    return replace(solution, status=status, objective=objective, best_bound=bound, relative_gap=gap,
                   replicas=replicas, prefill_share=pre, decode_share=dec,
                   nodes={p: n for p, n in nodes.items() if n > 0},
                   expected_watts=expected_watts(fewer, replicas, pre | dec, nodes),
                   cost_usd_per_hour=plan_cost_usd_per_hour(fewer, replicas),
                   message=f"{solution.message}; {len(todo)} services solved again without some columns")


def _solve(problem: Problem, options: SolveOptions, deadline: Deadline) -> Solution:
    # Imported here: the strategies import this module's neighbours.
    from planner.solve.strategies.choose import solve

    return solve(problem, options, deadline=deadline)
