"""Bearer tokens, roles and team ownership.

Tokens are random (256 bits) and stored as SHA-256 digests only: a fast hash is enough for secrets with that
much entropy, and it lets a request find its token with one indexed lookup. Roles are ordered
``viewer < planner < admin``: viewers read; planners also change their own team's services, request plans and
what-ifs, approve and apply plans that touch only their team's services; admins do everything, including
pools and power domains, which are shared infrastructure.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.db import ApiToken, utcnow

TOKEN_PREFIX = "mdl_"


class ApiRole(StrEnum):
    VIEWER = "viewer"
    PLANNER = "planner"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return {"viewer": 0, "planner": 1, "admin": 2}[self.value]


@dataclass(frozen=True)
class Principal:
    """Who is calling: token id, team and role (never the token itself)."""

    token_id: str
    team: str
    role: ApiRole

    @property
    def actor(self) -> str:
        return f"{self.team}/{self.token_id}"

    def at_least(self, role: ApiRole) -> bool:
        """Whether this caller's role is ``role`` or above."""
        return self.role.rank >= role.rank

    def may_change_team(self, team: str) -> bool:
        """Whether this caller may change resources owned by ``team``."""
        return self.role is ApiRole.ADMIN or (self.role is ApiRole.PLANNER and self.team == team)


def hash_token(token: str) -> str:
    """SHA-256 hex digest of a token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(session: Session, team: str, role: ApiRole, name: str = "") -> tuple[str, ApiToken]:
    """Create a token; returns the secret (shown once) and its stored row."""
    if not team or len(team) > 128:
        raise ValueError("team: must be 1 to 128 characters")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(id=uuid.uuid4().hex[:12], token_sha256=hash_token(secret), team=team, role=role.value,
                   name=name, created_at=utcnow(), revoked_at=None)
    session.add(row)
    session.flush()
    return secret, row


def revoke_token(session: Session, token_id: str) -> bool:
    """Revoke a token by id; False when there is no such live token."""
    row = session.get(ApiToken, token_id)
    if row is None or row.revoked_at is not None:
        return False
    row.revoked_at = utcnow()
    return True


class TokenCache:
    """Recently authenticated tokens by digest, for ``ttl_s`` seconds, so most reads skip the token query.

    A revoked token keeps working for at most ``ttl_s``; set it to 0 to check every request.
    """

    def __init__(self, ttl_s: float, max_entries: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: dict[str, tuple[float, Principal]] = {}

    def get(self, digest: str, now: float) -> Principal | None:
        """The cached principal of a digest, if still fresh."""
        hit = self._entries.get(digest)
        if hit is None or hit[0] <= now:
            return None
        return hit[1]

    def put(self, digest: str, who: Principal, now: float) -> None:
        """Remember a principal until ``now + ttl_s``."""
        if self.ttl_s <= 0:
            return
        if len(self._entries) >= self.max_entries:
            self._entries.clear()  # crude but bounded; a full cache only costs one query per token
        self._entries[digest] = (now + self.ttl_s, who)


def authenticate(session: Session, token: str) -> Principal | None:
    """The principal of a live token, or None."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    row = session.scalars(select(ApiToken).where(ApiToken.token_sha256 == hash_token(token))).first()
    if row is None or row.revoked_at is not None:
        return None
    return Principal(token_id=row.id, team=row.team, role=ApiRole(row.role))
