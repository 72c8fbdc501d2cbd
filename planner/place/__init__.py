from planner.place.placer import (
    DeviceSlots,
    DomainLoss,
    PlacementResult,
    ReplicaPlacement,
    Tolerate,
    node_count_feedback,
    phase_capacity,
    phase_needs,
    place,
    placed_plan,
    surviving_plan,
    tolerance_losses,
)

__all__ = [
    "DeviceSlots",
    "DomainLoss",
    "PlacementResult",
    "ReplicaPlacement",
    "Tolerate",
    "node_count_feedback",
    "phase_capacity",
    "phase_needs",
    "place",
    "placed_plan",
    "surviving_plan",
    "tolerance_losses",
]
