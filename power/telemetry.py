"""Domain power readings: NVML on a node, Prometheus (DCGM exporter), a row/PDU meter, or the simulator.

Every source answers ``read()`` with a timestamped :class:`PowerReading` or ``None`` when it has nothing
usable. Sources never raise on a failed read: a missing reading is a normal event the loop handles (it
holds caps, then goes to safe caps).

A reading is *trusted* only when :func:`judge` finds it valid, plausible, fresh and moving; anything else
is missing data (pure: the loop passes the time it received the reading, on its own clock):

* valid: finite and above zero (NaN, infinite, negative and 0 W glitches are missing data);
* plausible: at least ``floor_share`` of the members' modelled idle floor and at most ``ceiling_share`` of
  their nameplate (:class:`PowerEnvelope`: every GPU idle, or at its maximum power limit, plus the servers'
  overhead);
* fresh: the meter's own timestamp advanced within the last ``stuck_after_s`` *of receipt time* (a meter
  clock that runs ahead and then freezes still shows a "future" timestamp, but it stops advancing), and the
  sample is at most ``stale_after_s`` old by the meter's clock (an honest meter reporting an old sample);
* moving: the value changed by more than ``stuck_tolerance_watts`` within the last ``stuck_after_s`` of
  receipt time (a frozen meter with fresh timestamps, or Prometheus, whose instant query is stamped with
  the evaluation time, repeats the same value).

When a frozen timestamp or value is found, the data counts as missing since the frozen sample first
arrived, not since it was found: :attr:`TrustState.trusted_at_s` moves back to that receipt. A source that
refreshes more slowly than ``stuck_after_s`` (a Prometheus scrape interval) needs a longer window, and the
loop's bound grows with it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import httpx

from power.policy import Gpu


@dataclass(frozen=True)
class PowerReading:
    """Power of a whole domain at ``timestamp_s`` (the source's clock, seconds)."""

    watts: float
    timestamp_s: float
    source: str


class Telemetry(Protocol):
    """A source of domain power readings."""

    def read(self) -> PowerReading | None: ...


def is_stale(reading: PowerReading | None, now_s: float, max_age_s: float) -> bool:
    """True when there is no reading or it is older than ``max_age_s``."""
    return reading is None or now_s - reading.timestamp_s > max_age_s


def _valid_watts(value: float) -> bool:
    return math.isfinite(value) and value >= 0


@dataclass(frozen=True)
class PowerEnvelope:
    """What a domain's members can draw by the model: all idle (the floor) and all at their maximum power
    limit (the nameplate), both with the servers' overhead outside the GPUs."""

    idle_floor_watts: float
    nameplate_watts: float

    @staticmethod
    def of(gpus: Sequence[Gpu], overhead_watts: Mapping[str, float] | None = None) -> PowerEnvelope:
        """The envelope of these GPUs plus the overhead of their nodes (``node → watts``)."""
        overhead = sum((overhead_watts or {}).get(n, 0.0) for n in {g.node for g in gpus})
        return PowerEnvelope(sum(g.device.idle_watts for g in gpus) + overhead,
                             sum(g.device.power_cap_watts_max for g in gpus) + overhead)


@dataclass(frozen=True)
class TrustConfig:
    """How :func:`judge` decides that a reading can be acted on."""

    stale_after_s: float = 3.0
    stuck_after_s: float = 2.0
    stuck_tolerance_watts: float = 0.0
    floor_share: float = 0.5
    ceiling_share: float = 1.1
    recover_after_s: float = 5.0

    def __post_init__(self) -> None:
        for name in ("stale_after_s", "stuck_after_s", "stuck_tolerance_watts", "recover_after_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must not be negative")
        if not 0 <= self.floor_share < 1:
            raise ValueError("floor_share: must be in [0, 1)")
        if self.ceiling_share < 1:
            raise ValueError("ceiling_share: must be at least 1")


@dataclass(frozen=True)
class TrustState:
    """What the judge remembers of one meter: times are the loop's receipt times unless named otherwise."""

    meter_timestamp_s: float | None = None  # the newest sample time the meter has shown (its own clock)
    new_sample_at_s: float | None = None  # when the meter last showed a newer sample
    run_watts: float | None = None  # the value of the current run of unchanged readings
    run_since_s: float | None = None  # when that value first arrived
    trusted_at_s: float | None = None  # when the last trusted information arrived
    trusted_watts: float | None = None  # its value
    trusted_since_s: float | None = None  # start of the current unbroken run of trusted readings


@dataclass(frozen=True)
class Verdict:
    """The judge's answer for one reading: trusted or not, why, and whether trust has settled."""

    trusted: bool
    reason: str
    watts: float | None = None
    settled: bool = False  # trusted without a break for ``recover_after_s``: releases may start


def judge(state: TrustState, reading: PowerReading | None, received_s: float, config: TrustConfig,
          envelope: PowerEnvelope | None = None) -> tuple[TrustState, Verdict]:
    """Judge one reading received at ``received_s`` (the loop's clock) against what came before."""
    bad = _implausible(reading, config, envelope)
    if bad is not None:
        return replace(state, trusted_since_s=None), Verdict(False, bad)
    assert reading is not None
    w = reading.watts
    new = state.meter_timestamp_s is None or reading.timestamp_s > state.meter_timestamp_s
    moved = state.run_watts is None or abs(w - state.run_watts) > config.stuck_tolerance_watts
    s = replace(
        state,
        meter_timestamp_s=reading.timestamp_s if new else state.meter_timestamp_s,
        new_sample_at_s=received_s if new else state.new_sample_at_s,
        run_watts=w if moved else state.run_watts,
        run_since_s=received_s if moved else state.run_since_s,
    )
    assert s.new_sample_at_s is not None and s.run_since_s is not None
    reason: str | None = None
    since = s.new_sample_at_s
    if received_s - s.new_sample_at_s >= config.stuck_after_s:
        reason, since = f"no new sample for {received_s - s.new_sample_at_s:.1f} s", s.new_sample_at_s
    elif is_stale(reading, received_s, config.stale_after_s):
        reason = f"sample {received_s - reading.timestamp_s:.1f} s old"
    elif received_s - s.run_since_s >= config.stuck_after_s:
        reason, since = f"value stuck at {w:.0f} W for {received_s - s.run_since_s:.1f} s", s.run_since_s
    if reason is not None:
        # The repeats were never new information: the data has been missing since the frozen sample came.
        at = since if s.trusted_at_s is None else min(s.trusted_at_s, since)
        return replace(s, trusted_at_s=at, trusted_since_s=None), Verdict(False, reason)
    since_trusted = received_s if s.trusted_since_s is None else s.trusted_since_s
    s = replace(s, trusted_at_s=received_s, trusted_watts=w, trusted_since_s=since_trusted)
    return s, Verdict(True, "ok", w, settled=received_s - since_trusted >= config.recover_after_s)


def _implausible(reading: PowerReading | None, config: TrustConfig, envelope: PowerEnvelope | None) -> str | None:
    if reading is None:
        return "no reading"
    w = reading.watts
    if math.isnan(w):
        return "reading is not a number"
    if math.isinf(w) or w < 0:
        return f"reading of {w} W is not a power"
    if w == 0:
        return "reading of 0 W (a glitch: the members draw at least their idle power)"
    if envelope is not None:
        floor = config.floor_share * envelope.idle_floor_watts
        if w < floor:
            return f"reading of {w:.0f} W is below {floor:.0f} W, {config.floor_share:.0%} of the members' idle floor"
        ceiling = config.ceiling_share * envelope.nameplate_watts
        if w > ceiling:
            return f"reading of {w:.0f} W is above {ceiling:.0f} W, {config.ceiling_share:.0%} of the nameplate"
    return None


class NvmlTelemetry:
    """Sum of the node's GPU board power (NVML, milliwatts) plus a fixed overhead for the rest of the server."""

    def __init__(self, nvml: Any, now_s: Callable[[], float], overhead_watts: float = 0.0,
                 indices: Sequence[int] | None = None) -> None:
        self._nvml = nvml
        self._now_s = now_s
        self._overhead_watts = overhead_watts
        self._indices = indices

    def read(self) -> PowerReading | None:
        """One reading of all (or the chosen) GPUs; ``None`` if any board cannot be read."""
        try:
            indices = self._indices if self._indices is not None else range(self._nvml.nvmlDeviceGetCount())
            total_mw = 0.0
            for i in indices:
                total_mw += float(self._nvml.nvmlDeviceGetPowerUsage(self._nvml.nvmlDeviceGetHandleByIndex(i)))
        except Exception:  # noqa: BLE001 - any NVML failure means no reading this period
            return None
        watts = total_mw / 1000.0 + self._overhead_watts
        return PowerReading(watts, self._now_s(), "nvml") if _valid_watts(watts) else None


class PrometheusTelemetry:
    """``sum(DCGM_FI_DEV_POWER_USAGE{...})`` from a Prometheus server, plus server overhead outside GPUs.

    An instant query is stamped with its evaluation time, not the time of the samples behind it, so the
    reading's timestamp comes from a second query, ``min(timestamp(...))``: the oldest sample in the sum.
    With ``expected_series`` (the domain's GPU count) a sum over fewer series (an exporter or node gone
    from the scrape, which would under-read the domain) is no reading.
    """

    def __init__(self, base_url: str, selector: str = "", overhead_watts: float = 0.0,
                 client: httpx.Client | None = None, timeout_s: float = 2.0,
                 expected_series: int | None = None) -> None:
        self._url = base_url.rstrip("/") + "/api/v1/query"
        self.query = f"sum(DCGM_FI_DEV_POWER_USAGE{{{selector}}})"
        self.timestamp_query = f"min(timestamp(DCGM_FI_DEV_POWER_USAGE{{{selector}}}))"
        self.count_query = f"count(DCGM_FI_DEV_POWER_USAGE{{{selector}}})"
        self._expected_series = expected_series
        self._overhead_watts = overhead_watts
        self._client = client or httpx.Client(timeout=timeout_s)

    def _scalar(self, query: str) -> float | None:
        resp = self._client.get(self._url, params={"query": query})
        resp.raise_for_status()
        body = resp.json()
        result = body["data"]["result"]
        if body.get("status") != "success" or not result:
            return None
        return float(result[0]["value"][1])

    def read(self) -> PowerReading | None:
        """The summed power and the time of its oldest sample; ``None`` on error or empty result."""
        try:
            value = self._scalar(self.query)
            sampled_s = self._scalar(self.timestamp_query) if value is not None else None
            if self._expected_series is not None and sampled_s is not None:
                series = self._scalar(self.count_query)
                if series is None or series < self._expected_series:
                    return None
        except (httpx.HTTPError, KeyError, IndexError, TypeError, ValueError):
            return None
        if value is None or sampled_s is None:
            return None
        watts = value + self._overhead_watts
        return PowerReading(watts, sampled_s, "prometheus") if _valid_watts(watts) else None


class PduTelemetry:
    """A row/PDU meter that serves JSON such as ``{"power_watts": 181234.5, "timestamp": 1700000000.0}``."""

    def __init__(self, url: str, now_s: Callable[[], float], watts_field: str = "power_watts",
                 timestamp_field: str | None = "timestamp", client: httpx.Client | None = None,
                 timeout_s: float = 2.0) -> None:
        self._url = url
        self._now_s = now_s
        self._watts_field = watts_field
        self._timestamp_field = timestamp_field
        self._client = client or httpx.Client(timeout=timeout_s)

    def read(self) -> PowerReading | None:
        """The meter's latest value; its own timestamp when it gives one, so a frozen meter reads stale."""
        try:
            resp = self._client.get(self._url)
            resp.raise_for_status()
            body = resp.json()
            watts = float(body[self._watts_field])
            ts = self._now_s()
            if self._timestamp_field is not None and self._timestamp_field in body:
                ts = float(body[self._timestamp_field])
        except (httpx.HTTPError, KeyError, TypeError, ValueError):
            return None
        return PowerReading(watts, ts, "pdu") if _valid_watts(watts) else None


class SimulatedTelemetry:
    """Reads a simulated domain through a callable (the simulator's delayed, noisy meter)."""

    def __init__(self, sample: Callable[[], PowerReading | None]) -> None:
        self._sample = sample

    def read(self) -> PowerReading | None:
        """Whatever the simulator's meter shows now (``None`` while it is 'lost')."""
        return self._sample()
