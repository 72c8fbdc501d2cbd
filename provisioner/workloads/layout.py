"""How a replica group's replicas fall into pods, and which pods share one workload.

Placement writes a group's ``nodes`` as one node per device slot: per replica its ``pp`` stages of ``tp``
devices in order, then its ``memory_devices`` attention-offload slots. Consecutive stages on one node form one
pod (``tp·k`` devices); a replica whose stages sit on several nodes is several pods — a LeaderWorkerSet
(leader = the first pod) — so a PP4 replica placed 2+2 is two 2-device pods, never one 4-device pod.
Without placement a replica fills nodes of the pool's size: ``⌈pp / ⌊D/tp⌋⌉`` pods.

Replicas with the same pods (the same devices per pod and, when pinned, the same nodes) form one *shard*,
rendered as one workload. Node names are kept only when they are real (``pinned``); placement over a pool
without a node list keeps its split, never its invented names.
A LeaderWorkerSet's workers share one template, so with more than one worker they are pinned to the set of
their nodes (the scheduler picks which worker goes where); leaders and one-worker replicas are pinned exactly.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass

from planner.schema import Configuration, ReplicaGroup


class LayoutError(ValueError):
    """A group whose placement cannot be rendered; the message names the field."""


@dataclass(frozen=True)
class PodPart:
    """One pod of a replica: the devices it holds and, when pinned, its node."""

    devices: int
    node: str | None = None


@dataclass(frozen=True)
class Shard:
    """Replicas laid out alike: their serving pods (leader first) and attention-offload pods."""

    replicas: int
    pods: tuple[PodPart, ...]
    memory: tuple[PodPart, ...] = ()

    @property
    def key(self) -> str:
        """A short stable digest of the layout (names of shards when a group has several or is pinned)."""
        text = repr((self.pods, self.memory))
        return hashlib.sha256(text.encode()).hexdigest()[:6]

    @property
    def pinned(self) -> bool:
        return any(p.node for p in (*self.pods, *self.memory))


def _merge(nodes: list[str], size: int) -> list[PodPart]:
    """Consecutive units (of ``size`` devices) on one node become one pod."""
    parts: list[PodPart] = []
    for node in nodes:
        if parts and parts[-1].node == node:
            parts[-1] = PodPart(parts[-1].devices + size, node)
        else:
            parts.append(PodPart(size, node))
    return parts


def _fill(units: int, size: int, per_node: int) -> list[PodPart]:
    """Units of ``size`` devices packed into nodes of ``per_node`` devices, unplaced."""
    per = max(1, per_node // size)
    return [PodPart(size * min(per, units - i)) for i in range(0, units, per)]


def _placed(cfg: Configuration, chunk: list[str], pin_stages: bool,
            pin_memory: bool) -> tuple[list[PodPart], list[PodPart]]:
    stages = _merge([chunk[s * cfg.tp] for s in range(cfg.pp)], cfg.tp)
    memory = [PodPart(n, node) for node, n in Counter(chunk[cfg.devices:]).items()]
    if not pin_stages:
        stages = [PodPart(p.devices) for p in stages]
    if not pin_memory:
        memory = [PodPart(p.devices) for p in memory]
    return stages, memory


def _check_real(names: list[str], real: frozenset[str], pool: str | None) -> None:
    unknown = sorted(set(names) - real)
    if real and unknown:
        raise LayoutError(f"replica_groups.nodes: {', '.join(unknown[:3])} not in the node list of pool "
                          f"{pool!r} (run `medley inventory` and plan again)")


def shards(group: ReplicaGroup, per_node: int, memory_per_node: int, real: frozenset[str] = frozenset(),
           memory_real: frozenset[str] = frozenset()) -> list[Shard]:
    """The group's replicas as shards; ``real``/``memory_real`` name the real nodes (empty: never pin)."""
    cfg = group.configuration
    if cfg.tp > per_node:
        raise LayoutError(f"configuration.tp: {cfg.tp} devices exceed the {per_node} per node of pool {group.pool!r}")
    per_replica = cfg.devices + cfg.memory_devices
    layouts: Counter[tuple[tuple[PodPart, ...], tuple[PodPart, ...]]] = Counter()
    if group.nodes and len(group.nodes) == per_replica * group.replicas:
        chunks = [group.nodes[r * per_replica:(r + 1) * per_replica] for r in range(group.replicas)]
        _check_real([n for c in chunks for n in c[:cfg.devices]], real, group.pool)
        _check_real([n for c in chunks for n in c[cfg.devices:]], memory_real, group.memory_pool)
        for chunk in chunks:
            stages, memory = _placed(cfg, chunk, bool(real), bool(memory_real))
            layouts[(tuple(stages), tuple(memory))] += 1
    else:
        stages = _fill(cfg.pp, cfg.tp, per_node)
        memory = _fill(cfg.memory_devices, 1, memory_per_node) if cfg.memory_devices else []
        layouts[(tuple(stages), tuple(memory))] = group.replicas
    return [Shard(n, pods, memory) for (pods, memory), n in sorted(layouts.items(), key=lambda kv: repr(kv[0]))]


def lws_size(shard: Shard, group: str) -> tuple[int, int, int]:
    """(pods per replica, leader devices, worker devices) of a multi-pod shard; workers must be alike."""
    workers = {p.devices for p in shard.pods[1:]}
    if len(workers) > 1:
        raise LayoutError(f"replica_groups.nodes: group {group} places pipeline stages unevenly "
                          f"({'+'.join(str(p.devices) for p in shard.pods)} devices); workers of one "
                          "LeaderWorkerSet must be alike")
    return len(shard.pods), shard.pods[0].devices, workers.pop() if workers else 0
