"""Fixtures of the provisioner tests; the Kubernetes API double lives in ``kube_double`` and the real-cluster
helpers in ``kube_real``, so test modules can import them by names no other test folder uses."""

import pytest
from kube_cluster import KubeCluster
from kube_double import api
from kube_real import install_medley

__all__ = ["api", "medley_cluster"]


@pytest.fixture
def medley_cluster(kube_cluster: KubeCluster) -> KubeCluster:
    """The session's real control plane with Medley's CRDs, namespace and RBAC installed (throwaway only)."""
    if not kube_cluster.throwaway:
        pytest.skip("these tests change cluster-wide objects: they run only on the throwaway control plane")
    install_medley(kube_cluster)
    return kube_cluster
