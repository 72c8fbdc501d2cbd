"""A Kubernetes API double for the provisioner's tests: kmock's emulator with the semantics Medley relies on.

kmock's ``KubernetesEmulator`` stores objects and serves discovery; on top of it this double adds what
the applier and controller depend on: server-side apply (create or update, ``managedFields`` per field
manager, a 409 when another manager's object would be taken over without force; dry runs), label selectors
on lists, ``resourceVersion`` with optimistic concurrency on PUT and on merge patches that carry one, status
merge-patches, finalizers (a DELETE of an object with finalizers only marks it; it goes once they are
removed), namespaces that must exist for namespaced writes, and fault injection (a share of calls answered
409/500, or written but answered too late: a client timeout after the write).
A small "kubelet" marks workloads Ready on demand, so tests decide when new replicas become Ready.
"""

from __future__ import annotations

import asyncio
import copy
import random
import threading
from collections.abc import Iterator
from typing import Any

import aiohttp.web
import attrs
import kmock
import pytest
from kubernetes import client as k8s

from planner.schema import (
    SLO,
    BucketLoad,
    Configuration,
    FleetSpec,
    LengthBucket,
    Plan,
    Pool,
    ReplicaGroup,
    Role,
    Service,
    SolverReport,
    Traffic,
)
from provisioner.cluster import KINDS, KubeClusterClient, RetryPolicy

_PLURAL_TO_KIND = {k.plural: k.kind for k in KINDS.values()}


def _status(code: int, reason: str, message: str) -> aiohttp.web.Response:
    return aiohttp.web.json_response({"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": code,
                                      "reason": reason, "message": message, "metadata": {}}, status=code)


def _matches(labels: dict[str, str], selector: str) -> bool:
    for term in filter(None, selector.split(",")):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


def _merge(base: Any, patch: Any) -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            else:
                out[k] = _merge(out.get(k), v)
        return out
    return copy.deepcopy(patch)


@attrs.define(kw_only=True)
class ApiDouble(kmock.KubernetesEmulator):
    """kmock's emulator with server-side apply, selectors, resourceVersions and fault injection."""

    fault_rate: float = 0.0
    late_s: float = 0.0
    rng: random.Random = attrs.field(factory=lambda: random.Random(7))
    faults: list[str] = attrs.field(factory=list)
    writes: list[tuple[str, str, str]] = attrs.field(factory=list)  # (method, kind, name) of successful writes
    namespaces: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    refuse: set[tuple[str, str]] = attrs.field(factory=set)  # (kind, name) whose writes are refused: 422
    _rv: int = 0
    _events: list[tuple[Any, dict[str, Any]]] = attrs.field(factory=list)

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _key(self, request: Any) -> tuple[Any, Any, Any]:
        return (request.resource, request.namespace or "", request.name)

    def store(self) -> dict[tuple[str, str, str], dict[str, Any]]:
        """Live objects by (kind, namespace, name)."""
        out = {}
        for (resource, namespace, name), obj in list(self.objects.items()):
            if not obj.deleted:
                out[(_PLURAL_TO_KIND.get(resource.plural, resource.plural), namespace or "", name)] = obj.raw
        return out

    async def _handle(self, request: Any) -> aiohttp.web.StreamResponse:
        if (request.resource is None or not request.resource.plural) and request.namespace and request.name is None:
            async with self._lock:
                return self._serve_namespace(request)
        if request.resource is None or not request.resource.plural or request.subresource not in (None, "status"):
            return await super()._handle(request)
        if request.action == kmock.action.WATCH:
            return await super()._handle(request)
        if self.fault_rate and self.rng.random() < self.fault_rate:
            kind = self.rng.choice(["409", "500", "late"])
            self.faults.append(kind)
            if kind == "409":
                return _status(409, "Conflict", "injected: the object has been modified")
            if kind == "500":
                return _status(500, "InternalError", "injected: etcd leader changed")
        else:
            kind = ""
        async with self._lock:
            self._events.clear()
            response = self._serve(request)
            events = list(self._events)
        for resource, event in events:  # live watch streams (kopf's) see every write
            await self._buses[resource].put(event)
        if kind == "late":  # written, but answered after the client has given up: the answer is lost
            await asyncio.sleep(self.late_s)
        return response

    def _serve(self, request: Any) -> aiohttp.web.Response:
        method = request.method
        key = self._key(request)
        kind = _PLURAL_TO_KIND.get(request.resource.plural, request.resource.plural)
        live = self.objects[key] if key in self.objects and not self.objects[key].deleted else None
        if method == "GET" and request.name is None:
            selector = request.params.get("labelSelector", "")
            items = [obj.raw for (res, ns, _), obj in self.objects.items()
                     if res == request.resource and not obj.deleted
                     and (not request.namespace or ns == request.namespace)
                     and _matches(obj.raw.get("metadata", {}).get("labels", {}), selector)]
            return aiohttp.web.json_response({"kind": f"{kind}List", "metadata": {"resourceVersion": str(self._rv)},
                                              "items": items})
        if method == "GET":
            if live is None:
                return _status(404, "NotFound", f"{kind} {request.name} not found")
            return aiohttp.web.json_response(live.raw)
        if method == "DELETE":
            if live is None:
                return _status(404, "NotFound", f"{kind} {request.name} not found")
            raw = live.raw
            self.writes.append(("DELETE", kind, request.name))
            if raw["metadata"].get("finalizers"):
                obj = copy.deepcopy(raw)
                obj["metadata"].setdefault("deletionTimestamp", "2026-01-01T00:00:00Z")
                obj["metadata"]["resourceVersion"] = self._next_rv()
                self._put(key, obj)
                return aiohttp.web.json_response(obj)
            live.delete()
            self._events.append((request.resource, {"type": "DELETED", "object": raw}))
            return aiohttp.web.json_response(raw)
        body = request.data or {}
        if (kind, request.name or (body.get("metadata") or {}).get("name", "")) in self.refuse:
            return _status(422, "Invalid", f"{kind} {request.name}: refused by an admission webhook (injected)")
        namespace = request.namespace or (body.get("metadata") or {}).get("namespace")
        if method in ("POST", "PATCH") and namespace and kind != "Namespace" and not self._namespace_exists(namespace):
            return _status(404, "NotFound", f'namespaces "{namespace}" not found')
        if method == "POST":
            meta = body.get("metadata", {})
            key = (request.resource, request.namespace or meta.get("namespace", "") or "", meta.get("name"))
            if key in self.objects and not self.objects[key].deleted:
                return _status(409, "AlreadyExists", f"{kind} {meta.get('name')} already exists")
            obj = copy.deepcopy(body)
            obj["metadata"] = {**meta, "resourceVersion": self._next_rv(), "uid": f"uid-{self._rv}",
                               "generation": 1}
            self._put(key, obj)
            self.writes.append(("POST", kind, meta.get("name", "")))
            return aiohttp.web.json_response(obj, status=201)
        if method == "PUT":
            if live is None:
                return _status(404, "NotFound", f"{kind} {request.name} not found")
            sent_rv = body.get("metadata", {}).get("resourceVersion")
            if sent_rv != live.raw["metadata"].get("resourceVersion"):
                return _status(409, "Conflict", "the object has been modified; please apply your changes "
                                                "to the latest version and try again")
            obj = copy.deepcopy(body)
            obj["metadata"] = {**live.raw["metadata"], **body["metadata"], "resourceVersion": self._next_rv()}
            self._put(key, obj)
            self.writes.append(("PUT", kind, request.name))
            return aiohttp.web.json_response(obj)
        if method == "PATCH" and request.subresource == "status":
            if live is None:
                return _status(404, "NotFound", f"{kind} {request.name} not found")
            obj = _merge(live.raw, {"status": body.get("status", {})})
            obj["metadata"]["resourceVersion"] = self._next_rv()
            self._put(key, obj)
            self.writes.append(("PATCH-status", kind, request.name))
            return aiohttp.web.json_response(obj)
        if method == "PATCH" and "apply-patch" in request.headers.get("Content-Type", ""):
            return self._apply(request, key, kind, live, body)
        if method == "PATCH" and "merge-patch" in request.headers.get("Content-Type", ""):
            return self._merge_patch(key, kind, live, body)
        return _status(415, "UnsupportedMediaType", "the double speaks apply, merge and status patches")

    def _namespace_exists(self, name: str) -> bool:
        return name in self.namespaces

    def _serve_namespace(self, request: Any) -> aiohttp.web.Response:
        """``/api/v1/namespaces/NAME`` (kmock reads that path as a namespace, not an object): get and apply."""
        name = request.namespace
        if request.method == "GET":
            if name not in self.namespaces:
                return _status(404, "NotFound", f'namespaces "{name}" not found')
            return aiohttp.web.json_response(self.namespaces[name])
        if request.method == "PATCH" and "apply-patch" in request.headers.get("Content-Type", ""):
            if request.params.get("dryRun") == "All":
                return aiohttp.web.json_response(request.data)
            obj = copy.deepcopy(request.data or {})
            obj["metadata"] = {**obj.get("metadata", {}), "uid": f"ns-{name}", "resourceVersion": self._next_rv(),
                               "managedFields": [{"manager": request.params.get("fieldManager", ""),
                                                  "operation": "Apply"}]}
            self.namespaces[name] = obj
            self.writes.append(("APPLY", "Namespace", name))
            return aiohttp.web.json_response(obj)
        return _status(405, "MethodNotAllowed", "the double serves GET and apply on namespaces")

    def _merge_patch(self, key: Any, kind: str, live: Any, body: dict[str, Any]) -> aiohttp.web.Response:
        if live is None:
            return _status(404, "NotFound", f"{kind} {key[2]} not found")
        sent_rv = (body.get("metadata") or {}).get("resourceVersion")
        if sent_rv is not None and sent_rv != live.raw["metadata"].get("resourceVersion"):
            return _status(409, "Conflict", "the object has been modified")
        patch = copy.deepcopy(body)
        (patch.get("metadata") or {}).pop("resourceVersion", None)
        obj = _merge(live.raw, patch)
        obj["metadata"]["resourceVersion"] = self._next_rv()
        self.writes.append(("PATCH", kind, key[2]))
        if obj["metadata"].get("deletionTimestamp") and not obj["metadata"].get("finalizers"):
            live.delete()
            self._events.append((key[0], {"type": "DELETED", "object": obj}))
            return aiohttp.web.json_response(obj)
        self._put(key, obj)
        return aiohttp.web.json_response(obj)

    def _apply(self, request: Any, key: Any, kind: str, live: Any, body: dict[str, Any]) -> aiohttp.web.Response:
        manager = request.params.get("fieldManager", "")
        if not manager:
            return _status(400, "BadRequest", "fieldManager is required for apply patch")
        dry_run = request.params.get("dryRun") == "All"
        if live is None:
            obj = copy.deepcopy(body)
            obj["metadata"] = {**body["metadata"], "uid": f"uid-{self._rv + 1}", "generation": 1,
                               "managedFields": [{"manager": manager, "operation": "Apply"}]}
        else:
            old = live.raw
            owners = {f["manager"] for f in old["metadata"].get("managedFields", [])}
            if owners and manager not in owners and request.params.get("force") != "true":
                return _status(409, "Conflict", f"Apply failed with conflicts: fields owned by {sorted(owners)}")
            obj = copy.deepcopy(old)
            # Fields the applier sends replace its previous ones wholesale (spec, labels, annotations …).
            for top, value in body.items():
                if top == "metadata":
                    for mk, mv in value.items():
                        obj["metadata"][mk] = copy.deepcopy(mv)
                elif top != "status":
                    obj[top] = copy.deepcopy(value)
            fields = old["metadata"].get("managedFields", [])
            if manager not in owners:
                fields = [*fields, {"manager": manager, "operation": "Apply"}]
            obj["metadata"]["managedFields"] = fields
            if obj.get("spec") != old.get("spec"):
                obj["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
        if dry_run:
            return aiohttp.web.json_response(obj)
        obj["metadata"]["resourceVersion"] = self._next_rv()
        self._put(key, obj)
        self.writes.append(("APPLY", kind, request.name))
        return aiohttp.web.json_response(obj, status=201 if live is None else 200)

    def _put(self, key: Any, obj: dict[str, Any]) -> None:
        fresh = key not in self.objects or self.objects[key].deleted
        self._events.append((key[0], {"type": "ADDED" if fresh else "MODIFIED", "object": copy.deepcopy(obj)}))
        if key in self.objects:
            self.objects[key].create(obj)
        else:
            self.objects[key] = obj

    # --- the "kubelet": workloads become Ready when a test says so --------------------------------

    def mark_ready(self, limit: int | None = None) -> None:
        """Set readyReplicas = spec.replicas on every Medley workload (or raise each by at most ``limit``)."""
        for (res, _ns, _name), obj in list(self.objects.items()):
            if obj.deleted or res.plural not in ("deployments", "leaderworkersets"):
                continue
            raw = obj.raw
            if raw["metadata"].get("labels", {}).get("app.kubernetes.io/managed-by") != "medley":
                continue  # the test's kubelet only runs what Medley manages
            want = raw.get("spec", {}).get("replicas", 1)
            have = raw.get("status", {}).get("readyReplicas", 0)
            ready = want if limit is None or want < have else min(want, have + limit)
            if ready != have or raw.get("status", {}).get("observedGeneration") != raw["metadata"].get("generation"):
                raw = _merge(raw, {"status": {"replicas": want, "readyReplicas": ready, "updatedReplicas": ready,
                                              "observedGeneration": raw["metadata"].get("generation", 1)}})
                obj.create(raw)


TEAM_NAMESPACES = ("assistants", "devtools", "medley-system", "default")


class DoubleServer:
    """Runs an ApiDouble on a loopback port in a thread of its own; the official client talks to it.

    ``namespaces`` exist from the start (the teams of ``make_fleet`` and ``medley-system``).
    """

    def __init__(self, namespaces: tuple[str, ...] = TEAM_NAMESPACES, **options: Any) -> None:
        self.namespaces = namespaces
        self.options = options
        self.double: ApiDouble | None = None
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with ApiDouble(**self.options) as double, kmock.Server(double, host="127.0.0.1") as server:
            for k in KINDS.values():  # discovery, as kopf reads it
                double.resources[f"{k.api_version}/{k.plural}"] = kmock.ResourceInfo(
                    kind=k.kind, namespaced=k.namespaced, singular=k.kind.lower(),
                    verbs={"get", "list", "watch", "create", "patch", "update", "delete"},
                    subresources={"status"} if k.api_version.startswith("medley.dev") else set())
            for ns in self.namespaces:
                double.namespaces[ns] = {"apiVersion": "v1", "kind": "Namespace",
                                         "metadata": {"name": ns, "uid": f"ns-{ns}", "resourceVersion": "1"}}
            self.double = double
            self.url = str(server.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> DoubleServer:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the API double did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def call(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` on the double's loop (objects are only touched there)."""
        async def run() -> Any:
            assert self.double is not None
            async with self.double._lock:
                return fn(*args)
        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    def store(self) -> dict[tuple[str, str, str], dict[str, Any]]:
        assert self.double is not None
        return dict(self.call(self.double.store))

    def mark_ready(self, limit: int | None = None) -> None:
        assert self.double is not None
        self.call(self.double.mark_ready, limit)

    def client(self, retry: RetryPolicy | None = None) -> KubeClusterClient:
        configuration = k8s.Configuration(host=self.url)
        return KubeClusterClient(k8s.ApiClient(configuration),
                                 retry or RetryPolicy(attempts=12, initial_s=0.01, max_s=0.05, request_timeout_s=2))


@pytest.fixture
def api() -> Iterator[DoubleServer]:
    with DoubleServer() as server:
        yield server


# --- small fleets and plans built by hand (independent of the planner's solver) -------------------


def make_fleet(chat_rps: float = 10.0) -> FleetSpec:
    """Two pools (NVIDIA and AMD), two services of two teams."""
    return FleetSpec(
        name="test-fleet",
        pools=[
            Pool(id="h100-a", device="h100-sxm", devices_per_node=8, max_nodes=4, zone="zone-a",
                 price_usd_per_device_hour=10.0, node_selector={"node.kubernetes.io/instance-type": "a3-highgpu-8g"}),
            Pool(id="l4-b", device="l4", devices_per_node=4, max_nodes=8, zone="zone-b",
                 price_usd_per_device_hour=1.0),
        ],
        services=[
            Service(id="chat", team="assistants", model="llama-3-8b",
                    traffic=Traffic(rate_rps=chat_rps, buckets=[LengthBucket(input_tokens=512, output_tokens=128,
                                                                             share=1.0)]),
                    slo=SLO(ttft_ms=1000, tpot_ms=60), min_replicas=1, spread_zones=1),
            Service(id="code", team="devtools", model="llama-3-70b",
                    traffic=Traffic(rate_rps=2.0, buckets=[LengthBucket(input_tokens=2048, output_tokens=64,
                                                                        share=1.0)]),
                    slo=SLO(ttft_ms=2000, tpot_ms=50)),
        ],
    )


def group(service: str, pool: str, device: str, tp: int, replicas: int, *, pp: int = 1,
          role: Role = Role.UNIFIED, nodes: list[str] | None = None, share: float | None = None) -> ReplicaGroup:
    """A replica group at 80% utilisation; ``share`` of the service's single length bucket, if given."""
    buckets = {"chat": (512, 128), "code": (2048, 64)}
    load = [] if share is None else [BucketLoad(input_tokens=buckets[service][0], output_tokens=buckets[service][1],
                                                prefill_share=share, decode_share=share)]
    return ReplicaGroup(service=service, pool=pool, replicas=replicas, cost_usd_per_hour=1.0, expected_watts=100,
                        utilisation=0.8, configuration=Configuration(device=device, tp=tp, pp=pp, role=role),
                        nodes=nodes or [], load=load)


def make_plan(plan_id: str, groups: list[ReplicaGroup]) -> Plan:
    return Plan(id=plan_id, fleet="test-fleet", replica_groups=groups, cost_usd_per_hour=1.0,
                solver=SolverReport(backend="test", status="optimal"))
