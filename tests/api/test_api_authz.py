"""Authorization matrix: every endpoint × role (viewer, planner, admin) × own or other team's resource."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from apitest_client import Api
from apitest_fakes import FakePlanner, FakeVerifier, domain_doc, pool_doc, service_doc
from fastapi.testclient import TestClient

from api.app import create_app
from api.provision import RecordingProvisioner
from api.settings import Settings

OWNER = "alpha"  # owns every team resource the cases act on
ROLES = ("viewer", "planner", "admin")


@dataclass
class World:
    api: Api
    admin: dict[str, str]
    counter: Iterator[int]

    def fresh(self, prefix: str) -> str:
        return f"{prefix}-{next(self.counter)}"

    def service(self) -> str:
        sid = self.fresh("svc")
        r = self.api.client.post("/v1/services", json=service_doc(sid, team=OWNER), headers=self.admin)
        assert r.status_code == 201
        return sid

    def pool(self) -> str:
        pid = self.fresh("pool")
        assert self.api.client.post("/v1/pools", json=pool_doc(pid), headers=self.admin).status_code == 201
        return pid

    def domain(self) -> str:
        did = self.fresh("row")
        assert self.api.client.post("/v1/power-domains", json=domain_doc(did),
                                    headers=self.admin).status_code == 201
        return did

    def job(self) -> dict[str, Any]:
        sid = self.service()
        r = self.api.client.post("/v1/plans", json={"services": [sid], "fleet": self.fresh("f")},
                                 headers=self.admin)
        return self.api.wait_job(r.headers["location"], self.admin)

    def plan(self, approved: bool = False) -> str:
        plan_id: str = self.job()["plan_id"]
        if approved:
            r = self.api.client.post(f"/v1/plans/{plan_id}/approve", headers={**self.admin, "If-Match": '"1"'})
            assert r.status_code == 200
        return plan_id

    def failed_job(self) -> str:
        self.api.planner.infeasible = True
        try:
            job = self.job()
        finally:
            self.api.planner.infeasible = False
        assert job["status"] == "failed"
        return str(job["id"])


Request = tuple[str, str, dict[str, Any]]  # method, path, httpx kwargs


@dataclass(frozen=True)
class Case:
    method: str
    template: str
    access: str  # read | admin | planner | team
    make: Callable[[World], Request]


def _get(path: str) -> Callable[[World], Request]:
    return lambda w: ("GET", path, {})


M = "If-Match"
CASES = [
    Case("GET", "/v1/catalog/devices", "read", _get("/v1/catalog/devices")),
    Case("GET", "/v1/catalog/devices/{device_id}", "read", _get("/v1/catalog/devices/h100-sxm")),
    Case("GET", "/v1/catalog/models", "read", _get("/v1/catalog/models")),
    Case("GET", "/v1/catalog/models/{model_id}", "read", _get("/v1/catalog/models/llama-3-8b")),
    Case("GET", "/v1/catalog/price-books", "read", _get("/v1/catalog/price-books")),
    Case("GET", "/v1/catalog/price-books/{book_id}", "read", _get("/v1/catalog/price-books/aws-us-east-1-2026q1")),
    Case("GET", "/v1/pools", "read", _get("/v1/pools")),
    Case("GET", "/v1/pools/{pool_id}", "read", lambda w: ("GET", f"/v1/pools/{w.pool()}", {})),
    Case("POST", "/v1/pools", "admin", lambda w: ("POST", "/v1/pools", {"json": pool_doc(w.fresh("pool"))})),
    Case("PUT", "/v1/pools/{pool_id}", "admin",
         lambda w: (lambda p: ("PUT", f"/v1/pools/{p}", {"json": pool_doc(p, 5), "headers": {M: '"1"'}}))(w.pool())),
    Case("DELETE", "/v1/pools/{pool_id}", "admin",
         lambda w: ("DELETE", f"/v1/pools/{w.pool()}", {"headers": {M: '"1"'}})),
    Case("GET", "/v1/power-domains", "read", _get("/v1/power-domains")),
    Case("GET", "/v1/power-domains/{domain_id}", "read",
         lambda w: ("GET", f"/v1/power-domains/{w.domain()}", {})),
    Case("POST", "/v1/power-domains", "admin",
         lambda w: ("POST", "/v1/power-domains", {"json": domain_doc(w.fresh("row"))})),
    Case("PUT", "/v1/power-domains/{domain_id}", "admin",
         lambda w: (lambda d: ("PUT", f"/v1/power-domains/{d}", {"json": domain_doc(d), "headers": {M: '"1"'}}))(
             w.domain())),
    Case("DELETE", "/v1/power-domains/{domain_id}", "admin",
         lambda w: ("DELETE", f"/v1/power-domains/{w.domain()}", {"headers": {M: '"1"'}})),
    Case("GET", "/v1/services", "read", _get("/v1/services")),
    Case("GET", "/v1/services/{service_id}", "read", lambda w: ("GET", f"/v1/services/{w.service()}", {})),
    Case("POST", "/v1/services", "team",
         lambda w: ("POST", "/v1/services", {"json": service_doc(w.fresh("svc"), team=OWNER)})),
    Case("PUT", "/v1/services/{service_id}", "team",
         lambda w: (lambda s: ("PUT", f"/v1/services/{s}", {"json": service_doc(s, team=OWNER, rate_rps=3),
                                                            "headers": {M: '"1"'}}))(w.service())),
    Case("DELETE", "/v1/services/{service_id}", "team",
         lambda w: ("DELETE", f"/v1/services/{w.service()}", {"headers": {M: '"1"'}})),
    Case("POST", "/v1/plans", "team",
         lambda w: ("POST", "/v1/plans", {"json": {"services": [w.service()], "fleet": w.fresh("f")}})),
    Case("GET", "/v1/plans", "read", _get("/v1/plans")),
    Case("GET", "/v1/plan-jobs/{job_id}", "read", lambda w: ("GET", f"/v1/plan-jobs/{w.job()['id']}", {})),
    Case("POST", "/v1/plan-jobs/{job_id}/retry", "team",
         lambda w: ("POST", f"/v1/plan-jobs/{w.failed_job()}/retry", {})),
    Case("GET", "/v1/plans/{plan_id}", "read", lambda w: ("GET", f"/v1/plans/{w.plan()}", {})),
    Case("GET", "/v1/plans/{plan_id}/status", "read", lambda w: ("GET", f"/v1/plans/{w.plan()}/status", {})),
    Case("GET", "/v1/plans/{plan_id}/diff", "read",
         lambda w: ("GET", f"/v1/plans/{w.plan()}/diff", {"params": {"against": w.plan()}})),
    Case("POST", "/v1/plans/{plan_id}/approve", "team",
         lambda w: ("POST", f"/v1/plans/{w.plan()}/approve", {"headers": {M: '"1"'}})),
    Case("POST", "/v1/plans/{plan_id}/apply", "team",
         lambda w: ("POST", f"/v1/plans/{w.plan(approved=True)}/apply", {"headers": {M: '"2"'}})),
    Case("POST", "/v1/whatif", "team",
         lambda w: ("POST", "/v1/whatif", {"json": {"upsert_services": [service_doc(w.fresh("svc"), team=OWNER)]}})),
    Case("POST", "/v1/whatif/scenarios", "planner",
         lambda w: ("POST", "/v1/whatif/scenarios", {"json": {"scenarios": [{"name": "x2", "set": ["rate*=2"]}]}})),
    Case("POST", "/v1/traces", "planner",
         lambda w: ("POST", "/v1/traces", {"content": "ContextTokens,GeneratedTokens\n10,5\n",
                                           "headers": {"Content-Type": "text/csv"}})),
    Case("GET", "/v1/audit", "admin", _get("/v1/audit")),
]
UNAUTHENTICATED = {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics")}


def allowed(access: str, role: str, own_team: bool) -> bool:
    if role == "admin":
        return True
    if access == "read":
        return True
    if access in ("admin",) or role == "viewer":
        return False
    if access == "planner":
        return True
    return own_team  # team: a planner changes only its own team's resources


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    url = f"sqlite+pysqlite:///{Path(tmp_path_factory.mktemp('authz')) / 'm.db'}"
    planner = FakePlanner()
    app = create_app(Settings(database_url=url, whatif_max_services=10_000), planner=planner,
                     provisioner=RecordingProvisioner(), verifier=FakeVerifier())
    with TestClient(app, raise_server_exceptions=False) as client:
        api = Api(app=app, client=client, planner=planner)
        admin = api.headers("platform", "admin")
        assert client.post("/v1/pools", json=pool_doc("base"), headers=admin).status_code == 201
        yield World(api=api, admin=admin, counter=itertools.count())


def test_matrix_covers_every_operation(world: World) -> None:
    ops = {(m.upper(), p) for p, item in world.api.app.openapi()["paths"].items() for m in item}
    assert ops - UNAUTHENTICATED == {(c.method, c.template) for c in CASES}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("own_team", [True, False], ids=["own", "other"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.method} {c.template}")
def test_authorization(world: World, case: Case, role: str, own_team: bool) -> None:
    method, path, kwargs = case.make(world)
    headers = {**kwargs.pop("headers", {}), **world.api.headers(OWNER if own_team else "beta", role)}
    r = world.api.client.request(method, path, headers=headers, **kwargs)
    if allowed(case.access, role, own_team):
        assert 200 <= r.status_code < 300, f"{role}/{own_team}: {r.status_code} {r.text}"
    else:
        assert r.status_code == 403, f"{role}/{own_team}: {r.status_code} {r.text}"
        assert r.headers["content-type"] == "application/problem+json"


def test_plan_touching_two_teams_needs_both(world: World) -> None:
    a = world.service()
    b = world.fresh("svc")
    client, admin = world.api.client, world.admin
    assert client.post("/v1/services", json=service_doc(b, team="beta"), headers=admin).status_code == 201
    r = client.post("/v1/plans", json={"services": [a, b], "fleet": world.fresh("f")}, headers=admin)
    plan_id = world.api.wait_job(r.headers["location"], admin)["plan_id"]
    for team in (OWNER, "beta"):
        h = {**world.api.headers(team, "planner"), M: '"1"'}
        assert client.post(f"/v1/plans/{plan_id}/approve", headers=h).status_code == 403
    # Moving a service to another team is refused too, and nothing changed.
    h = {**world.api.headers(OWNER, "planner"), M: '"1"'}
    assert client.put(f"/v1/services/{a}", json=service_doc(a, team="beta"), headers=h).status_code == 403
    assert client.get(f"/v1/services/{a}", headers=h).json()["team"] == OWNER
