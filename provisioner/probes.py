"""The controller's Prometheus metrics (served by ``planner.cli.probes.ProbeServer`` with its probes)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class ControllerMetrics:
    """The controller's Prometheus metrics, in a registry of their own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.reconciles = Counter("medley_controller_reconciles", "Reconcile passes by outcome", ["result"],
                                  registry=r)
        self.errors = Counter("medley_controller_errors", "Failures by stage (plan, apply, object, status, pass)",
                              ["stage"], registry=r)
        self.reconcile_seconds = Histogram("medley_controller_reconcile_seconds", "Duration of a reconcile pass",
                                           registry=r, buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120))
        self.apply_seconds = Histogram("medley_controller_apply_seconds", "Duration of the apply step of a pass",
                                       registry=r, buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60))
        self.writes = Counter("medley_controller_object_writes", "Objects written by action", ["action"],
                              registry=r)
        self.objects_failing = Gauge("medley_controller_objects_failing",
                                     "Objects whose last write failed or that are backing off", registry=r)
        self.lease_holder = Gauge("medley_controller_lease_holder",
                                  "1 while this replica holds the leader Lease, else 0", ["identity"], registry=r)
        self.last_pass = Gauge("medley_controller_last_reconcile_timestamp_seconds",
                               "Unix time of the last finished reconcile pass", registry=r)
