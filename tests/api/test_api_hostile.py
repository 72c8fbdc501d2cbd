"""Hostile tenants: files the server reads, planning that overruns its limit, and one team acting on another's work."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from apitest_client import Api, ApiFactory
from apitest_fakes import FakePlanner, pool_doc, service_doc

from api.isolation import IsolatedPlanner, cpu_seconds

TRACE = "ContextTokens,GeneratedTokens\n100,20\n300,40\n2000,100\n"


def _trace_service(path: str, sid: str = "chat", team: str = "assistants") -> dict[str, Any]:
    doc = service_doc(sid, team=team)
    doc["traffic"] = {"rate_rps": 5, "trace_file": path}
    return doc


def _seed(api: Api, *services: dict[str, Any]) -> dict[str, str]:
    admin = api.headers("platform", "admin")
    assert api.client.post("/v1/pools", json=pool_doc(), headers=admin).status_code == 201
    for doc in services:
        assert api.client.post("/v1/services", json=doc, headers=admin).status_code == 201, doc
    return admin


def _refusal(api: Api, sid: str, headers: dict[str, str]) -> str:
    r = api.client.post("/v1/plans", json={"services": [sid]}, headers=headers)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    (error,) = r.json()["errors"]
    assert error["field"] == f"fleet.services.{sid}.traffic.trace_file"
    reason: str = error["reason"]
    return reason


def test_trace_paths_outside_the_input_dirs_are_refused_alike(make_sqlite_api: ApiFactory, tmp_path: Path) -> None:
    allowed, outside = tmp_path / "in", tmp_path / "out"
    allowed.mkdir()
    outside.mkdir()
    (allowed / "chat.csv").write_text(TRACE)
    (outside / "secret.csv").write_text(TRACE)
    os.symlink(outside / "secret.csv", allowed / "link.csv")
    api = make_sqlite_api(input_dirs=str(allowed))
    names = {"etc": "/etc/passwd", "missing": "/nonexistent/x.csv", "outside": str(outside / "secret.csv"),
             "dotdot": "../out/secret.csv", "link": "link.csv", "gone": "nothere.csv"}
    admin = _seed(api, _trace_service("chat.csv"), *(_trace_service(p, sid) for sid, p in names.items()))
    reasons = {sid: _refusal(api, sid, admin) for sid in names}
    # The same words for a file that exists, one that does not and one behind a link: no existence oracle.
    assert len(set(reasons.values())) == 1, reasons
    assert "not a file this server reads" in reasons["etc"]
    # Inside the input directory the trace is read once, at the edge: the job plans buckets, not a path.
    r = api.client.post("/v1/plans", json={"services": ["chat"]}, headers=admin)
    assert r.status_code == 202, r.text
    job = api.wait_job(r.headers["location"], admin)
    assert job["status"] == "succeeded"
    snapshot = api.services.runner.get(job["id"]).fleet  # type: ignore[union-attr]
    traffic = snapshot["services"][0]["traffic"]
    assert traffic["trace_file"] is None and len(traffic["buckets"]) == 3


def test_no_trace_path_is_read_without_input_dirs(make_sqlite_api: ApiFactory, tmp_path: Path) -> None:
    (tmp_path / "chat.csv").write_text(TRACE)
    api = make_sqlite_api()
    admin = _seed(api, _trace_service(str(tmp_path / "chat.csv")))
    assert "not a file this server reads" in _refusal(api, "chat", admin)


def test_dev_zero_and_a_fifo_are_refused_at_once(make_sqlite_api: ApiFactory, tmp_path: Path) -> None:
    os.symlink("/dev/zero", tmp_path / "zero.csv")
    os.mkfifo(tmp_path / "fifo.csv")
    api = make_sqlite_api(input_dirs=f"{tmp_path}:/dev")
    admin = _seed(api, _trace_service("/dev/zero", "zero"), _trace_service("zero.csv", "link"),
                  _trace_service("fifo.csv", "fifo"))
    start = time.monotonic()
    reasons = {sid: _refusal(api, sid, admin) for sid in ("zero", "link", "fifo")}
    assert time.monotonic() - start < 5  # nothing read from the device, nothing blocked on the FIFO
    assert len(set(reasons.values())) == 1, reasons


def test_an_uploaded_trace_becomes_buckets(api: Api) -> None:
    h = api.headers("assistants", "planner")
    r = api.client.post("/v1/traces", content=TRACE, headers={**h, "Content-Type": "text/csv"})
    assert r.status_code == 200, r.text
    assert r.json()["requests"] == 3 and abs(sum(b["share"] for b in r.json()["buckets"]) - 1) < 1e-9
    bad = api.client.post("/v1/traces", content="ContextTokens,GeneratedTokens\n5,-1\n", headers=h)
    assert bad.status_code == 422 and bad.json()["errors"][0]["reason"].startswith("2: GeneratedTokens")
    binary = api.client.post("/v1/traces", content=b"\xff\xfe\x00a", headers=h)
    assert binary.status_code == 422 and "UTF-16" in binary.json()["detail"]


def test_a_whatif_over_its_time_limit_is_stopped(make_sqlite_api: ApiFactory) -> None:
    planner = IsolatedPlanner(function="apitest_fakes:spin_planner", memory_bytes=0)
    api = make_sqlite_api(planner=planner, whatif_time_limit_s=1.0)
    _seed(api, service_doc())
    h = api.headers("assistants", "planner")
    spun: list[float] = []

    def watch() -> None:  # the worker's CPU while the request runs: it really plans in another process
        planner.started.wait(120)
        time.sleep(0.7)
        assert planner.last is not None
        spun.append(cpu_seconds(planner.last.pid) or 0.0)

    seen = threading.Thread(target=watch)
    seen.start()
    start = time.monotonic()
    r = api.client.post("/v1/whatif", json={}, headers=h)
    took = time.monotonic() - start
    seen.join()
    assert spun and spun[0] > 0.02, spun  # it was planning (burning CPU) in its own process
    assert r.status_code == 422 and "did not finish within 1 s" in r.json()["detail"], r.text
    assert took < 60  # the first call also starts the forkserver
    assert planner.last is not None and planner.last.exit_code is not None and planner.last.exit_code < 0
    # The worker is gone within 2 s of the answer, and no thread of this process keeps a CPU busy.
    deadline = time.monotonic() + 2
    while cpu_seconds(planner.last.pid) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert cpu_seconds(planner.last.pid) is None
    before = os.times()
    time.sleep(1.0)
    after = os.times()
    assert (after.user + after.system) - (before.user + before.system) < 0.5


def test_one_team_cannot_retry_or_plan_over_anothers_work(make_sqlite_api: ApiFactory) -> None:
    planner = FakePlanner()
    api = make_sqlite_api(planner=planner)
    admin = _seed(api, service_doc("chat", team="alpha"), service_doc("code", team="beta"))
    alpha, beta = api.headers("alpha", "planner"), api.headers("beta", "planner")
    # beta's failed job: alpha may not retry it; beta may.
    planner.infeasible = True
    failed = api.wait_job(api.client.post("/v1/plans", json={}, headers=beta).headers["location"], beta)
    planner.infeasible = False
    assert failed["status"] == "failed"
    r = api.client.post(f"/v1/plan-jobs/{failed['id']}/retry", headers=alpha)
    assert r.status_code == 403 and "beta" in r.json()["detail"]
    assert api.client.post(f"/v1/plan-jobs/{failed['id']}/retry", headers=beta).status_code == 202
    # alpha may not plan beta's services, nor start from beta's plan.
    r = api.client.post("/v1/plans", json={"services": ["code"]}, headers=alpha)
    assert r.status_code == 403 and r.json()["errors"][0]["field"] == "body.services.0"
    beta_job = api.wait_job(api.client.post("/v1/plans", json={}, headers=beta).headers["location"], beta)
    r = api.client.post("/v1/plans", json={"based_on": beta_job["plan_id"]}, headers=alpha)
    assert r.status_code == 403
    # alpha's plans form alpha's lineage: beta's next plan still starts from beta's.
    alpha_job = api.wait_job(api.client.post("/v1/plans", json={}, headers=alpha).headers["location"], alpha)
    alpha_plan = api.client.get(alpha_job["plan_url"], headers=alpha).json()
    assert [g["service"] for g in alpha_plan["replica_groups"]] == ["chat"]
    assert alpha_plan["previous_plan_id"] is None
    again = api.wait_job(api.client.post("/v1/plans", json={}, headers=beta).headers["location"], beta)
    status = api.client.get(f"/v1/plans/{again['plan_id']}/status", headers=beta).json()
    assert status["previous_plan_id"] == beta_job["plan_id"] and status["teams"] == ["beta"]
    # A whole-fleet plan (admin) has its own lineage too.
    whole = api.wait_job(api.client.post("/v1/plans", json={}, headers=admin).headers["location"], admin)
    assert api.client.get(f"/v1/plans/{whole['plan_id']}/status", headers=admin).json()["previous_plan_id"] is None


def test_planning_is_limited_per_team(make_sqlite_api: ApiFactory) -> None:
    planner = FakePlanner()
    planner.gate = threading.Event()
    api = make_sqlite_api(planner=planner, jobs_per_team=2, job_workers=1)
    _seed(api, service_doc("chat", team="alpha"), service_doc("code", team="beta"))
    alpha, beta = api.headers("alpha", "planner"), api.headers("beta", "planner")
    try:
        codes = [api.client.post("/v1/plans", json={}, headers=alpha).status_code for _ in range(3)]
        assert codes == [202, 202, 429]
        r = api.client.post("/v1/plans", json={}, headers=alpha)
        assert r.headers["retry-after"] and "team 'alpha' already has 2 planning jobs" in r.json()["detail"]
        assert api.client.post("/v1/plans", json={}, headers=beta).status_code == 202  # another team goes on
    finally:
        planner.gate.set()


def test_a_405_lists_every_method_of_the_path(api: Api) -> None:
    r = api.client.patch("/v1/pools")
    assert r.status_code == 405 and r.headers["allow"] == "GET, POST"
    assert api.client.patch("/v1/pools/x").headers["allow"] == "DELETE, GET, PUT"


def test_a_planner_over_its_memory_limit_fails_its_job_with_the_reason(make_sqlite_api: ApiFactory) -> None:
    api = make_sqlite_api(planner=IsolatedPlanner(function="apitest_fakes:hog_planner", memory_bytes=1 << 30))
    admin = _seed(api, service_doc())
    job = api.wait_job(api.client.post("/v1/plans", json={}, headers=admin).headers["location"], admin, 120)
    assert job["status"] == "failed" and "ran out of its 1024 MiB of memory" in job["error"]
