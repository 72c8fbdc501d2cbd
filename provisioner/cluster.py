"""The cluster behind a small Protocol, filled by the official ``kubernetes`` client.

``KubeClusterClient`` speaks plain JSON over the client's ``ApiClient`` (one code path for core kinds,
apps, policy, coordination, events and Medley's own resources): server-side apply with field manager
``medley`` and ``force`` (Medley takes back the fields it owns when another manager changed them: drift
repair), server-side dry runs (``dryRun=All``), reads, deletes, merge patches, status patches and
optimistic-concurrency writes. Every call retries with jittered exponential backoff (tenacity) on 409,
429, 5xx, timeouts and dropped connections, a bounded number of times.

Versions are chosen by discovery: a kind lists the API versions that serve it, newest first
(``PodDisruptionBudget``: ``policy/v1``, else ``policy/v1beta1`` on clusters before 1.21). Requests use the
first version the server offers; objects read back carry the kind's first (canonical) version, so callers
compare rendered manifests with live objects without caring which version the cluster speaks.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

import urllib3
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

FIELD_MANAGER = "medley"
T = TypeVar("T")


@dataclass(frozen=True)
class Kind:
    """Where a kind lives in the API: its group/version, plural, scope, and older versions that serve it."""

    api_version: str
    kind: str
    plural: str
    namespaced: bool
    older_versions: tuple[str, ...] = ()

    @property
    def versions(self) -> tuple[str, ...]:
        """Every version that serves the kind, the canonical one first."""
        return (self.api_version, *self.older_versions)


KINDS: dict[str, Kind] = {k.kind: k for k in (
    Kind("apps/v1", "Deployment", "deployments", True),
    Kind("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet", "leaderworkersets", True),
    Kind("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets", True, ("policy/v1beta1",)),
    Kind("v1", "Service", "services", True),
    Kind("v1", "Pod", "pods", True),
    Kind("v1", "Namespace", "namespaces", False),
    Kind("v1", "Node", "nodes", False),
    Kind("v1", "Event", "events", True),
    Kind("coordination.k8s.io/v1", "Lease", "leases", True),
    Kind("medley.dev/v1alpha1", "GPUPool", "gpupools", False),
    Kind("medley.dev/v1alpha1", "LLMService", "llmservices", True),
    Kind("medley.dev/v1alpha1", "PowerDomain", "powerdomains", False),
    Kind("medley.dev/v1alpha1", "FleetPlan", "fleetplans", False),
    Kind("apiextensions.k8s.io/v1", "CustomResourceDefinition", "customresourcedefinitions", False),
)}


@dataclass(frozen=True, order=True)
class ObjectRef:
    """Names one object: kind, namespace ('' when cluster-scoped) and name."""

    kind: str
    namespace: str
    name: str

    @staticmethod
    def of(manifest: dict[str, Any]) -> ObjectRef:
        meta = manifest["metadata"]
        return ObjectRef(manifest["kind"], meta.get("namespace") or "", meta["name"])

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace + '/' if self.namespace else ''}{self.name}"


class ConflictError(Exception):
    """An optimistic-concurrency write lost (HTTP 409 on a write that carries a resourceVersion)."""


class KindNotServed(ApiException):
    """The cluster serves none of a kind's versions (no LeaderWorkerSet CRD, say); status 404."""

    def __init__(self, kind: Kind) -> None:
        super().__init__(status=404, reason="Not Found")
        self.body = json.dumps({"kind": "Status", "reason": "NotFound", "message": (
            f"this cluster serves no {kind.kind} API ({', '.join(kind.versions)})")})


class ClusterClient(Protocol):
    """What the applier and controller need from a cluster."""

    def get(self, ref: ObjectRef) -> dict[str, Any] | None:
        """The object, or None when absent."""
        ...

    def list(self, kind: str, label_selector: str = "", namespace: str = "") -> list[dict[str, Any]]:
        """Objects of a kind (all namespaces unless one is given) matching the selector."""
        ...

    def apply(self, manifest: dict[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
        """Server-side apply under field manager ``medley`` with ``force`` (``dry_run``: the server only checks)."""
        ...

    def delete(self, ref: ObjectRef) -> None:
        """Delete the object (absent is fine)."""
        ...

    def patch(self, ref: ObjectRef, patch: dict[str, Any]) -> dict[str, Any]:
        """JSON merge patch of the object (``metadata.resourceVersion`` in it makes it conditional)."""
        ...

    def patch_status(self, ref: ObjectRef, status: dict[str, Any]) -> dict[str, Any]:
        """Merge-patch the status subresource."""
        ...

    def create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Create; raises ConflictError when it exists."""
        ...

    def replace(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Replace guarded by ``metadata.resourceVersion``; raises ConflictError when stale."""
        ...


RETRY_STATUSES = frozenset({409, 429, 500, 502, 503, 504})


def is_transient(exc: BaseException) -> bool:
    """Whether a failed call is worth repeating: 409/429/5xx, timeouts and dropped connections."""
    if isinstance(exc, ApiException):
        return exc.status in RETRY_STATUSES
    return isinstance(exc, urllib3.exceptions.HTTPError | TimeoutError | ConnectionError)


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with jittered exponential backoff."""

    attempts: int = 8
    initial_s: float = 0.2
    max_s: float = 5.0
    request_timeout_s: float = 30.0

    def run(self, fn: Callable[[], T], retry_if: Callable[[BaseException], bool] = is_transient) -> T:
        """Call ``fn`` until it succeeds, a non-transient error, or the attempts are spent."""
        wait = wait_exponential_jitter(multiplier=self.initial_s, max=self.max_s, jitter=self.initial_s)
        for attempt in Retrying(stop=stop_after_attempt(self.attempts), wait=wait,
                                retry=retry_if_exception(retry_if), reraise=True):
            with attempt:
                return fn()
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover


def _path(kind: Kind, namespace: str = "", name: str = "", subresource: str = "") -> str:
    base = "/api/v1" if kind.api_version == "v1" else f"/apis/{kind.api_version}"
    if kind.namespaced and namespace:
        base += f"/namespaces/{quote(namespace)}"
    base += f"/{kind.plural}"
    if name:
        base += f"/{quote(name)}"
    if subresource:
        base += f"/{subresource}"
    return base


class KubeClusterClient:
    """ClusterClient over the official client's ApiClient (plain JSON, no generated models)."""

    def __init__(self, api: k8s.ApiClient, retry: RetryPolicy | None = None) -> None:
        self.api = api
        self.retry = retry or RetryPolicy()
        self._served: dict[str, bool] = {}

    def _kind(self, kind: str) -> Kind:
        """The kind as this cluster serves it (the first of its versions the server offers)."""
        if kind not in KINDS:
            raise ValueError(f"kind: {kind!r} is not one Medley manages")
        known = KINDS[kind]
        if not known.older_versions:
            return known
        for version in known.versions:
            if self._serves(version):
                return replace(known, api_version=version)
        raise KindNotServed(known)

    def _serves(self, group_version: str) -> bool:
        """Whether the server offers ``group_version`` (asked once; a failed question counts as yes)."""
        if group_version not in self._served:
            try:
                self.retry.run(lambda: self._call("GET", f"/apis/{group_version}"))
                self._served[group_version] = True
            except ApiException as exc:
                if exc.status != 404:
                    return True  # unknown: try the canonical version and let the real call say
                self._served[group_version] = False
        return self._served[group_version]

    def _call(self, method: str, path: str, *, query: dict[str, str] | None = None, body: Any = None,
              content_type: str = "application/json") -> dict[str, Any]:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        _, url, header_params, _, _ = self.api.param_serialize(
            method=method, resource_path=path, query_params=list((query or {}).items()),
            header_params=headers, auth_settings=["BearerToken"])
        payload = json.loads(json.dumps(body)) if body is not None else None
        response = self.api.call_api(method, url, header_params=header_params, body=payload,
                                     _request_timeout=self.retry.request_timeout_s)
        data: bytes = response.read()  # type: ignore[no-untyped-call]
        if not 200 <= response.status <= 299:
            raise ApiException(status=response.status, reason=response.reason, body=data.decode(errors="replace"))
        result: dict[str, Any] = json.loads(data) if data else {}
        return result

    @staticmethod
    def _canonical(obj: dict[str, Any], kind: Kind) -> dict[str, Any]:
        """A live object as callers see it: the kind's canonical apiVersion, whatever version served it."""
        obj["kind"] = kind.kind
        obj["apiVersion"] = KINDS[kind.kind].api_version
        return obj

    @staticmethod
    def _sendable(manifest: dict[str, Any], kind: Kind) -> dict[str, Any]:
        if manifest.get("apiVersion") == kind.api_version:
            return manifest
        return {**manifest, "apiVersion": kind.api_version}

    def get(self, ref: ObjectRef) -> dict[str, Any] | None:
        kind = self._kind(ref.kind)

        def once() -> dict[str, Any] | None:
            try:
                return self._canonical(self._call("GET", _path(kind, ref.namespace, ref.name)), kind)
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise
        return self.retry.run(once)

    def list(self, kind: str, label_selector: str = "", namespace: str = "") -> list[dict[str, Any]]:
        k = self._kind(kind)
        query = {"labelSelector": label_selector} if label_selector else {}
        data = self.retry.run(lambda: self._call("GET", _path(k, namespace), query=query))
        items: list[dict[str, Any]] = data.get("items", [])
        return [self._canonical(item, k) for item in items]  # list items omit kind and apiVersion

    def apply(self, manifest: dict[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
        ref = ObjectRef.of(manifest)
        k = self._kind(ref.kind)
        # force: Medley's manager takes back the fields it applies when another manager changed them
        query = {"fieldManager": FIELD_MANAGER, "force": "true"}
        if dry_run:
            query["dryRun"] = "All"
        body = self._sendable(manifest, k)
        return self._canonical(self.retry.run(lambda: self._call(
            "PATCH", _path(k, ref.namespace, ref.name), query=query, body=body,
            content_type="application/apply-patch+yaml")), k)

    def delete(self, ref: ObjectRef) -> None:
        k = self._kind(ref.kind)

        def once() -> None:
            try:
                self._call("DELETE", _path(k, ref.namespace, ref.name),
                           body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"})
            except ApiException as exc:
                if exc.status != 404:  # a retried delete whose first try went through
                    raise
        self.retry.run(once)

    def patch(self, ref: ObjectRef, patch: dict[str, Any]) -> dict[str, Any]:
        k = self._kind(ref.kind)
        conditional = bool((patch.get("metadata") or {}).get("resourceVersion"))

        def once() -> dict[str, Any]:
            try:
                return self._call("PATCH", _path(k, ref.namespace, ref.name), body=patch,
                                  content_type="application/merge-patch+json")
            except ApiException as exc:
                if exc.status == 409 and conditional:
                    raise ConflictError(str(ref)) from None
                raise
        return self._canonical(self.retry.run(once), k)

    def patch_status(self, ref: ObjectRef, status: dict[str, Any]) -> dict[str, Any]:
        k = self._kind(ref.kind)
        return self.retry.run(lambda: self._call(
            "PATCH", _path(k, ref.namespace, ref.name, "status"), body={"status": status},
            content_type="application/merge-patch+json"))

    def _landed(self, kind: Kind, ref: ObjectRef, manifest: dict[str, Any]) -> dict[str, Any] | None:
        """The live object when it already says what ``manifest`` says (an earlier try went through)."""
        try:
            live = self._call("GET", _path(kind, ref.namespace, ref.name))
        except ApiException:
            return None
        sent, now = manifest.get("metadata") or {}, live.get("metadata") or {}
        same = all(live.get(key) == manifest.get(key) for key in manifest if key not in ("metadata", "status"))
        same = same and all(now.get(key) == sent.get(key) for key in ("labels", "annotations") if key in sent)
        return live if same else None

    def _write(self, method: str, manifest: dict[str, Any], conflict_reasons: frozenset[str] | None) -> dict[str, Any]:
        """POST or PUT with retries; a 409 after a try whose answer was lost is checked against the live object.

        A create or replace answered late (or with a 5xx) may have been written anyway; its retry then
        meets "already exists" or a stale resourceVersion. When the live object already holds what was
        sent, that is our own write and the call succeeded.
        """
        ref = ObjectRef.of(manifest)
        k = self._kind(ref.kind)
        path = _path(k, ref.namespace) if method == "POST" else _path(k, ref.namespace, ref.name)
        uncertain = False

        def once() -> dict[str, Any]:
            nonlocal uncertain
            try:
                return self._call(method, path, body=self._sendable(manifest, k))
            except ApiException as exc:
                if exc.status == 409 and (conflict_reasons is None or _reason(exc) in conflict_reasons):
                    landed = self._landed(k, ref, manifest) if uncertain else None
                    if landed is not None:
                        return landed
                    raise ConflictError(str(ref)) from None
                uncertain = True
                raise
            except Exception:
                uncertain = True
                raise
        return self.retry.run(once)

    def create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        return self._write("POST", manifest, frozenset({"AlreadyExists"}))

    def replace(self, manifest: dict[str, Any]) -> dict[str, Any]:
        # a PUT's 409 is a stale resourceVersion whatever its reason says
        return self._write("PUT", manifest, None)


def _reason(exc: ApiException) -> str:
    """The Status reason of a failed call ("AlreadyExists", "Conflict", ...), or ""."""
    try:
        body = json.loads(exc.body or "{}")
    except ValueError:
        return ""
    return str(body.get("reason", "")) if isinstance(body, dict) else ""


def error_line(exc: BaseException) -> str:
    """An API error in one line: status, reason and the API server's message."""
    status = getattr(exc, "status", None)
    if status is None:
        return (str(exc) or type(exc).__name__).replace("\n", " ")
    message = ""
    with contextlib.suppress(ValueError, AttributeError):  # a body that is not a Status
        message = json.loads(getattr(exc, "body", "") or "{}").get("message", "")
    return f"HTTP {status} {getattr(exc, 'reason', '') or ''}: {message}".strip().rstrip(":")


def kube_client(kubeconfig: str | None = None, retry: RetryPolicy | None = None) -> KubeClusterClient:
    """A client from a kubeconfig file, else the in-cluster service account."""
    from kubernetes import config

    configuration = k8s.Configuration()
    if kubeconfig:
        config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        try:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except config.ConfigException:
            config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    return KubeClusterClient(k8s.ApiClient(configuration), retry)
