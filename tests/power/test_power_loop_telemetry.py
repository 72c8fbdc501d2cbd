"""The control loop with fake telemetry/actuators on a virtual clock, and the telemetry sources."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

import httpx
import pytest
from prometheus_client import CollectorRegistry

from planner.catalog import builtin_catalog
from power.actuators import ApplyReport
from power.loop import ControlLoop, LoopConfig, LoopEvent, LoopMetrics, VirtualClock
from power.policy import UNCAPPED, CapAction, CapTarget, Gpu, Policy
from power.telemetry import NvmlTelemetry, PduTelemetry, PowerReading, PrometheusTelemetry, is_stale

A100 = builtin_catalog().device("a100-80gb")
GPUS = [Gpu(f"n{p}/{i}", f"n{p}", A100, p) for p in (0, 1) for i in range(2)]


class Meter:
    """A live meter: fresh timestamps and a value that moves a little (a constant one reads as stuck)."""

    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock
        self.watts: float | None = 500.0
        self.reads = 0

    def read(self) -> PowerReading | None:
        self.reads += 1
        if self.watts is None:
            return None
        return PowerReading(self.watts + (0.01 if self.reads % 2 else -0.01), self.clock.now_s(), "test")


class Recorder:
    def __init__(self) -> None:
        self.sent: list[CapAction] = []
        self.state: dict[str, CapTarget] = {}

    def apply(self, actions: Sequence[CapAction]) -> ApplyReport:
        self.sent.extend(actions)
        self.state.update({a.gpu_id: a.target for a in actions})
        return ApplyReport(tuple(a.gpu_id for a in actions))

    def read_back(self) -> Mapping[str, CapTarget]:
        return dict(self.state)


def make(config: LoopConfig | None = None) -> tuple[ControlLoop, Meter, Recorder, VirtualClock, CollectorRegistry,
                                                     list[LoopEvent]]:
    clock = VirtualClock()
    meter, rec, reg, events = Meter(clock), Recorder(), CollectorRegistry(), []
    loop = ControlLoop("row-a", 1000.0, Policy(GPUS), meter, rec, clock, config or LoopConfig(),
                       rng=random.Random(0), metrics=LoopMetrics(reg), on_event=events.append)
    return loop, meter, rec, clock, reg, events


def test_loop_caps_exports_metrics_and_events() -> None:
    loop, meter, rec, clock, reg, events = make()
    meter.watts = 920.0
    loop.run(max_steps=3)
    assert clock.now_s() == 3.0
    assert rec.state["n0/0"].capped and rec.state.get("n1/0", UNCAPPED) == UNCAPPED
    assert reg.get_sample_value("medley_power_domain_share", {"domain": "row-a"}) == pytest.approx(0.92, abs=1e-4)
    assert reg.get_sample_value("medley_power_band", {"domain": "row-a"}) == 2
    assert reg.get_sample_value("medley_power_capped_gpus", {"domain": "row-a"}) == 2
    assert any(e.kind == "policy" and e.message.startswith("cap:") for e in events)
    meter.watts = 1100.0
    loop.step()
    assert reg.get_sample_value("medley_power_brake_events_total", {"domain": "row-a"}) == 1
    assert loop.brake_events == 1


def test_telemetry_loss_holds_caps_then_goes_to_safe_caps() -> None:
    loop, meter, rec, clock, reg, events = make(LoopConfig(stale_after_s=2.0, safe_after_s=5.0))
    meter.watts = 850.0
    loop.step()
    capped = {g for g, t in rec.state.items() if t.capped}
    meter.watts = None
    for _ in range(4):
        clock.sleep(1.0)
        r = loop.step()
        assert r.stale and not any(a.target == UNCAPPED for a in r.decision.actions)
    assert {g for g, t in rec.state.items() if t.capped} == capped
    assert reg.get_sample_value("medley_power_telemetry_stale", {"domain": "row-a"}) == 1
    clock.sleep(1.0)
    loop.step()  # stale for 5 s: safe caps
    assert all(rec.state[g.gpu_id].capped for g in GPUS)
    assert any("telemetry untrusted (no reading)" in e.message for e in events)
    assert any(e.message == "safe caps: telemetry missing" for e in events)


def test_reading_older_than_stale_limit_counts_as_missing() -> None:
    assert is_stale(None, 10.0, 3.0)
    assert is_stale(PowerReading(1.0, 6.0, "x"), 10.0, 3.0)
    assert not is_stale(PowerReading(1.0, 8.0, "x"), 10.0, 3.0)


def test_reconcile_resends_drifted_caps() -> None:
    loop, meter, rec, clock, reg, events = make(LoopConfig(reconcile_every_s=2.0))
    meter.watts = 850.0
    loop.step()
    rec.state["n0/0"] = UNCAPPED  # e.g. the node rebooted
    clock.sleep(1.0)
    assert loop.step().reapplied == 0  # not yet time to reconcile
    clock.sleep(1.0)
    assert loop.step().reapplied == 1
    assert rec.state["n0/0"].capped
    assert reg.get_sample_value("medley_power_reapplied_total", {"domain": "row-a"}) == 1


def test_budget_change_is_validated_and_used() -> None:
    loop, meter, rec, clock, reg, events = make()
    meter.watts = 700.0
    loop.step()
    assert not any(t.capped for t in rec.state.values())
    loop.set_budget(800.0)
    clock.sleep(1.0)
    loop.step()
    assert any(t.capped for t in rec.state.values())
    try:
        loop.set_budget(0)
    except ValueError as e:
        assert "budget_watts" in str(e)
    else:
        raise AssertionError("a zero budget must be refused")


def test_prometheus_source_sums_dcgm_power_and_handles_errors() -> None:
    seen: list[httpx.Request] = []

    def ok(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        # The instant query is stamped with the evaluation time; the samples behind it are older.
        value = "1699999990.25" if "timestamp(" in request.url.params["query"] else "12345.5"
        return httpx.Response(200, json={"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {}, "value": [1700000000.5, value]}]}})

    src = PrometheusTelemetry("http://prom:9090/", 'rack="r1"', overhead_watts=1000.0,
                              client=httpx.Client(transport=httpx.MockTransport(ok)))
    r = src.read()
    assert r == PowerReading(13345.5, 1699999990.25, "prometheus")  # the oldest sample's time
    assert seen[0].url.params["query"] == 'sum(DCGM_FI_DEV_POWER_USAGE{rack="r1"})'
    assert seen[1].url.params["query"] == 'min(timestamp(DCGM_FI_DEV_POWER_USAGE{rack="r1"}))'
    empty = PrometheusTelemetry("http://prom", client=httpx.Client(transport=httpx.MockTransport(
        lambda req: httpx.Response(200, json={"status": "success", "data": {"result": []}}))))
    assert empty.read() is None
    down = PrometheusTelemetry("http://prom", client=httpx.Client(transport=httpx.MockTransport(
        lambda req: httpx.Response(503))))
    assert down.read() is None


def test_pdu_source_uses_meter_timestamp_and_rejects_garbage() -> None:
    body = {"power_watts": 181234.5, "timestamp": 50.0}
    src = PduTelemetry("http://pdu/row", lambda: 99.0,
                       client=httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(200, json=body))))
    r = src.read()
    assert r is not None and r.watts == 181234.5 and r.timestamp_s == 50.0
    assert is_stale(r, 99.0, 3.0)  # a frozen meter shows up as stale
    body2 = {"power_watts": "NaN"}
    bad = PduTelemetry("http://pdu/row", lambda: 99.0,
                       client=httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(200, json=body2))))
    assert bad.read() is None


def test_nvml_source_sums_boards_and_reports_failure_as_missing() -> None:
    class Nvml:
        fail = False

        def nvmlDeviceGetCount(self) -> int:  # noqa: N802
            return 2

        def nvmlDeviceGetHandleByIndex(self, i: int) -> int:  # noqa: N802
            return i

        def nvmlDeviceGetPowerUsage(self, h: int) -> int:  # noqa: N802
            if self.fail:
                raise RuntimeError("GPU is lost")
            return 300_000 + h * 1000

    nvml = Nvml()
    src = NvmlTelemetry(nvml, lambda: 5.0, overhead_watts=1500.0)
    assert src.read() == PowerReading(2101.0, 5.0, "nvml")
    nvml.fail = True
    assert src.read() is None


class FrozenAfter(Meter):
    """A live meter that freezes its value at ``at_s`` while its timestamps stay fresh."""

    def __init__(self, clock: VirtualClock, at_s: float) -> None:
        super().__init__(clock)
        self.at_s = at_s
        self.frozen: float | None = None

    def read(self) -> PowerReading | None:
        r = super().read()
        if r is None or self.clock.now_s() < self.at_s:
            return r
        self.frozen = self.frozen if self.frozen is not None else r.watts
        return PowerReading(self.frozen, self.clock.now_s(), "test")


def test_frozen_meter_goes_to_safe_caps_two_seconds_after_it_froze() -> None:
    clock = VirtualClock()
    meter, rec, events = FrozenAfter(clock, 10.0), Recorder(), []
    loop = ControlLoop("row-a", 1000.0, Policy(GPUS), meter, rec, clock, LoopConfig(), on_event=events.append)
    meter.watts = 700.0
    by_time = {}
    for _ in range(13):
        r = loop.step()
        by_time[r.time_s] = r
        clock.sleep(1.0)
    assert not by_time[11.0].stale and by_time[12.0].stale
    assert all(not t.capped for t in by_time[11.0].decision.state.targets.values())
    assert all(t.capped for t in by_time[12.0].decision.state.targets.values())  # safe caps at once
    assert any("value stuck at 700 W" in e.message for e in events)


def test_over_budget_then_silent_keeps_the_brake_until_trusted_data_release_it() -> None:
    loop, meter, rec, clock, reg, events = make()
    meter.watts = 1050.0
    assert loop.step().decision.state.braked
    meter.watts = None
    for _ in range(30):
        clock.sleep(1.0)
        assert loop.step().decision.state.braked
    assert loop.brake_events == 1


def test_restarted_loop_adopts_the_live_caps_and_drops_none() -> None:
    from power.actuators import INTENT_ANNOTATION, KubernetesCapPublisher, decode_targets
    from power.sim_faults import MemoryNodes

    api = MemoryNodes()
    nodes = sorted({g.node for g in GPUS})
    clock = VirtualClock()
    meter = Meter(clock)
    first = ControlLoop("row-a", 1000.0, Policy(GPUS), meter, KubernetesCapPublisher(api, nodes), clock, LoopConfig())
    meter.watts = 960.0  # urgent: a stage per period, down to the deep caps
    for _ in range(6):
        first.step()
        clock.sleep(1.0)
    live = {n: decode_targets(api.annotations[n][INTENT_ANNOTATION]) for n in nodes}
    assert all(live[n] for n in nodes)
    meter.watts = 850.0  # the caps hold the row between T1 and T2
    events: list[LoopEvent] = []
    second = ControlLoop("row-a", 1000.0, Policy(GPUS), meter, KubernetesCapPublisher(api, nodes), clock,
                         LoopConfig(), on_event=events.append)
    for _ in range(10):
        r = second.step()
        clock.sleep(1.0)
        assert all(a.target.capped for a in r.decision.actions)
    assert {n: decode_targets(api.annotations[n][INTENT_ANNOTATION]) for n in nodes} == live
    assert any(e.message.startswith("adopted 4 live caps") for e in events)


def test_a_restarted_loop_publishes_nothing_until_it_has_read_the_live_caps() -> None:
    from power.actuators import KubernetesCapPublisher
    from power.sim_faults import MemoryNodes

    class Down(MemoryNodes):
        up = False

        def get_node_annotations(self, node: str) -> Mapping[str, str]:
            if not self.up:
                raise ConnectionError("apiserver unavailable")
            return super().get_node_annotations(node)

    api = Down()
    clock = VirtualClock()
    meter = Meter(clock)
    meter.watts = 1050.0
    loop = ControlLoop("row-a", 1000.0, Policy(GPUS), meter, KubernetesCapPublisher(api, ["n0", "n1"]), clock,
                       LoopConfig())
    r = loop.step()
    assert r.decision.actions == () and api.annotations == {}
    api.up = True
    clock.sleep(1.0)
    r = loop.step()
    assert r.decision.state.braked and len(r.decision.actions) == len(GPUS)
