"""Actuators: where cap actions go.

* :class:`NvmlActuator` sets locked SM clocks and power limits through NVML on the node itself, reads back
  every set, and re-applies what it holds when the driver forgot it (reboot, driver reload, someone ran
  ``nvidia-smi -rgc``). Neither setting persists, so ``reconcile`` is meant to run every agent period.
* :class:`KubernetesCapPublisher` publishes cap intents as a node annotation; the node agent
  (``medley power agent``) enforces them with an :class:`NvmlActuator` and reports what it applied in a
  second annotation, which is this publisher's read-back. Intents are merged, never overwritten: a node's
  annotation is read before the publisher first writes it, and each write changes only the GPUs acted on,
  so a restarted loop cannot drop a cap it did not know about (``read_intents`` lets it adopt them all).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_fixed

from power.policy import UNCAPPED, CapAction, CapTarget

INTENT_ANNOTATION = "power.medley.dev/caps"
APPLIED_ANNOTATION = "power.medley.dev/applied"
NVML_CLOCK_SM = 1  # pynvml.NVML_CLOCK_SM
CLOCK_TOLERANCE_MHZ = 15.0  # clocks move in ~15 MHz bins


@dataclass(frozen=True)
class ApplyReport:
    """What an actuator did with a batch of actions."""

    applied: tuple[str, ...] = ()
    failed: Mapping[str, str] = field(default_factory=dict)


class Actuator(Protocol):
    """Takes cap actions and tells what each GPU is actually set to."""

    def apply(self, actions: Sequence[CapAction]) -> ApplyReport: ...

    def read_back(self) -> Mapping[str, CapTarget]: ...


def encode_targets(targets: Mapping[str, CapTarget]) -> str:
    """Capped GPUs as compact JSON: ``{"gpu": {"clock_mhz": 1110, "power_limit_watts": null}}``."""
    return json.dumps(
        {gid: {"clock_mhz": t.clock_mhz, "power_limit_watts": t.power_limit_watts}
         for gid, t in sorted(targets.items()) if t.capped},
        separators=(",", ":"),
    )


def decode_targets(text: str | None) -> dict[str, CapTarget]:
    """Inverse of :func:`encode_targets`; raises ``ValueError`` naming the bad entry."""
    if not text:
        return {}
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{INTENT_ANNOTATION}: not JSON ({e.msg})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{INTENT_ANNOTATION}: must be a JSON object")
    out: dict[str, CapTarget] = {}
    for gid, v in raw.items():
        if not isinstance(v, dict):
            raise ValueError(f"{INTENT_ANNOTATION}.{gid}: must be an object")
        clock, limit = v.get("clock_mhz"), v.get("power_limit_watts")
        for name, x in (("clock_mhz", clock), ("power_limit_watts", limit)):
            if x is not None and (not isinstance(x, int | float) or x <= 0):
                raise ValueError(f"{INTENT_ANNOTATION}.{gid}.{name}: must be a positive number or null")
        out[str(gid)] = CapTarget(None if clock is None else float(clock), None if limit is None else float(limit))
    return out


# ---------------------------------------------------------------------------------------------- NVML


class NvmlActuator:
    """NVML locked clocks / power limits on this node's GPUs, addressed by index (``"0"``..) or UUID.

    A clock cap locks the SM clock into ``[device minimum, target]`` (a ceiling, so idle GPUs still clock
    down); a power cap sets the board limit in milliwatts. Release resets the locked clocks and restores the
    board's default limit. Every set is read back; a GPU whose read-back disagrees is reported failed.
    """

    def __init__(self, nvml: Any, min_clock_mhz: float = 210.0, attempts: int = 3,
                 retry_wait_s: float = 0.0, boot_id: Callable[[], str] | None = None) -> None:
        self._nvml = nvml
        self._boot_id = boot_id
        self._last_boot_id = boot_id() if boot_id is not None else None
        self._min_clock_mhz = min_clock_mhz
        self._attempts = attempts
        self._retry_wait_s = retry_wait_s
        self.desired: dict[str, CapTarget] = {}
        self._initialised = False

    def _init(self) -> None:
        if not self._initialised:
            self._nvml.nvmlInit()
            self._initialised = True

    def _handle(self, gpu_id: str) -> Any:
        if gpu_id.isdigit():
            return self._nvml.nvmlDeviceGetHandleByIndex(int(gpu_id))
        return self._nvml.nvmlDeviceGetHandleByUUID(gpu_id)

    def _set(self, gpu_id: str, target: CapTarget) -> None:
        h = self._handle(gpu_id)
        if target.clock_mhz is None:
            self._nvml.nvmlDeviceResetGpuLockedClocks(h)
        else:
            self._nvml.nvmlDeviceSetGpuLockedClocks(h, int(self._min_clock_mhz), int(target.clock_mhz))
        if target.power_limit_watts is None:
            limit_mw = int(self._nvml.nvmlDeviceGetPowerManagementDefaultLimit(h))
        else:
            limit_mw = int(round(target.power_limit_watts * 1000))
        self._nvml.nvmlDeviceSetPowerManagementLimit(h, limit_mw)

    def _with_retry(self, fn: Callable[[], None]) -> None:
        for attempt in Retrying(stop=stop_after_attempt(self._attempts), wait=wait_fixed(self._retry_wait_s),
                                retry=retry_if_exception_type(Exception), reraise=True):
            with attempt:
                # A driver reload invalidates NVML's state: initialise again before retrying.
                if attempt.retry_state.attempt_number > 1:
                    self._initialised = False
                self._init()
                fn()

    def apply(self, actions: Sequence[CapAction]) -> ApplyReport:
        """Set, then verify, each action's target; remembers targets for :meth:`reconcile`."""
        for a in actions:
            self.desired[a.gpu_id] = a.target
        return self._enforce({a.gpu_id: a.target for a in actions})

    def _enforce(self, targets: Mapping[str, CapTarget]) -> ApplyReport:
        applied: list[str] = []
        failed: dict[str, str] = {}
        for gid, target in targets.items():
            try:
                self._with_retry(lambda gid=gid, target=target: self._set(gid, target))  # type: ignore[misc]
            except Exception as e:  # noqa: BLE001 - reported per GPU, the others still get their caps
                failed[gid] = f"set failed: {type(e).__name__}: {e}"
                continue
            if self._matches(gid, target):
                applied.append(gid)
            else:
                failed[gid] = "read-back disagrees with the target"
        return ApplyReport(tuple(applied), failed)

    def read_gpu(self, gpu_id: str) -> CapTarget:
        """What the GPU runs at now: its power limit, and its SM clock when that sits at or below a cap."""
        self._init()
        h = self._handle(gpu_id)
        limit_w = float(self._nvml.nvmlDeviceGetPowerManagementLimit(h)) / 1000.0
        default_w = float(self._nvml.nvmlDeviceGetPowerManagementDefaultLimit(h)) / 1000.0
        clock = float(self._nvml.nvmlDeviceGetClockInfo(h, NVML_CLOCK_SM))
        want = self.desired.get(gpu_id, UNCAPPED)
        # NVML has no getter for locked clocks on every driver; a clock at or under the target reads as it.
        clock_mhz: float | None = None
        if want.clock_mhz is not None:
            clock_mhz = want.clock_mhz if clock <= want.clock_mhz + CLOCK_TOLERANCE_MHZ else clock
        limit = None if abs(limit_w - default_w) < 0.5 else limit_w
        return CapTarget(clock_mhz, limit)

    def _matches(self, gpu_id: str, target: CapTarget) -> bool:
        try:
            got = self.read_gpu(gpu_id)
        except Exception:  # noqa: BLE001 - an unreadable GPU cannot be confirmed
            return False
        if target.power_limit_watts is None:
            limit_ok = got.power_limit_watts is None
        else:
            limit_ok = got.power_limit_watts is not None and abs(got.power_limit_watts - target.power_limit_watts) < 1
        return limit_ok and got.clock_mhz == target.clock_mhz

    def read_back(self) -> Mapping[str, CapTarget]:
        """Read-back of every GPU this actuator has a target for (unreadable GPUs are left out)."""
        out: dict[str, CapTarget] = {}
        for gid in self.desired:
            try:
                out[gid] = self.read_gpu(gid)
            except Exception:  # noqa: BLE001
                self._initialised = False
        return out

    def reconcile(self) -> ApplyReport:
        """Re-apply every held target the hardware no longer shows (after a reboot or driver reload).

        A locked clock cannot be read on every driver, and an idle GPU under a lost cap still reads a low
        clock, so a changed boot id (or NVML needing a new init) re-applies every held target outright.
        """
        rebooted = False
        if self._boot_id is not None:
            boot = self._boot_id()
            rebooted, self._last_boot_id = boot != self._last_boot_id, boot
        if rebooted or not self._initialised:
            return self._enforce(dict(self.desired))
        drifted = {gid: t for gid, t in self.desired.items() if not self._matches(gid, t)}
        return self._enforce(drifted) if drifted else ApplyReport()


# ---------------------------------------------------------------------------------------------- Kubernetes


class NodeAnnotationClient(Protocol):
    """The slice of the Kubernetes API the publisher and the agent need."""

    def get_node_annotations(self, node: str) -> Mapping[str, str]: ...

    def patch_node_annotations(self, node: str, annotations: Mapping[str, str | None]) -> None: ...


class KubernetesNodeClient:
    """:class:`NodeAnnotationClient` over the official ``kubernetes`` client (in-cluster or kubeconfig)."""

    def __init__(self, core_v1: Any | None = None) -> None:
        if core_v1 is None:
            import importlib

            client: Any = importlib.import_module("kubernetes.client")
            config: Any = importlib.import_module("kubernetes.config")
            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            core_v1 = client.CoreV1Api()
        self._api = core_v1

    def get_node_annotations(self, node: str) -> Mapping[str, str]:
        """The node's annotations (empty when it has none)."""
        obj: Any = self._api.read_node(node)
        return dict(obj.metadata.annotations or {})

    def patch_node_annotations(self, node: str, annotations: Mapping[str, str | None]) -> None:
        """Merge-patch annotations; ``None`` removes one."""
        self._api.patch_node(node, {"metadata": {"annotations": dict(annotations)}})


class KubernetesCapPublisher:
    """Publishes each node's cap intents as one annotation; read-back is what the node agents report."""

    def __init__(self, client: NodeAnnotationClient, nodes: Sequence[str]) -> None:
        self._client = client
        self._nodes = tuple(nodes)
        self._intent: dict[str, dict[str, CapTarget]] = {}  # node → its caps as last read or written

    def _live(self, node: str) -> dict[str, CapTarget]:
        """The node's published caps: read from its annotation once, then kept in step with each write."""
        if node not in self._intent:
            text = self._client.get_node_annotations(node).get(INTENT_ANNOTATION)
            try:
                self._intent[node] = decode_targets(text)
            except ValueError:
                self._intent[node] = {}  # not an intent (the agent ignores it too): ours replaces it
        return self._intent[node]

    def read_intents(self) -> Mapping[str, CapTarget]:
        """Every node's published caps, read afresh from the API (what a restarted loop adopts)."""
        out: dict[str, CapTarget] = {}
        for node in self._nodes:
            self._intent.pop(node, None)
            out.update(self._live(node))
        return out

    def apply(self, actions: Sequence[CapAction]) -> ApplyReport:
        """Merge the actions into the intent annotation of every node they touch."""
        touched: dict[str, list[CapAction]] = defaultdict(list)
        for a in actions:
            touched[a.node].append(a)
        applied: list[str] = []
        failed: dict[str, str] = {}
        for node, acts in touched.items():
            try:
                intent = dict(self._live(node))
                intent.update({a.gpu_id: a.target for a in acts})
                self._client.patch_node_annotations(node, {INTENT_ANNOTATION: encode_targets(intent)})
                self._intent[node] = intent
                applied.extend(a.gpu_id for a in acts)
            except Exception as e:  # noqa: BLE001 - one node's API error must not stop the others
                failed.update({a.gpu_id: f"publish failed: {e}" for a in acts})
        return ApplyReport(tuple(applied), failed)

    def read_back(self) -> Mapping[str, CapTarget]:
        """What the agents report as applied on their GPUs (uncapped GPUs are reported by omission)."""
        out: dict[str, CapTarget] = {}
        for node in self._nodes:
            try:
                ann = self._client.get_node_annotations(node)
                reported = decode_targets(ann.get(APPLIED_ANNOTATION))
            except Exception:  # noqa: BLE001 - unknown state: leave the node's GPUs out
                continue
            for gid in self._intent.get(node, {}):
                out[gid] = reported.get(gid, UNCAPPED)
        return out
