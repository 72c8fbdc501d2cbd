"""Fixtures of the provisioner tests; the Kubernetes API double lives in ``kube_double`` so test modules can
import it by a name no other test folder uses."""

from kube_double import api

__all__ = ["api"]
