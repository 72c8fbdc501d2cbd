"""How much planning each team may have running at once: synchronous what-ifs (per team and in all), and
queued or running planning jobs per team. Over a limit the request gets 429 with ``Retry-After``."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from api.problems import ApiError, FieldError

RETRY_AFTER_S = 5


def too_many(what: str, limit: int, scope: str) -> ApiError:
    """429 naming the limit that was hit."""
    return ApiError(429, f"{scope} already has {limit} {what} running; retry when one finishes",
                    headers={"Retry-After": str(RETRY_AFTER_S)},
                    errors=[FieldError(field="team", reason=f"at most {limit} {what} at once")])


class TeamLimits:
    """Counts of synchronous what-ifs running, per team and in all (one API process)."""

    def __init__(self, per_team: int, total: int) -> None:
        self.per_team = per_team
        self.total = total
        self._running: dict[str, int] = {}
        self._lock = threading.Lock()

    @contextmanager
    def whatif(self, team: str) -> Iterator[None]:
        """Hold one what-if slot of ``team`` for the block; 429 when the team or the process is full."""
        with self._lock:
            if self._running.get(team, 0) >= self.per_team:
                raise too_many("what-ifs", self.per_team, f"team {team!r}")
            if sum(self._running.values()) >= self.total:
                raise too_many("what-ifs", self.total, "this API process")
            self._running[team] = self._running.get(team, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                self._running[team] -= 1
                if not self._running[team]:
                    del self._running[team]
