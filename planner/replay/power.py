"""Power of a replay: device-seconds busy per pool and time bin (prefill and decode apart), turned into mean
watts per bin: every placed device idles, busy time adds its phase's power above idle, and each server
draws its overhead whatever its devices do."""

from __future__ import annotations

import math

from planner.catalog import Catalog
from planner.schema import FleetSpec, Plan, ReplicaGroup


class PowerMeter:
    """Busy device-seconds per pool and bin of ``bin_s`` seconds."""

    def __init__(self, bin_s: float) -> None:
        self.bin_s = bin_s
        self.prefill: dict[str, list[float]] = {}
        self.decode: dict[str, list[float]] = {}

    def book(self, g: ReplicaGroup, t0: float, t1: float, prefill: bool) -> None:
        """One engine of ``g`` ran from ``t0`` to ``t1`` (an engine is 1/pp of the replica's devices)."""
        width = self.bin_s
        pp = g.configuration.pp
        for pool, devs in ((g.pool, g.configuration.devices / pp),
                           (g.memory_pool, g.configuration.memory_devices / pp)):
            if pool is None or devs == 0:
                continue
            table = self.prefill if prefill else self.decode
            bins = table.setdefault(pool, [])
            b0, b1 = int(t0 // width), int(t1 // width)
            if b1 >= len(bins):
                bins.extend([0.0] * (b1 + 1 - len(bins)))
            for b in range(b0, b1 + 1):
                lo, hi = max(t0, b * width), min(t1, (b + 1) * width)
                if hi > lo:
                    bins[b] += (hi - lo) * devs

    def series(self, span: float, groups: list[ReplicaGroup], plan: Plan, fleet: FleetSpec,
               catalog: Catalog) -> dict[str, list[float]]:
        """Mean watts per bin per pool: idle for every placed device plus the busy share above idle."""
        width = self.bin_s
        nbins = max(1, int(math.ceil(span / width)))
        devices: dict[str, int] = {}
        for g in groups:
            devices[g.pool] = devices.get(g.pool, 0) + g.replicas * g.configuration.devices
            if g.memory_pool and g.configuration.memory_devices:
                devices[g.memory_pool] = devices.get(g.memory_pool, 0) + g.replicas * g.configuration.memory_devices
        pools = {p.id: p for p in fleet.pools}
        out: dict[str, list[float]] = {}
        for pool_id, count in devices.items():
            pool = pools.get(pool_id)
            dev = catalog.devices.get(pool.device) if pool else None
            if pool is None or dev is None:
                continue
            pre = self.prefill.get(pool_id, [])
            dec = self.decode.get(pool_id, [])
            # servers draw their overhead whatever the devices do (nodes as placed, else as packed)
            nodes = plan.nodes_by_pool.get(pool_id) or math.ceil(count / pool.devices_per_node)
            base = count * dev.idle_watts + nodes * pool.node_overhead_watts
            series = []
            for b in range(nbins):
                p_s = pre[b] if b < len(pre) else 0.0
                d_s = dec[b] if b < len(dec) else 0.0
                watts = base + (
                    p_s * (dev.prefill_power_watts - dev.idle_watts)
                    + d_s * (dev.decode_power_watts - dev.idle_watts)
                ) / width
                series.append(round(watts, 1))
            out[pool_id] = series
        return out
