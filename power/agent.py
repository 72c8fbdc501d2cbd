"""Node agent (``medley power agent``): enforces the cap intents published for its node.

Each period it reads the node's intent annotation, applies changes through NVML, re-applies whatever the
driver lost (reboot, driver reload), and reports what the GPUs run at in the ``applied`` annotation, which
the loop reads back. A bad intent is reported and leaves the current caps alone: an agent never uncaps a
GPU because it could not parse what it was told, nor because the intent annotation is missing (deleted,
or the node re-registered): it keeps the caps it last applied until a valid intent says otherwise.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

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


@dataclass
class AgentReport:
    """What one agent period did."""

    changed: int = 0
    reapplied: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    error: str | None = None


class NodeAgent:
    """Reads intents for ``node`` and keeps its GPUs at them."""

    def __init__(self, node: str, client: NodeAnnotationClient, actuator: NvmlActuator,
                 now_s: Callable[[], float] = time.time) -> None:
        self.node = node
        self.client = client
        self.actuator = actuator
        self.now_s = now_s

    def step(self) -> AgentReport:
        """One period: read intent, apply differences, reconcile, report."""
        report = AgentReport()
        try:
            text = self.client.get_node_annotations(self.node).get(INTENT_ANNOTATION)
            # A missing or empty intent (deleted, node re-registered) is silence, not an order: keep what is held.
            intent = dict(self.actuator.desired) if not text else decode_targets(text)
        except ValueError as e:
            report.error = str(e)
            self._status(f"error: {e}")
            return report
        except Exception as e:  # noqa: BLE001 - API down: keep the caps we hold and retry next period
            report.error = f"cannot read intent: {e}"
            return report
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
        self._report()
        self._status("ok" if not report.failed else f"{len(report.failed)} GPUs failed")
        return report

    def _report(self) -> None:
        seen: dict[str, CapTarget] = dict(self.actuator.read_back())
        # A missing report reads as unknown to the loop; the next period tries again.
        with contextlib.suppress(Exception):
            self.client.patch_node_annotations(self.node, {APPLIED_ANNOTATION: encode_targets(seen)})

    def _status(self, text: str) -> None:
        with contextlib.suppress(Exception):  # status is best effort
            self.client.patch_node_annotations(self.node, {STATUS_ANNOTATION: f"{self.now_s():.0f} {text}"})

    def run(self, period_s: float = 2.0, stop: Callable[[], bool] | None = None,
            sleep: Callable[[float], None] = time.sleep) -> None:
        """Step every ``period_s`` until ``stop()``."""
        while stop is None or not stop():
            self.step()
            sleep(period_s)
