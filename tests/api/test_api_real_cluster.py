"""A REST approval reaches the real control plane: plan (real planner), verify by replay, approve, apply with
the API's own service account (RBAC of k8s/rbac.yaml), and ``applied`` only once every workload is Ready."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from apitest_client import Api
from apitest_fakes import pool_doc, service_doc
from fastapi.testclient import TestClient
from kube_cluster import KubeCluster, wait_for_service_account_token
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from api.app import create_app
from api.settings import Settings

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
TEAM = "dc-rest"


@pytest.fixture
def api_on_cluster(kube_cluster: KubeCluster, tmp_path: Path) -> Iterator[tuple[Api, k8s.CoreV1Api]]:
    if not kube_cluster.throwaway:
        pytest.skip("this test changes cluster-wide objects: it runs only on the throwaway control plane")
    subprocess.run(["kubectl", "--kubeconfig", kube_cluster.kubeconfig, "apply", "-f", str(ROOT / "k8s/namespace.yaml"),
                    "-f", str(ROOT / "k8s/rbac.yaml")], check=True, capture_output=True, timeout=60)
    settings = Settings(database_url=f"sqlite+pysqlite:///{tmp_path / 'api.db'}", verify_duration_s=60,
                        kubeconfig=kube_cluster.kubeconfig_of("medley-system", "medley-api"))
    app = create_app(settings)  # the real planner, the replay verifier and the Kubernetes provisioner
    core = k8s.CoreV1Api(k8s_config.new_client_from_config(config_file=kube_cluster.kubeconfig))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Api(app=app, client=client, planner=None), core
    try:
        core.delete_namespace(TEAM)
    except k8s.ApiException as exc:
        if exc.status != 404:
            raise


def _mark_pods_ready(core: k8s.CoreV1Api) -> int:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    pods = core.list_namespaced_pod(TEAM).items
    for pod in pods:
        core.patch_namespaced_pod_status(pod.metadata.name, TEAM, {"status": {"phase": "Running", "conditions": [
            {"type": t, "status": "True", "lastTransitionTime": now} for t in ("Initialized", "ContainersReady",
                                                                               "Ready")]}})
    return len(pods)


def test_a_rest_approval_reaches_the_cluster(api_on_cluster: tuple[Api, k8s.CoreV1Api]) -> None:
    api, core = api_on_cluster
    admin = api.headers("platform", "admin")
    pool = {**pool_doc(), "node_selector": {"medley.dev/test-pool": "nowhere"}}
    assert api.client.post("/v1/pools", json=pool, headers=admin).status_code == 201
    assert api.client.post("/v1/services", json=service_doc(team=TEAM, rate_rps=8), headers=admin).status_code == 201
    job = api.client.post("/v1/plans", json={}, headers=admin)
    assert job.status_code == 202, job.text
    done = api.wait_job(job.headers["location"], admin, timeout_s=120)
    assert done["status"] == "succeeded", done
    url = done["plan_url"]
    plan = api.client.get(url, headers=admin).json()
    assert plan["verified"] is True, plan["findings"]
    assert api.client.post(f"{url}/approve", headers={**admin, "If-Match": '"1"'}).status_code == 200

    # the team's namespace does not exist yet: refused before anything is written, the plan stays approved
    refused = api.client.post(f"{url}/apply", headers={**admin, "If-Match": '"2"'})
    assert refused.status_code == 409 and f"Namespace {TEAM}: does not exist" in refused.json()["detail"]
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=TEAM)))
    wait_for_service_account_token(core, TEAM)

    applied = api.client.post(f"{url}/apply", headers={**admin, "If-Match": '"2"'})
    assert applied.status_code == 200, applied.text
    status = applied.json()
    assert status["state"] == "apply_requested" and status["apply_result"]["state"] == "in_progress"
    created = status["apply_result"]["created"]
    assert any(c.startswith(f"Deployment {TEAM}/chat-h100-a-") for c in created), created
    apps = k8s.AppsV1Api(core.api_client)
    deployments = apps.list_namespaced_deployment(TEAM, label_selector="app.kubernetes.io/managed-by=medley").items
    assert len(deployments) == len([c for c in created if c.startswith("Deployment")])
    assert all(d.metadata.labels["medley.dev/plan"] == plan["id"] for d in deployments)

    deadline = time.monotonic() + 60
    state = status["state"]
    while state != "applied" and time.monotonic() < deadline:  # the kubelet's part: pods become Ready
        _mark_pods_ready(core)
        time.sleep(0.5)
        again = api.client.post(f"{url}/apply", headers={**admin, "If-Match": applied.headers["etag"]})
        assert again.status_code == 200, again.text
        applied, state = again, again.json()["state"]
    assert state == "applied" and applied.json()["apply_result"]["state"] == "applied"
