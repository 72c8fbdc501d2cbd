"""Ports: what the front doors and the planning loops need from the planner, as Protocols.

The REST API's jobs, the controller, what-if scenarios and N-1 planning all call a planner through this one
shape, so each takes ``planner.pipeline.plan_fleet`` (wrapped with its options) or a test's fake.
"""

from __future__ import annotations

from typing import Protocol

from planner.schema import FleetSpec, Plan


class Planner(Protocol):
    """A fleet (and the running plan, against which churn is priced) in, the cheapest plan out.

    Raises an exception with a ``findings`` attribute (``planner.pipeline.InfeasibleFleet``) when no plan meets
    every SLO within the fleet's limits, and ``ValueError`` for bad input.
    """

    def __call__(self, fleet: FleetSpec, /, *, current: Plan | None = None) -> Plan: ...
