"""Domain power readings: NVML on a node, Prometheus (DCGM exporter), a row/PDU meter, or the simulator.

Every source answers ``read()`` with a timestamped :class:`PowerReading` or ``None`` when it has nothing
usable; :func:`is_stale` tells the loop when a reading is too old to act on. Sources never raise on a
failed read: a missing reading is a normal event the loop handles (it holds caps, then goes to safe caps).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx


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
    """``sum(DCGM_FI_DEV_POWER_USAGE{...})`` from a Prometheus server, plus server overhead outside GPUs."""

    def __init__(self, base_url: str, selector: str = "", overhead_watts: float = 0.0,
                 client: httpx.Client | None = None, timeout_s: float = 2.0) -> None:
        self._url = base_url.rstrip("/") + "/api/v1/query"
        self.query = f"sum(DCGM_FI_DEV_POWER_USAGE{{{selector}}})"
        self._overhead_watts = overhead_watts
        self._client = client or httpx.Client(timeout=timeout_s)

    def read(self) -> PowerReading | None:
        """The instant vector's value and its sample time; ``None`` on error or empty result."""
        try:
            resp = self._client.get(self._url, params={"query": self.query})
            resp.raise_for_status()
            body = resp.json()
            result = body["data"]["result"]
            if body.get("status") != "success" or not result:
                return None
            ts, value = result[0]["value"]
            watts = float(value) + self._overhead_watts
            return PowerReading(watts, float(ts), "prometheus") if _valid_watts(watts) else None
        except (httpx.HTTPError, KeyError, IndexError, TypeError, ValueError):
            return None


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
