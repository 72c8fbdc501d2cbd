"""RFC 9457 problem details: every error leaves the API as ``application/problem+json``.

Validation errors name each offending field (a dotted path into the body, query or header) and the reason.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger(__name__)


class FieldError(BaseModel):
    """One reason a request was refused, and where."""

    field: str = Field(description="dotted path of the offending value, e.g. body.traffic.rate_rps")
    reason: str


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str = ""
    instance: str | None = None
    errors: list[FieldError] = Field(default_factory=list)


class ApiError(Exception):
    """Raised by routes and services to answer with a problem document."""

    def __init__(self, status: int, detail: str, *, errors: Sequence[FieldError] = (),
                 headers: dict[str, str] | None = None, extra: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = list(errors)
        self.headers = headers or {}
        self.extra = extra or {}


def field_error(status: int, field: str, reason: str) -> ApiError:
    """An error about one field, with the field in the detail too."""
    return ApiError(status, f"{field}: {reason}", errors=[FieldError(field=field, reason=reason)])


def problem_response(request: Request | None, status: int, detail: str, *,
                     errors: Sequence[FieldError] = (), headers: dict[str, str] | None = None,
                     extra: dict[str, Any] | None = None) -> JSONResponse:
    """Render a problem document."""
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    body = Problem(title=title, status=status, detail=detail,
                   instance=request.url.path if request is not None else None, errors=list(errors))
    content = body.model_dump(mode="json")
    content.update(extra or {})
    return JSONResponse(content, status_code=status, headers=headers, media_type=PROBLEM_JSON)


def _loc_to_field(loc: Sequence[int | str], msg: str) -> str:
    parts = [str(p) for p in loc]
    # Model validators report at the model's own location; our schema prefixes their messages with the field.
    head = msg.split(":", 1)[0].removeprefix("Value error, ").strip()
    if head.isidentifier() and ":" in msg:
        parts.append(head)
    return ".".join(parts) if parts else "body"


def _reason(err: dict[str, Any]) -> str:
    msg = str(err.get("msg", "invalid"))
    msg = msg.removeprefix("Value error, ")
    head, sep, rest = msg.partition(":")
    if sep and head.strip().isidentifier():
        return rest.strip()
    return msg


def validation_errors(errors: Sequence[Any], prefix: Sequence[str | int] = ()) -> list[FieldError]:
    """Pydantic/FastAPI error dicts as field errors."""
    out = []
    for err in errors:
        loc = list(prefix) + list(err.get("loc", ()))
        out.append(FieldError(field=_loc_to_field(loc, str(err.get("msg", ""))), reason=_reason(err)))
    return out


def from_validation_error(exc: ValidationError, prefix: Sequence[str | int] = ("body",)) -> ApiError:
    """A pydantic ValidationError raised in our own code, as a 422 problem."""
    errors = validation_errors(exc.errors(include_url=False, include_input=False), prefix)
    detail = "; ".join(f"{e.field}: {e.reason}" for e in errors[:5]) or "invalid input"
    return ApiError(422, detail, errors=errors)


def allowed_methods(request: Request) -> list[str]:
    """Every method the API document lists at this request's path (the ``Allow`` of a 405)."""
    path = request.url.path
    methods: set[str] = set()
    for template, item in request.app.openapi().get("paths", {}).items():
        if re.fullmatch(re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)), path):
            methods |= {m.upper() for m in item}
    return sorted(methods)


def install_handlers(app: FastAPI) -> None:
    """Turn every error (ours, FastAPI's, Starlette's, unexpected) into problem+json."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return problem_response(request, exc.status, exc.detail, errors=exc.errors, headers=exc.headers,
                                extra=exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = validation_errors(exc.errors())
        detail = "; ".join(f"{e.field}: {e.reason}" for e in errors[:5]) or "invalid request"
        return problem_response(request, 422, detail, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        errors = [FieldError(field="body", reason=str(exc.detail))] if exc.status_code in (400, 413) else []
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request))
        return problem_response(request, exc.status_code, str(exc.detail), errors=errors, headers=headers)

    @app.exception_handler(DataError)
    async def _data(request: Request, exc: DataError) -> JSONResponse:
        # The database refused a value (too long, out of range, bad characters): the input's fault.
        log.warning("database refused a value on %s %s: %s", request.method, request.url.path, exc.orig)
        return problem_response(request, 422, "a value cannot be stored (too long, out of range or bad text)",
                                errors=[FieldError(field="body", reason="refused by the database")])

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Logged without the request's headers, so a bearer token can never end up in a log line.
        log.error("unhandled error on %s %s: %r", request.method, request.url.path, exc)
        return problem_response(request, 500, "internal error")


def problem_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for error codes, all with the Problem schema as problem+json."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        out[code] = {
            "model": Problem,
            "description": HTTPStatus(code).phrase,
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
    return out


ETAG_HEADER = {"ETag": {"description": "version of the resource; send it back in If-Match to change it",
                        "schema": {"type": "string"}}}
LOCATION_HEADER = {"Location": {"description": "URL of the created resource or job", "schema": {"type": "string"}}}


def with_headers(status: int, description: str, **headers: dict[str, Any]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entry documenting the headers a success response carries."""
    merged: dict[str, Any] = {}
    for h in headers.values():
        merged.update(h)
    return {status: {"description": description, "headers": merged}}
