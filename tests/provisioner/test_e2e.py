"""End to end on a real cluster (kind, minikube …): CRDs, example resources, a server-side dry run of a plan.

Runs with ``pytest -m e2e`` when ``KUBECONFIG`` names a cluster; skipped otherwise. It leaves the CRDs
installed and removes the example resources it created.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import yaml

from planner.schema import Configuration, FleetSpec, Plan, ReplicaGroup, SolverReport
from provisioner.cluster import ObjectRef, kube_client
from provisioner.controller import Reconciler
from provisioner.render import render_plan
from provisioner.resources import fleet_from_resources

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not os.environ.get("KUBECONFIG"), reason="KUBECONFIG is not set")]

ROOT = Path(__file__).resolve().parents[2]


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def _example_plan(fleet: FleetSpec) -> Plan:
    groups = [ReplicaGroup(service=s.id, pool="l4-b", replicas=1, cost_usd_per_hour=1, expected_watts=72,
                           configuration=Configuration(device="l4", tp=1)) for s in fleet.services]
    return Plan(id="e2e", fleet=fleet.name, replica_groups=groups, cost_usd_per_hour=2,
                solver=SolverReport(backend="e2e", status="optimal"))


def test_crds_examples_and_rendered_plan_on_a_real_cluster(request: pytest.FixtureRequest):
    if "e2e" not in (request.config.option.markexpr or ""):
        pytest.skip("touches a real cluster: run with `pytest -m e2e`")
    client = kube_client()  # honours KUBECONFIG (a list of files too)
    for crd in sorted((ROOT / "k8s" / "crds").glob("*.yaml")):
        client.apply(_docs(crd)[0])
    deadline = time.monotonic() + 60
    names = [_docs(p)[0]["metadata"]["name"] for p in (ROOT / "k8s" / "crds").glob("*.yaml")]
    while time.monotonic() < deadline:
        crds = [client.get(ObjectRef("CustomResourceDefinition", "", n)) for n in names]
        if all(any(c["type"] == "Established" and c["status"] == "True"
                   for c in (crd or {}).get("status", {}).get("conditions", [])) for crd in crds):
            break
        time.sleep(1)
    else:
        pytest.fail("CRDs not Established within 60 s")

    examples = [d for p in sorted((ROOT / "examples" / "crs").glob("*.yaml")) for d in _docs(p)]
    examples.sort(key=lambda d: d["kind"] != "Namespace")
    created = []
    try:
        for doc in examples:
            client.apply(doc)  # the API server validates each against its CRD schema
            created.append(ObjectRef.of(doc))
        by_kind: dict[str, list[dict]] = {}
        for ref in created:
            obj = client.get(ref)
            assert obj is not None, ref
            by_kind.setdefault(ref.kind, []).append(obj)
        fleet = fleet_from_resources(by_kind["FleetPlan"][0], by_kind["GPUPool"], by_kind["LLMService"],
                                     by_kind["PowerDomain"])
        # the API server checks every rendered object without creating it (no accelerators needed)
        for manifest in render_plan(_example_plan(fleet), fleet):
            if manifest["kind"] != "LeaderWorkerSet":
                client.apply(manifest, dry_run=True)
        # the controller plans (with a fixed plan here) and, in approve mode, only reports the diff
        Reconciler(client, planner=lambda f, *, current=None: _example_plan(f)).reconcile("medley")
        status = client.get(ObjectRef("FleetPlan", "", "medley"))["status"]
        conditions = {c["type"]: c["reason"] for c in status["conditions"]}
        assert conditions["Planned"] == "Planned" and conditions["Progressing"] == "AwaitingApproval"
        assert "+ create Deployment assistants/" in status["diff"]
    finally:
        for ref in reversed(created):
            if ref.kind == "FleetPlan":  # no controller runs here to honour its finalizer
                client.patch(ref, {"metadata": {"finalizers": None}})
            if ref.kind != "Namespace":
                client.delete(ref)


