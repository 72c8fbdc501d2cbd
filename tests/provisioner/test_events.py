"""Events on the objects the controller acts on: one per reason and message, repeats counted."""

from __future__ import annotations

from kube_double import DoubleServer

from provisioner.cluster import ObjectRef
from provisioner.events import EventRecorder


def test_repeats_bump_the_count_and_cluster_scoped_objects_report_in_default(api: DoubleServer):
    now = [1000.0]
    recorder = EventRecorder(api.client(), instance="replica-a", clock=lambda: now[0])
    deploy = ObjectRef("Deployment", "assistants", "chat")
    for _ in range(3):
        recorder.record(deploy, "Normal", "DriftRepaired", "put back as the plan has it", uid="u1")
        now[0] += 10
    recorder.record(ObjectRef("FleetPlan", "", "medley"), "Warning", "Infeasible", "pool h100-a binds")
    events = {k: e for k, e in api.store().items() if k[0] == "Event"}
    assert len(events) == 2
    drift = next(e for (_, ns, _), e in events.items() if ns == "assistants")
    assert drift["count"] == 3 and drift["firstTimestamp"] < drift["lastTimestamp"]
    assert drift["involvedObject"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "chat",
                                       "namespace": "assistants", "uid": "u1"}
    assert drift["reportingInstance"] == "replica-a" and drift["source"] == {"component": "medley-controller"}
    plan = next(e for (_, ns, _), e in events.items() if ns == "default")
    assert plan["type"] == "Warning" and plan["involvedObject"]["kind"] == "FleetPlan"


def test_a_failed_event_write_never_fails_the_caller():
    with DoubleServer(namespaces=()) as api:  # no namespace: every event write is refused
        EventRecorder(api.client()).record(ObjectRef("Service", "nowhere", "x"), "Normal", "Created", "ok")
        assert not [k for k in api.store() if k[0] == "Event"]
