"""Rollout ordering as pure functions: diffs, holds and the capacity guard."""

from __future__ import annotations

import copy

from kube_double import group, make_fleet, make_plan

from provisioner.cluster import ObjectRef
from provisioner.render import render_plan
from provisioner.rollout import break_steps, contains, plan_changes, render_diff


def _live(manifests, ready: dict[str, int]):
    out = []
    for m in manifests:
        obj = copy.deepcopy(m)
        obj["metadata"]["managedFields"] = [{"manager": "medley", "operation": "Apply"}]
        if m["kind"] == "Deployment":
            obj["status"] = {"readyReplicas": ready.get(m["metadata"]["name"], 0)}
        out.append(obj)
    return out


OLD = "chat-h100-a-h100-sxm-tp1-unified"
NEW = "chat-l4-b-l4-tp1-unified"


def _scenario(new_ready: int):
    fleet = make_fleet(chat_rps=10.0)
    old = render_plan(make_plan("p1", [group("chat", "h100-a", "h100-sxm", 1, 2, share=1.0)]), fleet)
    new = render_plan(make_plan("p2", [group("chat", "l4-b", "l4", 1, 4, share=1.0)]), fleet)
    live = _live(old, {OLD: 2}) + _live(new, {NEW: new_ready})
    changes = plan_changes(new, live, {ObjectRef.of(o): o for o in live})
    workloads = [o for o in live if o["kind"] == "Deployment"]
    return changes, workloads, new


def test_old_group_and_its_service_and_pdb_are_held_while_new_capacity_is_short():
    changes, workloads, new = _scenario(new_ready=3)
    assert {c.ref.name for c in changes.prune} == {OLD}
    allowed, held = break_steps(changes, workloads, new)
    assert not allowed and {c.ref.kind for c in held} == {"Deployment", "Service", "PodDisruptionBudget"}
    assert "ready capacity would fall short" in next(c.reason for c in held if c.ref.kind == "Deployment")


def test_everything_goes_once_the_new_group_is_ready_workload_first():
    changes, workloads, new = _scenario(new_ready=4)
    allowed, held = break_steps(changes, workloads, new)
    assert not held and [c.ref.kind for c in allowed][0] == "Deployment" and len(allowed) == 3


def test_shrink_is_a_hold_then_a_scale_down_and_the_diff_says_so():
    fleet = make_fleet()
    before = render_plan(make_plan("p1", [group("chat", "h100-a", "h100-sxm", 1, 4)]), fleet)
    after = render_plan(make_plan("p2", [group("chat", "h100-a", "h100-sxm", 1, 2)]), fleet)
    live = _live(before, {OLD: 4})
    changes = plan_changes(after, live, {ObjectRef.of(o): o for o in live})
    assert [c.ref.name for c in changes.shrink] == [OLD]
    held = changes.held_manifests[ObjectRef("Deployment", "assistants", OLD)]
    assert held["spec"]["replicas"] == 4
    assert "~ scale Deployment assistants/" + OLD + ": 4 → 2 replicas" in render_diff(changes)


def test_contains_ignores_server_defaults_but_not_changed_values():
    desired = {"spec": {"replicas": 2, "template": {"containers": [{"name": "a", "image": "x"}]}}}
    live = {"spec": {"replicas": 2, "revisionHistoryLimit": 10,
                     "template": {"containers": [{"name": "a", "image": "x", "imagePullPolicy": "IfNotPresent"}]}}}
    assert contains(desired, live)
    live["spec"]["template"]["containers"][0]["image"] = "y"
    assert not contains(desired, live)
    assert not contains({"spec": {"replicas": 2}}, {"spec": {"replicas": 3}})
