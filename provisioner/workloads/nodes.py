"""Which nodes a pod may land on: the pool's device, zone and region, and the nodes placement chose.

Each catalog device is recognised on a node by one label (``DEVICE_LABELS``): NVIDIA GPU feature discovery's
``nvidia.com/gpu.product`` (the NVML name with ``-`` for spaces), AMD's device plugin labeller's
``amd.com/gpu.device-id`` (the PCI device id). A pool overrides it by naming that label in its own
``node_selector``; ``RenderOptions.device_labels`` overrides or adds devices for the whole fleet. A device
with no label, in a pool without a node selector, is refused: nothing would keep its pods off other devices.

| device    | label                  | values                                     |
|-----------|------------------------|--------------------------------------------|
| h100-sxm  | nvidia.com/gpu.product | NVIDIA-H100-80GB-HBM3                      |
| h200-sxm  | nvidia.com/gpu.product | NVIDIA-H200, NVIDIA-H200-141GB-HBM3        |
| a100-80gb | nvidia.com/gpu.product | NVIDIA-A100-SXM4-80GB                      |
| a100-40gb | nvidia.com/gpu.product | NVIDIA-A100-SXM4-40GB                      |
| l40s      | nvidia.com/gpu.product | NVIDIA-L40S                                |
| l4        | nvidia.com/gpu.product | NVIDIA-L4                                  |
| a10g      | nvidia.com/gpu.product | NVIDIA-A10G                                |
| t4        | nvidia.com/gpu.product | Tesla-T4                                   |
| h20       | nvidia.com/gpu.product | NVIDIA-H20                                 |
| a40       | nvidia.com/gpu.product | NVIDIA-A40                                 |
| mi300x    | amd.com/gpu.device-id  | 74a1                                       |

A pool's zone and region (unless ``default``) become ``topology.kubernetes.io/zone`` and ``.../region``
terms. Node names are pinned (``matchFields`` on ``metadata.name``) only when they are real: the pool lists
its ``nodes`` (written by hand or by ``medley inventory``); placement over a pool without a node list invents
names such as ``a10g-b-0001``, which are never rendered.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from planner.schema import Pool

GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
AMD_DEVICE_ID_LABEL = "amd.com/gpu.device-id"
ZONE_LABEL = "topology.kubernetes.io/zone"
REGION_LABEL = "topology.kubernetes.io/region"
HOSTNAME_LABEL = "kubernetes.io/hostname"
UNSET = "default"  # a pool's zone/region when the fleet file names none


class DeviceLabel(BaseModel):
    """The node label that says a node has this device, and the values it takes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str = Field(min_length=1)
    values: tuple[str, ...] = Field(min_length=1)


def _gfd(*products: str) -> DeviceLabel:
    return DeviceLabel(key=GPU_PRODUCT_LABEL, values=products)


DEVICE_LABELS: Mapping[str, DeviceLabel] = {
    "h100-sxm": _gfd("NVIDIA-H100-80GB-HBM3"),
    "h200-sxm": _gfd("NVIDIA-H200", "NVIDIA-H200-141GB-HBM3"),
    "a100-80gb": _gfd("NVIDIA-A100-SXM4-80GB"),
    "a100-40gb": _gfd("NVIDIA-A100-SXM4-40GB"),
    "l40s": _gfd("NVIDIA-L40S"),
    "l4": _gfd("NVIDIA-L4"),
    "a10g": _gfd("NVIDIA-A10G"),
    "t4": _gfd("Tesla-T4"),
    "h20": _gfd("NVIDIA-H20"),
    "a40": _gfd("NVIDIA-A40"),
    "mi300x": DeviceLabel(key=AMD_DEVICE_ID_LABEL, values=("74a1",)),
}


class NodeSelectionError(ValueError):
    """A pool whose device cannot be told apart on nodes; the message names the pool and device."""


def device_label(device: str, overrides: Mapping[str, DeviceLabel] | None = None) -> DeviceLabel | None:
    """The label that identifies ``device`` on a node (``overrides`` first), or None when none is known."""
    if overrides and device in overrides:
        return overrides[device]
    return DEVICE_LABELS.get(device)


def device_of_node(labels: Mapping[str, str], overrides: Mapping[str, DeviceLabel] | None = None) -> str | None:
    """The catalog device a node's labels name (``overrides`` first), or None."""
    for table in (overrides or {}, DEVICE_LABELS):
        for device, label in table.items():
            if labels.get(label.key) in label.values:
                return device
    return None


def pool_matches_node(pool: Pool, labels: Mapping[str, str],
                      overrides: Mapping[str, DeviceLabel] | None = None) -> bool:
    """Whether a node with ``labels`` is one the pool's pods may land on (the same test the affinity makes)."""
    return all(_term_holds(t, labels) for t in pool_terms(pool, overrides)) and all(
        labels.get(k) == v for k, v in pool.node_selector.items())


def _term_holds(term: dict[str, Any], labels: Mapping[str, str]) -> bool:
    return labels.get(term["key"]) in term["values"]


def pool_terms(pool: Pool, overrides: Mapping[str, DeviceLabel] | None = None) -> list[dict[str, Any]]:
    """Required ``matchExpressions`` of the pool: its device, zone and region (where its selector is silent)."""
    terms: list[dict[str, Any]] = []
    label = device_label(pool.device, overrides)
    if label is not None and label.key not in pool.node_selector:
        terms.append({"key": label.key, "operator": "In", "values": list(label.values)})
    elif label is None and not pool.node_selector:
        raise NodeSelectionError(
            f"pools[{pool.id}].device: no node label is known for device {pool.device!r}; set the pool's "
            "node_selector or RenderOptions.device_labels")
    for key, value in ((ZONE_LABEL, pool.zone), (REGION_LABEL, pool.region)):
        if value != UNSET and key not in pool.node_selector:
            terms.append({"key": key, "operator": "In", "values": [value]})
    return terms


def real_nodes(pool: Pool) -> frozenset[str]:
    """Names of the pool's real nodes (its node list); empty when the pool has none."""
    return frozenset(n.name for n in pool.nodes or ())


def node_affinity(pool: Pool, pinned: Iterable[str] = (),
                  overrides: Mapping[str, DeviceLabel] | None = None) -> dict[str, Any]:
    """``affinity`` of a pod in ``pool``: the pool's terms, and the node names it is pinned to (if any)."""
    term: dict[str, Any] = {"matchExpressions": pool_terms(pool, overrides)}
    names = sorted(set(pinned))
    if names:
        term["matchFields"] = [{"key": "metadata.name", "operator": "In", "values": names}]
    if not term["matchExpressions"]:
        del term["matchExpressions"]
    if len(term) == 0:
        return {}
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}}
