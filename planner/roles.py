"""What each serving role means, in one table every stage reads (MILP, capacity, placement, replay,
provisioner, power).

A role is one part of the request path a replica takes: ``unified`` runs both phases; ``prefill`` runs the
prompt and hands its KV cache on; ``decode`` takes that KV cache and produces the tokens; ``decode+offload``
decodes with the KV cache and attention on memory devices (Lamina). Adding a role means adding a row here and
teaching the performance model its step time (``planner.model``); the other stages read the row.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from planner.schema import Role

Phase = Literal["prefill", "decode"]
PowerPhase = Literal["unified", "prefill", "decode"]
KvRole = Literal["producer", "consumer"]
PHASES: tuple[Phase, ...] = ("prefill", "decode")


@dataclass(frozen=True)
class RoleSpec:
    """One role: the phases it serves, the devices it needs, how it is powered and rendered."""

    role: Role
    phases: tuple[Phase, ...]  # request phases its replicas run
    memory_devices: bool  # needs attention-offload partners on memory devices
    power_phase: PowerPhase  # which power profile its devices draw (the power policy's GPU role)
    kv_role: KvRole | None  # side of the KV-cache hand-off between disaggregated replicas
    component: str  # the name the provisioner gives its workload's part (label values, names)

    @property
    def prefill(self) -> bool:
        """Its replicas run prompts (they are where a request enters)."""
        return "prefill" in self.phases

    @property
    def decode(self) -> bool:
        """Its replicas produce tokens (they count for minimum replicas and zone spread)."""
        return "decode" in self.phases

    @property
    def disaggregated(self) -> bool:
        """It runs one phase only, so the service needs the other phase elsewhere."""
        return len(self.phases) == 1


ROLES: Mapping[Role, RoleSpec] = MappingProxyType({
    Role.UNIFIED: RoleSpec(Role.UNIFIED, ("prefill", "decode"), memory_devices=False, power_phase="unified",
                           kv_role=None, component="unified"),
    Role.PREFILL: RoleSpec(Role.PREFILL, ("prefill",), memory_devices=False, power_phase="prefill",
                           kv_role="producer", component="prefill"),
    Role.DECODE: RoleSpec(Role.DECODE, ("decode",), memory_devices=False, power_phase="decode",
                          kv_role="consumer", component="decode"),
    Role.DECODE_OFFLOAD: RoleSpec(Role.DECODE_OFFLOAD, ("decode",), memory_devices=True, power_phase="decode",
                                  kv_role="consumer", component="decode-offload"),
})


def spec(role: Role) -> RoleSpec:
    """The table row of ``role``."""
    return ROLES[role]


def runs(role: Role, phase: Phase) -> bool:
    """Whether replicas of ``role`` run ``phase``."""
    return phase in ROLES[role].phases


# Role sets the stages ask for most, derived from the table (never listed by hand elsewhere).
PREFILL_ROLES: frozenset[Role] = frozenset(r for r, s in ROLES.items() if s.prefill)
DECODE_ROLES: frozenset[Role] = frozenset(r for r, s in ROLES.items() if s.decode)
SERVING_ROLES = DECODE_ROLES  # replicas that answer requests with tokens
DECODE_ONLY_ROLES: frozenset[Role] = frozenset(r for r, s in ROLES.items() if s.decode and not s.prefill)
