"""Where approved plans go: the provisioner, behind a small Protocol."""

from __future__ import annotations

from typing import Any, Protocol

from planner.schema import Plan


class Provisioner(Protocol):
    """Applies a plan to a cluster and says what happened (a JSON-able mapping with a ``state``)."""

    def apply(self, plan: Plan) -> dict[str, Any]: ...


class RecordingProvisioner:
    """Used when no cluster is configured: records that an apply was requested and changes nothing."""

    def apply(self, plan: Plan) -> dict[str, Any]:
        """Accept the plan without touching any cluster."""
        return {"state": "apply_requested", "detail": "no cluster configured; the request is recorded",
                "replica_groups": len(plan.replica_groups)}
