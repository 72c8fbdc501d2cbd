"""Several API processes on one database: a live holder keeps its planning jobs; a silent one's are taken over
(queued) or failed as interrupted (running); a job failed meanwhile leaves no plan behind."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from apitest_client import ApiFactory
from apitest_fakes import FakePlanner, pool_doc, service_doc
from sqlalchemy import func, select

from api import migrate
from api.auth import ApiRole, Principal
from api.db import Database, JobRow, PlanRow, utcnow
from api.jobs import INTERRUPTED, STALE_BEATS, JobRunner
from planner.schema import FleetSpec

BEAT_S = 0.1
WHO = Principal(token_id="t1", team="assistants", role=ApiRole.PLANNER)


def fleet() -> FleetSpec:
    return FleetSpec.model_validate({"name": "prod", "pools": [pool_doc()], "services": [service_doc()]})


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    migrate.upgrade(database.engine)
    yield database
    database.dispose()


def job(db: Database, job_id: str) -> JobRow:
    with db.read() as s:
        row = s.get(JobRow, job_id)
        assert row is not None
        return row


def until(pred: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def plans(db: Database) -> int:
    with db.read() as s:
        return int(s.scalar(select(func.count()).select_from(PlanRow)) or 0)


def test_live_holder_keeps_its_jobs_and_a_stopped_one_loses_them(db: Database) -> None:
    gated = FakePlanner()
    gated.gate = threading.Event()
    outcomes: list[str] = []
    a = JobRunner(db, gated, workers=1, heartbeat_s=BEAT_S, on_outcome=outcomes.append)
    b = JobRunner(db, FakePlanner(), workers=1, heartbeat_s=BEAT_S)
    try:
        a.start()
        running = a.create(fleet(), based_on=None, who=WHO, time_limit_s=30).id
        until(lambda: job(db, running).status == "running")
        queued = a.create(fleet(), based_on=None, who=WHO, time_limit_s=30).id  # behind the one worker
        b.start()
        time.sleep(STALE_BEATS * BEAT_S * 4)  # many of b's sweeps while a beats
        assert job(db, running).status == "running" and job(db, running).runner == a.instance
        assert job(db, queued).status == "queued" and job(db, queued).runner == a.instance

        a.close()  # a stops: its queued job is let go at once, its running one goes stale
        until(lambda: job(db, queued).status == "succeeded")
        assert job(db, queued).runner == b.instance
        until(lambda: job(db, running).status == "failed")
        assert job(db, running).error == INTERRUPTED and job(db, running).plan_id is None
        assert plans(db) == 1  # b's plan of the taken-over job

        gated.gate.set()  # a's abandoned planner thread comes back late: it must not store a plan
        until(lambda: outcomes == ["dropped"])
        assert plans(db) == 1 and job(db, running).status == "failed"
    finally:
        gated.gate.set()
        a.close()
        b.close()


def test_sweep_waits_for_three_silent_beats(db: Database) -> None:
    runner = JobRunner(db, FakePlanner(), workers=1, heartbeat_s=10.0)
    now = utcnow()
    with db.write() as s:
        for i, (status, silent_beats) in enumerate([("running", 2), ("running", 4), ("queued", 2), ("queued", 4),
                                                    ("succeeded", 9)]):
            s.add(JobRow(id=f"j{i}", status=status, fleet=fleet().model_dump(mode="json", by_alias=True),
                         based_on=None, requested_by="assistants/t1", team="assistants", time_limit_s=30.0,
                         plan_id=None, error=None, findings=None, retry_of=None, created_at=now, started_at=None,
                         finished_at=None, runner="gone:1:dead",
                         heartbeat_at=now - timedelta(seconds=10.0 * silent_beats)))
    try:
        found = runner.sweep(now)
        assert (found.adopted, found.failed) == (1, 1)
        assert [job(db, f"j{i}").status for i in range(5)][:2] == ["running", "failed"]
        assert job(db, "j1").error == INTERRUPTED
        assert job(db, "j2").runner == "gone:1:dead" and job(db, "j3").runner == runner.instance
        until(lambda: job(db, "j3").status == "succeeded")
        assert job(db, "j2").status == "queued" and job(db, "j4").status == "succeeded"
        assert runner.sweep(now) == type(found)(adopted=0, failed=0)  # nothing twice
    finally:
        runner.close()


def test_restart_runs_jobs_a_crashed_process_had_queued(db_url: str, make_api: ApiFactory, db: Database) -> None:
    with db.write() as s:
        s.add(JobRow(id="left", status="queued", fleet=fleet().model_dump(mode="json", by_alias=True),
                     based_on=None, requested_by="assistants/t1", team="assistants", time_limit_s=30.0, plan_id=None,
                     error=None, findings=None, retry_of=None, created_at=utcnow(), started_at=None,
                     finished_at=None, runner="crashed:7:abcd", heartbeat_at=utcnow() - timedelta(hours=1)))
    api = make_api(url=db_url, job_heartbeat_s=BEAT_S)
    until(lambda: job(db, "left").status == "succeeded")
    assert job(db, "left").plan_id is not None
    metrics = api.client.get("/metrics").text
    assert 'medley_api_plan_jobs_recovered_total{action="adopted"} 1.0' in metrics
