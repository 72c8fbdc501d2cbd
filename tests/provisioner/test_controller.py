"""Controller against the API double: custom resources → plan → cluster, modes, drift, Lease, faults."""

from __future__ import annotations

import contextlib
import math
import random

import pytest
from kube_double import DoubleServer, make_plan

from planner.schema import BucketLoad, Configuration, FleetSpec, Plan, ReplicaGroup, Role
from provisioner.cluster import ObjectRef, RetryPolicy
from provisioner.controller import Reconciler
from provisioner.crds import API_VERSION
from provisioner.events import EventRecorder
from provisioner.loop import ControllerLoop, Debouncer, LeaseElector
from provisioner.probes import ControllerMetrics
from provisioner.render import Owner, render_plan
from provisioner.rollout import WORKLOAD_KINDS, ready_capacity, requirements

pytestmark = pytest.mark.integration


class FakePlanner:
    """Sizes each service on H100 (5 req/s per replica) up to 15 req/s, on L4 (2.5 req/s) above."""

    def __init__(self) -> None:
        self.calls: list[Plan | None] = []

    def __call__(self, fleet: FleetSpec, *, current: Plan | None = None) -> Plan:
        self.calls.append(current)
        groups = []
        for s in fleet.services:
            big = s.traffic.rate_rps <= 15
            per = 5.0 if big else 2.5
            n = max(s.min_replicas, math.ceil(s.traffic.rate_rps / per))
            b = s.traffic.length_buckets()[0]
            groups.append(ReplicaGroup(
                service=s.id, pool="h100-a" if big else "l4-b", replicas=n, cost_usd_per_hour=n,
                expected_watts=700 * n, utilisation=s.traffic.rate_rps / (n * per * 1.25),
                configuration=Configuration(device="h100-sxm" if big else "l4", tp=1, role=Role.UNIFIED),
                load=[BucketLoad(input_tokens=b.input_tokens, output_tokens=b.output_tokens, prefill_share=1,
                                 decode_share=1)]))
        return make_plan(f"plan-{len(self.calls)}", groups).model_copy(update={"fleet": fleet.name})


def _cr(kind: str, name: str, spec: dict, namespace: str = "") -> dict:
    meta = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {"apiVersion": API_VERSION, "kind": kind, "metadata": meta, "spec": spec}


def _service_spec(rate: float) -> dict:
    return {"model": "llama-3-8b", "traffic": {"rate_rps": rate, "buckets": [
        {"input_tokens": 512, "output_tokens": 128, "share": 1.0}]}, "slo": {"ttft_ms": 1000, "tpot_ms": 60}}


def _seed(client, mode: str = "auto", rate: float = 10.0) -> None:
    client.create(_cr("GPUPool", "h100-a", {"device": "h100-sxm", "devices_per_node": 8, "max_nodes": 4,
                                            "price_usd_per_device_hour": 10}))
    client.create(_cr("GPUPool", "l4-b", {"device": "l4", "devices_per_node": 4, "max_nodes": 8,
                                          "price_usd_per_device_hour": 1}))
    client.create(_cr("LLMService", "chat", _service_spec(rate), "assistants"))
    client.create(_cr("FleetPlan", "medley", {"mode": mode}))


def _set_rate(client, rate: float) -> None:
    live = client.get(ObjectRef("LLMService", "assistants", "chat"))
    client.replace({**live, "spec": _service_spec(rate)})


def _conditions(client) -> dict[str, tuple[str, str]]:
    status = client.get(ObjectRef("FleetPlan", "", "medley")).get("status", {})
    return {c["type"]: (c["status"], c["reason"]) for c in status.get("conditions", [])}


def _expected(client, api: DoubleServer, reconciler: Reconciler):
    """The manifests the stored plan renders to (what the double must hold)."""
    from provisioner.resources import fleet_from_resources

    fp = client.get(ObjectRef("FleetPlan", "", "medley"))
    plan = Plan.model_validate(fp["status"]["plan"])
    fleet = fleet_from_resources(fp, client.list("GPUPool"), client.list("LLMService"), client.list("PowerDomain"))
    owner = Owner(API_VERSION, "FleetPlan", "medley", fp["metadata"]["uid"])
    return render_plan(plan, fleet, reconciler.options, owner)


def _managed(api: DoubleServer) -> dict:
    return {k: v for k, v in api.store().items() if k[0] in ("Deployment", "Service", "PodDisruptionBudget")
            and v["metadata"].get("labels", {}).get("app.kubernetes.io/managed-by") == "medley"}


def _assert_matches(api: DoubleServer, manifests) -> None:
    live = _managed(api)
    want = {(m["kind"], m["metadata"]["namespace"], m["metadata"]["name"]): m for m in manifests}
    assert set(live) == set(want)
    for key, m in want.items():
        assert live[key]["spec"] == m["spec"] and live[key]["metadata"]["labels"] == m["metadata"]["labels"]
        assert live[key]["metadata"]["ownerReferences"] == m["metadata"]["ownerReferences"]


def test_create_plan_apply_change_traffic_replan_apply_again(api: DoubleServer):
    client = api.client()
    _seed(client, "auto", rate=10.0)
    planner = FakePlanner()
    rec = Reconciler(client, planner=planner)
    rec.reconcile("medley")
    assert _conditions(client)["Planned"] == ("True", "Planned")
    assert _conditions(client)["Progressing"] == ("True", "WaitingForReady")
    _assert_matches(api, _expected(client, api, rec))
    api.mark_ready()
    rec.reconcile("medley")
    assert _conditions(client)["Ready"] == ("True", "PlanApplied")
    assert len(planner.calls) == 1  # nothing changed: no re-plan
    fp = client.get(ObjectRef("FleetPlan", "", "medley"))
    assert fp["status"]["appliedPlanId"] == "plan-1"

    before = ready_capacity([v for k, v in api.store().items() if k[0] in WORKLOAD_KINDS])
    old_keys = set(_managed(api))
    _set_rate(client, 20.0)  # traffic doubles: the planner moves chat to L4
    observed = []
    for _ in range(12):
        rec.reconcile("medley")
        workloads = [v for k, v in api.store().items() if k[0] in WORKLOAD_KINDS]
        observed.append(ready_capacity(workloads))
        # at every step: all of the new plan is there, and nothing but the new plan and the old one
        new = {(m["kind"], m["metadata"]["namespace"], m["metadata"]["name"]): m
               for m in _expected(client, api, rec)}
        live = _managed(api)
        assert set(new) <= set(live) <= set(new) | old_keys
        for key, m in new.items():
            if m["kind"] not in WORKLOAD_KINDS or m["spec"]["replicas"] >= live[key]["spec"]["replicas"]:
                assert live[key]["spec"] == m["spec"]
        # the old H100 workload exists until the L4 one is fully Ready
        if _conditions(client)["Ready"][0] == "True":
            break
        api.mark_ready(limit=1)
    assert planner.calls[-1] is not None and planner.calls[-1].id == "plan-1"  # re-planned from the running plan
    assert _conditions(client)["Ready"] == ("True", "PlanApplied")
    expected = _expected(client, api, rec)
    _assert_matches(api, expected)
    need = requirements([m for m in expected if m["kind"] in WORKLOAD_KINDS])
    for snapshot in observed:
        for key, rps in need.items():
            assert snapshot.get(key, 0.0) >= min(rps, before.get(key, 0.0)) - 1e-9, snapshot
    assert len(observed) >= 3


def test_drift_is_repaired_by_the_next_pass(api: DoubleServer):
    client = api.client()
    _seed(client, "auto")
    rec = Reconciler(client, planner=FakePlanner())
    rec.reconcile("medley")
    api.mark_ready()
    rec.reconcile("medley")
    ref = ObjectRef("Deployment", "assistants", "chat-h100-a-h100-sxm-tp1-unified")

    def scale_by_hand(double):
        for (res, _ns, name), obj in double.objects.items():
            if res.plural == "deployments" and name == ref.name:
                raw = obj.raw
                raw["spec"]["replicas"] = 9
                obj.create(raw)
    api.call(scale_by_hand, api.double)
    rec.reconcile("medley")
    api.mark_ready()
    rec.reconcile("medley")
    _assert_matches(api, _expected(client, api, rec))
    assert _conditions(client)["Ready"][0] == "True"


def test_approve_mode_waits_for_the_plan_id_and_dry_run_only_reports(api: DoubleServer):
    client = api.client()
    _seed(client, "approve")
    rec = Reconciler(client, planner=FakePlanner())
    rec.reconcile("medley")
    assert _conditions(client)["Progressing"] == ("False", "AwaitingApproval")
    assert not _managed(api)
    fp = client.get(ObjectRef("FleetPlan", "", "medley"))
    assert "+ create Deployment assistants/chat-h100-a-h100-sxm-tp1-unified" in fp["status"]["diff"]
    client.replace({**fp, "spec": {**fp["spec"], "approvedPlanId": fp["status"]["planId"]}})
    rec.reconcile("medley")
    assert _managed(api)

    fp = client.get(ObjectRef("FleetPlan", "", "medley"))
    client.replace({**fp, "spec": {"mode": "dry-run"}})
    _set_rate(client, 20.0)
    writes = [w for w in api.double.writes if w[1] != "FleetPlan" and w[0] != "PATCH-status"]
    rec.reconcile("medley")
    assert _conditions(client)["Ready"] == ("False", "DryRun")
    assert [w for w in api.double.writes if w[1] != "FleetPlan" and w[0] != "PATCH-status"] == writes


def test_bad_spec_and_infeasible_fleet_are_reported(api: DoubleServer):
    client = api.client()
    _seed(client, "auto")
    client.create(_cr("GPUPool", "broken", {"device": "l4", "max_nodes": "many"}))
    Reconciler(client, planner=FakePlanner()).reconcile("medley")
    cond = _conditions(client)
    assert cond["Planned"] == ("False", "InvalidSpec") and cond["Degraded"] == ("True", "InvalidSpec")
    status = client.get(ObjectRef("FleetPlan", "", "medley"))["status"]
    assert "GPUPool/broken: spec.max_nodes" in status["conditions"][0]["message"]
    client.delete(ObjectRef("GPUPool", "", "broken"))

    class Infeasible(Exception):
        findings = [type("F", (), {"message": "pool h100-a: max_nodes binds"})()]

    def planner(fleet, *, current=None):
        raise Infeasible()
    Reconciler(client, planner=planner).reconcile("medley")
    assert _conditions(client)["Planned"] == ("False", "Infeasible")
    assert not _managed(api)


def test_only_one_replica_holds_the_lease_until_it_expires(api: DoubleServer):
    now = [1000.0]
    a = LeaseElector(api.client(), "medley-controller", "medley-system", "a", duration_s=15, clock=lambda: now[0])
    b = LeaseElector(api.client(), "medley-controller", "medley-system", "b", duration_s=15, clock=lambda: now[0])
    assert a.try_acquire() and not b.try_acquire()
    now[0] += 10
    assert a.try_acquire() and not b.try_acquire()  # renewed
    now[0] += 20  # a stopped renewing
    assert b.try_acquire() and not a.try_acquire()
    lease = api.store()[("Lease", "medley-system", "medley-controller")]
    assert lease["spec"]["holderIdentity"] == "b" and lease["spec"]["leaseTransitions"] == 1
    b.release()
    assert a.try_acquire()


def test_loop_debounces_bursts_and_only_the_leader_reconciles(api: DoubleServer):
    client = api.client()
    _seed(client, "auto")
    now = [0.0]
    planner = FakePlanner()
    loops = [ControllerLoop(Reconciler(client, planner=planner),
                            LeaseElector(client, "medley-controller", "medley-system", who, clock=lambda: 1e9 + now[0]),
                            "medley", Debouncer(quiet_s=2, max_wait_s=10), resync_s=60, clock=lambda: now[0])
             for who in ("a", "b")]
    assert loops[0].step() is not None and loops[1].step() is None  # first pass; b is not the leader
    for t in (1.0, 1.5, 2.0, 2.5):  # a burst of changes: nothing until 2 s of quiet
        now[0] = t
        loops[0].note_change()
        assert loops[0].step() is None
    now[0] = 4.6
    assert loops[0].step() is not None
    assert loops[0].step() is None  # nothing new
    now[0] = 70.0
    assert loops[0].step() is not None  # periodic resync


@pytest.mark.parametrize("seed", [7, 11, 23])
def test_faults_converge_and_other_managers_objects_are_untouched(seed: int):
    """20% of calls fail (409, 500, or answered after the client's timeout); passes still converge."""
    with DoubleServer(late_s=0.4, rng=random.Random(seed)) as api:
        retry = RetryPolicy(attempts=10, initial_s=0.01, max_s=0.05, request_timeout_s=0.25)
        client = api.client(retry)
        _seed(client, "auto")
        theirs = {"apiVersion": "apps/v1", "kind": "Deployment",
                  "metadata": {"name": "team-cache", "namespace": "assistants",
                               "labels": {"app.kubernetes.io/managed-by": "helm"},
                               "managedFields": [{"manager": "helm", "operation": "Apply"}]},
                  "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "cache"}}}}
        client.create(theirs)
        before = api.store()[("Deployment", "assistants", "team-cache")]
        api.double.fault_rate = 0.2
        planner = FakePlanner()
        rec = Reconciler(client, planner=planner)

        def converge() -> int:
            for passes in range(1, 16):  # bounded: a pass that loses to a fault is redone by the next
                with contextlib.suppress(Exception):  # retries spent on one call: the loop logs it, goes on
                    rec.reconcile("medley")
                api.mark_ready()
                fp = _get_with_retry(client)
                ready = {c["type"]: c["status"] for c in fp.get("status", {}).get("conditions", [])}.get("Ready")
                if ready == "True" and fp["status"]["planId"] == f"plan-{len(planner.calls)}":
                    return passes
            raise AssertionError("did not converge in 15 passes")

        converge()
        _set_rate_with_retry(client, 20.0)
        converge()
        assert len(planner.calls) == 2
        assert len(api.double.faults) >= 5 and {"409", "500", "late"} <= set(api.double.faults)
        api.double.fault_rate = 0.0
        _assert_matches(api, _expected(client, api, rec))
        assert api.store()[("Deployment", "assistants", "team-cache")] == before
        assert not [w for w in api.double.writes if w[2] == "team-cache" and w[0] != "POST"]


def _get_with_retry(client) -> dict:
    for _ in range(20):
        try:
            return client.get(ObjectRef("FleetPlan", "", "medley"))
        except Exception:
            continue
    raise AssertionError("FleetPlan unreadable")


def _set_rate_with_retry(client, rate: float) -> None:
    from kubernetes.client.exceptions import ApiException

    from provisioner.cluster import ConflictError

    for _ in range(20):
        try:
            _set_rate(client, rate)
            return
        except (ConflictError, ApiException):
            continue


def test_example_resources_with_the_real_planner(api: DoubleServer):
    """The shipped example CRs, planned by ``planner.pipeline.plan_fleet``, applied until Ready."""
    from pathlib import Path

    import yaml

    client = api.client()
    root = Path(__file__).resolve().parents[2] / "examples" / "crs"
    for path in sorted(root.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc and doc["apiVersion"].startswith("medley.dev/"):
                client.create(doc)
    fp = client.get(ObjectRef("FleetPlan", "", "medley"))
    client.replace({**fp, "spec": {**fp["spec"], "mode": "auto"}})
    rec = Reconciler(client)  # the default planner
    rec.reconcile("medley")
    assert _conditions(client)["Planned"][0] == "True", _conditions(client)
    api.mark_ready()
    rec.reconcile("medley")
    assert _conditions(client)["Ready"] == ("True", "PlanApplied")
    expected = _expected(client, api, rec)
    assert {m["metadata"]["namespace"] for m in expected} == {"assistants", "devtools"}
    _assert_matches(api, expected)


def test_llmservice_status_shows_planned_and_ready_replicas(api: DoubleServer):
    client = api.client()
    _seed(client, "auto", rate=10.0)
    rec = Reconciler(client, planner=FakePlanner())
    rec.reconcile("medley")
    status = client.get(ObjectRef("LLMService", "assistants", "chat"))["status"]
    assert (status["replicas"], status["readyReplicas"], status["conditions"][0]["status"]) == (2, 0, "False")
    api.mark_ready()
    rec.reconcile("medley")
    status = client.get(ObjectRef("LLMService", "assistants", "chat"))["status"]
    assert (status["replicas"], status["readyReplicas"], status["conditions"][0]["status"]) == (2, 2, "True")


def test_an_invalid_llmservice_degrades_only_itself(api: DoubleServer):
    """A second team's service turns invalid: the first team is still re-planned, the bad one kept as it ran."""
    client = api.client()
    _seed(client, "auto")
    client.create(_cr("LLMService", "code", _service_spec(4.0), "devtools"))
    planner = FakePlanner()
    rec = Reconciler(client, planner=planner)
    rec.reconcile("medley")
    code_ref = ("Deployment", "devtools", "code-h100-a-h100-sxm-tp1-unified")
    before = api.store()[code_ref]
    live = client.get(ObjectRef("LLMService", "devtools", "code"))
    client.replace({**live, "spec": {**live["spec"], "model": "no-such-model"}})
    _set_rate(client, 20.0)  # and the other team's traffic changes: it must still be planned
    rec.reconcile("medley")
    cond = _conditions(client)
    assert cond["Planned"] == ("True", "Planned") and cond["Degraded"] == ("True", "InvalidServices")
    fp = client.get(ObjectRef("FleetPlan", "", "medley"))
    assert "LLMService/devtools/code: spec.model: unknown model 'no-such-model'" in fp["status"]["conditions"][-1][
        "message"]
    planned = {g.service: g for g in Plan.model_validate(fp["status"]["plan"]).replica_groups}
    assert planned["chat"].pool == "l4-b"  # re-planned for 20 req/s
    assert planned["code"].configuration.device == "h100-sxm"  # kept from the last plan
    assert api.store()[code_ref]["spec"] == before["spec"]  # its workload untouched
    assert ("Deployment", "assistants", "chat-l4-b-l4-tp1-unified") in api.store()
    status = client.get(ObjectRef("LLMService", "devtools", "code"))["status"]
    ready = {c["type"]: c for c in status["conditions"]}["Ready"]
    assert ready["reason"] == "InvalidSpec" and "unknown model" in ready["message"]
    # the planner was given the pools less the nodes the kept service occupies
    assert planner.calls and len(planner.calls) == 2


def test_every_owned_kind_gets_a_status(api: DoubleServer):
    client = api.client()
    _seed(client, "auto")
    client.create(_cr("PowerDomain", "row-a", {"budget_watts": 1000}))
    live = client.get(ObjectRef("GPUPool", "", "h100-a"))
    client.replace({**live, "spec": {**live["spec"], "power_domain": "row-a"}})
    Reconciler(client, planner=FakePlanner()).reconcile("medley")
    pool = client.get(ObjectRef("GPUPool", "", "h100-a"))["status"]
    assert pool["plannedDevices"] == 2 and pool["plannedNodes"] == 1 and pool["planId"] == "plan-1"
    assert client.get(ObjectRef("GPUPool", "", "l4-b"))["status"]["conditions"][0]["reason"] == "Unused"
    domain = client.get(ObjectRef("PowerDomain", "", "row-a"))["status"]
    within = {c["type"]: c for c in domain["conditions"]}["WithinBudget"]
    assert domain["plannedWatts"] == 1400 and within["status"] == "False" and within["reason"] == "OverBudget"
    service = client.get(ObjectRef("LLMService", "assistants", "chat"))["status"]
    assert service["plannedReplicas"] == 2 and service["replicas"] == 2 and service["readyReplicas"] == 0
    Reconciler(client, planner=FakePlanner()).reconcile("medley")  # the FleetPlan's diff now says "no changes"
    writes = len(api.double.writes)
    Reconciler(client, planner=FakePlanner()).reconcile("medley")
    assert [w for w in api.double.writes[writes:] if w[0] == "PATCH-status"] == []  # unchanged: no writes


def test_deleting_the_fleetplan_keeps_the_serving_workloads(api: DoubleServer):
    client = api.client()
    _seed(client, "auto")
    rec = Reconciler(client, planner=FakePlanner(), events=EventRecorder(client))
    rec.reconcile("medley")
    fp = client.get(ObjectRef("FleetPlan", "", "medley"))
    assert fp["metadata"]["finalizers"] == ["medley.dev/keep-workloads"]
    workloads = set(_managed(api))
    assert workloads and all(v["metadata"]["ownerReferences"] for v in _managed(api).values())
    client.delete(ObjectRef("FleetPlan", "", "medley"))  # by mistake
    assert client.get(ObjectRef("FleetPlan", "", "medley"))["metadata"]["deletionTimestamp"]
    assert rec.reconcile("medley") is None
    assert client.get(ObjectRef("FleetPlan", "", "medley")) is None
    assert set(_managed(api)) == workloads  # still serving, no longer owned (garbage collection leaves them)
    assert not any(v["metadata"].get("ownerReferences") for v in _managed(api).values())
    events = [e for k, e in api.store().items() if k[0] == "Event" and e["reason"] == "Finalized"]
    assert "kept 4 objects serving" in events[0]["message"]  # Deployment, PDB, group Service, entry Service

    _seed_plan_only(client)  # a new FleetPlan adopts them
    rec.reconcile("medley")
    uid = client.get(ObjectRef("FleetPlan", "", "medley"))["metadata"]["uid"]
    assert all(v["metadata"]["ownerReferences"][0]["uid"] == uid for v in _managed(api).values())
    fp = client.get(ObjectRef("FleetPlan", "", "medley"))
    client.patch(ObjectRef("FleetPlan", "", "medley"),
                 {"metadata": {"annotations": {"medley.dev/on-delete": "delete-workloads"}}})
    client.delete(ObjectRef("FleetPlan", "", "medley"))
    rec.reconcile("medley")
    assert client.get(ObjectRef("FleetPlan", "", "medley")) is None and not _managed(api)


def _seed_plan_only(client) -> None:
    client.create(_cr("FleetPlan", "medley", {"mode": "auto"}))


def test_events_record_what_the_controller_did(api: DoubleServer):
    client = api.client()
    _seed(client, "auto")
    rec = Reconciler(client, planner=FakePlanner(), events=EventRecorder(client), metrics=ControllerMetrics())
    rec.reconcile("medley")
    api.mark_ready()
    ref = ObjectRef("Deployment", "assistants", "chat-h100-a-h100-sxm-tp1-unified")
    live = client.get(ref)
    client.patch(ref, {"spec": {"replicas": 0}})  # scaled to 0 by hand
    rec.reconcile("medley")
    rec.reconcile("medley")
    events = [e for k, e in api.store().items() if k[0] == "Event"]
    by_reason = {}
    for e in events:
        by_reason.setdefault(e["reason"], []).append(e)
    assert {"Planned", "Applied", "Created", "DriftRepaired"} <= set(by_reason)
    repaired = by_reason["DriftRepaired"][0]
    assert repaired["involvedObject"]["name"] == ref.name and repaired["metadata"]["namespace"] == "assistants"
    assert client.get(ref)["spec"]["replicas"] == live["spec"]["replicas"]
    planned = by_reason["Planned"][0]
    assert planned["metadata"]["namespace"] == "default" and planned["involvedObject"]["kind"] == "FleetPlan"
    writes = sum(s.value for m in rec.metrics.registry.collect() for s in m.samples
                 if s.name == "medley_controller_object_writes_total")
    assert writes == 5  # 4 created (with the service's entry Service), 1 put back


def test_a_missing_team_namespace_fails_only_that_teams_objects(api: DoubleServer):
    from provisioner.render import RenderOptions

    client = api.client()
    _seed(client, "auto")
    client.create(_cr("LLMService", "code", _service_spec(4.0), "devtools"))
    # devtools renders into team-devtools, which does not exist; assistants into team-assistants, which does
    client.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-assistants"}})
    outcome = Reconciler(client, planner=FakePlanner(), options=RenderOptions(namespace_prefix="team-")).reconcile(
        "medley")
    assert outcome is not None and outcome.result is not None
    assert {f.ref.namespace for f in outcome.result.failed} == {"team-devtools"}
    assert all("not found" in f.message for f in outcome.result.failed)
    assert len(outcome.result.created) == 4 and all(r.namespace == "team-assistants" for r in outcome.result.created)
    assert _conditions(client)["Degraded"] == ("True", "ObjectsFailing")
