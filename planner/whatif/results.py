"""What-if results: each scenario's row beside the baseline, the report of scenarios, and a sweep's curve.

These values are what ``medley whatif --format json`` prints and ``POST /v1/whatif/scenarios`` returns.
"""

from __future__ import annotations

import math

from pydantic import Field

from planner.schema import Value


class ReplicaChange(Value):
    """Replicas of one (service, pool, configuration) before and after a scenario."""

    service: str
    pool: str
    configuration: str
    before: int
    after: int


class ServiceAttainment(Value):
    service: str
    attainment: float
    meets_slo: bool


class ScenarioResult(Value):
    """One planned scenario as it stands beside the baseline."""

    name: str
    expressions: list[str] = Field(default_factory=list)
    feasible: bool
    reason: str | None = None  # why no plan, when infeasible
    plan_id: str | None = None
    cost_usd_per_hour: float | None = Field(default=None, description="the hourly bill: the plan's $/h, plus "
                                            "reserved nodes and the commitment for fleets with tiers")
    marginal_usd_per_hour: float | None = Field(default=None, description="fleets with tiers: the plan's own $/h")
    spot_risk: float | None = Field(default=None, description="fleets with spot pools: the largest probability "
                                    "that reclaims within one recovery window leave a service short")
    cost_delta_usd_per_hour: float | None = None
    usd_per_million_tokens: float | None = None
    devices_by_type: dict[str, int] = Field(default_factory=dict)
    replicas_by_service: dict[str, int] = Field(default_factory=dict)
    configurations: dict[str, list[str]] = Field(default_factory=dict, description="'N× label @pool' per service")
    replicas_by_role: dict[str, int] = Field(default_factory=dict)
    expected_watts: float | None = Field(default=None, description="devices at planned load plus used servers")
    watts_by_power_domain: dict[str, float] = Field(default_factory=dict)
    binding: list[str] = Field(default_factory=list)
    verified: bool | None = None  # None when not replayed
    attainment: list[ServiceAttainment] = Field(default_factory=list)
    replica_changes: list[ReplicaChange] = Field(default_factory=list)


class WhatIfReport(Value):
    """The baseline and each scenario, side by side."""

    fleet: str
    verified: bool = False
    baseline: ScenarioResult
    scenarios: list[ScenarioResult]


class SweepPoint(Value):
    value: float
    result: ScenarioResult


class SweepReport(Value):
    """A scenario swept over values: the curve of cost, devices and (when replayed) attainment."""

    fleet: str
    sweep: str
    label: str
    geometric: bool
    slo_field: str | None = None  # set when an SLO target is swept (the cost/SLO frontier applies)
    baseline: ScenarioResult
    points: list[SweepPoint]

    def frontier(self) -> list[SweepPoint]:
        """Feasible points no other point beats on both cost and tightness of the swept SLO target."""
        # Lower latency targets are tighter; a higher percentile is tighter.
        feasible = sorted((p for p in self.points if p.result.cost_usd_per_hour is not None), key=lambda p: p.value,
                          reverse=self.slo_field == "percentile")
        out: list[SweepPoint] = []
        best = math.inf
        for p in feasible:  # tightest target first: keep a point only if it is cheaper than every tighter one
            cost = p.result.cost_usd_per_hour
            assert cost is not None
            if cost < best - 1e-9:
                out.append(p)
                best = cost
        return out

