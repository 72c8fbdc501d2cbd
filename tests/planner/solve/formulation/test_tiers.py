"""The tier family on small problems with known optima: reserved devices first, the commitment's credit, spot
caps, and spare capacity outside the spot pools so that a service survives losing any one of them."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planner.schema import Role
from planner.solve import (
    Column,
    Demand,
    PoolSupply,
    Problem,
    Solution,
    SolveOptions,
    explain_infeasible,
    solve,
    violations,
)
from planner.solve.reroute import reroute
from planner.solve.tiers import CreditSplit, PoolCredit, SpotLoss, Tiers, credit_split

EXACT = SolveOptions(relative_gap=0.0, time_limit_s=20)
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _col(key: str, pool: str, cap: float = 5.0, devices: int = 1, service: str = "s") -> Column:
    return Column(key=key, service=service, role=Role.UNIFIED, pool=pool, devices=devices, capacity_rps=(cap,))


def _solve(problem: Problem) -> Solution:
    sol = solve(problem, EXACT)
    assert sol.status == "optimal", sol.message
    assert violations(problem, sol) == []
    return sol


def _two_pools(price_a: float, price_b: float, reserved: int, rate: float) -> Problem:
    """Interchangeable columns in pool a (with ``reserved`` devices paid) and pool b."""
    pools = (PoolSupply("a", "z", None, 1, None, price_a), PoolSupply("b", "z", None, 1, None, price_b))
    return Problem(pools=pools, columns=(_col("ca", "a"), _col("cb", "b")),
                   demands=(Demand("s", (rate,), min_replicas=0),),
                   tiers=Tiers(credits=(PoolCredit("a", reserved),)))


@pytest.mark.parametrize(("price_a", "price_b", "reserved", "rate", "cost", "on_a"), [
    (2.0, 1.0, 2, 10.0, 0.0, 2),   # two replicas needed, both reserved: nothing to pay though a is dearer
    (2.0, 1.0, 1, 10.0, 1.0, 1),   # one reserved replica, the other on the cheaper pool
    (1.0, 2.0, 1, 15.0, 2.0, 3),   # a is cheaper anyway: its reserved device, then two paid ones there
    (3.0, 1.0, 4, 10.0, 0.0, None),  # more reserved than needed: nothing is bought (spare ones cost nothing)
])
def test_reserved_devices_are_used_before_any_paid_one(price_a: float, price_b: float, reserved: int,
                                                       rate: float, cost: float, on_a: int | None) -> None:
    sol = _solve(_two_pools(price_a, price_b, reserved, rate))
    assert sol.cost_usd_per_hour == pytest.approx(cost)
    if on_a is not None:
        assert sol.replicas.get("ca", 0) == on_a
    else:
        assert sol.replicas.get("cb", 0) == 0 and 2 <= sol.replicas.get("ca", 0) <= reserved


@given(price_a=st.sampled_from([0.5, 1.0, 2.0, 4.0]), price_b=st.sampled_from([0.5, 1.0, 2.0, 4.0]),
       reserved=st.integers(0, 4), rate=st.sampled_from([3.0, 5.0, 12.0, 22.0]))
@FAST
def test_reserved_first_whatever_the_prices(price_a: float, price_b: float, reserved: int, rate: float) -> None:
    need = -(-int(rate) // 5)  # replicas of 5 req/s
    sol = _solve(_two_pools(price_a, price_b, reserved, rate))
    paid = need - min(need, reserved)
    assert sol.cost_usd_per_hour == pytest.approx(min(price_a, price_b) * paid)
    used_a = sol.replicas.get("ca", 0)
    assert used_a >= min(need, reserved)  # no paid device while a reserved one stands idle


def test_the_commitment_covers_the_highest_saving_first() -> None:
    prices = {"a": 2.0, "b": 1.0}
    tiers = Tiers(credits=(PoolCredit("a", 0, 1.0), PoolCredit("b", 0, 0.8)), commitment_usd_per_hour=3.0)
    split = credit_split(tiers, prices, {"a": 2.0, "b": 4.0})
    # a saves 2 per commitment dollar, b 1.25: a's two devices draw 2.0, the last 1.0 covers 1.25 of b's
    assert split.committed == pytest.approx({"a": 2.0, "b": 1.25})
    assert split.commitment_used_usd_per_hour == pytest.approx(3.0)
    assert split.usd_per_hour(prices) == pytest.approx(2 * 2.0 + 1.25 * 1.0)
    # reserved devices come first and draw nothing from the commitment
    with_reserved = replace(tiers, credits=(PoolCredit("a", 1, 1.0), PoolCredit("b", 0, 0.8)))
    assert credit_split(with_reserved, prices, {"a": 2.0, "b": 0.0}) == CreditSplit({"a": 1.0, "b": 0.0},
                                                                                     {"a": 1.0}, 1.0)


def test_a_commitment_lowers_the_marginal_cost_by_what_it_covers() -> None:
    pools = (PoolSupply("a", "z", None, 1, None, 2.0),)
    base = Problem(pools=pools, columns=(_col("ca", "a"),), demands=(Demand("s", (20.0,), min_replicas=0),))
    assert _solve(base).cost_usd_per_hour == pytest.approx(8.0)
    committed = replace(base, tiers=Tiers(credits=(PoolCredit("a", 0, 1.2),), commitment_usd_per_hour=2.4))
    sol = _solve(committed)
    # $2.4/h of commitment at $1.2 per device-hour pays two of the four devices: 2 × $2 off the bill
    assert sol.cost_usd_per_hour == pytest.approx(4.0)


def _spot_problem(spot_price: float, losses: bool = True, cap: float | None = None) -> Problem:
    """A service needing two 5 req/s replicas: an on-demand pool at $1 and two spot pools at ``spot_price``."""
    pools = (PoolSupply("od", "z1", None, 1, None, 1.0), PoolSupply("s1", "z1", None, 1, None, spot_price),
             PoolSupply("s2", "z2", None, 1, None, spot_price))
    cols = (_col("c-od", "od"), _col("c-s1", "s1"), _col("c-s2", "s2"))
    spot = {"s1": 1e-4, "s2": 1e-4}
    return Problem(pools=pools, columns=cols, demands=(Demand("s", (10.0,), min_replicas=0),),
                   tiers=Tiers(spot_pools=spot, spot_caps={"s": cap} if cap is not None else {},
                               losses=(SpotLoss("s", ("s1",)), SpotLoss("s", ("s2",))) if losses else ()))


def test_spot_capacity_carries_spare_so_any_one_spot_pool_can_go() -> None:
    without = _solve(_spot_problem(0.3, losses=False))
    assert without.cost_usd_per_hour == pytest.approx(0.6)  # two spot replicas, nothing spare
    sol = _solve(_spot_problem(0.3))
    # two replicas in each spot pool ($1.2) beat one per spot pool plus one on demand ($1.6) and on demand ($2)
    assert sol.cost_usd_per_hour == pytest.approx(1.2)
    assert sol.replicas == {"c-s1": 2, "c-s2": 2}
    for lost in (["s1"], ["s2"]):
        assert reroute(_spot_problem(0.3), "s", sol.replicas, lost).holds
    dear = _solve(_spot_problem(0.45))  # four spot $1.8 against one of each $1.9
    assert dear.cost_usd_per_hour == pytest.approx(1.8)
    dearer = _solve(_spot_problem(0.6))  # 2.4 for four spot; 1 + 2 × 0.6 = 2.2 for one of each; 2.0 on demand
    assert dearer.cost_usd_per_hour == pytest.approx(2.0)
    assert dearer.replicas == {"c-od": 2}


def test_a_plan_that_cannot_survive_a_loss_is_a_violation() -> None:
    problem = _spot_problem(0.3)
    plan = Solution("optimal", "test", 0.6, 0.6, 0.0, 0.0, 0, 0, {"c-s1": 1, "c-s2": 1},
                    {("c-s1", 0): 0.5, ("c-s2", 0): 0.5}, {("c-s1", 0): 0.5, ("c-s2", 0): 0.5}, {}, {}, 0.6)
    found = violations(problem, plan)
    assert any("after losing s1" in v for v in found), found
    assert not reroute(problem, "s", plan.replicas, ["s1"]).holds


@pytest.mark.parametrize("cap", [0.0, 0.5])
def test_spot_share_cap(cap: float) -> None:
    sol = _solve(_spot_problem(0.3, losses=False, cap=cap))
    spot = sol.replicas.get("c-s1", 0) + sol.replicas.get("c-s2", 0)
    total = spot + sol.replicas.get("c-od", 0)
    assert spot <= cap * total
    assert sol.cost_usd_per_hour == pytest.approx(2.0 if cap == 0 else 1.3)  # half spot: 1 od + 1 spot


@given(low=st.sampled_from([0.0, 0.2, 0.4, 0.6]), raise_by=st.sampled_from([0.05, 0.2, 0.35]),
       rate=st.sampled_from([4.0, 10.0, 17.0]), losses=st.booleans())
@FAST
def test_a_deeper_spot_discount_never_raises_the_cost(low: float, raise_by: float, rate: float,
                                                      losses: bool) -> None:
    def cost(discount: float) -> float:
        p = _spot_problem(1.0 - discount, losses=losses)
        p = replace(p, demands=(Demand("s", (rate,), min_replicas=0),))
        c = _solve(p).cost_usd_per_hour
        assert c is not None
        return c

    assert cost(low + raise_by) <= cost(low) + 1e-9


def test_a_loss_no_pool_can_absorb_is_explained() -> None:
    small = _spot_problem(0.3)
    pools = tuple(replace(p, max_nodes=1) if p.id != "od" else replace(p, max_nodes=0) for p in small.pools)
    problem = replace(small, pools=pools)
    assert solve(problem, EXACT).status == "infeasible"
    words = " ".join(f.message for f in explain_infeasible(problem, EXACT))
    assert "after spot pool(s) s1 are reclaimed" in words or "after spot pool(s) s2 are reclaimed" in words, words
