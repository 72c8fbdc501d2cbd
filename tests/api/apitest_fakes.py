"""Fakes for the planner and provisioner, and sample documents."""

from __future__ import annotations

import math
import threading
from typing import Any

from api.verify import Verification
from planner.schema import (
    Configuration,
    Finding,
    FleetSpec,
    Plan,
    ReplicaGroup,
    SolverReport,
)


class FakeInfeasible(Exception):
    """Shaped like planner.pipeline.InfeasibleFleet: carries findings."""

    def __init__(self, findings: list[Finding]) -> None:
        super().__init__("no feasible plan")
        self.findings = findings


class FakePlanner:
    """Deterministic: each service gets ceil(rate/10) (at least min_replicas) replicas on its first pool.

    ``gate`` makes calls block until set (for crash and time-limit tests); ``infeasible`` raises findings.
    """

    def __init__(self) -> None:
        self.calls = 0
        self.gate: threading.Event | None = None
        self.started = threading.Event()
        self.infeasible = False

    def __call__(self, fleet: FleetSpec, *, current: Plan | None = None) -> Plan:
        self.calls += 1
        self.started.set()
        if self.gate is not None:
            self.gate.wait(30)
        if self.infeasible:
            raise FakeInfeasible([Finding(kind="infeasible", constraint="pool:x", message="too few devices")])
        if not fleet.pools:
            raise ValueError("pools: the fleet has no pools")
        groups = []
        for svc in fleet.services:
            pool = next((p for p in fleet.pools if svc.allowed_pools is None or p.id in svc.allowed_pools),
                        fleet.pools[0])
            replicas = max(svc.min_replicas, math.ceil(svc.traffic.rate_rps / 10))
            price = pool.price_usd_per_device_hour or 1.0
            groups.append(ReplicaGroup(service=svc.id, pool=pool.id, configuration=Configuration(device=pool.device,
                                       tp=1), replicas=replicas, cost_usd_per_hour=price * replicas,
                                       expected_watts=300.0 * replicas))
        cost = sum(g.cost_usd_per_hour for g in groups)
        by_type: dict[str, int] = {}
        for g in groups:
            by_type[g.configuration.device] = by_type.get(g.configuration.device, 0) + g.replicas
        return Plan(fleet=fleet.name, replica_groups=groups, cost_usd_per_hour=cost, devices_by_type=by_type,
                    previous_plan_id=current.id if current else None,
                    solver=SolverReport(backend="fake", status="optimal", objective=cost))


class FailingProvisioner:
    def apply(self, plan: Plan, fleet: FleetSpec) -> Any:
        raise RuntimeError("cluster unreachable")


class FakeVerifier:
    """Stands in for the replay verifier where verification is not the subject: verdicts are set by the test."""

    def __init__(self, verified: bool = True) -> None:
        self.verified = verified
        self.calls = 0

    def __call__(self, plan: Plan, fleet: FleetSpec) -> Verification:
        self.calls += 1
        return Verification(self.verified, "the test's verdict" if self.verified else "the test says no")


def pool_doc(pool_id: str = "h100-a", max_nodes: int = 2) -> dict[str, Any]:
    return {"id": pool_id, "device": "h100-sxm", "devices_per_node": 8, "max_nodes": max_nodes,
            "price_usd_per_device_hour": 11.0, "zone": "zone-a"}


def service_doc(service_id: str = "chat", team: str = "assistants", rate_rps: float = 24.0,
                **extra: Any) -> dict[str, Any]:
    return {"id": service_id, "team": team, "model": "llama-3-8b",
            "traffic": {"rate_rps": rate_rps, "buckets": [
                {"input_tokens": 256, "output_tokens": 128, "share": 0.6},
                {"input_tokens": 1024, "output_tokens": 256, "share": 0.4}]},
            "slo": {"ttft_ms": 1000, "tpot_ms": 60}, **extra}


def domain_doc(domain_id: str = "row-a") -> dict[str, Any]:
    return {"id": domain_id, "budget_watts": 60000}


def spin_planner(fleet: FleetSpec, *, current: Plan | None = None) -> Plan:
    """A planner that never returns and burns a CPU (run in a worker process by the time-limit tests)."""
    n = 0
    while True:
        n += 1


def hog_planner(fleet: FleetSpec, *, current: Plan | None = None) -> Plan:
    """A planner that asks for 2 GiB (run in a worker process by the memory-limit test)."""
    hog = bytearray(2 << 30)
    raise AssertionError(f"{len(hog)} bytes were allowed")
