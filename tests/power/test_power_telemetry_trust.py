"""The reading judge, one detector at a time, with the faults measured on the loop before it trusted only
valid, plausible, fresh and moving readings (each left a 52-server row over budget: frozen meter 120 s,
meter clock 60 s ahead then frozen 70 s, 0 W glitch 20 s, NaN/negative readings 30 s)."""

from __future__ import annotations

import math
import random

import httpx
import pytest

from planner.catalog import builtin_catalog
from power.policy import Gpu
from power.telemetry import (
    PowerEnvelope,
    PowerReading,
    PrometheusTelemetry,
    TrustConfig,
    TrustState,
    Verdict,
    judge,
)

A100 = builtin_catalog().device("a100-80gb")
CFG = TrustConfig()  # stuck after 2 s, stale after 3 s, recover after 5 s
ENVELOPE = PowerEnvelope(idle_floor_watts=100_000.0, nameplate_watts=250_000.0)


def feed(readings: list[tuple[float, PowerReading | None]], config: TrustConfig = CFG,
         envelope: PowerEnvelope | None = ENVELOPE) -> tuple[TrustState, list[Verdict]]:
    """Judge (receipt time, reading) pairs in order."""
    state, out = TrustState(), []
    for t, r in readings:
        state, v = judge(state, r, t, config, envelope)
        out.append(v)
    return state, out


def live(t: float, watts: float = 150_000.0, skew_s: float = 0.0) -> PowerReading:
    """A working meter: fresh timestamp, a value that moves."""
    return PowerReading(watts + 37.0 * math.sin(7.0 * t), t + skew_s, "test")


def test_a_live_noisy_meter_is_always_trusted() -> None:
    rng = random.Random(0)
    _, verdicts = feed([(float(t), PowerReading(150_000 * (1 + rng.uniform(-0.01, 0.01)), float(t), "m"))
                        for t in range(600)])
    assert all(v.trusted for v in verdicts)
    assert not verdicts[4].settled and verdicts[5].settled  # trust settles after recover_after_s


def test_frozen_value_with_fresh_timestamps_is_stuck_two_seconds_after_it_froze() -> None:
    # Measured before: the loop believed a frozen meter for the rest of the run (120 s over budget).
    frozen = 120_000.0
    readings = [(float(t), live(float(t))) for t in range(60)]
    readings += [(float(t), PowerReading(frozen, float(t), "pdu")) for t in range(60, 70)]
    state, verdicts = feed(readings)
    assert verdicts[60].trusted and verdicts[61].trusted  # one repeat is not yet a fault
    assert not verdicts[62].trusted and "value stuck at 120000 W" in verdicts[62].reason
    assert all(not v.trusted for v in verdicts[62:])
    assert state.trusted_at_s == 60.0  # missing since it froze, not since it was found out
    assert state.trusted_watts == frozen


def test_meter_clock_60_s_ahead_then_frozen_is_caught_on_the_loops_clock() -> None:
    # Measured before: freshness judged on the meter's clock alone kept the frozen reading "fresh" for the
    # 60 s of skew, then 10 s more to safe caps: 70 s over budget.
    readings = [(float(t), live(float(t), skew_s=60.0)) for t in range(60)]
    readings += [(float(t), live(59.0, skew_s=60.0)) for t in range(60, 70)]  # value and timestamp freeze
    state, verdicts = feed(readings)
    assert all(v.trusted for v in verdicts[:61])  # a skewed but live meter is usable; one repeat is too
    assert not verdicts[61].trusted and verdicts[61].reason == "no new sample for 2.0 s"
    assert all(not v.trusted for v in verdicts[61:])
    assert state.trusted_at_s == 59.0  # the frozen sample first came at 59 s


def test_a_timestamp_that_stops_advancing_is_stale_even_if_the_value_moves() -> None:
    readings = [(float(t), live(float(t))) for t in range(10)]
    readings += [(float(t), PowerReading(150_000.0 + t, 9.0, "pdu")) for t in range(10, 14)]
    state, verdicts = feed(readings)
    assert verdicts[10].trusted
    assert not verdicts[11].trusted and verdicts[11].reason == "no new sample for 2.0 s"
    assert state.trusted_at_s == 9.0


@pytest.mark.parametrize(("watts", "reason"), [
    (0.0, "reading of 0 W"),  # measured before: a 0 W glitch released every cap, 20 s over budget
    (math.nan, "reading is not a number"),  # measured before (with negatives): 30 s over budget
    (-150_000.0, "reading of -150000.0 W is not a power"),
    (math.inf, "reading of inf W is not a power"),
    (40_000.0, "below 50000 W, 50% of the members' idle floor"),
    (300_000.0, "above 275000 W, 110% of the nameplate"),
])
def test_invalid_and_implausible_readings_are_missing_data(watts: float, reason: str) -> None:
    readings = [(float(t), live(float(t))) for t in range(10)] + [(10.0, PowerReading(watts, 10.0, "x"))]
    state, verdicts = feed(readings)
    assert not verdicts[-1].trusted and reason in verdicts[-1].reason
    assert state.trusted_at_s == 9.0 and state.trusted_since_s is None


def test_without_an_envelope_only_the_value_checks_apply() -> None:
    _, verdicts = feed([(0.0, PowerReading(10.0, 0.0, "x")), (1.0, PowerReading(0.0, 1.0, "x"))], envelope=None)
    assert verdicts[0].trusted and not verdicts[1].trusted


def test_an_honest_meter_reporting_an_old_sample_is_stale() -> None:
    _, verdicts = feed([(10.0, PowerReading(150_000.0, 6.5, "x"))])
    assert not verdicts[0].trusted and verdicts[0].reason == "sample 3.5 s old"


def test_no_reading_at_all_is_missing() -> None:
    state, verdicts = feed([(0.0, live(0.0)), (1.0, None)])
    assert not verdicts[1].trusted and verdicts[1].reason == "no reading" and state.trusted_at_s == 0.0


def test_trust_must_settle_again_after_missing_data() -> None:
    readings = [(float(t), live(float(t))) for t in range(10)] + [(10.0, None)]
    readings += [(float(t), live(float(t))) for t in range(11, 20)]
    _, verdicts = feed(readings)
    assert verdicts[9].settled
    assert [v.settled for v in verdicts[11:18]] == [False] * 5 + [True, True]


def test_envelope_is_the_members_idle_floor_and_nameplate_with_overhead() -> None:
    gpus = [Gpu(f"n{i // 8}/{i % 8}", f"n{i // 8}", A100) for i in range(16)]
    env = PowerEnvelope.of(gpus, {"n0": 1500.0, "n1": 1500.0})
    assert env == PowerEnvelope(16 * 63 + 3000.0, 16 * 400 + 3000.0)


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="stuck_after_s"):
        TrustConfig(stuck_after_s=-1)
    with pytest.raises(ValueError, match="floor_share"):
        TrustConfig(floor_share=1.5)
    with pytest.raises(ValueError, match="ceiling_share"):
        TrustConfig(ceiling_share=0.9)


def _prometheus(values: dict[str, str]) -> PrometheusTelemetry:
    def answer(request: httpx.Request) -> httpx.Response:
        q = request.url.params["query"]
        key = next(k for k in values if q.startswith(k))
        result = [] if values[key] == "" else [{"metric": {}, "value": [1700000100.0, values[key]]}]
        return httpx.Response(200, json={"status": "success", "data": {"resultType": "vector", "result": result}})

    return PrometheusTelemetry("http://prom", expected_series=16,
                               client=httpx.Client(transport=httpx.MockTransport(answer)))


def test_prometheus_reading_carries_the_sample_time_not_the_evaluation_time() -> None:
    # Every instant query is stamped 1700000100 (evaluation time); the samples are 40 s older: stale.
    src = _prometheus({"sum(": "6000", "min(timestamp(": "1700000060", "count(": "16"})
    r = src.read()
    assert r is not None and r.timestamp_s == 1700000060.0
    _, v = judge(TrustState(), r, 1700000100.0, CFG)
    assert not v.trusted and v.reason == "sample 40.0 s old"


def test_prometheus_sum_over_missing_series_is_no_reading() -> None:
    assert _prometheus({"sum(": "5600", "min(timestamp(": "1700000099", "count(": "15"}).read() is None
    assert _prometheus({"sum(": "6000", "min(timestamp(": "1700000099", "count(": "16"}).read() is not None
    assert _prometheus({"sum(": "6000", "min(timestamp(": "", "count(": "16"}).read() is None


def test_prometheus_frozen_exporter_with_fresh_scrapes_is_stuck() -> None:
    src = _prometheus({"sum(": "6000", "min(timestamp(": "1700000000", "count(": "16"})
    state = TrustState()
    verdicts = []
    for t in range(3):
        r = src.read()
        assert r is not None
        state, v = judge(state, PowerReading(r.watts, 1700000000.0 + t, r.source), 1700000000.0 + t, CFG)
        verdicts.append(v)
    assert [v.trusted for v in verdicts] == [True, True, False] and "stuck" in verdicts[2].reason
