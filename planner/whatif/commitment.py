r"""The commitment what-if: the savings-plan commitment C ($/h) that minimises the expected bill over a year of
hourly demand.

Demand: per hour h and service s a factor f_{h,s} on the fleet's rate (the fleet's rates are the peak it is
planned for): from a CSV (``parse_hourly``: a ``scale`` column for every service, or one column of req/s per
service), or the diurnal/weekly generator ``diurnal_weekly``:

    f(h) = (1 − a·(1 − cos(2π (h mod 24 − peak)/24))/2) · (w on Saturdays and Sundays, else 1)

(a = 0.35, peak = 14:00, w = 0.7: 1 at a weekday's peak hour, a mean of about 0.75; hour 0 is a Monday 00:00).

Hours are grouped into L load levels by their total rate (quantile bins); level k holds a share ω_k of the hours
and is planned at each service's largest factor within it, so every hour of the level is served. With the plan
of each level at C = 0 (its billed devices U_{k,p}), the expected bill of a commitment C is

    B(C) = C + sunk + Σ_k ω_k (Σ_p π_p U_{k,p} − credit_k(C))

credit_k being the reserved and committed credit of ``planner.solve.tiers.credit_split``: concave and piecewise
linear in C, so B is convex and piecewise linear, and its minimum lies at C = 0 or at a breakpoint of some level
(a pool's committed devices filling up). The search is exact for those plans; with ``replan`` the levels are
planned again with the best C in the MILP, whose plans can only lower the bill (reported beside it).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

import numpy as np
from pydantic import Field

from planner.catalog import Catalog, fleet_catalog
from planner.ports import Planner
from planner.schema import FleetSpec, Plan, Value
from planner.solve.tiers import Tiers, credit_split
from planner.tiers.bill import reserved_usd_per_hour
from planner.tiers.inputs import pool_credits

HOURS_PER_YEAR = 8760
HOURS_PER_MONTH = 730.0


class CommitmentLevel(Value):
    """One load level: its share of the hours, the factor it is planned at, and what that plan bills."""

    scale: dict[str, float]
    hours_share: float
    marginal_usd_per_hour: float  # at C = 0: on-demand and spot, less reserved devices
    devices_by_pool: dict[str, int]


class CommitmentPoint(Value):
    commitment_usd_per_hour: float
    expected_usd_per_hour: float


class CommitmentReport(Value):
    """The expected bill against the commitment, and the commitment that minimises it."""

    fleet: str
    forecast: str
    hours: int
    levels: list[CommitmentLevel]
    curve: list[CommitmentPoint]
    best_commitment_usd_per_hour: float
    on_demand_usd_per_hour: float = Field(description="expected bill with no commitment")
    best_usd_per_hour: float = Field(description="expected bill with the best commitment, level plans at C = 0")
    best_replanned_usd_per_hour: float | None = Field(default=None, description="the same with each level planned "
                                                      "again with the commitment in the MILP")

    @property
    def monthly_saving_usd(self) -> float:
        """What the best commitment saves a month against none (the replanned bill where there is one)."""
        best = self.best_replanned_usd_per_hour or self.best_usd_per_hour
        return (self.on_demand_usd_per_hour - best) * HOURS_PER_MONTH


# ---------------------------------------------------------------------------------------------- demand


def diurnal_weekly(services: Sequence[str], hours: int = HOURS_PER_YEAR, *, amplitude: float = 0.35,
                   peak_hour: float = 14.0, weekend: float = 0.7) -> np.ndarray:
    """Hours × services factors of the documented generator (the same shape for every service)."""
    h = np.arange(hours, dtype=float)
    diurnal = 1.0 - amplitude * (1.0 - np.cos(2 * math.pi * ((h % 24) - peak_hour) / 24)) / 2
    weekly = np.where((h // 24) % 7 >= 5, weekend, 1.0)
    return np.repeat((diurnal * weekly)[:, None], len(services), axis=1)


def parse_hourly(text: str, fleet: FleetSpec) -> np.ndarray:
    """Hours × services factors from CSV text: a ``scale`` column, or a req/s column per service (others are
    ignored, a missing service keeps its rate). Raises ValueError naming the line and the column."""
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows:
        raise ValueError("1: (file): no hours (expect a header and one row per hour)")
    columns = set(rows[0])
    services = [s.id for s in fleet.services]
    if "scale" not in columns and not columns & set(services):
        raise ValueError("1: (header): expect a 'scale' column or one column per service (" + ", ".join(services) + ")")
    out = np.ones((len(rows), len(services)))
    for i, row in enumerate(rows):
        for j, svc in enumerate(fleet.services):
            name = "scale" if "scale" in columns else svc.id
            if name not in columns:
                continue
            try:
                value = float(row[name])
            except (TypeError, ValueError):
                raise ValueError(f"{i + 2}: {name}: {row[name]!r} is not a number") from None
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{i + 2}: {name}: must be a finite number ≥ 0")
            out[i, j] = value if name == "scale" else (value / svc.traffic.rate_rps if svc.traffic.rate_rps else 0.0)
    return out


def load_levels(factors: np.ndarray, rates: Sequence[float], levels: int) -> list[tuple[np.ndarray, float]]:
    """(per-service factor to plan at, share of hours) per level: quantile bins of the hours' total rate."""
    total = factors @ np.asarray(rates, dtype=float)
    order = np.argsort(total, kind="stable")
    out = []
    for chunk in np.array_split(order, min(levels, len(order))):
        if len(chunk):
            out.append((factors[chunk].max(axis=0), len(chunk) / len(order)))
    return out


# ---------------------------------------------------------------------------------------------- the search


def _scaled(fleet: FleetSpec, scale: np.ndarray, commitment: float) -> FleetSpec:
    services = [s.model_copy(update={"traffic": s.traffic.model_copy(update={"rate_rps": s.traffic.rate_rps * f})})
                for s, f in zip(fleet.services, scale.tolist(), strict=True)]
    planner = fleet.planner.model_copy(update={"commitment_usd_per_hour": commitment})
    return fleet.model_copy(update={"services": services, "planner": planner})


def billed(plan: Plan, fleet: FleetSpec) -> dict[str, float]:
    """Devices each pool bills in a plan: its devices, or its nodes' for node billing."""
    out = {}
    for p in fleet.pools:
        used = plan.devices_by_pool.get(p.id, 0)
        out[p.id] = float(used if p.billing == "device" else plan.nodes_by_pool.get(p.id, 0) * p.devices_per_node)
    return out


def expected_bill(commitment: float, usage: Sequence[tuple[Mapping[str, float], float]], tiers: Tiers,
                  prices: Mapping[str, float], sunk: float) -> float:
    """B(C) over levels of (billed devices, share of hours) for fixed plans (see module)."""
    with_c = replace(tiers, commitment_usd_per_hour=commitment)
    out = commitment + sunk
    for used, weight in usage:
        gross = sum(prices[p] * n for p, n in used.items())
        out += weight * (gross - credit_split(with_c, prices, used).usd_per_hour(prices))
    return out


def breakpoints(usage: Sequence[tuple[Mapping[str, float], float]], tiers: Tiers,
                prices: Mapping[str, float]) -> list[float]:
    """Every C where some level's committed devices fill a pool: B's kinks (C = 0 included)."""
    out = {0.0}
    for used, _ in usage:
        split = credit_split(replace(tiers, commitment_usd_per_hour=math.inf), prices, used)
        ranked = sorted((c for c in tiers.credits if c.committed_rate),
                        key=lambda c: (-prices[c.pool] / (c.committed_rate or 1.0), c.pool))
        spent = 0.0
        for c in ranked:
            spent += split.committed.get(c.pool, 0.0) * (c.committed_rate or 0.0)
            out.add(round(spent, 6))
    return sorted(out)


def commitment_whatif(fleet: FleetSpec, factors: np.ndarray, planner: Planner, *, levels: int = 6,
                      forecast: str = "", replan: bool = True, catalog: Catalog | None = None,
                      progress: Callable[[int, int, str], None] | None = None) -> CommitmentReport:
    """The commitment that minimises the expected bill over ``factors`` (hours × services; see module);
    ``progress(done, total, what)`` is told before each plan (the level plans, then the replans)."""
    cat = catalog or fleet_catalog(fleet)
    prices = {p.id: cat.pool_price(p) for p in fleet.pools}
    tiers = Tiers(credits=pool_credits(fleet, cat, True))
    sunk = reserved_usd_per_hour(fleet, cat)
    rates = [s.traffic.rate_rps for s in fleet.services]
    bins = load_levels(factors, rates, levels)
    say = progress or (lambda done, total, what: None)
    plans = []
    for i, (scale, _) in enumerate(bins):
        say(i, len(bins), f"load level {i + 1} of {len(bins)}")
        plans.append(planner(_scaled(fleet, scale, 0.0)))
    usage = [(billed(plan, fleet), weight) for plan, (_, weight) in zip(plans, bins, strict=True)]
    points = [CommitmentPoint(commitment_usd_per_hour=round(c, 4),
                              expected_usd_per_hour=round(expected_bill(c, usage, tiers, prices, sunk), 4))
              for c in breakpoints(usage, tiers, prices)]
    best = min(points, key=lambda p: (p.expected_usd_per_hour, p.commitment_usd_per_hour))
    replanned = None
    if replan and best.commitment_usd_per_hour > 0:
        bills = []
        for i, (scale, _) in enumerate(bins):
            say(i, len(bins), f"load level {i + 1} of {len(bins)} with ${best.commitment_usd_per_hour:.2f}/h committed")
            bills.append(planner(_scaled(fleet, scale, best.commitment_usd_per_hour)))
        replanned = round(sum(w * (p.billing.total_usd_per_hour if p.billing else p.cost_usd_per_hour)
                              for p, (_, w) in zip(bills, bins, strict=True)), 4)
    services = [s.id for s in fleet.services]
    return CommitmentReport(
        fleet=fleet.name, forecast=forecast, hours=int(factors.shape[0]),
        levels=[CommitmentLevel(scale={s: round(float(f), 4) for s, f in zip(services, scale, strict=True)},
                                hours_share=round(w, 4), marginal_usd_per_hour=round(plan.cost_usd_per_hour, 4),
                                devices_by_pool=dict(plan.devices_by_pool))
                for plan, (scale, w) in zip(plans, bins, strict=True)],
        curve=points, best_commitment_usd_per_hour=best.commitment_usd_per_hour,
        on_demand_usd_per_hour=points[0].expected_usd_per_hour, best_usd_per_hour=best.expected_usd_per_hour,
        best_replanned_usd_per_hour=replanned)
