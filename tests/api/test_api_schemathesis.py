"""Property-based API test over the served OpenAPI document: no 5xx, responses conform to the schema.

Runs against the app with a fake planner on each backend, and against the app with the real planner (worker
processes, replay verification). ``MEDLEY_FUZZ_EXAMPLES`` sets the examples per operation (12 by default, so
the suite stays quick; ``MEDLEY_FUZZ_EXAMPLES=300 pytest tests/api/test_api_schemathesis.py -k real`` is the
full run)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from apitest_fakes import FakePlanner, FakeVerifier, pool_doc, service_doc
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.app import create_app
from api.auth import ApiRole, create_token
from api.provision import RecordingProvisioner
from api.settings import Settings

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]


@dataclass
class Fuzzed:
    app: FastAPI
    auth: dict[str, str]


EXAMPLES = int(os.environ.get("MEDLEY_FUZZ_EXAMPLES", "12"))


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration),
                                        "real-planner"])
def fuzzed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    """A running app on each backend (and one with the real planner), seeded with a pool, a service and a plan,
    and an admin token."""
    if request.param == "postgresql":
        url = request.getfixturevalue("pg_cluster").create_database()
    else:
        url = f"sqlite+pysqlite:///{tmp_path_factory.mktemp('fuzz') / 'fuzz.db'}"
    if request.param == "real-planner":
        app = create_app(Settings(database_url=url, whatif_time_limit_s=5, job_time_limit_s=20,
                                  verify_duration_s=20), provisioner=RecordingProvisioner())
    else:
        app = create_app(Settings(database_url=url), planner=FakePlanner(), provisioner=RecordingProvisioner(),
                         verifier=FakeVerifier())
    with TestClient(app) as client:
        with app.state.services.db.write() as s:
            token, _ = create_token(s, "assistants", ApiRole.ADMIN)
        h = {"Authorization": f"Bearer {token}"}
        client.post("/v1/pools", json=pool_doc(), headers=h)
        client.post("/v1/services", json=service_doc(), headers=h)
        job = client.post("/v1/plans", json={}, headers=h).headers["location"]
        for _ in range(3000):
            if client.get(job, headers=h).json()["status"] not in ("queued", "running"):
                break
            time.sleep(0.02)
        yield Fuzzed(app=app, auth=h)


# The document comes from an app that is never started; requests go to the running app of each backend.
DOC_APP = create_app(Settings(database_url="sqlite://"))
schema = schemathesis.openapi.from_asgi("/openapi.json", DOC_APP)


def test_openapi_document_is_valid() -> None:
    doc: dict[str, Any] = DOC_APP.openapi()
    assert doc["openapi"].startswith("3.")
    assert "Problem" in doc["components"]["schemas"]
    assert "ETag" in doc["paths"]["/v1/services/{service_id}"]["get"]["responses"]["200"]["headers"]
    assert "Location" in doc["paths"]["/v1/plans"]["post"]["responses"]["202"]["headers"]
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if path.startswith("/v1/"):
                assert "401" in op["responses"], (method, path)


OPERATIONS = [result.ok() for result in schema.get_all_operations()]


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: op.label)
def test_no_5xx_and_schema_conformant(operation: Any, fuzzed: Fuzzed) -> None:
    # Explicit and generated examples only (no coverage or stateful phases), so the run stays bounded.
    @given(operation.as_strategy())
    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck),
              phases=[Phase.explicit, Phase.generate])
    def run(case: schemathesis.Case) -> None:
        case.call_and_validate(headers=fuzzed.auth, checks=CHECKS, app=fuzzed.app)

    run()
