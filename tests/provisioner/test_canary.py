"""Canary of a device-mix change: the new mix takes a slice, is judged on the metrics per replica group, and
is promoted or rolled back — in status.canary and as Events; a rolled-back plan is not retried."""

from __future__ import annotations

import pytest
from kube_double import DoubleServer, group, make_plan
from test_controller import FakePlanner, _conditions, _seed, _set_rate

from planner.observe import Attainment
from planner.schema import SLO
from provisioner.canary import Canary, CanaryPolicy, Side, canary_plan, mix_changes, regression
from provisioner.cluster import ObjectRef
from provisioner.controller import Reconciler
from provisioner.events import EventRecorder


class FakeMetrics:
    """Attainment per replica group as Prometheus would give it: the L4 groups as ``l4`` says."""

    def __init__(self, l4: tuple[float, float], h100: tuple[float, float] = (0.97, 0.98),
                 requests: float = 500.0) -> None:
        self.l4, self.h100, self.requests = l4, h100, requests
        self.asked: list[str | None] = []

    def rates(self, service, start_s, end_s, step_s):  # pragma: no cover - not used by the canary
        raise NotImplementedError

    def window(self, service, start_s, end_s):  # pragma: no cover - not used by the canary
        raise NotImplementedError

    def attainment(self, service: str, start_s: float, end_s: float, slo: SLO, group: str | None = None):
        self.asked.append(group)
        ttft, tpot = self.l4 if group and "-l4-" in group else self.h100
        return Attainment(ttft, tpot, self.requests)


def test_the_canary_plan_adds_a_slice_of_the_new_mix_to_the_plan_in_force() -> None:
    old = make_plan("p1", [group("chat", "h100-a", "h100-sxm", 1, 2), group("code", "h100-a", "h100-sxm", 1, 1)])
    new = make_plan("p2", [group("chat", "l4-b", "l4", 1, 8), group("code", "h100-a", "h100-sxm", 1, 2)])
    assert mix_changes(old, new) == ["chat"]  # code only scales: no canary for it
    plan = canary_plan(old, new, ["chat"], 0.1)
    counts = {(g.service, g.pool): g.replicas for g in plan.replica_groups}
    assert counts == {("chat", "h100-a"): 2, ("code", "h100-a"): 1, ("chat", "l4-b"): 1}


def test_regression_rules() -> None:
    policy = CanaryPolicy(tolerance=0.02, cost_tolerance=0.05)
    old = Side(Attainment(0.97, 0.98, 1000), 10.0, 600)
    assert regression(old, Side(Attainment(0.96, 0.98, 1000), 10.0, 600), 90, policy) == ""
    assert "TTFT" in regression(old, Side(Attainment(0.90, 0.98, 1000), 10.0, 600), 90, policy)
    assert "per 1k requests" in regression(old, Side(Attainment(0.97, 0.98, 1000), 11.0, 600), 90, policy)
    assert "SLO 99%" in regression(Side(Attainment(0.992, 0.99, 1000), 1, 600),
                                   Side(Attainment(0.985, 0.99, 1000), 1, 600), 99, policy)


def _run(api: DoubleServer, metrics: FakeMetrics) -> tuple[Reconciler, list[float]]:
    client = api.client()
    _seed(client, "auto", rate=10.0)
    now = [0.0]
    rec = Reconciler(client, planner=FakePlanner(), events=EventRecorder(client),
                     canary=Canary(metrics, CanaryPolicy(slice=0.25, observe_s=600), clock=lambda: now[0]))
    rec.reconcile("medley")
    api.mark_ready()
    rec.reconcile("medley")
    assert _conditions(client)["Ready"] == ("True", "PlanApplied")
    _set_rate(client, 20.0)  # the planner moves chat from H100 to L4: a mix change
    rec.reconcile("medley")
    return rec, now


def _workloads(api: DoubleServer) -> dict[str, int]:
    return {k[2]: v["spec"]["replicas"] for k, v in api.store().items() if k[0] == "Deployment"}


def _reasons(api: DoubleServer) -> list[str]:
    return [v["reason"] for k, v in api.store().items() if k[0] == "Event"]


@pytest.mark.integration
def test_a_canary_that_regresses_is_rolled_back_and_not_retried(api: DoubleServer) -> None:
    metrics = FakeMetrics(l4=(0.70, 0.99))
    rec, now = _run(api, metrics)
    client = api.client()
    status = client.get(ObjectRef("FleetPlan", "", "medley"))["status"]
    assert status["canary"]["state"] == "Running" and status["canary"]["services"] == ["chat"]
    live = _workloads(api)
    assert live["chat-h100-a-h100-sxm-tp1-unified"] == 2 and live["chat-l4-b-l4-tp1-unified"] == 2  # 25% of 8
    api.mark_ready()
    now[0] = 700.0
    rec.reconcile("medley")
    status = client.get(ObjectRef("FleetPlan", "", "medley"))["status"]
    assert status["canary"]["state"] == "RolledBack"
    assert "chat: TTFT within target 70.0% < old mix 97.0%" in status["canary"]["reason"]
    assert any(g and "-l4-" in g for g in metrics.asked) and any(g and "-h100-" in g for g in metrics.asked)
    assert "CanaryStarted" in _reasons(api) and "CanaryRolledBack" in _reasons(api)
    for _ in range(3):  # the rejected plan is not tried again
        now[0] += 900.0
        rec.reconcile("medley")
    live = _workloads(api)
    assert "chat-l4-b-l4-tp1-unified" not in live and live["chat-h100-a-h100-sxm-tp1-unified"] == 2
    assert client.get(ObjectRef("FleetPlan", "", "medley"))["status"]["canary"]["state"] == "RolledBack"


@pytest.mark.integration
def test_a_canary_that_holds_is_promoted_to_the_whole_new_mix(api: DoubleServer) -> None:
    rec, now = _run(api, FakeMetrics(l4=(0.975, 0.99)))
    api.mark_ready()
    now[0] = 700.0
    rec.reconcile("medley")
    status = api.client().get(ObjectRef("FleetPlan", "", "medley"))["status"]
    assert status["canary"]["state"] == "Promoted", status["canary"]
    for _ in range(6):
        api.mark_ready()
        rec.reconcile("medley")
    live = _workloads(api)
    assert live == {"chat-l4-b-l4-tp1-unified": 8}
    assert "CanaryPromoted" in _reasons(api)
