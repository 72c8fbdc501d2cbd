"""What placement answers: device slots per replica, shortfalls, failure-domain losses, the result value."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Tolerate = Literal["none", "node", "rack", "zone"]
Objective = Literal["moves_then_fragmentation", "moves"]
Status = Literal["placed", "shortfall", "infeasible"]


@dataclass(frozen=True)
class DeviceSlots:
    """Devices of one node (slot indices 0..devices−1) used by one part of a replica."""

    node: str
    slots: tuple[int, ...]


@dataclass(frozen=True)
class ReplicaPlacement:
    """One replica: its pipeline stages (one node each) and its memory devices."""

    group: int
    stages: tuple[DeviceSlots, ...]
    memory: tuple[DeviceSlots, ...] = ()


@dataclass(frozen=True)
class Shortfall:
    """A pool that could not hold its replicas: how many more nodes it would take."""

    pool: str
    nodes_needed: int
    nodes_usable: int
    reason: str


@dataclass(frozen=True)
class DomainLoss:
    """A failure domain whose loss leaves a service (one phase) less capacity than its load needs.

    ``capacity_left`` is what the surviving replicas carry at the planner's headroom as a share of the phase's
    load (below 1 here); ``capacity_lost`` the share of the phase's capacity that ran in the domain.
    """

    kind: str
    domain: str
    service: str
    replicas_left: int
    capacity_left: float
    capacity_lost: float
    prefill: bool = False


@dataclass(frozen=True)
class Fallback:
    """A part CP-SAT did not solve, so the first-fit start stands there: which pools and racks, and why."""

    part: str
    reason: str


@dataclass(frozen=True)
class PlacementResult:
    """Where every replica runs, or why it cannot."""

    status: Status
    replicas: tuple[ReplicaPlacement, ...]
    moves: int  # units started on a node they were not running on
    kept: int
    nodes_used_by_pool: dict[str, int]
    free_nodes_by_pool: dict[str, int]
    usable_nodes_by_pool: dict[str, int]
    shortfall: tuple[Shortfall, ...] = ()
    explanations: tuple[str, ...] = ()
    tolerance_losses: tuple[DomainLoss, ...] = ()
    solve_seconds: float = 0.0
    optimal: bool = False
    parts: int = 0  # problems the components were cut into (rack blocks of large pools)
    counted_parts: int = 0  # parts whose first-fit start a counted bound proves optimal (no solve needed)
    fallbacks: tuple[Fallback, ...] = ()
    moves_bound: int | None = None  # fewest moves any placement makes, counted (None with a shortfall)

    @property
    def moves_proven(self) -> bool:
        """The moves made are the fewest possible: they meet the counted lower bound."""
        return self.moves_bound is not None and self.moves == self.moves_bound

    def nodes_by_group(self, groups: int) -> list[list[str]]:
        """Node per device slot for each group: each replica's stages in order, then its memory devices."""
        out: list[list[str]] = [[] for _ in range(groups)]
        for r in self.replicas:
            for part in (*r.stages, *r.memory):
                out[r.group].extend([part.node] * len(part.slots))
        return out


def node_count_feedback(result: PlacementResult) -> dict[str, int]:
    """Nodes per pool the planner should assume usable so that its counts can be placed (for a re-solve)."""
    return {s.pool: max(0, s.nodes_usable - s.nodes_needed) for s in result.shortfall}
