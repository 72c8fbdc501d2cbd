"""Planning jobs: run the planner off the request path, with a time limit, and survive restarts.

A job row holds the fleet snapshot it plans. A worker thread takes a queued job (conditional update
``queued → running``), calls the planner in a separate thread and waits at most the job's time limit; the
plan and the job's success are committed in one transaction. A process that dies leaves ``running`` rows;
:meth:`JobRunner.recover` marks them failed at the next start, and ``retry`` plans the same snapshot again.
Only one API process should run jobs against a database (recovery assumes no other runner is alive).
"""

from __future__ import annotations

import importlib
import logging
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from pydantic import ValidationError
from sqlalchemy import select, update

from api.auth import Principal
from api.db import Database, JobRow, utcnow
from api.store import audit, get_plan, latest_plan, plan_teams, store_plan
from planner.schema import FleetSpec, Plan

log = logging.getLogger(__name__)
T = TypeVar("T")

INTERRUPTED = "interrupted: the server stopped while this job was queued or running; retry it"


class Planner(Protocol):
    """What the API needs from the planner: a fleet (and the running plan) in, a plan out.

    Raises an exception with a ``findings`` attribute when the fleet is infeasible, ``ValueError`` for bad
    input.
    """

    def __call__(self, fleet: FleetSpec, *, current: Plan | None = None) -> Plan: ...


def default_planner() -> Planner:
    """``planner.plan.plan_fleet``, imported when first called (the API starts without it)."""

    def plan(fleet: FleetSpec, *, current: Plan | None = None) -> Plan:
        # Imported by name at call time: the API starts (and type-checks) without the solver stack loaded.
        plan_fleet = importlib.import_module("planner.plan").plan_fleet
        result: Plan = plan_fleet(fleet, current=current)
        return result

    return plan


class TimeLimitExceeded(Exception):
    """The planner did not return within the time limit."""


class PlannerFailure(Exception):
    """The planner refused the fleet: infeasible (with findings) or invalid."""

    def __init__(self, message: str, findings: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.message = message
        self.findings = findings


def call_with_limit(fn: Callable[[], T], limit_s: float) -> T:
    """Run ``fn`` in a daemon thread; raise TimeLimitExceeded if it has not returned after ``limit_s``.

    Python cannot stop a thread, so a planner that overruns keeps its thread until it returns; its result is
    dropped. The planner's own ``time_limit_s`` is capped to the same limit so the solver stops itself too.
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
    """Call the planner under a time limit; infeasible or invalid fleets become :class:`PlannerFailure`."""
    capped = fleet.model_copy(update={"planner": fleet.planner.model_copy(
        update={"time_limit_s": min(fleet.planner.time_limit_s, limit_s)})})
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
    """Runs planning jobs on a small thread pool; the database is the queue's source of truth."""

    def __init__(self, db: Database, planner: Planner, *, workers: int,
                 on_outcome: Callable[[str], None] | None = None) -> None:
        self.db = db
        self.planner = planner
        self._on_outcome = on_outcome or (lambda _outcome: None)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="medley-job")
        self._closed = False

    def recover(self) -> int:
        """Mark jobs left queued or running by a previous process as failed; returns how many."""
        with self.db.write() as s:
            result = s.execute(
                update(JobRow).where(JobRow.status.in_(("queued", "running")))
                .values(status="failed", error=INTERRUPTED, finished_at=utcnow())
                .execution_options(synchronize_session=False)
            )
            return int(result.rowcount)  # type: ignore[attr-defined]

    def create(self, fleet: FleetSpec, *, based_on: str | None, who: Principal, time_limit_s: float,
               retry_of: str | None = None) -> JobRow:
        """Store a queued job (its own transaction) and hand it to a worker."""
        job_id = uuid.uuid4().hex[:16]
        with self.db.write() as s:
            row = JobRow(id=job_id, status="queued", fleet=fleet.model_dump(mode="json", by_alias=True),
                         based_on=based_on, requested_by=who.actor, team=who.team, time_limit_s=time_limit_s,
                         plan_id=None, error=None, findings=None, retry_of=retry_of, created_at=utcnow(),
                         started_at=None, finished_at=None)
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
                update(JobRow).where(JobRow.id == job_id, JobRow.status == "queued")
                .values(status="running", started_at=utcnow()).execution_options(synchronize_session=False)
            )
            if took.rowcount != 1:  # type: ignore[attr-defined]
                return  # someone else has it, or it was failed by recovery
            job = s.scalars(select(JobRow).where(JobRow.id == job_id)).one()
            fleet = FleetSpec.model_validate(job.fleet)
            limit_s, based_on, actor = job.time_limit_s, job.based_on, job.requested_by
            parent = get_plan(s, based_on) if based_on else latest_plan(s, fleet.name)
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
        with self.db.write() as s:
            stored = store_plan(s, plan.model_copy(update={"fleet": fleet.name}),
                                teams=plan_teams(plan, fleet.services), created_by=actor,
                                previous_plan_id=parent_id)
            s.execute(
                update(JobRow).where(JobRow.id == job_id, JobRow.status == "running")
                .values(status="succeeded", plan_id=stored.id, finished_at=utcnow())
                .execution_options(synchronize_session=False)
            )
        self._on_outcome("succeeded")

    def _finish(self, job_id: str, *, error: str, findings: list[dict[str, Any]] | None = None) -> None:
        with self.db.write() as s:
            s.execute(
                update(JobRow).where(JobRow.id == job_id, JobRow.status.in_(("queued", "running")))
                .values(status="failed", error=error[:4000],
                        findings={"items": findings} if findings is not None else None, finished_at=utcnow())
                .execution_options(synchronize_session=False)
            )

    def close(self) -> None:
        """Stop taking jobs; running planner threads are abandoned (their rows are recovered at next start)."""
        self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)
