"""The official-client ClusterClient: which failures are retried, and how often at most."""

from __future__ import annotations

import random

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


class _LateOnce(random.Random):
    """Fault draws for the API double: the first call is answered after the client gave up, no others fail."""

    def __init__(self) -> None:
        super().__init__(0)
        self.draws = 0

    def random(self) -> float:
        self.draws += 1
        return 0.0 if self.draws == 1 else 1.0

    def choice(self, seq):  # type: ignore[override]
        return "late"


def _lease(holder: str) -> dict:
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "medley", "namespace": "medley-system"}, "spec": {"holderIdentity": holder}}


def test_a_create_whose_answer_was_lost_is_not_reported_as_a_conflict():
    """The first POST is written but answered after the timeout; its retry meets AlreadyExists."""
    from kube_double import DoubleServer

    with DoubleServer(fault_rate=1.0, late_s=0.5, rng=_LateOnce()) as api:
        client = api.client(RetryPolicy(attempts=4, initial_s=0.01, max_s=0.02, request_timeout_s=0.2))
        created = client.create(_lease("me"))
        assert api.double.faults == ["late"]
        assert created["spec"]["holderIdentity"] == "me"
        assert [w for w in api.double.writes if w[0] == "POST"] == [("POST", "Lease", "medley")]
        assert client.get(ObjectRef("Lease", "medley-system", "medley"))["spec"] == {"holderIdentity": "me"}


def test_a_create_over_someone_elses_object_is_a_conflict():
    from kube_double import DoubleServer

    from provisioner.cluster import ConflictError

    with DoubleServer(fault_rate=1.0, late_s=0.5, rng=_LateOnce()) as api:
        client = api.client(RetryPolicy(attempts=4, initial_s=0.01, max_s=0.02, request_timeout_s=0.2))
        client.create(_lease("them"))  # lost answer, written: ours
        with pytest.raises(ConflictError):
            client.create(_lease("me"))  # theirs now: a real conflict, not retried away
        assert api.store()[("Lease", "medley-system", "medley")]["spec"]["holderIdentity"] == "them"
