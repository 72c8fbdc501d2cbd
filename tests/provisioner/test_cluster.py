"""The official-client ClusterClient: which failures are retried, and how often at most."""

from __future__ import annotations

import pytest
import urllib3
from kubernetes.client.exceptions import ApiException

from provisioner.cluster import ObjectRef, RetryPolicy, is_transient


@pytest.mark.parametrize("status", [409, 429, 500, 503, 504])
def test_conflicts_throttling_and_server_errors_are_retried(status):
    assert is_transient(ApiException(status=status))


@pytest.mark.parametrize("status", [400, 403, 404, 422])
def test_client_errors_are_not_retried(status):
    assert not is_transient(ApiException(status=status))


def test_timeouts_are_retried():
    assert is_transient(urllib3.exceptions.ReadTimeoutError(None, "/", "read timed out"))


def test_retries_are_bounded_and_reraise_the_last_error():
    calls = []

    def flaky():
        calls.append(1)
        raise ApiException(status=500)
    with pytest.raises(ApiException):
        RetryPolicy(attempts=4, initial_s=0.001, max_s=0.001).run(flaky)
    assert len(calls) == 4


def test_a_retry_that_succeeds_returns_its_value():
    answers = iter([ApiException(status=429), ApiException(status=409), "ok"])

    def once():
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer
    assert RetryPolicy(attempts=5, initial_s=0.001, max_s=0.001).run(once) == "ok"


def test_object_refs_read_manifests():
    ref = ObjectRef.of({"kind": "Service", "metadata": {"name": "a", "namespace": "ns"}})
    assert str(ref) == "Service ns/a" and str(ObjectRef("GPUPool", "", "p")) == "GPUPool p"
