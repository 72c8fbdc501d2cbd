"""Medley's REST API: platform teams register pools and services, request plans and what-ifs, approve, apply.

``api.app.create_app(settings)`` builds the FastAPI app; one router per concern lives in ``api.routes``.
Storage is SQLAlchemy 2 (``api.db``) with Alembic revisions in ``migrations/``; SQLite is the embedded
default, ``MEDLEY_DATABASE_URL`` points it at PostgreSQL.

Decisions a client sees:
- Every change (PUT, DELETE, approve, apply) needs ``If-Match`` with the ETag from the last read: 428 when
  it is missing, 412 when it is stale. Creation (POST) needs none and answers 409 if the id exists.
- Plans never change; only their review state does (``proposed → approved → apply_requested | applied``),
  and the plan's ETag is the version of that state.
- Errors are RFC 9457 ``application/problem+json`` with ``errors: [{field, reason}]``.
- Roles ``viewer < planner < admin``; planners change only their own team's services and approve or apply
  only plans whose services all belong to their team; pools and power domains are admin-only.
- Bearer tokens are stored as SHA-256 digests; a checked token is cached for ``MEDLEY_TOKEN_CACHE_S``
  seconds (default 5), so a revocation takes effect within that time.
- Planning jobs run in the API process that took the request; several processes may share a database.
  Each marks its jobs alive every ``MEDLEY_JOB_HEARTBEAT_S`` (default 10 s); when one falls silent for three
  beats (it crashed, or stopped), another process (or its own restart) runs its queued jobs and fails its
  running ones as interrupted (retry with ``POST /v1/plan-jobs/{id}/retry``). Clocks must agree (NTP).
- The schema is upgraded at start-up (``MEDLEY_AUTO_MIGRATE``, default on); with several replicas, turn it
  off and run ``alembic -c migrations/alembic.ini upgrade head`` once per release instead (replicas that
  do migrate at start-up on PostgreSQL take turns under an advisory lock).
"""
