"""Randomised runs under faulty telemetry: any sequence of readings with faults, at the loop; any fault at any
time against any surge, in the simulator."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planner.catalog import builtin_catalog
from power.actuators import ApplyReport
from power.loop import ControlLoop, LoopConfig, VirtualClock
from power.policy import UNCAPPED, CapAction, CapTarget, Gpu, Policy, at_least_as_tight
from power.sim import SimConfig, SimEvents, profile_workload, row, safety_bound_s, simulate, telemetry_fault_bound_s
from power.sim_faults import MeterFault, faulty_meter
from power.telemetry import PowerEnvelope, PowerReading

CAT = builtin_catalog()
A100, H100 = CAT.device("a100-80gb"), CAT.device("h100-sxm")
GPUS = [Gpu(f"n{n}/{i}", f"n{n}", d, n % 2) for n, d in enumerate((A100, H100, A100, H100)) for i in range(2)]
OVERHEAD = {f"n{n}": 1500.0 for n in range(4)}
ENVELOPE = PowerEnvelope.of(GPUS, OVERHEAD)
BUDGET = ENVELOPE.nameplate_watts / 1.3
FAULTS = ["ok", "ok", "ok", "none", "nan", "negative", "zero", "inf", "frozen", "frozen_ts", "old", "huge", "tiny"]


class ScriptedMeter:
    """Plays a script of (kind, share of budget): a live reading, or one of the faults."""

    def __init__(self, clock: VirtualClock, script: Sequence[tuple[str, float]]) -> None:
        self.clock, self.script, self.i = clock, script, 0
        self.last = PowerReading(0.5 * BUDGET, -1.0, "m")

    def read(self) -> PowerReading | None:
        kind, share = self.script[min(self.i, len(self.script) - 1)]
        self.i += 1
        now = self.clock.now_s()
        fresh = PowerReading(share * BUDGET + 0.001 * self.i, now, "m")
        out: PowerReading | None = {
            "ok": fresh, "none": None, "nan": PowerReading(math.nan, now, "m"),
            "negative": PowerReading(-share * BUDGET, now, "m"), "zero": PowerReading(0.0, now, "m"),
            "inf": PowerReading(math.inf, now, "m"), "frozen": PowerReading(self.last.watts, now, "m"),
            "frozen_ts": self.last, "old": PowerReading(fresh.watts, now - 30.0, "m"),
            "huge": PowerReading(10 * ENVELOPE.nameplate_watts, now, "m"), "tiny": PowerReading(1.0, now, "m"),
        }[kind]
        if out is not None and kind in ("ok", "frozen", "frozen_ts"):
            self.last = out
        return out


class Recorder:
    def __init__(self) -> None:
        self.state: dict[str, CapTarget] = {}

    def apply(self, actions: Sequence[CapAction]) -> ApplyReport:
        self.state.update({a.gpu_id: a.target for a in actions})
        return ApplyReport(tuple(a.gpu_id for a in actions))

    def read_back(self) -> Mapping[str, CapTarget]:
        return dict(self.state)


script = st.lists(st.tuples(st.sampled_from(FAULTS), st.floats(0.3, 1.3)), min_size=1, max_size=80)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(script=script)
def test_faulty_readings_never_release_and_never_leave_an_over_budget_domain_unbraked(
        script: list[tuple[str, float]]) -> None:
    clock = VirtualClock()
    policy = Policy(GPUS, overhead_watts=OVERHEAD)
    cfg = LoopConfig()
    loop = ControlLoop("d", BUDGET, policy, ScriptedMeter(clock, script), Recorder(), clock, cfg,
                       rng=random.Random(0), envelope=ENVELOPE)
    safe = policy.safe_targets(BUDGET)
    for _ in range(len(script) + 5):
        before = dict(loop.state.targets)
        r = loop.step()
        now, st_ = r.time_s, r.decision.state
        last = loop.trust.trusted_watts
        if r.stale:
            # Missing data never releases a cap.
            assert all(at_least_as_tight(a.target, before.get(a.gpu_id, UNCAPPED)) for a in r.decision.actions)
            since = loop.trust.trusted_at_s if loop.trust.trusted_at_s is not None else 0.0
            if now - since >= cfg.safe_after_s:
                assert all(at_least_as_tight(t, safe[gid]) for gid, t in st_.targets.items())
        # The last trusted reading over budget: braked now, and until a trusted reading says otherwise.
        if last is not None and last >= BUDGET and (r.stale or loop.trust.trusted_at_s == now):
            assert st_.braked, (now, last / BUDGET)
        clock.sleep(cfg.period_s)


SERVERS = row(A100, 2, prefix="a") + row(H100, 2, prefix="h")
SIM_BUDGET = sum(s.max_watts for s in SERVERS) / 1.3
METER_FAULTS = ["frozen", "skew", "zero", "nan", "negative", "lost"]


def _run(kind: str, fault_s: float, surge_s: float, low: float, high: float, latency: float, seed: int) -> float:
    cfg = SimConfig(dt_s=0.2, cap_latency_s=latency, seed=seed)
    wl = profile_workload(SERVERS, SIM_BUDGET, lambda t: high if t >= surge_s else low, fault_s + 60.0, cfg.dt_s)
    end = fault_s + 30.0
    if kind == "lost":
        res = simulate(SERVERS, wl, SIM_BUDGET, sim=cfg, events=SimEvents(telemetry_lost=((fault_s, end),)))
    else:
        fault = MeterFault(kind, fault_s, end)  # type: ignore[arg-type]
        res = simulate(SERVERS, wl, SIM_BUDGET, sim=cfg, meter=faulty_meter(fault))
    return res.max_over_budget_s()


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(METER_FAULTS), fault_s=st.integers(30, 50), after_s=st.floats(0.0, 25.0),
       low=st.floats(0.5, 0.9), high=st.floats(1.0, 1.3), latency=st.sampled_from([0.2, 5.0, 40.0]),
       seed=st.integers(0, 1000))
def test_a_surge_while_the_meter_fails_stays_within_the_bound(kind: str, fault_s: int, after_s: float, low: float,
                                                               high: float, latency: float, seed: int) -> None:
    # The fault starts at a control period (the loop reads at whole seconds): the last genuine sample is the
    # one read at ``fault_s``, and the load rises after it, while the meter is blind.
    loop = LoopConfig()
    bound = safety_bound_s(SimConfig(dt_s=0.2, cap_latency_s=latency), loop)
    assert _run(kind, fault_s, fault_s + after_s, low, high, latency, seed) <= bound + 1e-9


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(METER_FAULTS), fault_s=st.floats(30.0, 50.0), before_s=st.floats(0.0, 1.0),
       low=st.floats(0.5, 0.9), high=st.floats(1.0, 1.3), seed=st.integers(0, 1000))
def test_a_surge_just_before_the_meter_fails_stays_within_the_fault_bound(kind: str, fault_s: float, before_s: float,
                                                                          low: float, high: float, seed: int) -> None:
    # A rise inside the last meter window before the fault is half seen: the frozen sample can hold it under
    # the brake line, and the loop trusts it until it is found stuck.
    bound = telemetry_fault_bound_s(SimConfig(dt_s=0.2), LoopConfig())
    assert _run(kind, fault_s, fault_s - before_s, low, high, 0.2, seed) <= bound + 1e-9
