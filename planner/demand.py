"""The traffic mix a plan was sized for, as placement, the provisioner and the replay read it.

The planner derives each service's length buckets once (from the fleet's buckets, histogram or trace file,
``planner.pipeline``) and stores them in ``Plan.demand``; the later stages read them there, so the same plan
gives the same capacities wherever the process runs. A plan stored before ``demand`` existed falls back to
the fleet's buckets or histogram; a trace-file service without stored demand is refused, because its mix
lives in a file the pure stages do not read.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from planner.schema import LengthBucket, Plan, Service


class MissingDemand(ValueError):
    """A trace-file service whose plan stores no demand: its bucket mix is unknown here."""


def planned_buckets(plan: Plan | None, service: Service) -> list[LengthBucket]:
    """The length buckets ``service`` was planned for: the plan's stored demand, else the fleet's buckets."""
    stored = plan.demand_of(service.id) if plan is not None else None
    if stored is not None:
        return list(stored.buckets)
    if service.traffic.trace_file is not None:
        raise MissingDemand(
            f"services[{service.id}].traffic.trace_file: the plan stores no demand for this service, so its "
            "length mix is unknown; plan it again (plans record each service's buckets)")
    return service.traffic.length_buckets()


def bucket_shares(buckets: Iterable[LengthBucket]) -> dict[tuple[int, int], float]:
    """Share of requests per (input, output) tokens bucket (buckets of equal lengths add up)."""
    shares: dict[tuple[int, int], float] = defaultdict(float)
    for b in buckets:
        shares[(b.input_tokens, b.output_tokens)] += b.share
    return dict(shares)


def planned_shares(plan: Plan | None, service: Service) -> dict[tuple[int, int], float]:
    """Share of the service's requests per (input, output) tokens bucket, as ``planned_buckets`` gives them."""
    return bucket_shares(planned_buckets(plan, service))
