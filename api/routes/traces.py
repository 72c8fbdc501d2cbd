"""``/v1/traces``: turn an uploaded request trace (CSV) into the length buckets a service's traffic takes.

The server reads no trace path a tenant names (unless it lies in ``MEDLEY_INPUT_DIRS``); uploading is the way
to plan from a trace: the CSV is parsed with the same checks as ``medley trace`` (``planner.io.traces``) and
bounded by the request body limit, and the answer's ``buckets`` go into ``traffic.buckets``.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from api.deps import PlannerRole
from api.problems import field_error, problem_responses
from planner.io.files import FileRefused, decode_utf8
from planner.io.traces import bucket, parse_trace
from planner.schema import LengthBucket

router = APIRouter(tags=["traces"], responses=problem_responses(400, 401, 403, 413, 422))

_CSV_BODY = {"requestBody": {"required": True, "content": {"text/csv": {"schema": {
    "type": "string", "description": "header ContextTokens,GeneratedTokens[,TIMESTAMP], one request a row"}}}}}


class TraceBuckets(BaseModel):
    """An uploaded trace as length buckets, with its size and mean rate (null without timestamps)."""

    buckets: list[LengthBucket]
    requests: int = Field(description="requests with positive lengths")
    mean_rate_rps: float | None


@router.post("/v1/traces", response_model=TraceBuckets, openapi_extra=_CSV_BODY)
async def upload_trace(request: Request, _: PlannerRole) -> TraceBuckets:
    """Bucket a trace CSV (the body); 422 names the line and column of the first bad row."""
    data = await request.body()
    try:
        text = decode_utf8(data, "body")
        summary = bucket(parse_trace(text, "body"))
    except FileRefused as exc:
        raise field_error(422, "body", exc.reason) from exc
    except ValueError as exc:
        raise field_error(422, "body", str(exc).removeprefix("body:")) from exc
    return TraceBuckets(buckets=summary.buckets, requests=summary.requests, mean_rate_rps=summary.mean_rate_rps)
