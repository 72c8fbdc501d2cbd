"""Applier against the kmock API double through the official client: create, re-plan, make-before-break."""

from __future__ import annotations

import json

import pytest
from kube_double import DoubleServer, group, make_fleet, make_plan

from provisioner.apply import Applier, ApplyRefused, ObjectBackoff
from provisioner.cluster import ObjectRef
from provisioner.render import render_plan
from provisioner.rollout import WORKLOAD_KINDS, ready_capacity, requirements

pytestmark = pytest.mark.integration


def _workloads(store):
    return {k: v for k, v in store.items() if k[0] in WORKLOAD_KINDS}


def _assert_matches(store, manifests):
    """The double holds exactly the rendered objects, with the plan's replicas and labels."""
    want = {(m["kind"], m["metadata"]["namespace"], m["metadata"]["name"]): m for m in manifests}
    assert set(store) == set(want)
    for key, manifest in want.items():
        assert store[key]["spec"] == manifest["spec"]
        assert store[key]["metadata"]["labels"] == manifest["metadata"]["labels"]


def _applier(api: DoubleServer, on_poll=None, ready_timeout_s=5.0) -> Applier:
    return Applier(api.client(), "test-fleet", ready_timeout_s=ready_timeout_s, poll_s=0.0,
                   sleep=lambda s: None, on_poll=on_poll)


def test_apply_creates_then_second_apply_writes_nothing(api: DoubleServer):
    fleet = make_fleet()
    manifests = render_plan(make_plan("p1", [group("chat", "h100-a", "h100-sxm", 1, 2),
                                             group("code", "h100-a", "h100-sxm", 8, 1)]), fleet)
    applier = _applier(api, on_poll=api.mark_ready)
    first = applier.apply(manifests)
    assert first.complete and len(first.created) == 8  # per group 3, per service its entry Service
    _assert_matches(api.store(), manifests)
    writes = len(api.double.writes)
    second = applier.apply(manifests)
    assert second.complete and not second.changed and "no changes" in second.diff
    assert len(api.double.writes) == writes


def test_dry_run_diff_names_changes_and_writes_nothing(api: DoubleServer):
    fleet = make_fleet()
    applier = _applier(api, on_poll=api.mark_ready)
    applier.apply(render_plan(make_plan("p1", [group("chat", "h100-a", "h100-sxm", 1, 2)]), fleet))
    writes = len(api.double.writes)
    result = applier.apply(render_plan(make_plan("p2", [group("chat", "h100-a", "h100-sxm", 1, 4),
                                                        group("code", "l4-b", "l4", 4, 1)]), fleet), dry_run=True)
    assert len(api.double.writes) == writes
    assert "+ create Deployment devtools/code-l4-b-l4-tp4-unified" in result.diff
    assert "~ update Deployment assistants/chat-h100-a-h100-sxm-tp1-unified" in result.diff
    assert "-  replicas: 2" in result.diff.replace("    ", "") or "replicas: 2" in result.diff


def test_drift_is_repaired(api: DoubleServer):
    fleet = make_fleet()
    manifests = render_plan(make_plan("p1", [group("chat", "h100-a", "h100-sxm", 1, 2)]), fleet)
    applier = _applier(api, on_poll=api.mark_ready)
    applier.apply(manifests)
    key = ("Deployment", "assistants", "chat-h100-a-h100-sxm-tp1-unified")

    def edit_by_hand(double):
        for (res, _ns, name), obj in double.objects.items():
            if res.plural == "deployments" and name == key[2]:
                raw = obj.raw
                raw["spec"]["template"]["spec"]["containers"][0]["image"] = "someone/else:latest"
                obj.create(raw)
    api.call(edit_by_hand, api.double)
    result = applier.apply(manifests)
    assert key[1:] and result.updated
    _assert_matches(api.store(), manifests)


def test_traffic_change_replans_make_before_break_and_capacity_never_drops(api: DoubleServer):
    """Create, change traffic, re-plan onto other devices; check the double after every API poll."""
    fleet = make_fleet(chat_rps=10.0)
    plan1 = make_plan("p1", [group("chat", "h100-a", "h100-sxm", 1, 2), group("code", "h100-a", "h100-sxm", 8, 1)])
    m1 = render_plan(plan1, fleet)
    applier = _applier(api, on_poll=api.mark_ready)
    assert applier.apply(m1).complete
    _assert_matches(api.store(), m1)

    fleet2 = make_fleet(chat_rps=20.0)
    # the same device's replica carries the same req/s in both plans: h100 6.25, l4 3.125 at 80% use
    plan2 = make_plan("p2", [group("chat", "l4-b", "l4", 1, 6, share=0.75),
                             group("chat", "h100-a", "h100-sxm", 1, 1, share=0.25),
                             group("code", "h100-a", "h100-sxm", 8, 1)])
    m2 = render_plan(plan2, fleet2)
    need = requirements([m for m in m2 if m["kind"] in WORKLOAD_KINDS])
    before = ready_capacity(list(_workloads(api.store()).values()))
    observed = []

    def kubelet_step():
        # new replicas become Ready one at a time; after each, the invariant is checked
        observed.append(ready_capacity(list(_workloads(api.store()).values())))
        api.mark_ready(limit=1)
    applier.on_poll = kubelet_step
    result = applier.apply(m2)
    assert result.complete, result
    assert result.shrunk == (result.shrunk[0],) and result.created
    _assert_matches(api.store(), m2)
    observed.append(ready_capacity(list(_workloads(api.store()).values())))
    for snapshot in observed:
        for key, rps in need.items():
            assert snapshot.get(key, 0.0) >= min(rps, before.get(key, 0.0)) - 1e-9, (key, snapshot)
    assert len(observed) > 3  # the transition was really watched step by step


def test_new_replicas_not_ready_hold_the_old_ones(api: DoubleServer):
    fleet = make_fleet()
    applier = _applier(api, on_poll=api.mark_ready)
    applier.apply(render_plan(make_plan("p1", [group("chat", "h100-a", "h100-sxm", 1, 2)]), fleet))
    m2 = render_plan(make_plan("p2", [group("chat", "l4-b", "l4", 1, 3)]), fleet)
    applier.on_poll = None  # nothing becomes Ready
    applier.ready_timeout_s = 0.2
    result = applier.apply(m2)
    assert not result.complete and result.not_ready and not result.pruned
    assert ("Deployment", "assistants", "chat-h100-a-h100-sxm-tp1-unified") in api.store()
    applier.on_poll = api.mark_ready
    result = applier.apply(m2)
    assert result.complete and len(result.pruned) == 3
    _assert_matches(api.store(), m2)


def test_objects_of_another_manager_are_neither_written_nor_pruned(api: DoubleServer):
    fleet = make_fleet()
    manifests = render_plan(make_plan("p1", [group("chat", "h100-a", "h100-sxm", 1, 2)]), fleet)
    client = api.client()
    theirs = {"apiVersion": "v1", "kind": "Service",
              "metadata": {"name": "chat-h100-a-h100-sxm-tp1-unified", "namespace": "assistants",
                           "labels": {"app.kubernetes.io/managed-by": "helm"}},
              "spec": {"ports": [{"port": 80}]}}
    client.create(theirs)
    before = api.store()[("Service", "assistants", "chat-h100-a-h100-sxm-tp1-unified")]
    result = _applier(api, on_poll=api.mark_ready).apply(manifests)
    assert [c.ref.kind for c in result.skipped] == ["Service"] and not result.complete
    assert api.store()[("Service", "assistants", "chat-h100-a-h100-sxm-tp1-unified")] == before


def test_plan_provisioner_reports_a_typed_outcome_for_the_rest_api(api: DoubleServer):
    from provisioner.apply import PlanProvisioner

    fleet = make_fleet()
    plan = make_plan("p1", [group("chat", "h100-a", "h100-sxm", 1, 2)])
    provisioner = PlanProvisioner(api.client(), lambda p: fleet)
    first = provisioner.apply(plan)
    assert first.state == "in_progress" and len(first.created) == 4 and first.not_ready
    api.mark_ready()
    second = provisioner.apply(plan)
    assert second.state == "applied" and not second.created and second.diff == "no changes\n"


def test_missing_namespace_refuses_before_anything_is_written():
    with DoubleServer(namespaces=("assistants",)) as api:
        fleet = make_fleet()
        manifests = render_plan(make_plan("p1", [group("chat", "h100-a", "h100-sxm", 1, 2),
                                                 group("code", "h100-a", "h100-sxm", 8, 1)]), fleet)
        applier = _applier(api, on_poll=api.mark_ready)
        dry = applier.apply(manifests, dry_run=True)
        assert "! refused Namespace devtools: does not exist" in dry.diff
        assert [str(f.ref) for f in dry.failed] == ["Namespace devtools"]
        with pytest.raises(ApplyRefused, match="Namespace devtools: does not exist"):
            applier.apply(manifests)
        assert not api.double.writes  # not even the objects of the namespace that exists
        applier.create_namespaces = True
        assert "+ create Namespace devtools" in applier.apply(manifests, dry_run=True).diff
        assert not api.double.writes
        result = applier.apply(manifests)
        assert result.complete and result.namespaces_created == ("devtools",)
        assert api.double.namespaces["devtools"]["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "medley"}
        _assert_matches(api.store(), manifests)


def test_a_refused_object_is_reported_by_the_dry_run_and_the_preflight_writes_nothing(api: DoubleServer):
    manifests = render_plan(make_plan("p1", [group("chat", "h100-a", "h100-sxm", 1, 2)]), make_fleet())
    api.double.refuse.add(("Service", "chat-h100-a-h100-sxm-tp1-unified"))
    applier = _applier(api, on_poll=api.mark_ready)
    dry = applier.apply(manifests, dry_run=True)
    assert "! refused Service assistants/chat-h100-a-h100-sxm-tp1-unified: HTTP 422" in dry.diff
    with pytest.raises(ApplyRefused, match="admission webhook"):
        applier.apply(manifests)
    assert not api.double.writes


def test_one_failing_object_does_not_stop_the_others_and_backs_off(api: DoubleServer):
    now = [0.0]
    backoff = ObjectBackoff(initial_s=2.0, clock=lambda: now[0])
    manifests = render_plan(make_plan("p1", [group("chat", "h100-a", "h100-sxm", 1, 2),
                                             group("code", "h100-a", "h100-sxm", 8, 1)]), make_fleet())
    bad = ObjectRef("Deployment", "assistants", "chat-h100-a-h100-sxm-tp1-unified")
    api.double.refuse.add((bad.kind, bad.name))
    applier = Applier(api.client(), "test-fleet", ready_timeout_s=0.0, preflight=False, backoff=backoff)
    first = applier.apply(manifests)
    assert [f.ref for f in first.failed] == [bad] and "HTTP 422" in first.failed[0].message
    assert len(first.created) == 7 and not first.complete  # all but the refused one (entry Services too)
    second = applier.apply(manifests)  # within its backoff: not tried again
    assert second.backing_off == (bad,) and not second.failed
    now[0] = 2.5
    api.double.refuse.clear()
    third = applier.apply(manifests)
    assert third.created == (bad,) and not third.failed and backoff.waiting() == []


def test_another_managers_change_is_taken_back_with_force(api: DoubleServer):
    manifests = render_plan(make_plan("p1", [group("chat", "h100-a", "h100-sxm", 1, 2)]), make_fleet())
    applier = _applier(api, on_poll=api.mark_ready)
    applier.apply(manifests)
    deployment = next(m for m in manifests if m["kind"] == "Deployment")
    theirs = json.loads(json.dumps(deployment))
    theirs["spec"]["template"]["spec"]["containers"][0]["image"] = "someone/else:latest"
    other = api.client()
    # a plain apply by another manager conflicts with Medley's fields; kubectl --force-conflicts takes them
    query = {"fieldManager": "kubectl-set", "force": "true"}
    other._call("PATCH", f"/apis/apps/v1/namespaces/assistants/deployments/{deployment['metadata']['name']}",
                query=query, body=theirs, content_type="application/apply-patch+yaml")
    result = applier.apply(manifests)
    assert [str(r) for r in result.updated] == [f"Deployment assistants/{deployment['metadata']['name']}"]
    _assert_matches(api.store(), manifests)


def test_an_object_labelled_as_medleys_that_medley_never_applied_is_not_pruned(api: DoubleServer):
    manifests = render_plan(make_plan("p1", [group("chat", "h100-a", "h100-sxm", 1, 2)]), make_fleet())
    impostor = json.loads(json.dumps(next(m for m in manifests if m["kind"] == "Service")))
    impostor["metadata"]["name"] = "copied-by-hand"
    api.client().create(impostor)  # same labels, created by someone else
    result = _applier(api, on_poll=api.mark_ready).apply(manifests)
    assert result.complete and not result.pruned
    assert ("Service", "assistants", "copied-by-hand") in api.store()
