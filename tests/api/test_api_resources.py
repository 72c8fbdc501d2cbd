"""Pools, services, power domains: CRUD, ETags, problem documents, audit, limits — on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import logging

import pytest
from apitest_client import Api
from apitest_fakes import domain_doc, pool_doc, service_doc

PROBLEM = "application/problem+json"


def test_service_lifecycle_with_etags_and_audit(api: Api) -> None:
    admin = api.headers("platform", "admin")
    owner = api.headers("assistants", "planner")
    c = api.client
    r = c.post("/v1/services", json=service_doc(), headers=owner)
    assert r.status_code == 201, r.text
    assert r.headers["etag"] == '"1"' and r.headers["location"] == "/v1/services/chat"
    assert r.json()["priority"] == 1  # stored with defaults filled in

    got = c.get("/v1/services/chat", headers=owner)
    assert got.status_code == 200 and got.headers["etag"] == '"1"'

    changed = service_doc(rate_rps=30.0)
    assert c.put("/v1/services/chat", json=changed, headers=owner).status_code == 428
    r = c.put("/v1/services/chat", json=changed, headers={**owner, "If-Match": '"1"'})
    assert r.status_code == 200 and r.headers["etag"] == '"2"' and r.json()["traffic"]["rate_rps"] == 30.0
    stale = c.put("/v1/services/chat", json=service_doc(rate_rps=40.0), headers={**owner, "If-Match": '"1"'})
    assert stale.status_code == 412 and stale.headers["content-type"] == PROBLEM
    assert stale.json()["errors"][0]["field"] == "header.If-Match"
    assert c.get("/v1/services/chat", headers=owner).json()["traffic"]["rate_rps"] == 30.0

    assert c.delete("/v1/services/chat", headers={**owner, "If-Match": '"1"'}).status_code == 412
    assert c.delete("/v1/services/chat", headers={**owner, "If-Match": '"2"'}).status_code == 204
    assert c.get("/v1/services/chat", headers=owner).status_code == 404

    log = c.get("/v1/audit", params={"resource_kind": "service", "resource_id": "chat"}, headers=admin).json()
    assert [e["action"] for e in log] == ["delete", "update", "create"]
    update = log[1]
    assert update["before"]["traffic"]["rate_rps"] == 24.0 and update["after"]["traffic"]["rate_rps"] == 30.0
    assert update["actor"].startswith("assistants/") and update["role"] == "planner"
    assert log[0]["after"] is None and log[2]["before"] is None


def test_duplicate_create_is_409_and_lists_page(api: Api) -> None:
    admin = api.headers("platform", "admin")
    for i in range(3):
        assert api.client.post("/v1/pools", json=pool_doc(f"p{i}"), headers=admin).status_code == 201
    dup = api.client.post("/v1/pools", json=pool_doc("p1"), headers=admin)
    assert dup.status_code == 409 and dup.headers["content-type"] == PROBLEM
    page = api.client.get("/v1/pools", params={"limit": 2, "offset": 1}, headers=admin).json()
    assert [p["id"] for p in page] == ["p1", "p2"]
    assert api.client.post("/v1/power-domains", json=domain_doc(), headers=admin).status_code == 201
    assert api.client.get("/v1/power-domains/row-a", headers=admin).json()["budget_watts"] == 60000


@pytest.mark.parametrize(
    ("body", "field", "reason_part"),
    [
        ({**service_doc(), "slo": {"ttft_ms": -1, "tpot_ms": 60}}, "body.slo.ttft_ms", "greater than 0"),
        ({**service_doc(), "model": "no-such-model"}, "body.model", "unknown model"),
        ({**service_doc(), "colour": "red"}, "body.colour", "not permitted"),
        ({**service_doc(), "traffic": {"rate_rps": 1, "buckets": [
            {"input_tokens": 1, "output_tokens": 1, "share": 0.5}]}}, "body.traffic.buckets", "sum to 1"),
        ({**service_doc(), "id": "Not Valid"}, "body.id", "pattern"),
        ({**service_doc(), "team": "t" * 200}, "body.team", "128 characters"),
        ({**service_doc(), "allowed_pools": ["a\u0000b"]}, "body", "NUL"),
    ],
)
def test_bad_input_is_a_problem_naming_field_and_reason(api: Api, body: dict[str, object], field: str,
                                                        reason_part: str) -> None:
    r = api.client.post("/v1/services", json=body, headers=api.headers("assistants", "planner"))
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM
    problem = r.json()
    assert problem["status"] == 422 and problem["title"]
    hits = [e for e in problem["errors"] if e["field"] == field]
    assert hits, problem
    assert reason_part in hits[0]["reason"]


def test_malformed_json_and_wrong_types_are_4xx(api: Api) -> None:
    h = {**api.headers("assistants", "planner"), "content-type": "application/json"}
    r = api.client.post("/v1/services", content=b"{not json", headers=h)
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM
    r = api.client.post("/v1/services", content=b"[1, 2]", headers=h)
    assert r.status_code == 422
    r = api.client.put("/v1/services/chat", json=service_doc("other"), headers={**h, "If-Match": '"1"'})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "body.id"


def test_request_size_limit(make_api: object) -> None:
    api: Api = make_api(max_body_bytes=4096)  # type: ignore[operator]
    big = {**service_doc(), "allowed_pools": [f"pool-{i:05d}" for i in range(2000)]}
    h = api.headers("assistants", "planner")
    r = api.client.post("/v1/services", json=big, headers=h)
    assert r.status_code == 413 and r.headers["content-type"] == PROBLEM
    # Without Content-Length (chunked), the body is counted as it arrives.
    payload = json.dumps(big).encode()
    chunks = (payload[i:i + 1000] for i in range(0, len(payload), 1000))
    r = api.client.post("/v1/services", content=chunks, headers={**h, "content-type": "application/json"})
    assert r.status_code == 413 and r.json()["errors"][0]["field"] == "body"
    assert api.client.post("/v1/services", json=service_doc(), headers=h).status_code == 201


def test_tokens_are_hashed_and_never_logged(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    token = api.token("assistants", "planner")
    caplog.set_level(logging.DEBUG)
    h = {"Authorization": f"Bearer {token}"}
    api.client.post("/v1/services", json=service_doc(), headers=h)
    api.client.get("/v1/services/nope", headers=h)
    api.client.get("/v1/services", headers={"Authorization": f"Bearer {token}x"})
    assert all(token not in rec.getMessage() for rec in caplog.records)
    from sqlalchemy import text

    with api.services.db.read() as s:
        stored = [r[0] for r in s.execute(text("SELECT token_sha256 FROM api_tokens"))]
    assert token not in stored and all(len(h) == 64 for h in stored)


def test_auth_failures(api: Api) -> None:
    r = api.client.get("/v1/services")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert r.headers["content-type"] == PROBLEM
    assert api.client.get("/v1/services", headers={"Authorization": "Bearer mdl_bogus"}).status_code == 401
    from api.auth import revoke_token

    token = api.token("t", "viewer")
    with api.services.db.read() as s:
        from sqlalchemy import text

        token_id = s.execute(text("SELECT id FROM api_tokens")).scalar_one()
    with api.services.db.write() as s:
        assert revoke_token(s, token_id)
    assert api.client.get("/v1/services", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_health_ready_metrics(api: Api) -> None:
    assert api.client.get("/healthz").json() == {"status": "ok"}
    assert api.client.get("/readyz").status_code == 200
    api.client.get("/v1/catalog/devices", headers=api.headers("t", "viewer"))
    text = api.client.get("/metrics").text
    assert 'medley_api_requests_total{method="GET",route="/v1/catalog/devices",status="200"} 1.0' in text


def test_catalog(api: Api) -> None:
    h = api.headers("t", "viewer")
    devices = api.client.get("/v1/catalog/devices", headers=h).json()
    assert "h100-sxm" in {d["id"] for d in devices}
    assert api.client.get("/v1/catalog/models/llama-3-8b", headers=h).json()["num_layers"] == 32
    assert api.client.get("/v1/catalog/models/nope", headers=h).status_code == 404
    books = api.client.get("/v1/catalog/price-books", headers=h).json()
    assert api.client.get(f"/v1/catalog/price-books/{books[0]['id']}", headers=h).status_code == 200


def test_nul_and_odd_query_values_are_4xx(api: Api) -> None:
    h = api.headers("platform", "admin")
    assert api.client.get("/v1/services", params={"team": "a\x00b"}, headers=h).status_code == 422
    assert api.client.get("/v1/audit", params={"resource_id": "a\x00b"}, headers=h).status_code == 422
    assert api.client.get("/v1/plans/plan-1/diff", params={"against": "x\x00"}, headers=h).status_code == 422
    assert api.client.get("/v1/services", params={"team": "ünïcode"}, headers=h).json() == []


def test_no_half_applied_write(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    h = api.headers("assistants", "planner")
    assert api.client.post("/v1/services", json=service_doc(), headers=h).status_code == 201
    import api.store as store

    def broken_audit(*args: object, **kwargs: object) -> None:
        raise RuntimeError("audit log unavailable")

    # The update statement runs, then the audit insert fails: the whole transaction must roll back.
    monkeypatch.setattr(store, "audit", broken_audit)
    r = api.client.put("/v1/services/chat", json=service_doc(rate_rps=99), headers={**h, "If-Match": '"1"'})
    assert r.status_code == 500 and r.headers["content-type"] == PROBLEM
    monkeypatch.undo()
    got = api.client.get("/v1/services/chat", headers=h)
    assert got.headers["etag"] == '"1"' and got.json()["traffic"]["rate_rps"] == 24.0
