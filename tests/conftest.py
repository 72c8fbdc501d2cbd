"""Fixtures shared by every test folder: the real Kubernetes control plane (see ``kube_cluster``)."""

from kube_cluster import kube_cluster

__all__ = ["kube_cluster"]
