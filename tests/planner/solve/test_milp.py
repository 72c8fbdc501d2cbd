"""The fleet MILP against optima found by enumerating replica counts, and its explanations."""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import replace

import numpy as np
import pytest
from scipy.optimize import linprog

from planner.schema import Role
from planner.solve import (
    Column,
    Demand,
    PoolSupply,
    PowerBudget,
    Problem,
    SolveOptions,
    explain_infeasible,
    marginal_values,
    prune_dominated,
    solve,
)

EXACT = SolveOptions(relative_gap=0.0, time_limit_s=30)


def _role_class(c: Column) -> str:
    return "unified" if c.role is Role.UNIFIED else ("prefill" if c.role is Role.PREFILL else "decode")


def _shares_feasible(problem: Problem, n: dict[str, int], nodes: dict[str, int],
                     classes: frozenset[str] | None = None) -> bool:
    """Is there a load split that the fixed replica counts can carry, with shares only on role ``classes``
    (all when None)? An LP written from the problem's words: cover, same-zone hand-off, capacity, power."""
    rates = {d.service: d.bucket_rates_rps for d in problem.demands}
    zone = {p.id: p.zone for p in problem.pools}
    var: dict[tuple[str, int], int] = {}
    for c in problem.columns:
        for b, cap in enumerate(c.capacity_rps):
            if cap > 0 and rates[c.service][b] > 0 and (classes is None or _role_class(c) in classes):
                var[(c.key, b)] = len(var)
    a_eq, b_eq, a_ub, b_ub = [], [], [], []
    for d in problem.demands:  # a prompt prefilled in a zone is decoded in that zone
        for b, rate in enumerate(d.bucket_rates_rps):
            for g in {zone[c.pool] for c in problem.columns}:
                row = np.zeros(len(var))
                for c in problem.columns:
                    if c.service == d.service and zone[c.pool] == g and (c.key, b) in var:
                        row[var[(c.key, b)]] = {"prefill": 1.0, "decode": -1.0}.get(_role_class(c), 0.0)
                if rate > 0 and row.any() and not d.cross_zone_handoff:
                    a_eq.append(row)
                    b_eq.append(0.0)
    for d in problem.demands:
        for b, rate in enumerate(d.bucket_rates_rps):
            if rate <= 0:
                continue
            for phase in (Role.PREFILL, Role.DECODE):
                row = np.zeros(len(var))
                for c in problem.columns:
                    ok = c.role is Role.UNIFIED or c.role is phase or (
                        phase is Role.DECODE and c.role is Role.DECODE_OFFLOAD)
                    if c.service == d.service and ok and (c.key, b) in var:
                        row[var[(c.key, b)]] = 1.0
                if not row.any():
                    return False
                a_eq.append(row)
                b_eq.append(1.0)
    pools = {p.id: p for p in problem.pools}
    power = {k.id: np.zeros(len(var)) for k in problem.power_budgets}
    fixed_w = {k.id: 0.0 for k in problem.power_budgets}
    for c in problem.columns:
        row = np.zeros(len(var))
        for b in range(len(c.capacity_rps)):
            if (c.key, b) in var:
                row[var[(c.key, b)]] = rates[c.service][b] / c.capacity_rps[b]
        a_ub.append(row)
        b_ub.append(problem.headroom * n.get(c.key, 0))
        dom = pools[c.pool].power_domain
        if dom in power:
            power[dom] += row * (c.active_watts - c.idle_watts)
            fixed_w[dom] += n.get(c.key, 0) * c.idle_watts
    for k in problem.power_budgets:
        idle_nodes = sum(p.node_idle_watts * nodes[p.id] for p in problem.pools if p.power_domain == k.id)
        a_ub.append(power[k.id])
        b_ub.append(k.expected_share * k.budget_watts - fixed_w[k.id] - idle_nodes)
    res = linprog(np.zeros(len(var)), A_ub=np.array(a_ub) if a_ub else None, b_ub=b_ub or None,
                  A_eq=np.array(a_eq) if a_eq else None, b_eq=b_eq or None, bounds=(0, 1), method="highs")
    return bool(res.status == 0)


def brute_force_cost(problem: Problem, max_replicas: int) -> float | None:
    """Cheapest $/h + churn over every replica vector up to max_replicas per column, or None."""
    keys = [c.key for c in problem.columns]
    cols = {c.key: c for c in problem.columns}
    pools = {p.id: p for p in problem.pools}
    zone = {p.id: p.zone for p in problem.pools}
    priced = []
    for counts in itertools.product(range(max_replicas + 1), repeat=len(keys)):
        n = dict(zip(keys, counts, strict=True))
        used = {p: 0 for p in pools}
        for k, r in n.items():
            used[cols[k].pool] += r * cols[k].devices
            mem = cols[k].memory_pool
            if mem is not None:
                used[mem] += r * cols[k].memory_devices
        nodes = {p: math.ceil(used[p] / pools[p].devices_per_node) for p in pools}
        if any((cap := pools[p].max_nodes) is not None and nodes[p] > cap for p in pools):
            continue
        cost = sum(
            pools[p].usd_per_device_hour * (used[p] if pools[p].billing == "device"
                                            else nodes[p] * pools[p].devices_per_node)
            for p in pools
        )
        cost += problem.churn_usd_per_replica_change * sum(
            abs(n.get(k, 0) - problem.current_replicas.get(k, 0)) for k in set(n) | set(problem.current_replicas))
        priced.append((cost, counts, nodes))
    priced.sort(key=lambda t: t[0])
    for cost, counts, nodes in priced:
        n = dict(zip(keys, counts, strict=True))
        ok = True
        for d in problem.demands:
            serving = [k for k in keys if cols[k].service == d.service and cols[k].role is not Role.PREFILL]
            if sum(n[k] for k in serving) < d.min_replicas:
                ok = False
            if len({zone[cols[k].pool] for k in serving if n[k] > 0}) < d.spread_zones:
                ok = False
        for kb in problem.power_budgets:
            plate = sum(p.nameplate_watts_per_node * nodes[p.id] for p in problem.pools if p.power_domain == kb.id)
            if plate > kb.oversubscription_ratio * kb.budget_watts + 1e-9:
                ok = False
        if ok and _zones_and_shares(problem, n, nodes):
            return cost
    return None


def _zones_and_shares(problem: Problem, n: dict[str, int], nodes: dict[str, int]) -> bool:
    """A load split exists, and (spread over zones) enough zones hold every role class that carries load."""
    d = problem.demands[0]
    zone = {p.id: p.zone for p in problem.pools}
    classes = {_role_class(c) for c in problem.columns}
    if d.spread_zones <= 1 or len(classes) < 2:
        return _shares_feasible(problem, n, nodes)
    for k in range(1, len(classes) + 1):
        for used in itertools.combinations(sorted(classes), k):
            complete = [g for g in set(zone.values())
                        if all(any(n.get(c.key, 0) > 0 and zone[c.pool] == g and _role_class(c) == r
                                   for c in problem.columns) for r in used)
                        and any(n.get(c.key, 0) > 0 and zone[c.pool] == g and c.role is not Role.PREFILL
                                for c in problem.columns)]
            if len(complete) >= d.spread_zones and _shares_feasible(problem, n, nodes, frozenset(used)):
                return True
    return False


def _random_problem(seed: int) -> Problem:
    rng = random.Random(seed)
    pools = (
        PoolSupply("big-east", "east", "row", 4, rng.choice([1, 2, None]), 3.0, "device", 4 * 700 + 400, 200),
        PoolSupply("small-west", "west", "row", 2, rng.choice([1, 2, 3]), 0.8, rng.choice(["device", "node"]),
                   2 * 150 + 200, 100),
        PoolSupply("mem-east", "east", None, 4, 2, 1.2, "device", 4 * 400, 100),
    )
    buckets = 2
    rates = tuple(rng.choice([0.0, 1.0, 3.0, 6.0]) for _ in range(buckets))
    if not any(rates):
        rates = (2.0, 0.0)

    def caps(scale: float) -> tuple[float, ...]:
        return tuple(round(rng.uniform(0.5, 2.0) * scale, 3) if rng.random() > 0.15 else 0.0
                     for _ in range(buckets))

    cols = (
        Column("big-uni", "s", Role.UNIFIED, "big-east", 2, caps(8.0), 200, 900),
        Column("small-uni", "s", Role.UNIFIED, "small-west", 1, caps(2.0), 30, 120),
        Column("big-pre", "s", Role.PREFILL, "big-east", 1, caps(8.0), 100, 600),
        Column("small-dec", "s", Role.DECODE, "small-west", 1, caps(3.0), 30, 100),
        Column("big-off", "s", Role.DECODE_OFFLOAD, "big-east", 1, caps(9.0), 150, 600,
               memory_pool="mem-east", memory_devices=2),
    )
    budget = PowerBudget("row", rng.choice([2500.0, 4000.0, 9000.0]), rng.choice([1.0, 1.5]), rng.choice([0.8, 1.0]))
    demand = Demand("s", rates, ("short", "long"), min_replicas=rng.choice([0, 1, 2]),
                    spread_zones=rng.choice([1, 1, 2]))
    return Problem(pools, cols, (demand,), (budget,), headroom=rng.choice([0.8, 1.0]),
                   current_replicas={"big-uni": 1} if rng.random() < 0.3 else {},
                   churn_usd_per_replica_change=rng.choice([0.0, 0.05]))


@pytest.mark.parametrize("seed", range(12))
def test_matches_enumeration(seed: int) -> None:
    problem = _random_problem(seed)
    cap = 4
    enumerated = brute_force_cost(problem, max_replicas=cap)
    sol = solve(problem, EXACT)
    if sol.status == "infeasible":
        assert enumerated is None
        return
    assert sol.status == "optimal"
    assert sol.objective is not None
    if max(sol.replicas.values(), default=0) <= cap:
        # The MILP's plan lies inside the enumerated box, so the box's best must equal it.
        assert enumerated == pytest.approx(sol.objective, rel=1e-6, abs=1e-6)
    else:
        assert enumerated is None or enumerated >= sol.objective - 1e-6


def test_hand_solved_two_types() -> None:
    # 6 req/s: small does 2 req/s for $1.2, big 5 req/s for $2; 1 big + 1 small ($3.2) beats 3 small or 2 big.
    pools = (PoolSupply("s", "z", None, 1, None, 1.2), PoolSupply("b", "z", None, 1, None, 2.0))
    cols = (Column("s", "svc", Role.UNIFIED, "s", 1, (2.0,)), Column("b", "svc", Role.UNIFIED, "b", 1, (5.0,)))
    problem = Problem(pools, cols, (Demand("svc", (6.0,), ("all",), min_replicas=0),))
    sol = solve(problem, EXACT)
    assert sol.status == "optimal"
    assert sol.cost_usd_per_hour == pytest.approx(3.2)
    assert sol.replicas == {"s": 1, "b": 1}
    # The big replica carries between 4 and 5 of the 6 req/s; the small one the rest.
    assert 4 / 6 - 1e-6 <= sol.prefill_share[("b", 0)] <= 5 / 6 + 1e-6


def test_node_billing_rounds_up_to_whole_nodes() -> None:
    pools = (PoolSupply("p", "z", None, 8, 4, 1.0, "node"),)
    cols = (Column("c", "svc", Role.UNIFIED, "p", 1, (1.0,)),)
    sol = solve(Problem(pools, cols, (Demand("svc", (9.0,), min_replicas=0),)), EXACT)
    assert sol.replicas == {"c": 9}
    assert sol.nodes == {"p": 2}
    assert sol.cost_usd_per_hour == pytest.approx(16.0)


def test_disaggregated_cheaper_than_unified_when_phases_differ() -> None:
    pools = (PoolSupply("p", "z", None, 8, None, 1.0),)
    cols = (
        Column("uni", "svc", Role.UNIFIED, "p", 1, (1.0,)),
        Column("pre", "svc", Role.PREFILL, "p", 1, (4.0,)),
        Column("dec", "svc", Role.DECODE, "p", 1, (2.0,)),
    )
    sol = solve(Problem(pools, cols, (Demand("svc", (8.0,), min_replicas=0),)), EXACT)
    assert sol.replicas == {"pre": 2, "dec": 4}
    assert sol.decode_share[("dec", 0)] == pytest.approx(1.0)


def test_churn_keeps_current_plan_when_saving_is_small() -> None:
    pools = (PoolSupply("a", "z", None, 1, None, 1.0), PoolSupply("b", "z", None, 1, None, 0.9))
    cols = (Column("a", "svc", Role.UNIFIED, "a", 1, (1.0,)), Column("b", "svc", Role.UNIFIED, "b", 1, (1.0,)))
    base = Problem(pools, cols, (Demand("svc", (3.0,), min_replicas=0),), current_replicas={"a": 3})
    assert solve(base, EXACT).replicas == {"b": 3}
    sticky = replace(base, churn_usd_per_replica_change=0.1)
    sol = solve(sticky, EXACT)
    assert sol.replicas == {"a": 3}
    assert sol.objective == pytest.approx(3.0)


def test_spread_forces_second_zone() -> None:
    pools = (PoolSupply("e", "east", None, 1, None, 1.0), PoolSupply("w", "west", None, 1, None, 5.0))
    cols = (Column("e", "svc", Role.UNIFIED, "e", 1, (10.0,)), Column("w", "svc", Role.UNIFIED, "w", 1, (10.0,)))
    sol = solve(Problem(pools, cols, (Demand("svc", (1.0,), min_replicas=2, spread_zones=2),)), EXACT)
    assert sol.replicas == {"e": 1, "w": 1}


def test_power_budget_moves_load_to_efficient_device() -> None:
    pools = (PoolSupply("hot", "z", "row", 1, None, 1.0, "device", 1000, 0),
             PoolSupply("cool", "z", "row", 1, None, 1.5, "device", 400, 0))
    cols = (Column("hot", "svc", Role.UNIFIED, "hot", 1, (1.0,), 100, 1000),
            Column("cool", "svc", Role.UNIFIED, "cool", 1, (1.0,), 50, 400))
    demand = (Demand("svc", (4.0,), min_replicas=0),)
    free = solve(Problem(pools, cols, demand), EXACT)
    assert free.replicas == {"hot": 4}
    capped = solve(Problem(pools, cols, demand, (PowerBudget("row", 2500.0, 2.0),)), EXACT)
    assert capped.status == "optimal"
    assert capped.replicas == {"hot": 1, "cool": 3}
    assert capped.expected_watts["row"] <= 2500.0 + 1e-6


def test_uncovered_bucket_is_infeasible_and_explained() -> None:
    pools = (PoolSupply("p", "z", None, 8, None, 1.0),)
    cols = (Column("c", "chat", Role.UNIFIED, "p", 1, (5.0, 0.0)),)
    problem = Problem(pools, cols, (Demand("chat", (1.0, 2.0), ("short", "long-context")),))
    assert solve(problem).status == "infeasible"
    findings = explain_infeasible(problem)
    assert any("long-context" in f.message and "chat" in f.message and "SLO" in f.message for f in findings)


def test_pool_shortfall_is_named_with_numbers() -> None:
    pools = (PoolSupply("h100-east", "east", None, 8, 2, 4.0),)
    cols = (Column("c", "chat", Role.UNIFIED, "h100-east", 4, (1.0,)),)
    problem = Problem(pools, cols, (Demand("chat", (6.0,)),))
    assert solve(problem).status == "infeasible"
    findings = explain_infeasible(problem)
    pool = [f for f in findings if f.constraint == "pool[h100-east]"]
    assert len(pool) == 1
    # 6 replicas × 4 devices = 24 devices = 3 nodes of 8; 2 are available.
    assert "needs 3 nodes" in pool[0].message and "chat" in pool[0].message
    assert pool[0].value == pytest.approx(1.0)


def test_power_shortfall_is_named() -> None:
    pools = (PoolSupply("p", "z", "row", 1, None, 1.0, "device", 700, 0),)
    cols = (Column("c", "chat", Role.UNIFIED, "p", 1, (1.0,), 100, 700),)
    problem = Problem(pools, cols, (Demand("chat", (4.0,)),), (PowerBudget("row", 2000.0, 2.0),))
    assert solve(problem).status == "infeasible"
    findings = explain_infeasible(problem)
    power = [f for f in findings if f.constraint == "power_expected[row]"]
    assert power and power[0].value == pytest.approx(800.0, rel=1e-3)


def test_marginal_node_saving() -> None:
    pools = (PoolSupply("cheap", "z", None, 1, 2, 1.0), PoolSupply("dear", "z", None, 1, None, 3.0))
    cols = (Column("cheap", "svc", Role.UNIFIED, "cheap", 1, (1.0,)),
            Column("dear", "svc", Role.UNIFIED, "dear", 1, (1.0,)))
    problem = Problem(pools, cols, (Demand("svc", (4.0,)),))
    sol = solve(problem, EXACT)
    assert sol.cost_usd_per_hour == pytest.approx(8.0)
    found = [f for f in marginal_values(problem, sol, EXACT) if f.kind == "marginal"]
    assert len(found) == 1
    assert found[0].value == pytest.approx(2.0)
    assert "one more node in pool cheap saves $2.00/h" in found[0].message


def test_prune_dominated_keeps_optimum() -> None:
    pools = (PoolSupply("p", "z", None, 8, None, 1.0),)
    cols = (
        Column("tp1", "svc", Role.UNIFIED, "p", 1, (2.0, 1.0), 50, 300),
        Column("tp1-worse", "svc", Role.UNIFIED, "p", 1, (1.5, 1.0), 60, 300),
        Column("tp2", "svc", Role.UNIFIED, "p", 2, (5.0, 2.5), 100, 600),
        Column("tp1-copy", "svc", Role.UNIFIED, "p", 1, (2.0, 1.0), 50, 300),
        Column("tp1-dec", "svc", Role.DECODE, "p", 1, (1.0, 1.0), 50, 300),
    )
    problem = Problem(pools, cols, (Demand("svc", (7.0, 3.0), min_replicas=0),))
    pruned, count = prune_dominated(problem)
    assert count == 2
    assert [c.key for c in pruned.columns] == ["tp1", "tp2", "tp1-dec"]
    assert solve(pruned, EXACT).objective == pytest.approx(solve(problem, EXACT).objective)


def test_prune_keeps_running_columns() -> None:
    pools = (PoolSupply("p", "z", None, 8, None, 1.0),)
    cols = (Column("a", "svc", Role.UNIFIED, "p", 1, (2.0,)), Column("b", "svc", Role.UNIFIED, "p", 1, (1.0,)))
    problem = Problem(pools, cols, (Demand("svc", (1.0,)),), current_replicas={"b": 1})
    assert prune_dominated(problem)[1] == 0


@pytest.mark.parametrize("backend", ["cbc", "pulp-highs", "scip", "cpsat"])
def test_backends_agree_on_enumerated_instances(backend: str) -> None:
    for seed in range(4):
        problem = _random_problem(seed)
        ref = solve(problem, EXACT)
        other = solve(problem, replace(EXACT, backend=backend))  # type: ignore[arg-type]
        assert other.status == ref.status
        if ref.objective is not None:
            assert other.objective == pytest.approx(ref.objective, rel=1e-6)
