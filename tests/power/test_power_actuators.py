"""NVML actuator against a fake NVML library that records calls and can fail; the Kubernetes publisher and
the node agent against a fake annotation client."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from power.actuators import (
    APPLIED_ANNOTATION,
    INTENT_ANNOTATION,
    KubernetesCapPublisher,
    NvmlActuator,
    decode_targets,
    encode_targets,
)
from power.agent import STATUS_ANNOTATION, NodeAgent
from power.policy import UNCAPPED, CapAction, CapTarget


class NVMLError(Exception):
    pass


class FakeNvml:
    """Enough of pynvml for the actuator: state per GPU index, a call log, injectable failures."""

    def __init__(self, gpus: int = 2, default_mw: int = 400_000, max_clock: int = 1410) -> None:
        self.gpus = gpus
        self.default_mw = default_mw
        self.max_clock = max_clock
        self.calls: list[tuple[Any, ...]] = []
        self.failures: dict[str, int] = {}
        self.ignore_sets = False
        self.uuids = {f"GPU-{i:04d}": i for i in range(gpus)}
        self.initialised = False
        self.reboot()

    def reboot(self) -> None:
        """Driver reload: locks and limits are gone, NVML must be initialised again."""
        self.locked: dict[int, tuple[int, int] | None] = {i: None for i in range(self.gpus)}
        self.limit_mw = {i: self.default_mw for i in range(self.gpus)}
        self.initialised = False

    def _call(self, name: str, *args: Any) -> None:
        self.calls.append((name, *args))
        if self.failures.get(name, 0) > 0:
            self.failures[name] -= 1
            raise NVMLError(name)

    def _need_init(self) -> None:
        if not self.initialised:
            raise NVMLError("Uninitialized")

    def nvmlInit(self) -> None:  # noqa: N802 - pynvml's names
        self._call("nvmlInit")
        self.initialised = True

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        return self.gpus

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:  # noqa: N802
        self._call("nvmlDeviceGetHandleByIndex", i)
        self._need_init()
        return i

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> int:  # noqa: N802
        self._call("nvmlDeviceGetHandleByUUID", uuid)
        self._need_init()
        return self.uuids[uuid]

    def nvmlDeviceSetGpuLockedClocks(self, h: int, lo: int, hi: int) -> None:  # noqa: N802
        self._call("nvmlDeviceSetGpuLockedClocks", h, lo, hi)
        if not self.ignore_sets:
            self.locked[h] = (lo, hi)

    def nvmlDeviceResetGpuLockedClocks(self, h: int) -> None:  # noqa: N802
        self._call("nvmlDeviceResetGpuLockedClocks", h)
        self.locked[h] = None

    def nvmlDeviceGetClockInfo(self, h: int, kind: int) -> int:  # noqa: N802
        self._call("nvmlDeviceGetClockInfo", h, kind)
        lock = self.locked[h]
        return self.max_clock if lock is None else lock[1]  # a busy GPU runs at its ceiling

    def nvmlDeviceSetPowerManagementLimit(self, h: int, mw: int) -> None:  # noqa: N802
        self._call("nvmlDeviceSetPowerManagementLimit", h, mw)
        if not self.ignore_sets:
            self.limit_mw[h] = mw

    def nvmlDeviceGetPowerManagementLimit(self, h: int) -> int:  # noqa: N802
        return self.limit_mw[h]

    def nvmlDeviceGetPowerManagementDefaultLimit(self, h: int) -> int:  # noqa: N802
        return self.default_mw

    def nvmlDeviceGetPowerUsage(self, h: int) -> int:  # noqa: N802
        self._call("nvmlDeviceGetPowerUsage", h)
        return 250_000

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]


def act(gpu: str, clock: float | None = None, limit: float | None = None) -> CapAction:
    return CapAction(gpu, "node-a", CapTarget(clock, limit), reason="test")


def test_clock_cap_locks_a_range_and_power_cap_sets_milliwatts() -> None:
    nvml = FakeNvml()
    a = NvmlActuator(nvml, min_clock_mhz=210)
    report = a.apply([act("0", 1110), act("GPU-0001", 1275, 250.0)])
    assert report.applied == ("0", "GPU-0001") and not report.failed
    assert ("nvmlDeviceSetGpuLockedClocks", 0, 210, 1110) in nvml.calls
    assert ("nvmlDeviceSetGpuLockedClocks", 1, 210, 1275) in nvml.calls
    assert ("nvmlDeviceSetPowerManagementLimit", 1, 250_000) in nvml.calls
    # Uncapped power limit means the board default, set explicitly.
    assert ("nvmlDeviceSetPowerManagementLimit", 0, 400_000) in nvml.calls
    assert a.read_back() == {"0": CapTarget(1110, None), "GPU-0001": CapTarget(1275, 250.0)}


def test_release_resets_locked_clocks_and_restores_default_limit() -> None:
    nvml = FakeNvml()
    a = NvmlActuator(nvml)
    a.apply([act("0", 1110, 200.0)])
    report = a.apply([CapAction("0", "node-a", UNCAPPED, "release")])
    assert report.applied == ("0",)
    assert nvml.locked[0] is None and nvml.limit_mw[0] == 400_000
    assert "nvmlDeviceResetGpuLockedClocks" in nvml.names()


def test_transient_failure_is_retried_after_reinit() -> None:
    nvml = FakeNvml()
    a = NvmlActuator(nvml, attempts=3)
    nvml.failures["nvmlDeviceSetGpuLockedClocks"] = 2
    report = a.apply([act("0", 1110)])
    assert report.applied == ("0",)
    assert nvml.names().count("nvmlDeviceSetGpuLockedClocks") == 3
    assert nvml.names().count("nvmlInit") == 3  # each retry initialises NVML again


def test_persistent_failure_is_reported_per_gpu_and_others_still_apply() -> None:
    nvml = FakeNvml()
    a = NvmlActuator(nvml, attempts=2)
    nvml.failures["nvmlDeviceGetHandleByUUID"] = 10
    report = a.apply([act("GPU-0000", 1110), act("1", 1110)])
    assert report.applied == ("1",)
    assert "GPU-0000" in report.failed and "NVMLError" in report.failed["GPU-0000"]


def test_silently_ignored_set_fails_read_back() -> None:
    nvml = FakeNvml()
    nvml.ignore_sets = True
    report = NvmlActuator(nvml).apply([act("0", 1110, 250.0)])
    assert report.applied == () and report.failed["0"] == "read-back disagrees with the target"


def test_reconcile_reapplies_after_driver_reload() -> None:
    nvml = FakeNvml()
    a = NvmlActuator(nvml)
    a.apply([act("0", 1110, 250.0)])
    assert a.reconcile().applied == ()  # nothing drifted
    nvml.reboot()
    report = a.reconcile()
    assert report.applied == ("0",)
    assert nvml.locked[0] == (210, 1110) and nvml.limit_mw[0] == 250_000


def test_reconcile_reapplies_everything_after_reboot_even_when_clocks_read_low() -> None:
    boot = ["boot-1"]
    nvml = FakeNvml()
    a = NvmlActuator(nvml, boot_id=lambda: boot[0])
    a.apply([act("0", 1110)])
    nvml.locked[0] = None
    nvml.max_clock = 300  # idle after the reboot: the clock alone would not show the lost lock
    boot[0] = "boot-2"
    before = nvml.names().count("nvmlDeviceSetGpuLockedClocks")
    assert a.reconcile().applied == ("0",)
    assert nvml.names().count("nvmlDeviceSetGpuLockedClocks") == before + 1
    assert nvml.locked[0] == (210, 1110)


def test_intent_encoding_round_trips_and_rejects_bad_values() -> None:
    targets = {"0": CapTarget(1110.0, None), "1": UNCAPPED, "2": CapTarget(None, 300.0)}
    text = encode_targets(targets)
    assert decode_targets(text) == {"0": CapTarget(1110.0, None), "2": CapTarget(None, 300.0)}
    with pytest.raises(ValueError, match="clock_mhz"):
        decode_targets('{"0": {"clock_mhz": -5}}')
    with pytest.raises(ValueError, match="not JSON"):
        decode_targets("{")


class FakeNodes:
    def __init__(self) -> None:
        self.annotations: dict[str, dict[str, str]] = {}
        self.patches: list[tuple[str, Mapping[str, str | None]]] = []
        self.fail_patch = False

    def get_node_annotations(self, node: str) -> Mapping[str, str]:
        return dict(self.annotations.get(node, {}))

    def patch_node_annotations(self, node: str, annotations: Mapping[str, str | None]) -> None:
        if self.fail_patch:
            raise RuntimeError("apiserver unavailable")
        self.patches.append((node, annotations))
        current = self.annotations.setdefault(node, {})
        for k, v in annotations.items():
            if v is None:
                current.pop(k, None)
            else:
                current[k] = v


def test_publisher_writes_one_annotation_per_node_and_reads_agent_reports() -> None:
    nodes = FakeNodes()
    pub = KubernetesCapPublisher(nodes, ["node-a", "node-b"])
    report = pub.apply([act("node-a/0", 1110), act("node-a/1", 1110),
                        CapAction("node-b/0", "node-b", CapTarget(1275, None), "T1")])
    assert len(report.applied) == 3 and len(nodes.patches) == 2
    assert decode_targets(nodes.annotations["node-a"][INTENT_ANNOTATION]) == {
        "node-a/0": CapTarget(1110, None), "node-a/1": CapTarget(1110, None)}
    # No agent report yet: everything reads back uncapped, so the loop would re-send.
    assert pub.read_back()["node-a/0"] == UNCAPPED
    nodes.annotations["node-a"][APPLIED_ANNOTATION] = encode_targets({"node-a/0": CapTarget(1110, None)})
    assert pub.read_back()["node-a/0"] == CapTarget(1110, None)
    nodes.fail_patch = True
    assert set(pub.apply([act("node-a/0", 1000)]).failed) == {"node-a/0"}


def test_agent_applies_intent_reports_and_releases() -> None:
    nodes = FakeNodes()
    nvml = FakeNvml()
    agent = NodeAgent("node-a", nodes, NvmlActuator(nvml), now_s=lambda: 100.0)
    nodes.annotations["node-a"] = {INTENT_ANNOTATION: encode_targets({"0": CapTarget(1110, None)})}
    r = agent.step()
    assert r.changed == 1 and not r.failed and r.error is None
    assert nvml.locked[0] == (210, 1110)
    assert decode_targets(nodes.annotations["node-a"][APPLIED_ANNOTATION]) == {"0": CapTarget(1110, None)}
    assert nodes.annotations["node-a"][STATUS_ANNOTATION].endswith("ok")
    # Reboot: the agent's next pass puts the cap back.
    nvml.reboot()
    assert agent.step().reapplied == 1 and nvml.locked[0] == (210, 1110)
    # The GPU drops out of the intent: released.
    nodes.annotations["node-a"][INTENT_ANNOTATION] = "{}"
    agent.step()
    assert nvml.locked[0] is None


def test_agent_keeps_caps_on_a_bad_intent() -> None:
    nodes = FakeNodes()
    nvml = FakeNvml()
    agent = NodeAgent("node-a", nodes, NvmlActuator(nvml))
    nodes.annotations["node-a"] = {INTENT_ANNOTATION: encode_targets({"1": CapTarget(1110, None)})}
    agent.step()
    nodes.annotations["node-a"][INTENT_ANNOTATION] = "not json"
    r = agent.step()
    assert r.error is not None and INTENT_ANNOTATION in r.error
    assert nvml.locked[1] == (210, 1110)
    assert "error" in nodes.annotations["node-a"][STATUS_ANNOTATION]


def test_agent_keeps_its_caps_when_the_intent_annotation_is_deleted_or_empty() -> None:
    nodes = FakeNodes()
    nvml = FakeNvml()
    agent = NodeAgent("node-a", nodes, NvmlActuator(nvml))
    nodes.annotations["node-a"] = {INTENT_ANNOTATION: encode_targets({"0": CapTarget(1110, None),
                                                                      "1": CapTarget(None, 300.0)})}
    agent.step()
    for gone in (None, ""):
        if gone is None:
            del nodes.annotations["node-a"][INTENT_ANNOTATION]  # an operator, a re-registered node
        else:
            nodes.annotations["node-a"][INTENT_ANNOTATION] = gone
        r = agent.step()
        assert r.changed == 0 and r.error is None
        assert nvml.locked[0] == (210, 1110) and nvml.limit_mw[1] == 300_000
        assert decode_targets(nodes.annotations["node-a"][APPLIED_ANNOTATION]) == {
            "0": CapTarget(1110, None), "1": CapTarget(None, 300.0)}
    # A valid intent still releases: an empty object is an order, not silence.
    nodes.annotations["node-a"][INTENT_ANNOTATION] = "{}"
    agent.step()
    assert nvml.locked[0] is None and nvml.limit_mw[1] == nvml.default_mw


def test_publisher_merges_into_live_intents_and_never_drops_a_cap_it_did_not_set() -> None:
    nodes = FakeNodes()
    old = KubernetesCapPublisher(nodes, ["node-a"])
    old.apply([act("node-a/0", 705, 240), act("node-a/1", 705, 240)])
    # A restarted loop's publisher knows nothing; it changes one GPU.
    new = KubernetesCapPublisher(nodes, ["node-a"])
    assert new.apply([act("node-a/0", 1110)]).applied == ("node-a/0",)
    assert decode_targets(nodes.annotations["node-a"][INTENT_ANNOTATION]) == {
        "node-a/0": CapTarget(1110, None), "node-a/1": CapTarget(705, 240)}
    # read_intents reads every node afresh: what a restarted loop adopts.
    nodes.annotations["node-a"][INTENT_ANNOTATION] = encode_targets({"node-a/1": CapTarget(500, None)})
    assert new.read_intents() == {"node-a/1": CapTarget(500, None)}
    # An annotation that is not an intent is replaced by ours (the agent ignores it as well).
    nodes.annotations["node-a"][INTENT_ANNOTATION] = "garbage"
    fresh = KubernetesCapPublisher(nodes, ["node-a"])
    assert fresh.apply([act("node-a/0", 1110)]).failed == {}
    assert decode_targets(nodes.annotations["node-a"][INTENT_ANNOTATION]) == {"node-a/0": CapTarget(1110, None)}


def test_publisher_does_not_write_a_node_whose_live_intent_it_cannot_read() -> None:
    class Unreadable(FakeNodes):
        def get_node_annotations(self, node: str) -> Mapping[str, str]:
            raise RuntimeError("apiserver unavailable")

    nodes = Unreadable()
    pub = KubernetesCapPublisher(nodes, ["node-a"])
    report = pub.apply([act("node-a/0", 1110)])
    assert set(report.failed) == {"node-a/0"} and nodes.patches == []


def test_agent_writes_its_node_only_when_a_value_changes() -> None:
    nodes = FakeNodes()
    nvml = FakeNvml()
    clock = [100.0]
    agent = NodeAgent("node-a", nodes, NvmlActuator(nvml), now_s=lambda: clock[0])
    nodes.annotations["node-a"] = {INTENT_ANNOTATION: encode_targets({"0": CapTarget(1110, None)})}
    assert agent.step().wrote and len(nodes.patches) == 1
    first = dict(nodes.annotations["node-a"])
    for _ in range(5):  # steady: nothing to write, not even the status's time
        clock[0] += 2
        assert not agent.step().wrote
    assert len(nodes.patches) == 1 and nodes.annotations["node-a"] == first
    nodes.annotations["node-a"][INTENT_ANNOTATION] = encode_targets({"0": CapTarget(1005, None)})
    assert agent.step().wrote and len(nodes.patches) == 2
    assert set(nodes.patches[-1][1]) == {APPLIED_ANNOTATION}  # the status text ("ok") did not change
    nvml.failures["nvmlDeviceSetGpuLockedClocks"] = 10
    nodes.annotations["node-a"][INTENT_ANNOTATION] = encode_targets({"0": CapTarget(900, None)})
    agent.step()
    assert nodes.annotations["node-a"][STATUS_ANNOTATION] == f"{clock[0]:.0f} 1 GPUs failed"


def test_agent_touches_only_its_own_node_and_annotations() -> None:
    from power.agent import NotOwnNode, OwnNodeClient

    nodes = FakeNodes()
    own = OwnNodeClient("node-a", nodes)
    with pytest.raises(NotOwnNode, match="may not touch node 'node-b'"):
        own.patch_node_annotations("node-b", {APPLIED_ANNOTATION: "{}"})
    with pytest.raises(NotOwnNode, match="may not touch node 'node-b'"):
        own.get_node_annotations("node-b")
    with pytest.raises(NotOwnNode, match="writes only"):
        own.patch_node_annotations("node-a", {INTENT_ANNOTATION: "{}"})  # the loop's annotation, not the agent's
    own.patch_node_annotations("node-a", {APPLIED_ANNOTATION: "{}"})
    assert nodes.patches == [("node-a", {APPLIED_ANNOTATION: "{}"})]
    agent = NodeAgent("node-a", nodes, NvmlActuator(FakeNvml()))
    assert isinstance(agent.client, OwnNodeClient) and agent.client.node == "node-a"
