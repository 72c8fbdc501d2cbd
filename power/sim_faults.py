"""Fault injection for the power simulator: meters that lie, and the Kubernetes path with its node agents.

Meter faults (:class:`MeterFault`, wrapped around the simulated meter by :func:`faulty_meter`), each active
in ``[start_s, end_s)``:

* ``frozen``: the value stays at the first reading of the fault while the timestamps stay fresh (a stuck
  PDU that stamps its answers, or Prometheus, whose instant query carries the evaluation time);
* ``skew``: the meter's clock runs ``skew_s`` ahead all along; during the fault value *and* timestamp freeze;
* ``zero``: 0 W readings; ``nan``: NaN readings; ``negative``: the reading with its sign flipped (a custom
  source's conversion bug).

:class:`AgentPath` carries the loop's actions as the cluster does: a :class:`~power.actuators.
KubernetesCapPublisher` writes intent annotations into an in-memory API (:class:`MemoryNodes`), and one real
:class:`~power.agent.NodeAgent` per node enforces them through a real :class:`~power.actuators.NvmlActuator`
over NVML calls that land on the simulated GPUs (:class:`PlantNvml`). Agents pass once per ``period_s``
(default one second, the loop's period) in the same simulation step as the loop and right after it, so a
published intent is enforced at once and the path adds no latency beyond ``cap_latency_s`` (a real agent
that polls adds up to its period). The path can cut agents off the API and delete intent annotations. A
restarted loop (``SimEvents.loop_restarts``) gets a fresh publisher.

:data:`SCENARIOS` are the telemetry-fault scenarios of ``benchmarks/power_oversubscription.py``; every one
starts and ends with the domain held by caps or with a surge while the fault hides it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from power.actuators import (
    INTENT_ANNOTATION,
    NVML_CLOCK_SM,
    Actuator,
    KubernetesCapPublisher,
    NvmlActuator,
)
from power.agent import NodeAgent
from power.loop import Clock, LoopConfig
from power.policy import UNCAPPED, CapAction, CapTarget, PolicyConfig
from power.sim import SimConfig, SimEvents, SimResult, _Plant, simulate
from power.telemetry import PowerReading, Telemetry
from power.workloads import ServerSpec, profile_workload

FaultKind = Literal["frozen", "skew", "zero", "nan", "negative"]


@dataclass(frozen=True)
class MeterFault:
    """A meter that lies in ``[start_s, end_s)`` (see the module docstring for the kinds)."""

    kind: FaultKind
    start_s: float
    end_s: float = math.inf
    skew_s: float = 60.0


class _FaultyMeter:
    def __init__(self, inner: Telemetry, fault: MeterFault, clock: Clock) -> None:
        self.inner, self.fault, self.clock = inner, fault, clock
        self.frozen: PowerReading | None = None

    def read(self) -> PowerReading | None:
        r = self.inner.read()
        f, now = self.fault, self.clock.now_s()
        if r is not None and f.kind == "skew":
            r = PowerReading(r.watts, r.timestamp_s + f.skew_s, r.source)
        if not f.start_s <= now < f.end_s:
            self.frozen = None
            return r
        if f.kind in ("frozen", "skew"):
            self.frozen = self.frozen or r
            if self.frozen is None:
                return None
            ts = now if f.kind == "frozen" else self.frozen.timestamp_s
            return PowerReading(self.frozen.watts, ts, self.frozen.source)
        if r is None:
            return None
        watts = {"zero": 0.0, "nan": math.nan, "negative": -r.watts}[f.kind]
        return PowerReading(watts, r.timestamp_s, r.source)


def faulty_meter(*faults: MeterFault) -> Callable[[Telemetry, Clock], Telemetry]:
    """A ``simulate(meter=...)`` wrapper that injects ``faults`` (each over the previous ones)."""

    def wrap(inner: Telemetry, clock: Clock) -> Telemetry:
        for f in faults:
            inner = _FaultyMeter(inner, f, clock)
        return inner

    return wrap


# ---------------------------------------------------------------------------------------- Kubernetes path


class MemoryNodes:
    """Node annotations in memory (the API server); ``cut_off`` nodes' agents cannot reach it."""

    def __init__(self) -> None:
        self.annotations: dict[str, dict[str, str]] = {}
        self.cut_off: set[str] = set()

    def get_node_annotations(self, node: str) -> Mapping[str, str]:
        """The node's annotations."""
        return dict(self.annotations.get(node, {}))

    def patch_node_annotations(self, node: str, annotations: Mapping[str, str | None]) -> None:
        """Merge-patch; ``None`` removes a key."""
        current = self.annotations.setdefault(node, {})
        for k, v in annotations.items():
            if v is None:
                current.pop(k, None)
            else:
                current[k] = v


class _AgentView:
    """One agent's connection to the API: fails while its node is cut off."""

    def __init__(self, nodes: MemoryNodes, node: str) -> None:
        self.nodes, self.node = nodes, node

    def get_node_annotations(self, node: str) -> Mapping[str, str]:
        if self.node in self.nodes.cut_off:
            raise ConnectionError("apiserver unreachable")
        return self.nodes.get_node_annotations(node)

    def patch_node_annotations(self, node: str, annotations: Mapping[str, str | None]) -> None:
        if self.node in self.nodes.cut_off:
            raise ConnectionError("apiserver unreachable")
        self.nodes.patch_node_annotations(node, annotations)


class PlantNvml:
    """The pynvml calls :class:`NvmlActuator` makes, landing on the simulated GPUs of one node (addressed by
    their simulator ids as UUIDs). A set reads back at once; it takes effect ``cap_latency_s`` later."""

    def __init__(self, plant: _Plant, node: str) -> None:
        self.plant, self.node = plant, node

    def _device_max_mw(self, h: int) -> float:
        return self.plant.servers[int(self.plant.gpu_server[h])].device.power_cap_watts_max * 1000.0

    def _now(self, h: int) -> CapTarget:
        return self.plant.reported.get(self.plant.gpu_ids[h], UNCAPPED)

    def _set(self, h: int, target: CapTarget) -> None:
        self.plant.apply([CapAction(self.plant.gpu_ids[h], self.node, target, "agent")])

    def nvmlInit(self) -> None:  # noqa: N802 - pynvml's names
        """Nothing to initialise."""

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> int:  # noqa: N802
        """The GPU's index in the plant."""
        return self.plant.index[uuid]

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:  # noqa: N802
        """Index ``i`` of this node's GPUs."""
        return self.plant.node_gpus[self.node][i]

    def nvmlDeviceSetGpuLockedClocks(self, h: int, low: int, high: int) -> None:  # noqa: N802
        """Lock the SM clock ceiling."""
        self._set(h, CapTarget(float(high), self._now(h).power_limit_watts))

    def nvmlDeviceResetGpuLockedClocks(self, h: int) -> None:  # noqa: N802
        """Unlock the SM clock."""
        self._set(h, CapTarget(None, self._now(h).power_limit_watts))

    def nvmlDeviceGetPowerManagementDefaultLimit(self, h: int) -> float:  # noqa: N802
        """The board's default limit (its maximum), mW."""
        return self._device_max_mw(h)

    def nvmlDeviceSetPowerManagementLimit(self, h: int, limit_mw: float) -> None:  # noqa: N802
        """Set the board limit, mW (the default limit means none)."""
        limit = None if abs(limit_mw - self._device_max_mw(h)) < 500 else limit_mw / 1000.0
        self._set(h, CapTarget(self._now(h).clock_mhz, limit))

    def nvmlDeviceGetPowerManagementLimit(self, h: int) -> float:  # noqa: N802
        """The board limit in force, mW."""
        limit = self._now(h).power_limit_watts
        return self._device_max_mw(h) if limit is None else limit * 1000.0

    def nvmlDeviceGetClockInfo(self, h: int, kind: int) -> float:  # noqa: N802
        """The SM clock: the lock when there is one, else the maximum."""
        assert kind == NVML_CLOCK_SM
        clock = self._now(h).clock_mhz
        return float(self.plant.fmax[h]) if clock is None else clock


@dataclass
class AgentPath:
    """Publisher → intent annotations → node agents → NVML on the simulated GPUs, with faults:
    ``cut_off``: (start, end, nodes) whose agents cannot reach the API; ``intent_deleted``: (time, nodes)
    whose intent annotation is removed (an operator, a re-registered node)."""

    cut_off: tuple[tuple[float, float, tuple[str, ...]], ...] = ()
    intent_deleted: tuple[tuple[float, tuple[str, ...]], ...] = ()
    period_s: float = 1.0
    api: MemoryNodes = field(default_factory=MemoryNodes)
    agents: dict[str, NodeAgent] = field(default_factory=dict)
    last_pass_s: float = -math.inf

    def actuator(self, plant: _Plant) -> Actuator:
        """A fresh publisher (a loop's own memory) over the shared API."""
        if not self.agents:
            for node in plant.node_gpus:
                nvml = NvmlActuator(PlantNvml(plant, node), attempts=1)
                self.agents[node] = NodeAgent(node, _AgentView(self.api, node), nvml, now_s=lambda: plant.now_s)
        return KubernetesCapPublisher(self.api, sorted(plant.node_gpus))

    def tick(self, plant: _Plant, now_s: float) -> None:
        """Apply the faults due, then, once per ``period_s``, one pass of every agent."""
        self.api.cut_off = {n for a, b, nodes in self.cut_off if a <= now_s < b for n in nodes}
        for at, nodes in self.intent_deleted:
            if at <= now_s < at + plant.cfg.dt_s - 1e-9:
                for n in nodes:
                    self.api.patch_node_annotations(n, {INTENT_ANNOTATION: None})
        if now_s - self.last_pass_s >= self.period_s - 1e-9:
            self.last_pass_s = now_s
            for agent in self.agents.values():
                agent.step()


# ---------------------------------------------------------------------------------------------- scenarios


@dataclass(frozen=True)
class FaultScenario:
    """One telemetry or actuation fault against a load profile (``share_at``: uncapped share of budget)."""

    name: str
    describe: str
    share_at: Callable[[float], float]
    meter: tuple[MeterFault, ...] = ()
    loop_restarts: tuple[float, ...] = ()
    agents: Callable[[Sequence[str]], AgentPath] | None = None
    duration_s: float = 180.0


def _step(before: float, after: float, at_s: float) -> Callable[[float], float]:
    return lambda t: before if t < at_s else after


def _held(then: float = 1.15, at_s: float = math.inf) -> Callable[[float], float]:
    """75% for 20 s, a ramp to 115% by 50 s (the ladder takes it), 115% held by caps, ``then`` from ``at_s``."""
    return lambda t: then if t >= at_s else 0.75 + 0.40 * min(1.0, max(0.0, (t - 20.0) / 30.0))


def _half(nodes: Sequence[str]) -> tuple[str, ...]:
    return tuple(nodes[: max(1, len(nodes) // 2)])


SCENARIOS: tuple[FaultScenario, ...] = (
    FaultScenario("frozen value, fresh timestamps",
                  "meter freezes at 60 s (fresh timestamps); uncapped load 70% → 115% at 60.2 s",
                  _step(0.70, 1.15, 60.2), (MeterFault("frozen", 60.0),)),
    FaultScenario("clock skew, then frozen",
                  "meter clock 60 s ahead, freezes at 60 s; uncapped load 70% → 115% at 60.2 s",
                  _step(0.70, 1.15, 60.2), (MeterFault("skew", 60.0, skew_s=60.0),)),
    FaultScenario("0 W glitch",
                  "meter reads 0 W for 90–130 s while caps hold an uncapped load of 115%",
                  _held(), (MeterFault("zero", 90.0, 130.0),)),
    FaultScenario("NaN and negative readings",
                  "NaN 90–110 s, negative 110–130 s; uncapped load 95% → 120% at 100 s",
                  _step(0.95, 1.20, 100.0), (MeterFault("nan", 90.0, 110.0), MeterFault("negative", 110.0, 130.0))),
    FaultScenario("restarted loop",
                  "the loop restarts at 90 s (fresh memory) while caps hold an uncapped load of 115%",
                  _held(), (), (90.0,), lambda nodes: AgentPath()),
    FaultScenario("lost agent",
                  "half the agents lose the API 90–130 s, their intents are deleted at 100 s; "
                  "uncapped load 115% → 125% at 110 s",
                  _held(1.25, 110.0), (), (),
                  lambda nodes: AgentPath(cut_off=((90.0, 130.0, _half(nodes)),),
                                          intent_deleted=((100.0, _half(nodes)),))),
)


def run_scenario(scenario: FaultScenario, servers: Sequence[ServerSpec], budget_watts: float,
                 sim: SimConfig | None = None, loop: LoopConfig | None = None,
                 policy: PolicyConfig | None = None) -> SimResult:
    """Simulate one scenario on ``servers`` under ``budget_watts``."""
    cfg = sim or SimConfig(dt_s=0.2)
    wl = profile_workload(servers, budget_watts, scenario.share_at, scenario.duration_s, cfg.dt_s)
    meter = faulty_meter(*scenario.meter) if scenario.meter else None
    path = scenario.agents([s.node for s in servers]) if scenario.agents is not None else None
    return simulate(servers, wl, budget_watts, policy_config=policy, loop_config=loop, sim=cfg,
                    events=SimEvents(loop_restarts=scenario.loop_restarts), meter=meter, actuation=path)
