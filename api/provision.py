"""Where approved plans go: the provisioner, behind a small Protocol, and how the API picks one.

``medley serve`` applies to the cluster its settings name (``MEDLEY_KUBECONFIG``, else the in-cluster
service account, else ``KUBECONFIG``/``~/.kube/config``) through the real ``PlanProvisioner``; with none of
them, an apply answers 503 naming what to set. ``MEDLEY_PROVISIONER=record`` only records the request.
Every apply returns a typed ``ApplyOutcome``; the plan becomes ``applied`` only when its state is
``applied`` (the cluster matches and every workload is Ready), ``apply_requested`` otherwise.
"""

from __future__ import annotations

import threading
from typing import Protocol

from planner.schema import FleetSpec, Plan
from provisioner.apply import ApplyOutcome, ApplyRefused, PlanProvisioner
from provisioner.cluster import KubeClusterClient, RetryPolicy, kube_client

__all__ = ["ApplyOutcome", "ApplyRefused", "KubernetesProvisioner", "Provisioner", "ProvisionerUnavailable",
           "RecordingProvisioner"]


class ProvisionerUnavailable(Exception):
    """No cluster is configured or reachable; the message says what to set."""


class Provisioner(Protocol):
    """Applies a plan, made for ``fleet``, to a cluster and says what happened."""

    def apply(self, plan: Plan, fleet: FleetSpec) -> ApplyOutcome: ...


class RecordingProvisioner:
    """``MEDLEY_PROVISIONER=record``: records that an apply was requested and changes nothing."""

    def apply(self, plan: Plan, fleet: FleetSpec) -> ApplyOutcome:
        """Accept the plan without touching any cluster."""
        return ApplyOutcome(state="recorded", detail=(
            f"no cluster touched (MEDLEY_PROVISIONER=record); {len(plan.replica_groups)} replica groups recorded"))


class KubernetesProvisioner:
    """The real ``PlanProvisioner`` on the cluster of ``kubeconfig`` (None: in-cluster, then the default file).

    The client is built on the first apply, so the API starts without a cluster; a missing or unreadable
    configuration is a ``ProvisionerUnavailable``.
    """

    def __init__(self, kubeconfig: str | None = None, *, create_namespaces: bool = False,
                 retry: RetryPolicy | None = None) -> None:
        self.kubeconfig = kubeconfig
        self.create_namespaces = create_namespaces
        self.retry = retry or RetryPolicy(attempts=5, initial_s=0.2, max_s=2.0, request_timeout_s=20)
        self._client: KubeClusterClient | None = None
        self._lock = threading.Lock()

    def client(self) -> KubeClusterClient:
        """The cluster client, built once."""
        with self._lock:
            if self._client is None:
                try:
                    self._client = kube_client(self.kubeconfig, self.retry)
                except Exception as exc:  # noqa: BLE001 - ConfigException, a missing file, a bad kubeconfig
                    where = f"MEDLEY_KUBECONFIG={self.kubeconfig}" if self.kubeconfig else (
                        "no MEDLEY_KUBECONFIG, no in-cluster service account and no readable ~/.kube/config")
                    raise ProvisionerUnavailable(f"no Kubernetes cluster to apply to ({where}): {exc}") from exc
            return self._client

    def apply(self, plan: Plan, fleet: FleetSpec) -> ApplyOutcome:
        """Render the plan for its fleet and apply it (without waiting for Ready; apply again to go on)."""
        provisioner = PlanProvisioner(self.client(), lambda _: fleet, create_namespaces=self.create_namespaces)
        return provisioner.apply(plan)
