"""End to end with the real planner: the quickstart fleet through the API, a planning job and a what-if."""

from __future__ import annotations

from pathlib import Path

import pytest
from apitest_client import ApiFactory

from api.jobs import default_planner
from planner.io.fleetfile import load_fleet

QUICKSTART = Path(__file__).parents[2] / "examples" / "quickstart.yaml"

pytestmark = pytest.mark.skipif(not QUICKSTART.exists(), reason="examples/quickstart.yaml not present")


def test_quickstart_through_the_api(make_sqlite_api: ApiFactory) -> None:
    pytest.importorskip("planner.pipeline")
    api = make_sqlite_api(planner=default_planner())
    admin = api.headers("platform", "admin")
    fleet = load_fleet(QUICKSTART)
    c = api.client
    for d in fleet.power_domains:
        assert c.post("/v1/power-domains", json=d.model_dump(mode="json"), headers=admin).status_code == 201
    for p in fleet.pools:
        assert c.post("/v1/pools", json=p.model_dump(mode="json"), headers=admin).status_code == 201
    for s in fleet.services:
        assert c.post("/v1/services", json=s.model_dump(mode="json"), headers=admin).status_code == 201

    r = c.post("/v1/plans", json={"fleet": "quickstart"}, headers=admin)
    job = api.wait_job(r.headers["location"], admin, timeout_s=120)
    assert job["status"] == "succeeded", job
    plan = c.get(job["plan_url"], headers=admin).json()
    served = {g["service"] for g in plan["replica_groups"] if g["replicas"] > 0}
    assert served == {s.id for s in fleet.services}
    assert plan["cost_usd_per_hour"] > 0 and plan["solver"]["status"] in ("optimal", "feasible")
    status = c.get(f"{job['plan_url']}/status", headers=admin).json()
    assert status["teams"] == sorted({s.team for s in fleet.services})

    # Double one service's traffic in a what-if: it costs at least as much, and nothing is stored.
    chat = next(s for s in fleet.services if s.id == "chat")
    traffic = chat.traffic.model_copy(update={"rate_rps": chat.traffic.rate_rps * 2})
    busier = chat.model_copy(update={"traffic": traffic})
    r = c.post("/v1/whatif", json={"fleet": "quickstart", "upsert_services": [busier.model_dump(mode="json")]},
               headers=admin)
    assert r.status_code == 200, r.text
    assert r.json()["cost_usd_per_hour"] >= plan["cost_usd_per_hour"] - 1e-6
    assert len(c.get("/v1/plans", headers=admin).json()) == 1
