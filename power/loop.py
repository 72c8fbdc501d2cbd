"""The control loop of one power domain: telemetry → trust → policy → actuators, once per control period.

Its promise: the domain is never over budget for longer than the meter's delay and window, one control
period and the actuation latency (``power.sim.safety_bound_s``), also when telemetry fails. To keep it:

* each reading is judged (``power.telemetry.judge``) on the loop's own clock of receipt: only a valid,
  plausible, fresh and moving reading is trusted; anything else is missing data;
* missing data never releases a cap: the loop holds every cap (cancelling releases in progress), and
  brakes at once when the last trusted reading was over budget;
* once data has been missing for ``safe_after_s`` (counted from the last trusted information, so a frozen
  meter counts from when it froze) the domain goes to the *safe caps*, which keep the members' nameplate
  under the T2 line whatever the load (``Policy.safe_targets``). With the default window of two seconds
  (the one-second meter window plus one period) a surge that starts while the meter is blind is cut as
  fast as one the meter shows; one that began inside the meter's last window before it froze can take up
  to one period more (``power.sim.telemetry_fault_bound_s``);
* when trusted data return, they may add caps at once but start release timers only after
  ``recover_after_s`` of unbroken trust, and every release then waits its dwell;
* a (re)started loop first reads the caps already published (an actuator with ``read_intents``) and adopts
  them (``Policy.adopt``), so a restart never drops or loosens a cap; until it has read them it publishes
  nothing.

Every ``reconcile_every_s`` the loop compares the actuator's read-back with the targets and re-sends what
drifted (a rebooted node, a lost intent). State is exported as Prometheus metrics and as events.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from prometheus_client import CollectorRegistry, Counter, Gauge

from power.actuators import Actuator
from power.policy import Band, CapAction, CapTarget, Decision, Policy, PolicyState, Rng
from power.telemetry import PowerEnvelope, PowerReading, Telemetry, TrustConfig, TrustState, Verdict, judge


class Clock(Protocol):
    """Time for the loop; tests and the simulator use a virtual one."""

    def now_s(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class WallClock:
    """The real clock (monotonic for periods, wall time for readings)."""

    def now_s(self) -> float:
        """Seconds since the epoch."""
        return time.time()

    def sleep(self, seconds: float) -> None:
        """Block for ``seconds``."""
        time.sleep(max(0.0, seconds))


class VirtualClock:
    """A clock that moves only when told to."""

    def __init__(self, start_s: float = 0.0) -> None:
        self.t = start_s

    def now_s(self) -> float:
        """Current virtual time."""
        return self.t

    def sleep(self, seconds: float) -> None:
        """Advance virtual time."""
        self.t += max(0.0, seconds)


@dataclass(frozen=True)
class LoopEvent:
    """Something an operator wants to see in the event log."""

    time_s: float
    domain: str
    kind: str
    message: str


@dataclass(frozen=True)
class LoopConfig:
    """Timing of the loop."""

    period_s: float = 1.0
    stale_after_s: float = 3.0  # a sample older than this by the meter's own clock is missing data
    stuck_after_s: float = 2.0  # a meter whose timestamp or value has not moved for this long is missing data
    safe_after_s: float = 2.0  # missing data this long (from the last trusted information): safe caps
    recover_after_s: float = 5.0  # unbroken trust needed before a release timer may start again
    reconcile_every_s: float = 5.0

    def __post_init__(self) -> None:
        if self.period_s <= 0:
            raise ValueError("period_s: must be positive")
        if self.reconcile_every_s <= 0:
            raise ValueError("reconcile_every_s: must be positive")
        for name in ("stale_after_s", "stuck_after_s", "safe_after_s", "recover_after_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must not be negative")

    def trust(self) -> TrustConfig:
        """The reading judge's settings."""
        return TrustConfig(stale_after_s=self.stale_after_s, stuck_after_s=self.stuck_after_s,
                           recover_after_s=self.recover_after_s)


@runtime_checkable
class IntentSource(Protocol):
    """An actuator that can tell the caps already published (by this loop's previous run or another)."""

    def read_intents(self) -> Mapping[str, CapTarget]: ...


class LoopMetrics:
    """Prometheus metrics of the loop, in a registry the caller owns."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["domain"]
        self.power_share = Gauge("medley_power_domain_share", "domain power as share of budget", labels,
                                 registry=registry)
        self.power_watts = Gauge("medley_power_domain_watts", "last domain power reading", labels,
                                 registry=registry)
        self.budget_watts = Gauge("medley_power_domain_budget_watts", "domain budget", labels, registry=registry)
        self.band = Gauge("medley_power_band", "0 none, 1 T1, 2 T2, 3 brake", labels, registry=registry)
        self.capped_gpus = Gauge("medley_power_capped_gpus", "GPUs with a cap target", labels, registry=registry)
        self.stale = Gauge("medley_power_telemetry_stale", "1 while telemetry is stale", labels, registry=registry)
        self.actions = Counter("medley_power_cap_actions", "cap actions sent", labels, registry=registry)
        self.brakes = Counter("medley_power_brake_events", "power brake engagements", labels, registry=registry)
        self.failures = Counter("medley_power_actuator_failures", "actions an actuator failed", labels,
                                registry=registry)
        self.reapplied = Counter("medley_power_reapplied", "targets re-sent after drift", labels, registry=registry)


@dataclass
class StepResult:
    """What one period did (for tests and the simulator)."""

    time_s: float
    reading: PowerReading | None
    stale: bool  # the reading was not trusted (missing data)
    decision: Decision
    reapplied: int = 0
    events: list[LoopEvent] = field(default_factory=list)


class ControlLoop:
    """One power domain's loop; ``step`` is one control period, ``run`` repeats it on the clock."""

    def __init__(self, domain_id: str, budget_watts: float, policy: Policy, telemetry: Telemetry,
                 actuator: Actuator, clock: Clock, config: LoopConfig | None = None, rng: Rng | None = None,
                 metrics: LoopMetrics | None = None,
                 on_event: Callable[[LoopEvent], None] | None = None,
                 envelope: PowerEnvelope | None = None) -> None:
        self.domain_id = domain_id
        self.budget_watts = budget_watts
        self.policy = policy
        self.telemetry = telemetry
        self.actuator = actuator
        self.clock = clock
        self.config = config or LoopConfig()
        self.rng: Rng = rng or random.Random(0)
        self.metrics = metrics
        self.on_event = on_event
        self.envelope = envelope
        self.state: PolicyState = policy.initial_state()
        self.trust = TrustState()
        self._trust_config = self.config.trust()
        self.stale_since_s: float | None = None
        self.started_s = clock.now_s()
        self.last_reconcile_s = float("-inf")
        self.brake_events = 0
        self.adopted = not isinstance(actuator, IntentSource)

    def set_budget(self, budget_watts: float) -> None:
        """Change the domain budget (a utility request, a failed feed); takes effect next period."""
        if budget_watts <= 0:
            raise ValueError("budget_watts: must be positive")
        self.budget_watts = budget_watts

    def step(self) -> StepResult:
        """Read, judge, decide, actuate, reconcile, export."""
        now = self.clock.now_s()
        events: list[LoopEvent] = []
        if not self.adopted:
            self._adopt(now, events)
        reading = self.telemetry.read()
        self.trust, verdict = judge(self.trust, reading, now, self._trust_config, self.envelope)
        stale = not verdict.trusted
        decision = self._decide(now, verdict)
        if not self.adopted:
            # Publishing before the live caps are known could overwrite them: send nothing yet.
            decision = Decision(self.state, (), self.policy.band_of(self.state), ())
        was_braked = self.state.braked
        self.state = decision.state
        if decision.state.braked and not was_braked:
            self.brake_events += 1
        if stale and self.stale_since_s is None:
            events.append(LoopEvent(now, self.domain_id, "telemetry",
                                    f"telemetry untrusted ({verdict.reason}): holding caps"))
        elif not stale and self.stale_since_s is not None:
            events.append(LoopEvent(now, self.domain_id, "telemetry", "telemetry trusted again"))
        if not stale:
            self.stale_since_s = None
        elif self.stale_since_s is None:
            self.stale_since_s = now
        events.extend(LoopEvent(now, self.domain_id, "policy", e) for e in decision.events)

        report = self.actuator.apply(decision.actions) if decision.actions else None
        reapplied = 0
        if self.adopted and now - self.last_reconcile_s >= self.config.reconcile_every_s:
            self.last_reconcile_s = now
            reapplied = self._reconcile(decision.state.targets)
            if reapplied:
                events.append(LoopEvent(now, self.domain_id, "reconcile", f"re-sent {reapplied} drifted caps"))
        if report is not None and report.failed:
            events.append(LoopEvent(now, self.domain_id, "actuator", f"{len(report.failed)} actions failed"))
        self._export(reading if verdict.trusted else None, stale, decision, report.failed if report else {},
                     reapplied, brake=decision.state.braked and not was_braked)
        if self.on_event is not None:
            for ev in events:
                self.on_event(ev)
        return StepResult(now, reading, stale, decision, reapplied, events)

    def _decide(self, now: float, verdict: Verdict) -> Decision:
        if verdict.trusted:
            assert verdict.watts is not None
            return self.policy.decide(self.state, verdict.watts, self.budget_watts, now, self.rng,
                                      may_release=verdict.settled)
        last = self.trust.trusted_watts
        last_share = None if last is None else last / self.budget_watts
        # Missing since the last trusted information (a frozen meter: since it froze), or since the start.
        since = self.trust.trusted_at_s if self.trust.trusted_at_s is not None else self.started_s
        if now - since >= self.config.safe_after_s:
            return self.policy.safe(self.state, now, self.budget_watts, last_share)
        return self.policy.hold(self.state, now, last_share)

    def _adopt(self, now: float, events: list[LoopEvent]) -> None:
        assert isinstance(self.actuator, IntentSource)
        try:
            live = self.actuator.read_intents()
        except Exception as e:  # noqa: BLE001 - an unreachable API: try again next period, publish nothing
            events.append(LoopEvent(now, self.domain_id, "actuator", f"cannot read live caps yet: {e}"))
            return
        self.state = self.policy.adopt(live, now)
        self.adopted = True
        capped = sum(1 for t in self.state.targets.values() if t.capped)
        events.append(LoopEvent(now, self.domain_id, "policy",
                                f"adopted {capped} live caps at stage {self.state.applied}"))

    def _reconcile(self, targets: Mapping[str, CapTarget]) -> int:
        seen = self.actuator.read_back()
        drifted = [
            CapAction(gid, self.policy.node_of(gid), t, reason="reconcile", brake=self.state.braked)
            for gid, t in targets.items()
            if gid in seen and seen[gid] != t
        ]
        if drifted:
            self.actuator.apply(drifted)
        return len(drifted)

    def _export(self, reading: PowerReading | None, stale: bool, decision: Decision, failed: Mapping[str, str],
                reapplied: int, brake: bool) -> None:
        m = self.metrics
        if m is None:
            return
        d = self.domain_id
        m.budget_watts.labels(d).set(self.budget_watts)
        if reading is not None and not stale:
            m.power_watts.labels(d).set(reading.watts)
            m.power_share.labels(d).set(reading.watts / self.budget_watts)
        m.stale.labels(d).set(1 if stale else 0)
        m.band.labels(d).set(int(decision.band))
        m.capped_gpus.labels(d).set(sum(1 for t in decision.state.targets.values() if t.capped))
        m.actions.labels(d).inc(len(decision.actions))
        m.failures.labels(d).inc(len(failed))
        m.reapplied.labels(d).inc(reapplied)
        if brake:
            m.brakes.labels(d).inc()

    def run(self, stop: Callable[[], bool] | None = None, max_steps: int | None = None) -> None:
        """Step every ``period_s`` until ``stop()`` or ``max_steps``."""
        steps = 0
        while (stop is None or not stop()) and (max_steps is None or steps < max_steps):
            started = self.clock.now_s()
            self.step()
            steps += 1
            self.clock.sleep(self.config.period_s - (self.clock.now_s() - started))


__all__ = ["Band", "Clock", "ControlLoop", "IntentSource", "LoopConfig", "LoopEvent", "LoopMetrics", "StepResult",
           "VirtualClock", "WallClock"]
