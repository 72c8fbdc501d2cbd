"""The hand-off, zone-roles and simplicity families: prefill paired with decode in its zone and on NICs no
slower, every role in every zone a service spreads over, at most K configurations per service."""

from __future__ import annotations

from dataclasses import replace

import pytest

from planner.schema import Role
from planner.solve import Column, Demand, PoolSupply, Problem, SolveOptions, explain_infeasible, marginal_values, solve
from planner.solve.formulation import handoff, simplicity, zone_roles
from planner.solve.formulation.handoff import cross_zone_usd_per_hour

EXACT = SolveOptions(relative_gap=0.0, time_limit_s=20)
BY_SERVICE = SolveOptions(relative_gap=0.0, time_limit_s=20, decompose="on")
POOLS = (PoolSupply("a", "zone-a", None, 8, None, 1.0), PoolSupply("b", "zone-b", None, 8, None, 1.0))


def _col(key: str, role: Role, pool: str, cap: float, nic: float = 100.0, label: str = "") -> Column:
    return Column(key, "s", role, pool, 1, (cap,), label=label or key, handoff_gbitps=nic if role is not Role.UNIFIED
                  else 0.0)


def test_prefill_hands_off_only_within_its_zone() -> None:
    # The cheapest pair would prefill in a and decode in b; same-zone hand-off forbids it.
    cols = (_col("pre-a", Role.PREFILL, "a", 10.0), _col("dec-a", Role.DECODE, "a", 2.0),
            _col("pre-b", Role.PREFILL, "b", 2.0), _col("dec-b", Role.DECODE, "b", 10.0))
    problem = Problem(POOLS, cols, (Demand("s", (8.0,), min_replicas=0),))
    sol = solve(problem, EXACT)
    assert sol.status == "optimal"
    # one zone carries prefill and decode: 1 + 4 replicas either way (not pre-a 1 + dec-b 1)
    assert sol.cost_usd_per_hour == pytest.approx(5.0)
    for zone_share in handoff.zone_shares(problem, sol, problem.demands[0], 0).values():
        assert zone_share[0] == pytest.approx(zone_share[1], abs=1e-6)
    crossed = replace(sol, replicas={"pre-a": 1, "dec-b": 1}, prefill_share={("pre-a", 0): 1.0},
                      decode_share={("dec-b", 0): 1.0})
    assert handoff.violations(problem, crossed)
    # allowed across zones, the cheap pair is taken and its KV bytes are priced
    cross = replace(problem, demands=(replace(problem.demands[0], cross_zone_handoff=True,
                                              handoff_usd_per_hour=(0.5,)),))
    sol = solve(cross, EXACT)
    assert sol.replicas == {"pre-a": 1, "dec-b": 1}
    assert sol.objective == pytest.approx(2.5) and cross_zone_usd_per_hour(cross, sol) == {"s": pytest.approx(0.5)}


def test_prefill_hands_off_to_no_slower_nic() -> None:
    # A fast-NIC prefill (its capacity timed at 400 Gbit/s) may not hand to a cheap 50 Gbit/s decode.
    pools = (PoolSupply("a", "zone-a", None, 8, None, 1.0), PoolSupply("dear", "zone-a", None, 8, None, 3.0))
    cols = (_col("pre", Role.PREFILL, "a", 10.0, nic=400.0), _col("slow", Role.DECODE, "a", 10.0, nic=50.0),
            _col("fast", Role.DECODE, "dear", 10.0, nic=400.0))
    problem = Problem(pools, cols, (Demand("s", (5.0,), min_replicas=0),))
    sol = solve(problem, EXACT)
    assert sol.replicas == {"pre": 1, "fast": 1}
    wrong = replace(sol, replicas={"pre": 1, "slow": 1}, decode_share={("slow", 0): 1.0})
    assert handoff.violations(problem, wrong)
    # with no fast decode at all the bucket cannot be handed off: said before any solve
    only_slow = replace(problem, columns=cols[:2])
    found = explain_infeasible(only_slow, EXACT)
    assert found and found[0].constraint == "handoff[s,0]" and "at least as fast" in found[0].message


def test_every_role_in_every_zone_the_service_spreads_over() -> None:
    # Disaggregated in zone a is cheapest; spread over two zones, zone b must then run prefill and decode too
    # (a unified replica there is not enough).
    cols = (_col("pre-a", Role.PREFILL, "a", 10.0), _col("dec-a", Role.DECODE, "a", 10.0),
            _col("pre-b", Role.PREFILL, "b", 10.0), _col("dec-b", Role.DECODE, "b", 10.0),
            _col("uni-b", Role.UNIFIED, "b", 1.0))
    problem = Problem(POOLS, cols, (Demand("s", (8.0,), min_replicas=2, spread_zones=2),))
    sol = solve(problem, EXACT)
    assert sol.status == "optimal" and zone_roles.violations(problem, sol) == []
    assert sol.replicas == {"pre-a": 1, "dec-a": 1, "pre-b": 1, "dec-b": 1}
    lopsided = replace(sol, replicas={"pre-a": 1, "dec-a": 1, "uni-b": 1})
    assert zone_roles.violations(problem, lopsided) == ["s: only 1 zones run all of ['decode', 'prefill']"]


def test_at_most_k_configurations_and_what_the_limit_costs() -> None:
    # Three configurations each best for one bucket; K = 2 forces a compromise, and the binding finding
    # prices one more configuration.
    cols = tuple(Column(f"c{i}", "s", Role.UNIFIED, "a", 1, tuple(4.0 if j == i else 1.0 for j in range(3)),
                        label=f"cfg{i}") for i in range(3))
    problem = Problem(POOLS[:1], cols, (Demand("s", (4.0, 4.0, 4.0), min_replicas=0, max_configurations=2),))
    sol = solve(problem, EXACT)
    assert sol.status == "optimal" and len(simplicity.used_labels(problem, sol, "s")) == 2
    free = solve(replace(problem, demands=(replace(problem.demands[0], max_configurations=None),)), EXACT)
    assert free.cost_usd_per_hour == pytest.approx(3.0) and sol.cost_usd_per_hour == pytest.approx(6.0)
    found = marginal_values(problem, sol, EXACT)
    binding = [f for f in found if f.constraint == "configurations[s]"]
    assert binding[0].kind == "binding" and "limit of 2 configurations" in binding[0].message
    assert binding[1].kind == "marginal" and binding[1].value == pytest.approx(3.0)
    assert simplicity.violations(problem, free)


def test_configurations_count_a_label_once_across_zones() -> None:
    # The same configuration in two zones is one configuration: spread needs both, K = 1 allows it.
    cols = (_col("u-a", Role.UNIFIED, "a", 4.0, label="l4 tp1 unified"),
            _col("u-b", Role.UNIFIED, "b", 4.0, label="l4 tp1 unified"))
    problem = Problem(POOLS, cols, (Demand("s", (4.0,), min_replicas=2, spread_zones=2, max_configurations=1),))
    sol = solve(problem, EXACT)
    assert sol.replicas == {"u-a": 1, "u-b": 1}


def _recording_solve(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of services of every problem marginal_values solves."""
    import planner.solve.explain as explain

    seen: list[int] = []
    inner = explain.solve

    def recording(problem: Problem, *args: object, **kwargs: object) -> object:
        seen.append(len(problem.demands))
        return inner(problem, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(explain, "solve", recording)
    return seen


def test_one_services_limit_is_valued_on_that_service_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    # Service s as above (its limit of 2 costs $3/h) beside service t, in a pool with room. Planned service by
    # service, the probe solves s alone and values one configuration more as the whole fleet would; planned
    # whole, the plan's parts need not be each service's own best, so the probe solves the whole fleet.
    cols = tuple(Column(f"c{i}", "s", Role.UNIFIED, "a", 1, tuple(4.0 if j == i else 1.0 for j in range(3)),
                        label=f"cfg{i}") for i in range(3)) + (Column("t", "t", Role.UNIFIED, "a", 1, (4.0,)),)
    problem = Problem(POOLS[:1], cols, (Demand("s", (4.0, 4.0, 4.0), min_replicas=0, max_configurations=2),
                                        Demand("t", (8.0,))))
    sol = solve(problem, BY_SERVICE)
    relaxed = solve(replace(problem, demands=(replace(problem.demands[0], max_configurations=None),
                                              problem.demands[1])), EXACT)
    assert sol.objective == pytest.approx(8.0) and relaxed.objective == pytest.approx(5.0)
    seen = _recording_solve(monkeypatch)
    found = [f for f in marginal_values(problem, sol, EXACT) if f.kind == "marginal"]
    assert seen == [1]
    assert found[0].constraint == "configurations[s]" and found[0].value == pytest.approx(3.0)
    assert "not proven" not in found[0].message
    whole = solve(problem, replace(EXACT, decompose="off"))
    found = [f for f in marginal_values(problem, whole, EXACT) if f.kind == "marginal"]
    assert seen[1:] == [2] and found[0].value == pytest.approx(3.0)


def test_a_service_plan_that_no_longer_fits_beside_the_others_is_valued_on_the_whole_fleet(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Alone, s would save $0.50/h with a second configuration on the cheap pool b, but service t fills b; the
    # whole fleet gains nothing from it (moving half of t to pool a costs what s saves).
    pools = (PoolSupply("a", "zone-a", None, 8, None, 1.0), PoolSupply("b", "zone-a", None, 1, 2, 0.5))
    cols = (Column("s-a", "s", Role.UNIFIED, "a", 1, (4.0, 4.0), label="cfg-a"),
            Column("s-b", "s", Role.UNIFIED, "b", 1, (4.0, 0.0), label="cfg-b"),
            Column("t-a", "t", Role.UNIFIED, "a", 1, (4.0,), label="t-a"),
            Column("t-b", "t", Role.UNIFIED, "b", 1, (4.0,), label="t-b"))
    problem = Problem(pools, cols, (Demand("s", (4.0, 4.0), max_configurations=1), Demand("t", (8.0,))))
    sol = solve(problem, BY_SERVICE)
    assert sol.objective == pytest.approx(3.0) and sol.replicas.get("t-b") == 2
    seen = _recording_solve(monkeypatch)
    found = [f for f in marginal_values(problem, sol, EXACT) if f.kind == "marginal"]
    assert seen == [1, 2, 2]  # s's limit alone, then on the whole fleet; then pool b's node (shared by both)
    assert found[0].constraint == "configurations[s]" and found[0].value == pytest.approx(0.0)
    assert "would not lower the cost" in found[0].message
