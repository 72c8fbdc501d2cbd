"""``/healthz`` (alive), ``/readyz`` (database reachable), ``/metrics`` (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from api.deps import Svc
from api.problems import problem_response, problem_responses

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process is alive."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses=problem_responses(503))
def readyz(svc: Svc) -> JSONResponse:
    """The database answers (503 otherwise)."""
    try:
        with svc.db.read() as s:
            s.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        return problem_response(None, 503, f"database unavailable: {type(exc).__name__}")
    return JSONResponse({"status": "ready"})


@router.get("/metrics", response_class=PlainTextResponse,
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})
def metrics(svc: Svc) -> PlainTextResponse:
    """Prometheus metrics of this process."""
    return PlainTextResponse(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)
