"""Shared handling of versioned documents (pools, services, power domains): ETags, 404/412/428, audit.

Read routes are ``async`` and query inline: a read is one short indexed query, cheaper than a hop to the
thread pool. Write routes stay synchronous (thread pool), since SQLite may wait for its write lock.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from api.auth import Principal
from api.db import ServiceRow
from api.deps import Services, etag, seen_version
from api.problems import (
    ETAG_HEADER,
    LOCATION_HEADER,
    ApiError,
    field_error,
    from_validation_error,
    problem_responses,
    with_headers,
)
from api.store import DocRow, Kind, M, create_doc, delete_doc, get_doc, list_docs, read_doc, replace_doc
from planner.io.strict import validate_strict

# OpenAPI responses shared by the document routers (pools, services, power domains).
WRITE_RESPONSES = problem_responses(404, 409, 412, 413, 428)
READ_ONE_RESPONSES = {**problem_responses(404), **with_headers(200, "the document", etag=ETAG_HEADER)}
CREATED_RESPONSES = {**WRITE_RESPONSES, **with_headers(201, "created", etag=ETAG_HEADER, location=LOCATION_HEADER)}
REPLACED_RESPONSES = {**WRITE_RESPONSES, **with_headers(200, "replaced", etag=ETAG_HEADER)}

DocId = Annotated[str, Path(pattern=r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$", description="lower-case id")]
Limit = Annotated[int, Query(ge=1, le=500, description="page size")]
Offset = Annotated[int, Query(ge=0, le=1_000_000, description="items to skip")]

Check = Callable[[DocRow], None]


def _doc_response(body: dict[str, Any], version: int, status: int = 200,
                  headers: dict[str, str] | None = None) -> JSONResponse:
    # The stored JSON already is the schema's serialised form; sending it as is keeps reads cheap.
    return JSONResponse(body, status_code=status, headers={"ETag": etag(version), **(headers or {})})


def list_response(svc: Services, kind: Kind[M], *, limit: int, offset: int, team: str | None = None) -> JSONResponse:
    """A page of documents."""
    with svc.db.read() as s:
        rows = list_docs(s, kind, team=team, limit=limit, offset=offset)
        return JSONResponse([r.body for r in rows])


def get_response(svc: Services, kind: Kind[M], doc_id: str) -> JSONResponse:
    """One document with its ETag."""
    with svc.db.read() as s:
        found = read_doc(s, kind, doc_id)
    if found is None:
        raise ApiError(404, f"{kind.name} {doc_id!r} not found")
    return _doc_response(*found)


def create_response(svc: Services, kind: Kind[M], doc: M, who: Principal, base: str) -> JSONResponse:
    """Create version 1: 201 with Location and ETag (409 if the id is taken)."""
    with svc.db.write() as s:
        row = create_doc(s, kind, doc, who)
        body, version = row.body, row.version
    return _doc_response(body, version, 201, {"Location": f"{base}/{doc.id}"})


def replace_response(svc: Services, kind: Kind[M], doc_id: str, doc: M, if_match: str | None, who: Principal,
                     check: Check) -> JSONResponse:
    """Replace a document under If-Match; ``check`` vetoes (403) on the stored row."""
    if doc.id != doc_id:
        raise field_error(422, "body.id", f"must equal the id in the path ({doc_id!r})")
    with svc.db.write() as s:
        row = get_doc(s, kind, doc_id)
        if row is None:
            raise ApiError(404, f"{kind.name} {doc_id!r} not found")
        check(row)
        version = replace_doc(s, kind, doc, seen_version(if_match, row.version), who)
        fresh = get_doc(s, kind, doc_id)
        assert fresh is not None
        stored = fresh.body
    return _doc_response(stored, version)


def delete_response(svc: Services, kind: Kind[M], doc_id: str, if_match: str | None, who: Principal,
                    check: Check) -> Response:
    """Delete under If-Match: 204."""
    with svc.db.write() as s:
        row = get_doc(s, kind, doc_id)
        if row is None:
            raise ApiError(404, f"{kind.name} {doc_id!r} not found")
        check(row)
        delete_doc(s, kind, doc_id, seen_version(if_match, row.version), who)
    return Response(status_code=204)


def no_check(_: DocRow) -> None:
    """Any caller who passed the route's role check may change it."""


def row_team(row: DocRow) -> str:
    """Owning team of a stored document (services only; others are shared)."""
    return row.team if isinstance(row, ServiceRow) else ""


def strict_body(model: type[BaseModel]) -> Any:
    """Dependency: the JSON body validated again with types as written (``planner.io.strict``), so ``true`` is
    not 1 and ``"24"`` is not 24; 422 naming the field otherwise."""

    async def check(request: Request) -> None:
        try:
            data = json.loads(await request.body() or b"null")
        except ValueError:
            return  # the route's own parsing reports bodies that are not JSON
        try:
            validate_strict(model, data)
        except ValidationError as exc:
            raise from_validation_error(exc) from exc

    return Depends(check)
