"""Shared pieces of the API tests: database fixtures (SQLite and a throwaway PostgreSQL) and a typed client."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from apitest_fakes import FakePlanner, FakeVerifier
from apitest_pg import PgCluster, pg_bin_dir, start_cluster
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.app import create_app
from api.auth import ApiRole, create_token
from api.deps import Services
from api.provision import RecordingProvisioner
from api.settings import Settings


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """One PostgreSQL cluster for the whole run; skipped only when the server binaries are absent."""
    if pg_bin_dir() is None:
        pytest.skip("PostgreSQL server binaries not installed (apt-get install postgresql)")
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database on each backend."""
    if request.param == "sqlite":
        return f"sqlite+pysqlite:///{tmp_path / 'medley.db'}"
    cluster: PgCluster = request.getfixturevalue("pg_cluster")
    return cluster.create_database()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+pysqlite:///{tmp_path / 'medley.db'}"


@dataclass
class Api:
    """A running app under TestClient with helpers to mint tokens."""

    app: FastAPI
    client: TestClient
    planner: Any

    @property
    def services(self) -> Services:
        svc: Services = self.app.state.services
        return svc

    def token(self, team: str, role: str) -> str:
        with self.services.db.write() as s:
            secret, _ = create_token(s, team, ApiRole(role))
        return secret

    def headers(self, team: str, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(team, role)}"}

    def wait_job(self, url: str, headers: dict[str, str], timeout_s: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            body: dict[str, Any] = self.client.get(url, headers=headers).json()
            if body["status"] in ("succeeded", "failed"):
                return body
            time.sleep(0.02)
        raise AssertionError(f"job {url} did not finish in {timeout_s} s")


ApiFactory = Callable[..., Api]


@contextmanager
def _apps(default_url: str) -> Iterator[ApiFactory]:
    clients: list[TestClient] = []

    def make(planner: Any = None, provisioner: Any = None, url: str | None = None, verifier: Any = None,
             **settings: Any) -> Api:
        """An app with fakes: planner, verifier (accepts) and provisioner (records; never a real cluster)."""
        fake = planner if planner is not None else FakePlanner()
        app = create_app(Settings(database_url=url or default_url, **settings), planner=fake,
                         provisioner=provisioner if provisioner is not None else RecordingProvisioner(),
                         verifier=verifier if verifier is not None else FakeVerifier())
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return Api(app=app, client=client, planner=fake)

    try:
        yield make
    finally:
        for c in reversed(clients):
            c.__exit__(None, None, None)


@pytest.fixture
def make_api(db_url: str) -> Iterator[ApiFactory]:
    """Start apps on the test's database (each backend); each is shut down at the end."""
    with _apps(db_url) as make:
        yield make


@pytest.fixture
def make_sqlite_api(sqlite_url: str) -> Iterator[ApiFactory]:
    """Like make_api, on SQLite only (for tests whose subject is not the storage)."""
    with _apps(sqlite_url) as make:
        yield make


@pytest.fixture
def api(make_api: ApiFactory) -> Api:
    return make_api()
