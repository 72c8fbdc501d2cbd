"""Node agent (``medley power agent``): enforces the cap intents published for its node.

Each period it reads the node's intent annotation, applies changes through NVML, re-applies whatever the
driver lost (reboot, driver reload), and reports what the GPUs run at in the ``applied`` annotation, which
the loop reads back, and how it went in the ``agent-status`` annotation. It writes the Node only when one
of those two values changed (one merge patch of both), so a steady node sees no write at all. A bad intent
is reported and leaves the current caps alone: an agent never uncaps a GPU because it could not parse what
it was told, nor because the intent annotation is missing (deleted, or the node re-registered): it keeps the
caps it last applied until a valid intent says otherwise.

It touches its own Node only, and only its two annotations: ``OwnNodeClient`` refuses any other node or key
(the cluster side of the same rule is ``k8s/power-node-policy.yaml``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge

from power.actuators import (
    APPLIED_ANNOTATION,
    INTENT_ANNOTATION,
    NodeAnnotationClient,
    NvmlActuator,
    decode_targets,
    encode_targets,
)
from power.policy import UNCAPPED, CapAction, CapTarget

STATUS_ANNOTATION = "power.medley.dev/agent-status"
AGENT_ANNOTATIONS = frozenset({APPLIED_ANNOTATION, STATUS_ANNOTATION})


class NotOwnNode(PermissionError):
    """The agent was asked to write another node, or an annotation that is not its own."""


class OwnNodeClient:
    """A :class:`NodeAnnotationClient` that reads and writes one node, and writes only the agent's annotations."""

    def __init__(self, node: str, client: NodeAnnotationClient) -> None:
        self.node = node
        self._client = client

    def _check(self, node: str) -> None:
        if node != self.node:
            raise NotOwnNode(f"the agent of node {self.node!r} may not touch node {node!r}")

    def get_node_annotations(self, node: str) -> Mapping[str, str]:
        """The annotations of this agent's node."""
        self._check(node)
        return self._client.get_node_annotations(node)

    def patch_node_annotations(self, node: str, annotations: Mapping[str, str | None]) -> None:
        """Merge-patch the agent's own annotations on its own node."""
        self._check(node)
        foreign = sorted(set(annotations) - AGENT_ANNOTATIONS)
        if foreign:
            raise NotOwnNode(f"the agent writes only {sorted(AGENT_ANNOTATIONS)}, not {foreign}")
        self._client.patch_node_annotations(node, annotations)


@dataclass
class AgentReport:
    """What one agent period did."""

    changed: int = 0
    reapplied: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    wrote: bool = False


class AgentMetrics:
    """The agent's Prometheus metrics, in a registry of their own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.steps = Counter("medley_power_agent_steps", "Agent periods by outcome", ["result"], registry=r)
        self.node_writes = Counter("medley_power_agent_node_writes", "Patches of the node's annotations",
                                   registry=r)
        self.gpus_failed = Gauge("medley_power_agent_gpus_failed", "GPUs whose cap could not be applied",
                                 registry=r)
        self.last_step = Gauge("medley_power_agent_last_step_timestamp_seconds", "Unix time of the last period",
                               registry=r)


class NodeAgent:
    """Reads intents for ``node`` and keeps its GPUs at them."""

    def __init__(self, node: str, client: NodeAnnotationClient, actuator: NvmlActuator,
                 now_s: Callable[[], float] = time.time, metrics: AgentMetrics | None = None) -> None:
        self.node = node
        self.client = client if isinstance(client, OwnNodeClient) else OwnNodeClient(node, client)
        self.actuator = actuator
        self.now_s = now_s
        self.metrics = metrics
        self.last_step: float | None = None
        self.last_read_ok = False

    def step(self) -> AgentReport:
        """One period: read intent, apply differences, reconcile, report (writing only what changed)."""
        report = AgentReport()
        self.last_step = self.now_s()
        try:
            current = dict(self.client.get_node_annotations(self.node))
            self.last_read_ok = True
        except Exception as e:  # noqa: BLE001 - API down: keep the caps we hold and retry next period
            self.last_read_ok = False
            report.error = f"cannot read intent: {e}"
            return self._count(report, "unreachable")
        try:
            text = current.get(INTENT_ANNOTATION)
            # A missing or empty intent (deleted, node re-registered) is silence, not an order: keep what is held.
            intent = dict(self.actuator.desired) if not text else decode_targets(text)
        except ValueError as e:
            report.error = str(e)
            report.wrote = self._write(current, {STATUS_ANNOTATION: f"error: {e}"})
            return self._count(report, "bad_intent")
        held = self.actuator.desired
        wanted = dict(intent)
        for gid in held:
            wanted.setdefault(gid, UNCAPPED)  # a GPU no longer named in the intent is released
        actions = [CapAction(gid, self.node, t, reason="intent") for gid, t in wanted.items()
                   if held.get(gid, UNCAPPED) != t]
        if actions:
            applied = self.actuator.apply(actions)
            report.changed = len(applied.applied)
            report.failed.update(applied.failed)
        again = self.actuator.reconcile()
        report.reapplied = len(again.applied)
        report.failed.update(again.failed)
        seen: dict[str, CapTarget] = dict(self.actuator.read_back())
        status = "ok" if not report.failed else f"{len(report.failed)} GPUs failed"
        report.wrote = self._write(current, {APPLIED_ANNOTATION: encode_targets(seen), STATUS_ANNOTATION: status})
        return self._count(report, "ok" if not report.failed else "gpus_failed")

    def _write(self, current: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
        """Patch the annotations whose value changed; the status carries the time it last changed."""
        changes: dict[str, str | None] = {}
        for key, value in wanted.items():
            if key == STATUS_ANNOTATION:
                if current.get(key, "").split(" ", 1)[-1] != value:
                    changes[key] = f"{self.now_s():.0f} {value}"
            elif current.get(key) != value:
                changes[key] = value
        if not changes:
            return False
        try:
            self.client.patch_node_annotations(self.node, changes)
        except NotOwnNode:
            raise
        except Exception:  # noqa: BLE001 - a missing report reads as unknown to the loop; the next period tries again
            return False
        if self.metrics is not None:
            self.metrics.node_writes.inc()
        return True

    def _count(self, report: AgentReport, result: str) -> AgentReport:
        if self.metrics is not None:
            self.metrics.steps.labels(result).inc()
            self.metrics.gpus_failed.set(len(report.failed))
            self.metrics.last_step.set(self.now_s())
        return report

    def healthy(self, period_s: float) -> tuple[bool, str]:
        """Liveness: a period ran within three periods (plus slack for a slow API call)."""
        if self.last_step is None:
            return True, "starting"
        idle = self.now_s() - self.last_step
        return idle < 3 * period_s + 30, f"last period {idle:.0f} s ago"

    def ready(self) -> tuple[bool, str]:
        """Readiness: the last period could read this node from the API server."""
        return (True, "reading its node") if self.last_read_ok else (False, "cannot read its node yet")

    def run(self, period_s: float = 2.0, stop: Callable[[], bool] | None = None,
            sleep: Callable[[float], None] = time.sleep) -> None:
        """Step every ``period_s`` until ``stop()``."""
        while stop is None or not stop():
            self.step()
            sleep(period_s)
