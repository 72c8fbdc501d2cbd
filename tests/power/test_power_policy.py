"""The pure policy: ladder order, thresholds, hysteresis with dwell, brake, staggered release."""

from __future__ import annotations

import random

import pytest

from planner.catalog import builtin_catalog
from planner.schema import PowerThresholds
from power.policy import (
    UNCAPPED,
    Band,
    CapTarget,
    Gpu,
    Policy,
    PolicyConfig,
    PolicyState,
    build_ladder,
    clock_target_mhz,
)

CAT = builtin_catalog()
A100, H100 = CAT.device("a100-80gb"), CAT.device("h100-sxm")
BUDGET = 1000.0


class SeqRng:
    """Deterministic 'random' numbers."""

    def __init__(self, values: list[float]) -> None:
        self.values = values
        self.i = 0

    def random(self) -> float:
        v = self.values[self.i % len(self.values)]
        self.i += 1
        return v


def gpus(priorities: tuple[int, ...] = (0, 1), roles: tuple[str, ...] = ("unified",)) -> list[Gpu]:
    out = []
    for p in priorities:
        for r in roles:
            for d in (A100, H100):
                out.append(Gpu(f"p{p}-{r}-{d.id}", f"node-{p}", d, p, r))  # type: ignore[arg-type]
    return out


def drive(policy: Policy, shares: list[tuple[float, float]], state: PolicyState | None = None,
          rng: random.Random | None = None) -> PolicyState:
    s = state or policy.initial_state()
    r = rng or random.Random(1)
    for t, share in shares:
        s = policy.decide(s, share * BUDGET, BUDGET, t, r).state
    return s


def test_targets_follow_each_device_types_catalog_ranges() -> None:
    assert clock_target_mhz(A100, 1275 / 1410) == 1275
    assert clock_target_mhz(H100, 1275 / 1410) == round(1275 / 1410 * 1980)
    assert clock_target_mhz(A100, 0.01) == A100.sm_clock_mhz_min
    ladder = build_ladder(gpus(), PolicyConfig())
    assert [s.label for s in ladder] == ["T1 priority 0", "T2 priority 0", "T2 priority 1",
                                         "T2 deep priority 0", "T2 deep priority 1"]
    deep = ladder[3].targets["p0-unified-h100-sxm"]
    assert deep.power_limit_watts == pytest.approx(0.6 * 700)
    assert ladder[3].targets["p0-unified-a100-80gb"].power_limit_watts == pytest.approx(240)


def test_many_priority_classes_cap_lowest_first() -> None:
    ladder = build_ladder(gpus((0, 3, 7)), PolicyConfig(deep_power_limit_share=None))
    assert [s.label for s in ladder] == ["T1 priority 0", "T1 priority 3", "T2 priority 0", "T2 priority 3",
                                         "T2 priority 7"]


def test_decode_first_caps_decode_replicas_before_prefill() -> None:
    ladder = build_ladder(gpus((0, 1), ("prefill", "decode")), PolicyConfig(decode_first=True))
    assert ladder[0].label == "T1 priority 0 decode" and ladder[1].label == "T1 priority 0 other"
    assert all("decode" in gid for gid in ladder[0].targets)


def test_below_t1_nothing_happens_and_above_t1_low_priority_is_locked() -> None:
    p = Policy(gpus())
    d = p.decide(p.initial_state(), 0.79 * BUDGET, BUDGET, 0.0, random.Random(0))
    assert d.actions == () and d.band is Band.NONE
    d = p.decide(d.state, 0.81 * BUDGET, BUDGET, 1.0, random.Random(0))
    assert d.band is Band.T1
    assert {a.gpu_id for a in d.actions} == {"p0-unified-a100-80gb", "p0-unified-h100-sxm"}
    assert d.state.targets["p0-unified-a100-80gb"] == CapTarget(1275, None)
    # Staying above T1 never reaches into the T2 band.
    s = drive(p, [(t, 0.85) for t in range(2, 60)], d.state)
    assert p.band_of(s) is Band.T1


def test_above_t2_goes_to_the_floor_and_escalates_to_high_priority_after_the_wait() -> None:
    cfg = PolicyConfig(escalation_wait_s=5.0)
    p = Policy(gpus(), cfg)
    d = p.decide(p.initial_state(), 0.92 * BUDGET, BUDGET, 0.0, random.Random(0))
    assert d.state.targets["p0-unified-a100-80gb"] == CapTarget(1110, None)
    assert d.state.targets["p1-unified-a100-80gb"] == UNCAPPED
    d = p.decide(d.state, 0.92 * BUDGET, BUDGET, 4.0, random.Random(0))
    assert d.state.targets["p1-unified-a100-80gb"] == UNCAPPED  # still waiting for the floor to show
    d = p.decide(d.state, 0.92 * BUDGET, BUDGET, 5.0, random.Random(0))
    assert d.state.targets["p1-unified-a100-80gb"] == CapTarget(1305, None)


def test_brake_halts_everything_and_releases_to_full_caps() -> None:
    p = Policy(gpus())
    d = p.decide(p.initial_state(), 1.01 * BUDGET, BUDGET, 0.0, random.Random(0))
    assert d.band is Band.BRAKE and d.state.braked and all(a.brake for a in d.actions)
    assert d.state.targets["p1-unified-h100-sxm"] == CapTarget(H100.sm_clock_mhz_min, H100.power_cap_watts_min)
    s = d.state
    for t in (1.0, 2.0):
        s = p.decide(s, 0.5 * BUDGET, BUDGET, t, random.Random(0)).state
    assert s.braked  # brake_release_dwell_s not yet over
    d = p.decide(s, 0.5 * BUDGET, BUDGET, 4.0, random.Random(0))
    assert not d.state.braked and d.state.applied == len(p.ladder)
    assert not any(a.brake for a in d.actions)


def test_release_needs_hysteresis_and_dwell_and_is_staggered_highest_priority_first() -> None:
    cfg = PolicyConfig(dwell_s=15.0, release_stagger_s=10.0)
    p = Policy(gpus(), cfg)
    s = drive(p, [(0.0, 0.95), (10.0, 0.95), (20.0, 0.95)])
    assert p.band_of(s) is Band.T2
    # 0.78 is under T2 - 5% (the T2 stages go) but not under T1 - 5%: T1 caps stay however long it lasts.
    s2 = drive(p, [(30.0 + t, 0.78) for t in range(60)], s)
    assert s2.applied == 1 and p.band_of(s2) is Band.T1
    assert s2.targets["p0-unified-a100-80gb"] == CapTarget(1275, None)
    rng = SeqRng([0.5])
    s3 = drive(p, [(100.0 + t, 0.70) for t in range(15)], s, rng)  # type: ignore[arg-type]
    assert s3.release_to is None and s3.applied == s.applied  # dwell not over at t=114
    d = p.decide(s3, 0.70 * BUDGET, BUDGET, 115.0, rng)
    assert d.state.release_to == 0
    # High priority released in the first half of the stagger, low priority in the second.
    at = d.state.release_at_s
    assert max(v for k, v in at.items() if k.startswith("p1")) <= min(v for k, v in at.items() if k.startswith("p0"))
    s4 = drive(p, [(116.0 + t, 0.70) for t in range(11)], d.state, rng)  # type: ignore[arg-type]
    assert s4.applied == 0 and all(t == UNCAPPED for t in s4.targets.values())


def test_climbing_back_over_a_threshold_cancels_a_release() -> None:
    p = Policy(gpus(), PolicyConfig(dwell_s=5.0, release_stagger_s=10.0))
    s = drive(p, [(0.0, 0.95), (10.0, 0.95)])
    s = drive(p, [(20.0 + t, 0.70) for t in range(7)], s)
    assert s.release_to is not None
    d = p.decide(s, 0.95 * BUDGET, BUDGET, 28.0, random.Random(0))
    assert d.state.release_to is None and "release cancelled" in d.events
    assert all(t.capped for gid, t in d.state.targets.items() if gid.startswith("p0"))


def test_hold_keeps_caps_and_safe_applies_the_full_ladder() -> None:
    p = Policy(gpus())
    s = drive(p, [(0.0, 0.85)])
    held = p.hold(s, 1.0)
    assert held.actions == () and held.state.targets == s.targets
    safe = p.safe(held.state, 2.0, BUDGET)
    assert safe.state.applied == len(p.ladder)
    assert all(t.capped for t in safe.state.targets.values())


def test_config_and_thresholds_are_validated() -> None:
    with pytest.raises(ValueError, match="dwell_s"):
        PolicyConfig(dwell_s=-1)
    with pytest.raises(ValueError, match="t2_clock_share"):
        PolicyConfig(t1_clock_share=0.7, t2_clock_share=0.8)
    with pytest.raises(ValueError, match="t1_share"):
        PowerThresholds(t1_share=0.9, t2_share=0.85)


def test_custom_thresholds_move_the_trigger() -> None:
    p = Policy(gpus(), PolicyConfig(thresholds=PowerThresholds(t1_share=0.6, t2_share=0.7)))
    d = p.decide(p.initial_state(), 0.65 * BUDGET, BUDGET, 0.0, random.Random(0))
    assert d.band is Band.T1


def row_gpus(servers: int = 10) -> tuple[list[Gpu], dict[str, float]]:
    """``servers`` A100 servers of 8 GPUs, alternating priority, 1.5 kW overhead each."""
    out = [Gpu(f"n{s}/{i}", f"n{s}", A100, s % 2) for s in range(servers) for i in range(8)]
    return out, {f"n{s}": 1500.0 for s in range(servers)}


def test_safe_caps_keep_the_nameplate_under_the_t2_line() -> None:
    g, overhead = row_gpus(10)
    p = Policy(g, PolicyConfig(), overhead)
    budget = 10 * (8 * 400 + 1500) / 1.3  # ten servers on a budget for 7.7
    safe = p.safe_targets(budget)
    nameplate = sum(t.power_limit_watts or 400 for t in safe.values()) + 10 * 1500
    assert nameplate <= 0.89 * budget + 1e-6 and nameplate >= 0.89 * budget - 1.0  # the largest that fits
    full = p.targets_for(len(p.ladder), False)
    assert all(t.clock_mhz == full[gid].clock_mhz for gid, t in safe.items())  # the full ladder's clocks
    # A budget the nameplate fits under anyway: the full ladder as it is.
    assert p.safe_targets(10 * (8 * 400 + 1500) * 2) == full
    # A budget even minimum limits cannot fit: the brake targets.
    assert all(t == CapTarget(A100.sm_clock_mhz_min, A100.power_cap_watts_min)
               for t in p.safe_targets(10 * 1500.0).values())


def test_safe_caps_hold_until_trusted_data_release_them() -> None:
    g, overhead = row_gpus(4)
    p = Policy(g, PolicyConfig(dwell_s=5.0, release_stagger_s=2.0), overhead)
    budget = 4 * 4700 / 1.3
    d = p.safe(p.initial_state(), 0.0, budget)
    assert d.events == ("safe caps: telemetry missing",)
    assert d.state.targets == dict(p.safe_targets(budget)) and d.state.held
    # Trusted data between T2 - 5% and T2: nothing is released, the safe limits stay.
    s = drive_budget(p, d.state, [(1.0 + t, 0.86) for t in range(30)], budget)
    assert s.targets == dict(p.safe_targets(budget))
    # Under T1 - 5% long enough: the safe limits go with the release, all the way down.
    s = drive_budget(p, s, [(31.0 + t, 0.5) for t in range(20)], budget)
    assert s.applied == 0 and not s.held and all(t == UNCAPPED for t in s.targets.values())


def drive_budget(p: Policy, s: PolicyState, shares: list[tuple[float, float]], budget: float) -> PolicyState:
    r = random.Random(1)
    for t, share in shares:
        s = p.decide(s, share * budget, budget, t, r).state
    return s


def test_missing_data_brakes_when_the_last_trusted_reading_was_over_budget() -> None:
    p = Policy(gpus())
    s = drive(p, [(0.0, 0.85)])
    d = p.hold(s, 1.0, last_share=1.02)
    assert d.state.braked and d.band is Band.BRAKE and all(a.brake for a in d.actions)
    assert "brake: telemetry missing, last trusted reading at 102.0% of budget" in d.events
    assert p.hold(d.state, 2.0, last_share=1.02).actions == ()  # stays braked, nothing re-sent
    # Missing data never releases the brake; safe caps keep it too.
    assert p.safe(d.state, 3.0, BUDGET, last_share=1.02).state.braked
    assert not p.hold(s, 1.0, last_share=0.99).state.braked


def test_unsettled_trust_adds_caps_but_starts_no_release() -> None:
    p = Policy(gpus(), PolicyConfig(dwell_s=5.0))
    s = drive(p, [(0.0, 0.85)])
    for t in range(1, 20):
        s = p.decide(s, 0.5 * BUDGET, BUDGET, float(t), random.Random(0), may_release=False).state
    assert s.applied == 1 and s.below_t1_since_s is None
    d = p.decide(s, 0.95 * BUDGET, BUDGET, 20.0, random.Random(0), may_release=False)
    assert d.state.applied > s.applied  # escalation still works


def test_adopting_live_caps_keeps_every_cap_as_it_is() -> None:
    g, overhead = row_gpus(4)
    p = Policy(g, PolicyConfig(), overhead)
    budget = 4 * 4700 / 1.3
    for live in (p.targets_for(2, False), p.targets_for(len(p.ladder), False), dict(p.safe_targets(budget)),
                 p.targets_for(0, True)):
        s = p.adopt(live, 100.0)
        assert s.targets == live
        assert p.targets_for(s.applied, False, held=s.held) == live
    # Live caps from the ladder: adopted as that stage, nothing held.
    s = p.adopt(p.targets_for(2, False), 100.0)
    assert s.applied == 2 and not s.held
    # A partial cap (one GPU only) is held at stage 0 and released with the first release due.
    one = {"n0/0": CapTarget(900, None), "other-node/0": CapTarget(500, None)}
    s = p.adopt(one, 0.0)
    assert s.applied == 0 and s.held == {"n0/0": CapTarget(900, None)}
    s = drive_budget(p, s, [(1.0 + t, 0.5) for t in range(40)], budget)
    assert all(t == UNCAPPED for t in s.targets.values()) and not s.held
    assert p.adopt({}, 0.0) == p.initial_state()
