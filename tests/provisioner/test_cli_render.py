"""``medley render``: offline manifests in a directory that ``kubectl kustomize`` builds and strict validation
passes; bad input is one line and exit 2."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import typer
import yaml
from crd_schema import validate_custom_resource
from kube_double import group, make_fleet, make_plan
from typer.testing import CliRunner

from planner.schema import Configuration, ReplicaGroup, Role
from provisioner.cli import render_command

app = typer.Typer()
app.command()(render_command)


def _kubectl() -> str | None:
    beside = Path(sys.executable).parent / "kubectl"
    return str(beside) if beside.exists() else shutil.which("kubectl")


def _files(tmp_path: Path, groups: list[ReplicaGroup] | None = None) -> tuple[Path, Path]:
    fleet_path = tmp_path / "fleet.yaml"
    fleet_path.write_text(yaml.safe_dump(make_fleet().model_dump(mode="json", by_alias=True)), encoding="utf-8")
    plan_path = tmp_path / "plan.json"
    plan = make_plan("p1", groups or [
        group("chat", "h100-a", "h100-sxm", 1, 2), group("chat", "l4-b", "l4", 2, 1, role=Role.PREFILL),
        group("chat", "l4-b", "l4", 1, 1, role=Role.DECODE),
        group("code", "h100-a", "h100-sxm", 1, 1, pp=4, nodes=["a", "a", "b", "b"])])
    plan_path.write_text(plan.model_dump_json(), encoding="utf-8")
    return plan_path, fleet_path


def test_render_writes_one_file_per_object_and_a_kustomization(tmp_path: Path):
    plan, fleet = _files(tmp_path)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, [str(plan), "--fleet", str(fleet), "-o", str(out), "--kube-version", "1.20"])
    assert result.exit_code == 0, result.output
    kustomization = yaml.safe_load((out / "kustomization.yaml").read_text(encoding="utf-8"))
    files = kustomization["resources"]
    assert "namespaces.yaml" in files and "assistants/deployment-chat-router.yaml" in files
    assert all((out / f).is_file() for f in files)
    docs = [d for f in files for d in yaml.safe_load_all((out / f).read_text(encoding="utf-8"))]
    assert {d["metadata"]["name"] for d in docs if d["kind"] == "Namespace"} == {"assistants", "devtools"}
    assert {d["apiVersion"] for d in docs if d["kind"] == "PodDisruptionBudget"} == {"policy/v1beta1"}
    assert "&id" not in (out / "assistants" / "deployment-chat-router.yaml").read_text(encoding="utf-8")


@pytest.mark.skipif(_kubectl() is None, reason="kubectl is not installed")
def test_kubectl_kustomize_of_the_output_passes_strict_validation_and_crd_schemas(tmp_path: Path):
    plan, fleet = _files(tmp_path)
    out = tmp_path / "out"
    assert CliRunner().invoke(app, [str(plan), "--fleet", str(fleet), "-o", str(out)]).exit_code == 0
    built = subprocess.run([str(_kubectl()), "kustomize", str(out)], capture_output=True, text=True, timeout=60,
                           check=True).stdout
    docs = [d for d in yaml.safe_load_all(built) if d]
    kinds = {d["kind"] for d in docs}
    assert kinds == {"Namespace", "Deployment", "LeaderWorkerSet", "PodDisruptionBudget", "Service"}
    for doc in docs:
        if doc["kind"] == "LeaderWorkerSet":
            validate_custom_resource(doc)
            continue
        for version in ("1.30", "1.37"):
            kubernetes_validate.validate(doc, version, strict=True)


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path):
    plan, fleet = _files(tmp_path)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, [str(plan), "--fleet", str(fleet), "-o", str(out), "--kube-version", "x"])
    assert result.exit_code == 2 and result.output.strip() == "--kube-version: 'x' is not MAJOR.MINOR (e.g. 1.20)"
    cfg = Configuration(device="h100-sxm", tp=1, role=Role.DECODE_OFFLOAD, memory_device="l4", memory_devices=2)
    offload = ReplicaGroup(service="chat", pool="h100-a", memory_pool="l4-b", configuration=cfg, replicas=1,
                           cost_usd_per_hour=1, expected_watts=1)
    plan, fleet = _files(tmp_path, [offload, group("chat", "l4-b", "l4", 1, 1, role=Role.PREFILL)])
    result = CliRunner().invoke(app, [str(plan), "--fleet", str(fleet), "-o", str(out)])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert result.output.startswith("services[chat]: decode+offload needs an engine")
    assert not out.exists()  # nothing written
