"""Capacity tiers: what capacity really costs when it is not all bought on demand.

A pool's capacity can be reserved (nodes already paid for: no marginal cost, their cost sunk), drawn against a
commitment (a savings plan's $/h, paid whatever is used, covering on-demand use at committed rates), bought on
demand, or spot (its own pool: discounted, and reclaimed with a stated probability). ``prices`` reads a pool's
tier prices from its terms and its price book, ``risk`` decides which spot losses each service must survive,
``inputs`` turns a fleet's tiers into the MILP's values (``planner.solve.tiers``; the rows are
``planner.solve.formulation.tiers``), ``bill`` writes a plan's bill by tier, and ``reclaim`` describes a plan
after spot pools are reclaimed (for the replay). The commitment what-if is ``planner.whatif.commitment``.
"""

from planner.tiers.bill import billing, spot_risks, with_billing
from planner.tiers.inputs import TierError, fleet_tiers, with_tiers
from planner.tiers.prices import TierPrices, has_tiers, tier_prices, tier_problems
from planner.tiers.risk import SpotRiskError, losses_to_cover, residual, tail

__all__ = [
    "SpotRiskError",
    "TierError",
    "TierPrices",
    "billing",
    "fleet_tiers",
    "has_tiers",
    "losses_to_cover",
    "residual",
    "spot_risks",
    "tail",
    "tier_prices",
    "tier_problems",
    "with_billing",
    "with_tiers",
]
