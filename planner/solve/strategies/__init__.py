"""How a fleet MILP is solved: the whole model, column pricing, Lagrangian pricing of the pools, or service
by service; ``choose_strategy`` picks one, and each calls a ``Backend`` (never the public ``solve``)."""

from planner.solve.strategies.base import Strategy
from planner.solve.strategies.by_service import ByServiceStrategy, overused
from planner.solve.strategies.choose import DECOMPOSE_MIN_SHARE_VARIABLES, choose_strategy, solve
from planner.solve.strategies.lagrange import LagrangeStrategy, ServicePlans
from planner.solve.strategies.pricing import PricingStrategy
from planner.solve.strategies.services import ServiceRunner, decomposable, roomy
from planner.solve.strategies.whole import PRICING_MIN_SHARE_VARIABLES, WholeStrategy

__all__ = [
    "DECOMPOSE_MIN_SHARE_VARIABLES",
    "PRICING_MIN_SHARE_VARIABLES",
    "ByServiceStrategy",
    "LagrangeStrategy",
    "PricingStrategy",
    "ServicePlans",
    "ServiceRunner",
    "Strategy",
    "WholeStrategy",
    "choose_strategy",
    "decomposable",
    "overused",
    "roomy",
    "solve",
]
