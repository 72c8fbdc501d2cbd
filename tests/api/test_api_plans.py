"""Planning jobs, immutable plans with lineage, diff, approve/apply, what-if (fake planner)."""

from __future__ import annotations

import re
import threading
from typing import Any

from apitest_client import Api, ApiFactory
from apitest_fakes import FailingProvisioner, FakePlanner, FakeVerifier, pool_doc, service_doc


def _seed(api: Api) -> dict[str, str]:
    admin = api.headers("platform", "admin")
    assert api.client.post("/v1/pools", json=pool_doc(), headers=admin).status_code == 201
    assert api.client.post("/v1/services", json=service_doc(), headers=admin).status_code == 201
    assert api.client.post("/v1/services", json=service_doc("code", team="devtools", rate_rps=5),
                           headers=admin).status_code == 201
    return admin


def _plan(api: Api, headers: dict[str, str], body: dict[str, Any] | None = None) -> dict[str, Any]:
    r = api.client.post("/v1/plans", json=body or {}, headers=headers)
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/v1/plan-jobs/{r.json()['id']}"
    return api.wait_job(r.headers["location"], headers)


def test_plan_job_lineage_diff_approve_apply(api: Api) -> None:
    admin = _seed(api)
    first = _plan(api, admin)
    assert first["status"] == "succeeded" and first["plan_url"] == f"/v1/plans/{first['plan_id']}"
    plan1 = api.client.get(first["plan_url"], headers=admin)
    assert plan1.status_code == 200 and plan1.headers["etag"] == '"1"'
    body1 = plan1.json()
    assert body1["id"] == first["plan_id"] and body1["previous_plan_id"] is None
    assert {g["service"]: g["replicas"] for g in body1["replica_groups"]} == {"chat": 3, "code": 1}

    # Raise chat's traffic; the next plan descends from the first and the diff shows the change.
    etag = api.client.get("/v1/services/chat", headers=admin).headers["etag"]
    assert api.client.put("/v1/services/chat", json=service_doc(rate_rps=55), headers={**admin, "If-Match": etag}
                          ).status_code == 200
    second = _plan(api, admin)
    body2 = api.client.get(second["plan_url"], headers=admin).json()
    assert body2["previous_plan_id"] == body1["id"]
    diff = api.client.get(f"/v1/plans/{body2['id']}/diff", headers=admin).json()
    assert diff["against"] == body1["id"]
    assert [(c["service"], c["replicas_before"], c["replicas_after"]) for c in diff["changes"]] == [("chat", 3, 6)]
    assert diff["devices_by_type_delta"] == {"h100-sxm": 3}
    explicit = api.client.get(f"/v1/plans/{body1['id']}/diff", params={"against": body2["id"]}, headers=admin)
    assert explicit.json()["changes"][0]["replicas_after"] == 3
    assert api.client.get(f"/v1/plans/{body1['id']}/diff", headers=admin).status_code == 422
    assert api.client.get(f"/v1/plans/{body1['id']}/diff", params={"against": "plan-999"},
                          headers=admin).status_code == 422

    # The first plan is unchanged by everything since (immutable).
    assert api.client.get(first["plan_url"], headers=admin).json() == body1

    url = f"/v1/plans/{body2['id']}"
    assert api.client.post(f"{url}/apply", headers={**admin, "If-Match": '"1"'}).status_code == 409
    assert api.client.post(f"{url}/approve", headers=admin).status_code == 428
    ok = api.client.post(f"{url}/approve", headers={**admin, "If-Match": '"1"'})
    assert ok.status_code == 200 and ok.json()["state"] == "approved" and ok.headers["etag"] == '"2"'
    assert api.client.post(f"{url}/approve", headers={**admin, "If-Match": '"1"'}).status_code == 412
    applied = api.client.post(f"{url}/apply", headers={**admin, "If-Match": '"2"'})
    assert applied.status_code == 200, applied.text
    status = applied.json()
    assert status["state"] == "apply_requested" and status["apply_result"]["state"] == "recorded"
    assert status["teams"] == ["assistants", "devtools"]
    listed = api.client.get("/v1/plans", headers=admin).json()
    assert [p["id"] for p in listed] == [body2["id"], body1["id"]]
    assert listed[0]["state"] == "apply_requested" and listed[1]["state"] == "proposed"
    assert listed[0]["verified"] is None and status["verified"] is True  # listings do not load plan bodies
    actions = [e["action"] for e in api.client.get("/v1/audit", params={"resource_kind": "plan"},
                                                   headers=admin).json()]
    assert actions == ["apply", "approve"]


def test_failing_provisioner_leaves_plan_approved(make_api: ApiFactory) -> None:
    api = make_api(provisioner=FailingProvisioner())
    admin = _seed(api)
    plan_id = _plan(api, admin)["plan_id"]
    url = f"/v1/plans/{plan_id}"
    api.client.post(f"{url}/approve", headers={**admin, "If-Match": '"1"'})
    r = api.client.post(f"{url}/apply", headers={**admin, "If-Match": '"2"'})
    assert r.status_code == 502 and r.headers["content-type"] == "application/problem+json"
    status = api.client.get(f"{url}/status", headers=admin).json()
    assert status["state"] == "approved" and status["state_version"] == 2 and status["apply_result"] is None


def test_an_unverified_plan_cannot_be_approved_and_says_why(make_api: ApiFactory) -> None:
    api = make_api(verifier=FakeVerifier(verified=False))
    admin = _seed(api)
    plan_id = _plan(api, admin)["plan_id"]
    body = api.client.get(f"/v1/plans/{plan_id}", headers=admin).json()
    assert body["verified"] is False and body["findings"][-1]["message"] == "the test says no"
    r = api.client.post(f"/v1/plans/{plan_id}/approve", headers={**admin, "If-Match": '"1"'})
    assert r.status_code == 409 and "is not verified" in r.json()["detail"] and "the test says no" in r.json()["detail"]
    assert api.client.get(f"/v1/plans/{plan_id}/status", headers=admin).json()["state"] == "proposed"


def test_replay_verifies_a_plan_that_meets_its_slos_and_refuses_one_that_does_not(make_sqlite_api: ApiFactory) -> None:
    """The real verifier: a plan with enough replicas is verified; one replica for 240 req/s is not."""
    from api.verify import ReplayVerifier

    class OneReplica(FakePlanner):
        def __call__(self, fleet: Any, *, current: Any = None) -> Any:
            plan = super().__call__(fleet, current=current)
            return plan.model_copy(update={"replica_groups": [g.model_copy(update={"replicas": 1})
                                                              for g in plan.replica_groups]})
    for planner, verified in ((FakePlanner(), True), (OneReplica(), False)):
        api = make_sqlite_api(planner=planner, verifier=ReplayVerifier(duration_s=20))
        admin = api.headers("platform", "admin")
        api.client.post("/v1/pools", json=pool_doc(max_nodes=8), headers=admin)
        # the apps share the test's database: the second adds a service of its own
        doc = service_doc() if verified else service_doc("big", rate_rps=240)
        assert api.client.post("/v1/services", json=doc, headers=admin).status_code == 201
        plan_id = _plan(api, admin)["plan_id"]
        body = api.client.get(f"/v1/plans/{plan_id}", headers=admin).json()
        assert body["verified"] is verified, body["findings"]
        r = api.client.post(f"/v1/plans/{plan_id}/approve", headers={**admin, "If-Match": '"1"'})
        assert r.status_code == (200 if verified else 409), r.text
        if not verified:
            # requests beyond the batch cap wait for admission: a few early ones still meet the SLO
            assert re.search(r"big meets its SLO for \d+\.\d% of requests, needs 90%", r.json()["detail"])


def test_without_a_cluster_apply_is_503_and_the_plan_stays_approved(make_api: ApiFactory, tmp_path: Any) -> None:
    from api.app import provisioner_for
    from api.settings import Settings

    provisioner = provisioner_for(Settings(kubeconfig=str(tmp_path / "absent.kubeconfig")))
    api = make_api(provisioner=provisioner)
    admin = _seed(api)
    url = f"/v1/plans/{_plan(api, admin)['plan_id']}"
    api.client.post(f"{url}/approve", headers={**admin, "If-Match": '"1"'})
    r = api.client.post(f"{url}/apply", headers={**admin, "If-Match": '"2"'})
    assert r.status_code == 503 and "no Kubernetes cluster to apply to (MEDLEY_KUBECONFIG=" in r.json()["detail"]
    assert api.client.get(f"{url}/status", headers=admin).json()["state"] == "approved"


def test_infeasible_and_invalid_fleets_fail_the_job_with_findings(make_api: ApiFactory) -> None:
    planner = FakePlanner()
    planner.infeasible = True
    api = make_api(planner=planner)
    admin = _seed(api)
    job = _plan(api, admin)
    assert job["status"] == "failed" and job["plan_id"] is None
    assert job["error"].startswith("infeasible") and job["findings"][0]["constraint"] == "pool:x"
    # Unknown services in the request are refused up front, naming the item.
    r = api.client.post("/v1/plans", json={"services": ["chat", "ghost"]}, headers=admin)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "body.services.1"


def test_catalog_problems_are_422_before_any_job(api: Api) -> None:
    admin = _seed(api)
    bad = service_doc("big", allowed_pools=["nowhere"])
    assert api.client.post("/v1/services", json=bad, headers=admin).status_code == 201
    # The owning team's planner, and anyone naming the service, is told what is wrong before any job.
    for headers, body in ((api.headers("assistants", "planner"), {}), (admin, {"services": ["big"]})):
        r = api.client.post("/v1/plans", json=body, headers=headers)
        assert r.status_code == 422
        assert any(e["field"] == "fleet.services.big.allowed_pools" for e in r.json()["errors"])
    # Another team's plans go on; a whole-fleet plan leaves the bad service out and says so.
    assert _plan(api, api.headers("devtools", "planner"))["status"] == "succeeded"
    job = _plan(api, admin)
    plan = api.client.get(job["plan_url"], headers=admin).json()
    assert {g["service"] for g in plan["replica_groups"]} == {"chat", "code"}
    assert any("service big of team assistants was left out" in f["message"] and "nowhere" in f["message"]
               for f in plan["findings"])


def test_job_time_limit(make_api: ApiFactory) -> None:
    planner = FakePlanner()
    planner.gate = threading.Event()
    api = make_api(planner=planner, job_time_limit_s=0.3)
    admin = _seed(api)
    try:
        job = _plan(api, admin)
    finally:
        planner.gate.set()
    assert job["status"] == "failed" and "time limit" in job["error"]
    assert job["time_limit_s"] == 0.3
    assert 'medley_api_plan_jobs_total{outcome="time_limit"} 1.0' in api.client.get("/metrics").text


def test_whatif_is_synchronous_and_stores_nothing(api: Api) -> None:
    admin = _seed(api)
    planner_h = api.headers("assistants", "planner")
    # A planner's what-if plans its own team's services only, and may not drop another team's.
    r = api.client.post("/v1/whatif", json={"upsert_services": [service_doc(rate_rps=95)]}, headers=planner_h)
    assert r.status_code == 200, r.text
    assert {g["service"]: g["replicas"] for g in r.json()["replica_groups"]} == {"chat": 10}
    r = api.client.post("/v1/whatif", json={"remove_services": ["code"]}, headers=planner_h)
    assert r.status_code == 403 and "devtools" in r.json()["detail"]
    assert api.client.get("/v1/plans", headers=admin).json() == []
    assert api.client.get("/v1/services/chat", headers=admin).json()["traffic"]["rate_rps"] == 24
    too_many = {"upsert_services": [service_doc(f"s{i}") for i in range(60)]}
    r = api.client.post("/v1/whatif", json=too_many, headers=planner_h)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "body.upsert_services"
    api.planner.infeasible = True
    r = api.client.post("/v1/whatif", json={}, headers=planner_h)
    assert r.status_code == 422 and r.json()["findings"][0]["kind"] == "infeasible"


def test_retry_only_failed_jobs(api: Api) -> None:
    admin = _seed(api)
    done = _plan(api, admin)
    r = api.client.post(f"/v1/plan-jobs/{done['id']}/retry", headers=admin)
    assert r.status_code == 409
    assert api.client.get("/v1/plan-jobs/0123456789abcdef", headers=admin).status_code == 404



def test_whatif_scenarios_share_the_cli_implementation(api: Api) -> None:
    """POST /v1/whatif/scenarios returns the report ``medley whatif`` prints (planner.whatif), baseline first."""
    _seed(api)
    planner_h = api.headers("assistants", "planner")
    r = api.client.post("/v1/whatif/scenarios", json={"scenarios": [{"name": "double", "set": ["rate*=2"]}]},
                        headers=planner_h)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["baseline"]["name"] == "baseline"
    assert [row["name"] for row in body["scenarios"]] == ["double"]
    assert body["scenarios"][0]["cost_usd_per_hour"] >= body["baseline"]["cost_usd_per_hour"]
    assert api.client.get("/v1/plans", headers=planner_h).json() == []
    bad = api.client.post("/v1/whatif/scenarios", json={"scenarios": [{"name": "typo", "set": ["rate[chta]*=2"]}]},
                          headers=planner_h)
    assert bad.status_code == 422
    assert "chta" in bad.text
