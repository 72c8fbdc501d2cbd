"""Randomised property runs: any load profile, delay, noise, actuator latency and share of deaf actuators."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planner.catalog import builtin_catalog
from power.loop import LoopConfig, StepResult
from power.policy import T2_CLOCK_SHARE
from power.sim import (
    SimConfig,
    _Plant,
    domain_budget_watts,
    profile_workload,
    row,
    safety_bound_s,
    simulate,
)

CAT = builtin_catalog()
A100, H100 = CAT.device("a100-80gb"), CAT.device("h100-sxm")
SERVERS = row(A100, 2, prefix="a") + row(H100, 2, prefix="h")
BUDGET = domain_budget_watts(SERVERS) / 1.3
LOW = tuple(f"{s.node}/" for s in SERVERS if s.priority == 0)
FLOOR = {s.node: round(T2_CLOCK_SHARE * s.device.sm_clock_mhz_max) for s in SERVERS}

segments = st.lists(st.tuples(st.floats(0.1, 1.35), st.floats(5.0, 30.0)), min_size=2, max_size=4)


@settings(max_examples=200, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(segs=segments, delay=st.sampled_from([0.0, 0.4, 1.0, 2.0]), latency=st.floats(0.2, 40.0),
       ignore=st.sampled_from([0.0, 0.05, 0.1]), seed=st.integers(0, 10_000))
def test_domain_never_stays_over_budget(segs: list[tuple[float, float]], delay: float, latency: float,
                                        ignore: float, seed: int) -> None:
    cfg = SimConfig(dt_s=0.2, sensor_delay_s=delay, cap_latency_s=latency, ignore_share=ignore, seed=seed)
    loop = LoopConfig()
    ends = []
    t = 0.0
    for share, length in segs:
        t += length
        ends.append((t, share))

    def share_at(x: float) -> float:
        return next((s for end, s in ends if x < end), ends[-1][1])

    bad: list[float] = []

    def priority_order(step: StepResult, plant: _Plant) -> None:
        st_ = step.decision.state
        if st_.braked:
            return
        hp_capped = any(t.capped for gid, t in st_.targets.items() if not gid.startswith(LOW))
        lp_above_floor = any(
            t.clock_mhz is None or t.clock_mhz > FLOOR[gid.split("/")[0]]
            for gid, t in st_.targets.items() if gid.startswith(LOW)
        )
        if hp_capped and lp_above_floor:
            bad.append(step.time_s)

    wl = profile_workload(SERVERS, BUDGET, share_at, t + 20.0, cfg.dt_s)
    res = simulate(SERVERS, wl, BUDGET, sim=cfg, loop_config=loop, on_step=priority_order)
    bound = safety_bound_s(cfg, loop)
    assert bound <= 5.0
    assert res.max_over_budget_s() <= bound + 1e-9
    assert bad == []
