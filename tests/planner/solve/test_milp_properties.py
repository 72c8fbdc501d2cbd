"""Properties of the fleet MILP on random small fleets: plans meet every constraint, monotone costs, backends agree."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planner.schema import Role
from planner.solve import Column, Demand, PoolSupply, PowerBudget, Problem, Solution, SolveOptions, solve

EXACT = SolveOptions(relative_gap=0.0, time_limit_s=20)
TOL = 1e-6
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ZONES = ("east", "west")
ROLES = (Role.UNIFIED, Role.UNIFIED, Role.PREFILL, Role.DECODE, Role.DECODE_OFFLOAD)


@st.composite
def problems(draw: st.DrawFn) -> Problem:
    n_pools = draw(st.integers(1, 3))
    pools = []
    for i in range(n_pools):
        dpn = draw(st.sampled_from([1, 2, 4, 8]))
        pools.append(PoolSupply(
            id=f"p{i}", zone=ZONES[i % 2] if i else draw(st.sampled_from(ZONES)),
            power_domain=draw(st.sampled_from([None, "row"])),
            devices_per_node=dpn, max_nodes=draw(st.sampled_from([None, 1, 3, 6, 12])),
            usd_per_device_hour=draw(st.sampled_from([0.5, 0.8, 1.0, 2.5, 4.0])),
            billing=draw(st.sampled_from(["device", "device", "node"])),
            nameplate_watts_per_node=dpn * 500.0 + 300.0, node_idle_watts=draw(st.sampled_from([0.0, 150.0])),
        ))
    mem_pool = PoolSupply("mem", "east", None, 4, None, 0.6)
    buckets = draw(st.integers(1, 3))
    services = ["a", "b"][: draw(st.integers(1, 2))]
    demands = tuple(
        Demand(s, tuple(draw(st.sampled_from([0.0, 0.5, 2.0, 5.0, 9.0])) for _ in range(buckets)),
               min_replicas=draw(st.integers(0, 2)), spread_zones=draw(st.sampled_from([1, 1, 1, 2])))
        for s in services
    )
    cols = []
    for s in services:
        for j in range(draw(st.integers(1, 5))):
            # Each service's first column serves every bucket, so most drawn fleets have a plan to check.
            role = draw(st.sampled_from(ROLES)) if j else Role.UNIFIED
            pool = draw(st.sampled_from(pools))
            devices = draw(st.sampled_from([1, 2, 4]))
            levels = [0.0, 0.7, 1.5, 3.0, 6.0] if j else [0.7, 1.5, 3.0, 6.0]
            caps = tuple(draw(st.sampled_from(levels)) * devices ** 0.8 for _ in range(buckets))
            idle = 60.0 * devices
            cols.append(Column(
                key=f"{s}-{j}", service=s, role=role, pool=pool.id, devices=devices, capacity_rps=caps,
                idle_watts=idle, active_watts=idle + draw(st.sampled_from([0.0, 200.0, 500.0])) * devices,
                memory_pool="mem" if role is Role.DECODE_OFFLOAD else None,
                memory_devices=draw(st.integers(1, 2)) if role is Role.DECODE_OFFLOAD else 0,
            ))
    budgets: tuple[PowerBudget, ...] = ()
    if draw(st.booleans()):
        budgets = (PowerBudget("row", draw(st.sampled_from([1500.0, 4000.0, 20000.0])),
                               draw(st.sampled_from([1.0, 1.5])), draw(st.sampled_from([0.8, 1.0]))),)
    current = {c.key: 1 for c in cols[:1]} if draw(st.booleans()) else {}
    return Problem(
        pools=(*pools, mem_pool), columns=tuple(cols), demands=demands, power_budgets=budgets,
        headroom=draw(st.sampled_from([0.7, 0.85, 1.0])), current_replicas=current,
        churn_usd_per_replica_change=draw(st.sampled_from([0.0, 0.0, 0.1])),
    )


def violations(problem: Problem, sol: Solution) -> list[str]:
    """Every way the plan breaks the problem, checked from the problem's words, not the solver's model."""
    out: list[str] = []
    pools = {p.id: p for p in problem.pools}
    cols = {c.key: c for c in problem.columns}
    n = {k: sol.replicas.get(k, 0) for k in cols}
    if any(v < 0 for v in n.values()):
        out.append("negative replicas")
    for d in problem.demands:
        for b, rate in enumerate(d.bucket_rates_rps):
            if rate <= 0:
                continue
            for name, shares in (("prefill", sol.prefill_share), ("decode", sol.decode_share)):
                total = sum(v for (k, bb), v in shares.items() if bb == b and cols[k].service == d.service)
                if abs(total - 1.0) > 1e-5:
                    out.append(f"{d.service} bucket {b} {name} covered {total}")
        serving = [c for c in problem.columns if c.service == d.service and c.role is not Role.PREFILL]
        if sum(n[c.key] for c in serving) < d.min_replicas:
            out.append(f"{d.service} min replicas")
        zones = {pools[c.pool].zone for c in serving if n[c.key] > 0}
        if d.spread_zones > 1 and len(zones) < d.spread_zones:
            out.append(f"{d.service} spread")
    rates = {d.service: d.bucket_rates_rps for d in problem.demands}
    busy: dict[str, float] = {}
    for c in problem.columns:
        for (k, b), v in [*sol.prefill_share.items(), *sol.decode_share.items()]:
            if k == c.key and c.capacity_rps[b] <= 0 and v > 1e-9:
                out.append(f"{k} serves bucket {b} it cannot")
        shares = sol.decode_share if c.role is not Role.PREFILL else sol.prefill_share
        busy[c.key] = sum(rates[c.service][b] / c.capacity_rps[b] * shares.get((c.key, b), 0.0)
                          for b in range(len(c.capacity_rps)) if c.capacity_rps[b] > 0)
        if busy[c.key] > problem.headroom * n[c.key] + 1e-5:
            out.append(f"{c.key} over capacity {busy[c.key]} > {problem.headroom} × {n[c.key]}")
    used = {p: 0 for p in pools}
    for c in problem.columns:
        used[c.pool] += n[c.key] * c.devices
        if c.memory_pool:
            used[c.memory_pool] += n[c.key] * c.memory_devices
    nodes = {p: math.ceil(used[p] / pools[p].devices_per_node) for p in pools}
    for p, q in pools.items():
        if q.max_nodes is not None and nodes[p] > q.max_nodes:
            out.append(f"pool {p} needs {nodes[p]} nodes > {q.max_nodes}")
    for dom in problem.power_budgets:
        watts = sum(n[c.key] * c.idle_watts + busy[c.key] * (c.active_watts - c.idle_watts)
                    for c in problem.columns if pools[c.pool].power_domain == dom.id)
        watts += sum(q.node_idle_watts * nodes[p] for p, q in pools.items() if q.power_domain == dom.id)
        if watts > dom.expected_share * dom.budget_watts + 1e-4:
            out.append(f"domain {dom.id} expected {watts} W")
        plate = sum(q.nameplate_watts_per_node * nodes[p] for p, q in pools.items() if q.power_domain == dom.id)
        if plate > dom.oversubscription_ratio * dom.budget_watts + 1e-6:
            out.append(f"domain {dom.id} nameplate {plate} W")
    cost = sum(q.usd_per_device_hour * (used[p] if q.billing == "device" else nodes[p] * q.devices_per_node)
               for p, q in pools.items())
    if sol.cost_usd_per_hour is None or abs(cost - sol.cost_usd_per_hour) > 1e-6 * max(1.0, cost):
        out.append(f"reported cost {sol.cost_usd_per_hour} != {cost}")
    churn = problem.churn_usd_per_replica_change * sum(
        abs(n.get(k, 0) - problem.current_replicas.get(k, 0)) for k in set(n) | set(problem.current_replicas))
    if sol.objective is None or abs(cost + churn - sol.objective) > 1e-5 * max(1.0, cost):
        out.append(f"objective {sol.objective} != cost {cost} + churn {churn}")
    return out


@FAST
@given(problems())
def test_every_plan_meets_every_constraint(problem: Problem) -> None:
    sol = solve(problem, EXACT)
    assert sol.status in ("optimal", "infeasible")
    if sol.status == "optimal":
        assert violations(problem, sol) == []
        assert sol.relative_gap is not None and sol.relative_gap <= 1e-6


@FAST
@given(problems(), st.data())
def test_more_columns_or_nodes_never_cost_more(problem: Problem, data: st.DataObject) -> None:
    base = solve(problem, EXACT)
    if base.objective is None:
        return
    extra_col = replace(problem.columns[0], key="extra",
                        capacity_rps=tuple(c * data.draw(st.sampled_from([0.5, 1.0, 2.0]))
                                           for c in problem.columns[0].capacity_rps))
    pool = data.draw(st.sampled_from(problem.pools))
    bigger_pool = replace(pool, max_nodes=None if pool.max_nodes is None else pool.max_nodes + 1)
    for more in (
        replace(problem, columns=(*problem.columns, extra_col)),
        replace(problem, pools=tuple(bigger_pool if p.id == pool.id else p for p in problem.pools)),
    ):
        sol = solve(more, EXACT)
        assert sol.objective is not None
        assert sol.objective <= base.objective + 1e-6 * max(1.0, base.objective)


@FAST
@given(problems(), st.data())
def test_higher_rate_never_costs_less(problem: Problem, data: st.DataObject) -> None:
    base = solve(problem, EXACT)
    if base.objective is None:
        return
    d = data.draw(st.sampled_from(problem.demands))
    b = data.draw(st.integers(0, len(d.bucket_rates_rps) - 1))
    rates = list(d.bucket_rates_rps)
    rates[b] += data.draw(st.sampled_from([0.5, 3.0]))
    busier = replace(d, bucket_rates_rps=tuple(rates))
    sol = solve(replace(problem, demands=tuple(busier if x is d else x for x in problem.demands)), EXACT)
    if sol.objective is not None:
        assert sol.objective >= base.objective - 1e-6 * max(1.0, base.objective)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_backends_agree(problem: Problem) -> None:
    ref = solve(problem, EXACT)
    for backend, rel in (("cbc", 1e-6), ("pulp-highs", 1e-6), ("scip", 1e-6), ("cpsat", 1e-6)):
        other = solve(problem, replace(EXACT, backend=backend))  # type: ignore[arg-type]
        assert other.status == ref.status, backend
        if ref.objective is not None:
            assert other.objective == pytest.approx(ref.objective, rel=rel, abs=1e-6), backend
            if backend != "cpsat":
                # CP-SAT's plans meet capacity and power rows to its documented 1e-6 share precision only.
                assert violations(problem, other) == [], backend


@FAST
@given(problems())
def test_pricing_plans_are_valid_and_bounds_hold(problem: Problem) -> None:
    exact = solve(problem, replace(EXACT, pricing="off"))
    priced = solve(problem, replace(EXACT, pricing="on"))
    if exact.objective is None:
        assert priced.objective is None
        return
    assert priced.objective is not None and priced.best_bound is not None
    assert violations(problem, priced) == []
    # The plan can be no cheaper than the optimum, and the reported bound never above it.
    assert priced.objective >= exact.objective - 1e-6 * max(1.0, exact.objective)
    assert priced.best_bound <= exact.objective + 1e-6 * max(1.0, exact.objective)
    if priced.status == "optimal":
        assert priced.objective <= exact.objective * (1 + EXACT.relative_gap) + 1e-6
