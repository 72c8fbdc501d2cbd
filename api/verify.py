"""Verification of a new plan by replay: a plan is approved only once every service meets its SLO in replay.

``ReplayVerifier`` replays a Poisson process at each service's rate (its length buckets, ``duration_s`` of
traffic, a fixed seed, so the verdict is repeatable) against the plan with ``planner.tolerance.verify_plan``.
Its ``Verification`` says whether the plan is verified and, in one line, why not (the services that miss
their SLO with their attainment, or the error that stopped the replay).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from planner.schema import FleetSpec, Plan


@dataclass(frozen=True)
class Verification:
    """The verdict on one plan and one line about it."""

    verified: bool
    reason: str


class Verifier(Protocol):
    """Checks a plan against its fleet's traffic and SLOs."""

    def __call__(self, plan: Plan, fleet: FleetSpec) -> Verification: ...


@dataclass(frozen=True)
class ReplayVerifier:
    """Discrete-event replay of Poisson traffic against the plan (``medley verify --trace poisson``)."""

    duration_s: float = 300.0
    seed: int = 0

    def __call__(self, plan: Plan, fleet: FleetSpec) -> Verification:
        from planner.replay import TraceSource
        from planner.tolerance import verify_plan

        try:
            report = verify_plan(plan, fleet, TraceSource(kind="poisson", duration_s=self.duration_s, seed=self.seed))
        except Exception as exc:  # noqa: BLE001 - a plan that cannot be replayed is not verified
            return Verification(False, f"replay failed: {type(exc).__name__}: {exc}")
        misses = [s for s in report.services if not s.meets_slo]
        if report.verified:
            worst = min((s.attainment for s in report.services), default=1.0)
            return Verification(True, f"replay of {self.duration_s:g} s of Poisson traffic: every service meets "
                                      f"its SLO (lowest attainment {worst:.1%})")
        if not report.services:
            return Verification(False, "replay: the plan serves no service")
        return Verification(False, "replay: " + "; ".join(
            f"{s.service} meets its SLO for {s.attainment:.1%} of requests, needs {s.slo_percentile:g}% "
            f"(TTFT p90 {s.ttft_ms.p90:.0f} ms vs {s.slo_ttft_ms:g}, TPOT p90 {s.tpot_ms.p90:.1f} ms vs "
            f"{s.slo_tpot_ms:g})" for s in misses))
