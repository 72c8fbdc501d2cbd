"""Observed traffic: histogram shares and length mixes as vLLM's metrics give them, and the trace source."""

from __future__ import annotations

import math

import numpy as np
import pytest

from planner.observe import ServiceRequests, TraceTraffic, length_mix, share_below
from planner.observe.source import RateSeries
from planner.schema import SLO

INF = math.inf


def test_share_below_interpolates_inside_the_bucket_like_histogram_quantile() -> None:
    le = [0.1, 0.5, 1.0, INF]
    cum = [10, 50, 90, 100]
    assert share_below(le, cum, 0.5) == pytest.approx(0.5)
    assert share_below(le, cum, 0.75) == pytest.approx(0.7)  # halfway through (0.5, 1.0]
    assert share_below(le, cum, 5.0) == pytest.approx(0.9)  # nothing known past the last finite edge
    assert share_below(le, [0, 0, 0, 0], 1.0) is None


def test_length_mix_takes_prompt_and_generation_as_independent() -> None:
    mix = length_mix([128, 1024, INF], [50, 100, 100], [64, 512, INF], [20, 100, 100])
    shares = {(b.input_tokens, b.output_tokens): b.share for b in mix}
    assert shares[(64, 32)] == pytest.approx(0.5 * 0.2)
    assert shares[(576, 288)] == pytest.approx(0.5 * 0.8)
    assert sum(shares.values()) == pytest.approx(1.0)
    assert length_mix([128, INF], [0, 0], [64, INF], [5, 5]) == []


def _source() -> TraceTraffic:
    t = np.arange(0.0, 600.0, 0.5)  # 2 req/s for ten minutes
    n = t.size
    reqs = ServiceRequests(t, np.full(n, 500, dtype=np.int64), np.full(n, 100, dtype=np.int64))
    history = RateSeries(-1200.0, 300.0, np.array([1.0, 1.5, 3.0, 4.0]))
    return TraceTraffic({"chat": reqs}, {"chat": history})


def test_rates_come_from_the_history_before_the_requests_and_from_counts_after() -> None:
    src = _source()
    r = src.rates("chat", -1200.0, 600.0, 300.0)
    assert r.rates_rps.tolist() == pytest.approx([1.0, 1.5, 3.0, 4.0, 2.0, 2.0])
    with pytest.raises(ValueError, match="step_s"):
        src.rates("chat", -1200.0, 600.0, 60.0)


def test_window_and_attainment_per_replica_group() -> None:
    src = _source()
    w = src.window("chat", 0.0, 300.0)
    assert w.requests == 600 and w.rate_rps == pytest.approx(2.0)
    assert [(b.input_tokens, b.output_tokens, b.share) for b in w.buckets] == [(500, 100, 1.0)]
    n = 600
    ttft = np.where(np.arange(n) % 10 == 0, 2000.0, 300.0)  # 10% miss TTFT
    groups = ["g1" if i % 2 else "g2" for i in range(n)]
    src.record("chat", slice(0, n), ttft, np.full(n, 40.0), groups)
    slo = SLO(ttft_ms=1000, tpot_ms=50)
    att = src.attainment("chat", 0.0, 300.0, slo)
    assert att.ttft == pytest.approx(0.9) and att.tpot == 1.0 and att.requests == n
    assert not att.meets(95) and att.meets(90)
    g2 = src.attainment("chat", 0.0, 300.0, slo, group="g2")  # the even requests hold every TTFT miss
    assert g2.ttft == pytest.approx(0.8) and g2.requests == n / 2
    assert src.attainment("chat", 300.0, 600.0, slo).requests == 0
