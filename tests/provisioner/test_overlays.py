"""The install: kustomize overlays beside k8s/ build and pass strict validation; the Dockerfile builds the image
the manifests name and installs the commands they run."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from provisioner.cli import load_options

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = ROOT / "k8s-overlays"
IMAGE = "ghcr.io/medley-dev/medley"


def _kubectl() -> str | None:
    beside = Path(sys.executable).parent / "kubectl"
    return str(beside) if beside.exists() else shutil.which("kubectl")


def _build(overlay: str) -> list[dict[str, Any]]:
    kubectl = _kubectl()
    assert kubectl is not None
    out = subprocess.run([kubectl, "kustomize", str(OVERLAYS / overlay)], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def _deployment(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == name)


def _containers(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for d in docs if d["kind"] in ("Deployment", "DaemonSet")
            for c in d["spec"]["template"]["spec"]["containers"]]


def test_overlays_are_every_directory_there():
    assert sorted(p.name for p in OVERLAYS.iterdir() if p.is_dir()) == ["dev", "production"]


@pytest.mark.skipif(_kubectl() is None, reason="kubectl is not installed")
@pytest.mark.parametrize("overlay", ["dev", "production"])
def test_overlay_builds_and_passes_strict_validation(overlay: str):
    docs = _build(overlay)
    assert {d["kind"] for d in docs} >= {"CustomResourceDefinition", "Namespace", "Deployment", "DaemonSet"}
    for doc in docs:
        for version in ("1.30", "1.37"):
            kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.skipif(_kubectl() is None, reason="kubectl is not installed")
def test_dev_overlay_runs_one_replica_of_a_local_image():
    docs = _build("dev")
    assert _deployment(docs, "medley-api")["spec"]["replicas"] == 1
    assert _deployment(docs, "medley-controller")["spec"]["replicas"] == 1
    assert {(c["image"], c.get("imagePullPolicy")) for c in _containers(docs)} == {("medley:dev", "IfNotPresent")}


@pytest.mark.skipif(_kubectl() is None, reason="kubectl is not installed")
def test_production_overlay_gives_the_controller_valid_render_options(tmp_path: Path):
    docs = _build("production")
    assert {c["image"] for c in _containers(docs)} == {"registry.example.com/medley/medley:0.1.0"}
    controller = _deployment(docs, "medley-controller")["spec"]["template"]["spec"]
    command = controller["containers"][0]["command"]
    assert command[-2:] == ["--options", "/etc/medley/render/render-options.yaml"]
    mount = next(m for m in controller["containers"][0]["volumeMounts"] if m["name"] == "render-options")
    volume = next(v for v in controller["volumes"] if v["name"] == "render-options")
    config_map = next(d for d in docs if d["kind"] == "ConfigMap"
                      and d["metadata"]["name"] == volume["configMap"]["name"])
    assert mount["mountPath"] == "/etc/medley/render"
    # the file the controller reads is valid render options
    path = tmp_path / "render-options.yaml"
    path.write_text(config_map["data"]["render-options.yaml"], encoding="utf-8")
    options = load_options(path, None)
    assert options.model_cache.claim_name == "medley-models" and options.drain_seconds == 120


def test_dockerfile_installs_every_package_and_the_manifests_name_its_version():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    packages = {p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    copied = set(re.findall(r"^COPY (\w+) \./\1$", dockerfile, flags=re.M))
    assert copied == packages
    assert re.search(r"^RUN .*pip install \.", dockerfile, flags=re.M | re.S)
    kustomization = yaml.safe_load((ROOT / "k8s" / "kustomization.yaml").read_text(encoding="utf-8"))
    image = next(i for i in kustomization["images"] if i["name"] == IMAGE)
    assert image["newTag"] == pyproject["project"]["version"]
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert {f"!{p}/" for p in packages} <= set(ignored)  # the build context holds what the COPYs need


def test_every_command_the_manifests_run_is_a_medley_command():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    commands = set(pyproject["project"]["entry-points"]["medley.cli"])
    assert {"render", "inventory", "apply", "controller", "serve", "power"} <= commands
    assert pyproject["project"]["scripts"]["medley"] == "planner.cli:main"
    run = []
    for path in sorted((ROOT / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc and doc["kind"] in ("Deployment", "DaemonSet"):
                containers = doc["spec"]["template"]["spec"]["containers"]
                run += [c["command"] for c in containers if c["image"].startswith(IMAGE)]
    assert len(run) >= 4
    for command in run:
        assert command[0] == "medley" and command[1] in commands, command
