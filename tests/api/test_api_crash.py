"""A planning job running when its server is killed (SIGKILL) is failed after the restart and can be retried."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from apitest_client import ApiFactory
from apitest_fakes import pool_doc, service_doc

from api import migrate
from api.auth import ApiRole, create_token
from api.db import Database, JobRow
from api.jobs import INTERRUPTED

SERVER = """
import sys, threading, uvicorn
sys.path.insert(0, {tests!r})
from apitest_fakes import FakePlanner
from api.app import create_app
from api.settings import Settings
planner = FakePlanner()
planner.gate = threading.Event()  # never set: the job stays running until the process dies
app = create_app(Settings(database_url={url!r}, job_heartbeat_s=0.2, provisioner="record"), planner=planner)
uvicorn.run(app, host="127.0.0.1", port={port}, log_level="warning")
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_until(pred: object, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if pred():  # type: ignore[operator]
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def test_running_job_is_failed_after_crash_and_retried(db_url: str, make_api: ApiFactory) -> None:
    db = Database(db_url)
    migrate.upgrade(db.engine)
    with db.write() as s:
        token, _ = create_token(s, "platform", ApiRole.ADMIN)
    headers = {"Authorization": f"Bearer {token}"}
    port = _free_port()
    script = SERVER.format(tests=str(Path(__file__).parent), url=db_url, port=port)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).parents[2],
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_until(lambda: httpx.get(f"{base}/healthz", timeout=1).status_code == 200, 30)
        with httpx.Client(base_url=base, headers=headers, timeout=10) as c:
            assert c.post("/v1/pools", json=pool_doc()).status_code == 201
            assert c.post("/v1/services", json=service_doc()).status_code == 201
            r = c.post("/v1/plans", json={})
            assert r.status_code == 202
            job_url = r.headers["location"]
            _wait_until(lambda: c.get(job_url).json()["status"] == "running", 20)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    job_id = job_url.rsplit("/", 1)[1]
    with db.read() as s:
        row = s.get(JobRow, job_id)
        assert row is not None and row.status == "running"  # the crash left it mid-flight
    db.dispose()

    api = make_api(url=db_url, job_heartbeat_s=0.2)  # the restart: fails it once the dead holder is silent
    job = api.wait_job(job_url, headers, timeout_s=10)
    assert job["status"] == "failed" and job["error"] == INTERRUPTED and job["finished_at"]
    r = api.client.post(f"{job_url}/retry", headers=headers)
    assert r.status_code == 202 and r.json()["retry_of"] == job_id
    retried = api.wait_job(r.headers["location"], headers)
    assert retried["status"] == "succeeded"
    plan = api.client.get(retried["plan_url"], headers=headers).json()
    assert [g["service"] for g in plan["replica_groups"]] == ["chat"]
