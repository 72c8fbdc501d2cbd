"""Planning jobs: run the planner off the request path, with a time limit, and survive restarts.

A job row holds the fleet snapshot it plans. A worker thread takes a queued job (conditional update
``queued → running``), runs the planner in a worker process (``api.isolation``) that is killed at the job's
time limit, then
verifies the plan by replay (``api.verify``: ``Plan.verified`` and a finding that says why or why not); the
plan and the job's success are committed in one transaction. Several API processes may share a database:
every queued or running job names the process that holds it and when that process last said it was alive
(a heartbeat). A job whose holder has gone silent is orphaned: still queued, another process takes it over
and runs it; running, it is failed as interrupted and ``retry`` plans the same snapshot again (see
:class:`JobRunner`).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from pydantic import ValidationError
from sqlalchemy import ColumnElement, func, or_, select, update

from api.auth import Principal
from api.db import Database, JobRow, utcnow
from api.isolation import IsolatedPlanner, PlannerFailure, TimeLimitExceeded
from api.limits import too_many
from api.store import audit, fleet_teams, get_plan, latest_plan, plan_teams, store_plan
from api.verify import Verifier
from planner.ports import Planner as Planner  # the planner port; api.app and api.deps take it from here
from planner.schema import Finding, FleetSpec, Plan

log = logging.getLogger(__name__)
T = TypeVar("T")

INTERRUPTED = "interrupted: the server stopped while this job was queued or running; retry it"
STALE_BEATS = 3  # a holder silent for this many heartbeats is taken for dead


@dataclass(frozen=True)
class Recovered:
    """What one sweep for orphaned jobs did."""

    adopted: int  # queued jobs of a silent process, now queued here
    failed: int  # running jobs of a silent process, failed as interrupted


def default_planner(memory_bytes: int = 4 << 30) -> Planner:
    """``planner.pipeline.plan_fleet`` in killable worker processes (``api.isolation``)."""
    return IsolatedPlanner(memory_bytes=memory_bytes)


def call_with_limit(fn: Callable[[], T], limit_s: float) -> T:
    """Run ``fn`` in a daemon thread; raise TimeLimitExceeded if it has not returned after ``limit_s``.

    Only for planners that cannot run in a process of their own (test doubles): a thread cannot be stopped,
    so an overrunning one keeps running until it returns and its result is dropped. The real planner runs in
    :class:`api.isolation.IsolatedPlanner`, whose limit kills the work.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller's thread below
            box["error"] = exc

    thread = threading.Thread(target=target, name="medley-planner", daemon=True)
    thread.start()
    thread.join(limit_s)
    if thread.is_alive():
        raise TimeLimitExceeded(f"the planner did not finish within {limit_s:g} s")
    if "error" in box:
        raise box["error"]
    value: T = box["value"]
    return value


def run_planner(planner: Planner, fleet: FleetSpec, current: Plan | None, limit_s: float) -> Plan:
    """Call the planner under a time limit; infeasible or invalid fleets become :class:`PlannerFailure`.

    The planner's own ``time_limit_s`` is capped to the limit too, so the solver stops itself in time."""
    capped = fleet.model_copy(update={"planner": fleet.planner.model_copy(
        update={"time_limit_s": min(fleet.planner.time_limit_s, limit_s)})})
    if isinstance(planner, IsolatedPlanner):
        return planner.run(capped, current, limit_s)
    try:
        return call_with_limit(lambda: planner(capped, current=current), limit_s)
    except TimeLimitExceeded:
        raise
    except ValidationError as exc:
        raise PlannerFailure(f"invalid fleet: {exc.error_count()} error(s): {exc.errors()[0]['msg']}", []) from exc
    except (ValueError, KeyError) as exc:
        raise PlannerFailure(f"invalid fleet: {exc}", []) from exc
    except Exception as exc:
        findings = getattr(exc, "findings", None)
        if findings is None:
            raise
        dumped = [f.model_dump(mode="json") if hasattr(f, "model_dump") else dict(f) for f in findings]
        raise PlannerFailure(f"infeasible: {exc}", dumped) from exc


class JobRunner:
    """Runs planning jobs on a small thread pool; the database is the queue's source of truth.

    Each queued or running row names its holder (``runner``: host, pid and a random tag of this process) and
    the holder refreshes ``heartbeat_at`` on all of them every ``heartbeat_s``. :meth:`start` sweeps for jobs
    whose holder (another process, or a previous life of this one) has been silent for ``STALE_BEATS`` beats,
    and then sweeps again on every beat: an orphaned queued job is taken over (a conditional update, so two
    sweepers cannot both take it) and run here; an orphaned running job is failed as interrupted, since its
    planner may have been anywhere (``retry`` plans the same snapshot). A restarted single process therefore
    fails its predecessor's running jobs within ``STALE_BEATS × heartbeat_s`` of starting, and a rolling
    restart of several loses no queued job. The processes' clocks must agree to well within that window.
    """

    def __init__(self, db: Database, planner: Planner, *, workers: int,
                 on_outcome: Callable[[str], None] | None = None, heartbeat_s: float = 10.0,
                 on_recovered: Callable[[Recovered], None] | None = None, verifier: Verifier | None = None) -> None:
        self.db = db
        self.planner = planner
        self.verifier = verifier
        self.heartbeat_s = heartbeat_s
        self.instance = f"{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._on_outcome = on_outcome or (lambda _outcome: None)
        self._on_recovered = on_recovered or (lambda _rec: None)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="medley-job")
        self._closed = False
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def start(self) -> Recovered:
        """Sweep for orphaned jobs now, then beat and sweep every ``heartbeat_s`` in a daemon thread."""
        found = self.sweep()
        self._beat = threading.Thread(target=self._beat_loop, name="medley-job-heartbeat", daemon=True)
        self._beat.start()
        return found

    def _beat_loop(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                self.heartbeat()
                self.sweep()
            except Exception:  # the database may be briefly unreachable: try again at the next beat
                log.exception("planning-job heartbeat failed")

    def heartbeat(self) -> int:
        """Say that this process still holds its queued and running jobs; returns how many."""
        with self.db.write() as s:
            result = s.execute(
                update(JobRow).where(JobRow.runner == self.instance, JobRow.status.in_(("queued", "running")))
                .values(heartbeat_at=utcnow()).execution_options(synchronize_session=False)
            )
            return int(result.rowcount)  # type: ignore[attr-defined]

    def _orphaned(self, now: datetime) -> ColumnElement[bool]:
        cutoff = now - timedelta(seconds=STALE_BEATS * self.heartbeat_s)
        return (or_(JobRow.runner.is_(None), JobRow.runner != self.instance)
                & or_(JobRow.heartbeat_at.is_(None), JobRow.heartbeat_at < cutoff))

    def sweep(self, now: datetime | None = None) -> Recovered:
        """Take over orphaned queued jobs and fail orphaned running ones (see the class docstring)."""
        now = now or utcnow()
        with self.db.write() as s:
            failed = s.execute(
                update(JobRow).where(JobRow.status == "running", self._orphaned(now))
                .values(status="failed", error=INTERRUPTED, finished_at=utcnow())
                .execution_options(synchronize_session=False)
            ).rowcount  # type: ignore[attr-defined]
            waiting = [] if self._closed else list(
                s.scalars(select(JobRow.id).where(JobRow.status == "queued", self._orphaned(now))))
        adopted = []
        for job_id in waiting:
            with self.db.write() as s:
                took = s.execute(
                    update(JobRow).where(JobRow.id == job_id, JobRow.status == "queued", self._orphaned(now))
                    .values(runner=self.instance, heartbeat_at=utcnow())
                    .execution_options(synchronize_session=False)
                )
                if took.rowcount == 1:  # type: ignore[attr-defined]
                    adopted.append(job_id)
        for job_id in adopted:
            self._pool.submit(self._run_logged, job_id)
        found = Recovered(adopted=len(adopted), failed=int(failed))
        if found.adopted or found.failed:
            log.warning("planning jobs of a stopped API process: %d taken over, %d failed as interrupted",
                        found.adopted, found.failed)
            self._on_recovered(found)
        return found

    def create(self, fleet: FleetSpec, *, based_on: str | None, who: Principal, time_limit_s: float,
               retry_of: str | None = None, notes: Sequence[Finding] = (), max_active: int | None = None) -> JobRow:
        """Store a queued job (its own transaction) and hand it to a worker; ``notes`` go into its plan's
        findings. With ``max_active``, a team that already has that many queued or running jobs gets 429."""
        job_id = uuid.uuid4().hex[:16]
        with self.db.write() as s:
            if max_active is not None:
                active = s.scalar(select(func.count()).select_from(JobRow).where(
                    JobRow.team == who.team, JobRow.status.in_(("queued", "running"))))
                if (active or 0) >= max_active:
                    raise too_many("planning jobs", max_active, f"team {who.team!r}")
            kept = {"notes": [n.model_dump(mode="json") for n in notes]} if notes else None
            row = JobRow(id=job_id, status="queued", fleet=fleet.model_dump(mode="json", by_alias=True),
                         based_on=based_on, requested_by=who.actor, team=who.team, time_limit_s=time_limit_s,
                         plan_id=None, error=None, findings=kept, retry_of=retry_of, created_at=utcnow(),
                         started_at=None, finished_at=None, runner=self.instance, heartbeat_at=utcnow())
            s.add(row)
            audit(s, who, "retry" if retry_of else "request", "plan-job", job_id, None,
                  {"fleet": fleet.name, "based_on": based_on, "retry_of": retry_of})
        if not self._closed:
            self._pool.submit(self._run_logged, job_id)
        return row

    def get(self, job_id: str) -> JobRow | None:
        """A job by id."""
        with self.db.read() as s:
            return s.get(JobRow, job_id)

    def _run_logged(self, job_id: str) -> None:
        try:
            self.run(job_id)
        except Exception as exc:
            log.exception("planning job %s crashed", job_id)
            self._finish(job_id, error=f"internal error: {exc!r}")
            self._on_outcome("error")

    def run(self, job_id: str) -> None:
        """Run one queued job to its end (public so tests can run jobs synchronously)."""
        with self.db.write() as s:
            took = s.execute(
                update(JobRow).where(JobRow.id == job_id, JobRow.status == "queued", JobRow.runner == self.instance)
                .values(status="running", started_at=utcnow(), heartbeat_at=utcnow())
                .execution_options(synchronize_session=False)
            )
            if took.rowcount != 1:  # type: ignore[attr-defined]
                return  # another process took it over, or it was failed
            job = s.scalars(select(JobRow).where(JobRow.id == job_id)).one()
            fleet = FleetSpec.model_validate(job.fleet)
            limit_s, based_on, actor = job.time_limit_s, job.based_on, job.requested_by
            notes = [Finding.model_validate(n) for n in (job.findings or {}).get("notes", [])]
            parent = get_plan(s, based_on) if based_on else latest_plan(s, fleet.name, teams=fleet_teams(fleet))
            current = Plan.model_validate(parent.body) if parent is not None else None
            parent_id = parent.id if parent is not None else None
        try:
            plan = run_planner(self.planner, fleet, current, limit_s)
        except TimeLimitExceeded as exc:
            self._finish(job_id, error=f"time limit: {exc}")
            self._on_outcome("time_limit")
            return
        except PlannerFailure as exc:
            self._finish(job_id, error=exc.message, findings=exc.findings)
            self._on_outcome("infeasible" if exc.findings else "invalid")
            return
        plan = self._verified(plan, fleet)
        if notes:
            plan = plan.model_copy(update={"findings": [*plan.findings, *notes]})
        with self.db.write() as s:
            # Claim the success first: a job failed meanwhile (its time limit, or a sweep that took this process
            # for dead) must not leave a plan behind. The row stays locked until the plan is in.
            held = s.execute(
                update(JobRow).where(JobRow.id == job_id, JobRow.status == "running", JobRow.runner == self.instance)
                .values(status="succeeded", finished_at=utcnow()).execution_options(synchronize_session=False)
            )
            if held.rowcount != 1:  # type: ignore[attr-defined]
                log.warning("planning job %s finished after it was failed; its plan is dropped", job_id)
                self._on_outcome("dropped")
                return
            stored = store_plan(s, plan.model_copy(update={"fleet": fleet.name}),
                                teams=plan_teams(plan, fleet.services), created_by=actor,
                                previous_plan_id=parent_id)
            s.execute(update(JobRow).where(JobRow.id == job_id).values(plan_id=stored.id)
                      .execution_options(synchronize_session=False))
        self._on_outcome("succeeded")

    def _verified(self, plan: Plan, fleet: FleetSpec) -> Plan:
        """The plan with ``verified`` set by the verifier and a finding that says why (or why not)."""
        if self.verifier is None:
            return plan
        verdict = self.verifier(plan, fleet)
        note = Finding(kind="note", constraint="verification", message=verdict.reason)
        return plan.model_copy(update={"verified": verdict.verified, "findings": [*plan.findings, note]})

    def _finish(self, job_id: str, *, error: str, findings: list[dict[str, Any]] | None = None) -> None:
        with self.db.write() as s:
            s.execute(
                update(JobRow).where(JobRow.id == job_id, JobRow.status.in_(("queued", "running")))
                .values(status="failed", error=error[:4000],
                        findings={"items": findings} if findings is not None else None, finished_at=utcnow())
                .execution_options(synchronize_session=False)
            )

    def close(self) -> None:
        """Stop taking jobs and beating. Jobs still queued here are let go at once (another process, or the next
        start, takes them over at its next sweep); running planner threads are abandoned, and their rows are
        failed as interrupted once this process has been silent for ``STALE_BEATS`` beats."""
        self._closed = True
        self._stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
        try:
            with self.db.write() as s:
                s.execute(update(JobRow).where(JobRow.runner == self.instance, JobRow.status == "queued")
                          .values(heartbeat_at=None).execution_options(synchronize_session=False))
        except Exception:  # closing with the database gone: the jobs go stale and are taken over later
            log.exception("could not let go of queued planning jobs")
