r"""Capacity tiers as MILP values: reserved devices and a commitment credited against on-demand prices, spot
pools whose loss a service must survive, and how much of a service may run on spot.

A pool's price π_p is what one more device-hour costs: the on-demand price, or the spot price for a spot pool
(spot capacity is its own pool: its own nodes, node selector and reclaim domain). What is paid whatever the
plan does (reserved nodes, the commitment C) is credited back, so the objective is the marginal bill. For the
devices U_p a plan bills in pool p (its devices; D_p N[p] for node billing):

  reserved   w_p = min(U_p, R_p)             R_p: reserved devices (no marginal cost; their cost is sunk)
  committed  v_p ≤ U_p − w_p,  Σ_p r_p v_p ≤ C    r_p: commitment $ one device-hour of p draws (eligible p only);
             the commitment goes to the highest saving π_p / r_p first, as a savings plan is applied
  marginal $/h = Σ_p π_p U_p − Σ_p π_p (w_p + v_p)

Reserved devices are used before anything paid (their credit needs no commitment), and the credits are the
LP optimum for given replicas, so the greedy split here equals what the MILP's credit variables reach.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class PoolCredit:
    """A pool whose devices may be paid already: reserved devices, and whether the commitment covers it."""

    pool: str
    reserved_devices: int = 0
    committed_rate: float | None = None  # commitment $ one device-hour draws; None: the commitment does not cover it


@dataclass(frozen=True)
class SpotLoss:
    """Spot pools reclaimed together: the service must carry its whole load on what is left."""

    service: str
    pools: tuple[str, ...]

    @property
    def name(self) -> str:
        """``chat|l4-a-spot+l4-b-spot``: the loss in row names."""
        return f"{self.service}|{'+'.join(self.pools)}"


@dataclass(frozen=True)
class Tiers:
    """Everything the tier rows need (``formulation.tiers``)."""

    credits: tuple[PoolCredit, ...] = ()
    commitment_usd_per_hour: float = 0.0
    spot_pools: Mapping[str, float] = field(default_factory=dict)  # spot pool → reclaim probability
    spot_caps: Mapping[str, float] = field(default_factory=dict)  # service → largest share of its devices on spot
    losses: tuple[SpotLoss, ...] = ()

    def credit(self, pool: str) -> PoolCredit | None:
        """The pool's credit terms, if any."""
        return next((c for c in self.credits if c.pool == pool), None)


@dataclass(frozen=True)
class CreditSplit:
    """Devices of each pool paid by reservation and by commitment, and the commitment $/h drawn."""

    reserved: dict[str, float]
    committed: dict[str, float]
    commitment_used_usd_per_hour: float

    def usd_per_hour(self, prices: Mapping[str, float]) -> float:
        """What the credited devices would cost at their pools' prices."""
        return sum(prices[p] * (self.reserved.get(p, 0.0) + self.committed.get(p, 0.0))
                   for p in set(self.reserved) | set(self.committed))


def credit_split(tiers: Tiers, prices: Mapping[str, float], billed: Mapping[str, float]) -> CreditSplit:
    """Reserved devices first, then the commitment by highest saving per commitment dollar (see module)."""
    reserved: dict[str, float] = {}
    left: dict[str, float] = {}
    for c in tiers.credits:
        used = billed.get(c.pool, 0.0)
        reserved[c.pool] = min(used, float(c.reserved_devices))
        left[c.pool] = used - reserved[c.pool]
    budget = tiers.commitment_usd_per_hour
    committed: dict[str, float] = {}
    eligible = [c for c in tiers.credits if c.committed_rate is not None and left[c.pool] > 0]
    # π_p / r_p: credit per commitment dollar; a free rate (r_p = 0) comes first
    eligible.sort(key=lambda c: (-(prices[c.pool] / c.committed_rate) if c.committed_rate else float("-inf"),
                                 c.pool))
    for c in eligible:
        assert c.committed_rate is not None
        if budget <= 0 and c.committed_rate > 0:
            break
        take = left[c.pool] if c.committed_rate == 0 else min(left[c.pool], budget / c.committed_rate)
        committed[c.pool] = take
        budget -= take * c.committed_rate
    used_budget = tiers.commitment_usd_per_hour - max(budget, 0.0)
    return CreditSplit(reserved, committed, used_budget)
