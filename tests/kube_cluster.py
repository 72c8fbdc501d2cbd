"""A real Kubernetes control plane for integration tests: the shared ``k8s-test-cluster`` (kube-apiserver,
controller-manager and scheduler v1.20.2 with etcd; fake GPU nodes, no kubelet), started once per test
session under a temporary directory and stopped at the end.

Where it lives: ``$KCT_HOME``, else ``../shared/k8s-test-cluster`` beside the repository. Absent, the tests
that need it are skipped with that reason. ``MEDLEY_E2E_KUBECONFIG`` points the tests at a cluster of your
own instead (then nothing is started, and tests that need fake nodes are skipped: they never add nodes to a
real cluster).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
KCT_HOME = Path(os.environ.get("KCT_HOME") or ROOT.parent / "shared" / "k8s-test-cluster")
START_TIMEOUT_S = 240


@dataclass(frozen=True)
class KubeCluster:
    """A running control plane: its admin kubeconfig and, for the throwaway one, its state directory."""

    kubeconfig: str
    state: Path | None  # None: a cluster of the user's own (MEDLEY_E2E_KUBECONFIG)

    @property
    def throwaway(self) -> bool:
        return self.state is not None

    def add_node(self, name: str, labels: Mapping[str, str] | None = None, *, gpus: int = 0,
                 resources: Mapping[str, str] | None = None, taints: Sequence[str] = ()) -> None:
        """Make a fake Ready node the real scheduler binds pods to (throwaway cluster only)."""
        if self.state is None:
            pytest.skip("fake nodes are added only to the throwaway test control plane, not to your cluster")
        args = [str(KCT_HOME / "add-node"), str(self.state), name, *(f"{k}={v}" for k, v in (labels or {}).items())]
        if gpus:
            args += ["--gpus", str(gpus)]
        for k, v in (resources or {}).items():
            args += ["--resource", f"{k}={v}"]
        for t in taints:
            args += ["--taint", t]
        subprocess.run(args, check=True, capture_output=True, text=True, timeout=60)

    def kubeconfig_of(self, namespace: str, service_account: str) -> str:
        """The kubeconfig of a service account the control plane made a token for (throwaway cluster)."""
        if self.state is None:
            pytest.skip("service-account kubeconfigs exist only on the throwaway test control plane")
        return str(self.state / "sa" / namespace / f"{service_account}.kubeconfig")


def wait_for_service_account_token(core: Any, namespace: str, timeout_s: float = 30.0) -> None:
    """Wait until the namespace's ``default`` ServiceAccount has its token (pods are refused until then)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if core.read_namespaced_service_account("default", namespace).secrets:
                return
        except Exception:  # noqa: BLE001 - not created yet
            pass
        time.sleep(0.1)
    raise TimeoutError(f"namespace {namespace}: no token for ServiceAccount default after {timeout_s:g} s")


def start_cluster(state: Path) -> KubeCluster:
    """Start the shared control plane under ``state``; skip (with the reason) where it cannot run here."""
    start = KCT_HOME / "start"
    if not start.is_file():
        pytest.skip(f"no Kubernetes test control plane at {KCT_HOME} (set KCT_HOME to its directory)")
    if os.geteuid() != 0 and (shutil.which("etcd") is None or shutil.which("kubectl") is None):
        pytest.skip("the test control plane needs etcd and kubectl installed (or root to install them)")
    env = dict(os.environ)
    env.setdefault("KCT_BIN_CACHE", str(Path.home() / ".cache" / "k8s-test-cluster"))
    out = subprocess.run([str(start), str(state)], capture_output=True, text=True, timeout=START_TIMEOUT_S,
                         env=env)
    if out.returncode != 0:
        raise RuntimeError(f"k8s-test-cluster start failed ({out.returncode}):\n{out.stdout[-2000:]}\n"
                           f"{out.stderr[-2000:]}")
    last = out.stdout.strip().splitlines()[-1]
    return KubeCluster(kubeconfig=last.split("=", 1)[1], state=state)


def stop_cluster(cluster: KubeCluster) -> None:
    if cluster.state is not None:
        subprocess.run([str(KCT_HOME / "stop"), str(cluster.state)], capture_output=True, timeout=120)


@pytest.fixture(scope="session")
def kube_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeCluster]:
    """The session's control plane (started on first use)."""
    own = os.environ.get("MEDLEY_E2E_KUBECONFIG")
    if own:
        yield KubeCluster(kubeconfig=own, state=None)
        return
    cluster = start_cluster(tmp_path_factory.mktemp("k8s"))
    try:
        yield cluster
    finally:
        stop_cluster(cluster)
