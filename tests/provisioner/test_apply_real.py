"""``medley apply`` against the real control plane: ``--dry-run`` asks the API server (``dryRun=All``), so a
missing namespace or an admission refusal is reported before anything is created, and the real apply
refuses before writing anything."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
import yaml
from kube_cluster import KubeCluster
from kube_double import group, make_fleet, make_plan
from kube_real import admin, core, make_namespace
from kubernetes import client as k8s
from typer.testing import CliRunner

from provisioner.cli import apply_command, controller_command

pytestmark = pytest.mark.integration

app = typer.Typer()
app.command("apply")(apply_command)
app.command("controller")(controller_command)


def _files(tmp_path: Path, team: str) -> tuple[Path, Path]:
    fleet = make_fleet()
    fleet = fleet.model_copy(update={
        "name": f"fleet-{team}",
        "pools": [p.model_copy(update={"node_selector": {"medley.dev/test-pool": "nowhere"}}) for p in fleet.pools],
        "services": [s.model_copy(update={"team": team}) for s in fleet.services if s.id == "chat"]})
    fleet_path = tmp_path / "fleet.yaml"
    fleet_path.write_text(yaml.safe_dump(fleet.model_dump(mode="json", by_alias=True)), encoding="utf-8")
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(make_plan("p1", [group("chat", "h100-a", "h100-sxm", 1, 2)])
                         .model_copy(update={"fleet": fleet.name}).model_dump_json(), encoding="utf-8")
    return plan_path, fleet_path


def _fleet_objects(cluster: KubeCluster, team: str) -> list[str]:
    out = []
    for kind in ("Deployment", "Service", "PodDisruptionBudget"):
        out += [f"{kind} {o['metadata']['name']}" for o in admin(cluster).list(
            kind, f"medley.dev/fleet=fleet-{team}")]
    return out


def test_dry_run_reports_a_missing_namespace_and_the_apply_refuses_before_writing(
        medley_cluster: KubeCluster, tmp_path: Path) -> None:
    team = "dc-nons"
    plan_path, fleet_path = _files(tmp_path, team)
    args = ["apply", str(plan_path), "--fleet", str(fleet_path), "--kubeconfig", medley_cluster.kubeconfig,
            "--wait", "0"]
    runner = CliRunner()
    dry = runner.invoke(app, [*args, "--dry-run"])
    assert dry.exit_code == 1, dry.output
    assert f"! refused Namespace {team}: does not exist" in dry.stdout
    assert f"refused 1 of the changes: Namespace {team}: does not exist" in dry.stderr
    real = runner.invoke(app, args)
    assert real.exit_code == 1 and "refused before writing anything" in real.stderr
    assert _fleet_objects(medley_cluster, team) == []
    try:
        created = runner.invoke(app, [*args, "--create-namespaces"])
        assert created.exit_code == 3, created.output  # written; nothing Ready on a cluster without kubelets
        assert "+ create Namespace dc-nons" in created.stdout and "created 4" in created.stdout
        assert len(_fleet_objects(medley_cluster, team)) == 4  # Deployment, PDB, two Services
        ns = core(medley_cluster).read_namespace(team)
        assert ns.metadata.labels["app.kubernetes.io/managed-by"] == "medley"
    finally:
        core(medley_cluster).delete_namespace(team)


def test_an_admission_refusal_is_reported_by_the_dry_run_and_nothing_is_written(
        medley_cluster: KubeCluster, tmp_path: Path) -> None:
    """A ResourceQuota that allows no Deployment: the server's dry run refuses it, so the Service and the PDB
    that would have been created before it are not created either."""
    team = "dc-quota"
    make_namespace(medley_cluster, team)
    try:
        core(medley_cluster).create_namespaced_resource_quota(team, k8s.V1ResourceQuota(
            metadata=k8s.V1ObjectMeta(name="no-deployments"),
            spec=k8s.V1ResourceQuotaSpec(hard={"count/deployments.apps": "0"})))
        plan_path, fleet_path = _files(tmp_path, team)
        args = ["apply", str(plan_path), "--fleet", str(fleet_path), "--kubeconfig", medley_cluster.kubeconfig,
                "--wait", "0"]
        dry = CliRunner().invoke(app, [*args, "--dry-run"])
        assert dry.exit_code == 1, dry.output
        assert f"! refused Deployment {team}/chat-h100-a-h100-sxm-tp1-unified: HTTP 403" in dry.stdout
        assert "exceeded quota: no-deployments" in dry.stdout
        real = CliRunner().invoke(app, args)
        assert real.exit_code == 1 and "exceeded quota" in real.stderr
        assert _fleet_objects(medley_cluster, team) == []
    finally:
        core(medley_cluster).delete_namespace(team)
