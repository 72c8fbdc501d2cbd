"""The problem's columns as arrays: one row per column (service, role, pools, devices, price, watts) and a
column × bucket capacity matrix, so heuristics, pruning and pricing work on whole arrays at once."""

from __future__ import annotations

from dataclasses import dataclass, replace
from itertools import chain

import numpy as np

from planner.schema import Role
from planner.solve.problem import Column, Demand, Problem

# Role codes in ``ColumnTable.role``: what a column's replicas serve.
UNIFIED, PREFILL, DECODE = 0, 1, 2
_ROLE_CODE = {Role.UNIFIED: UNIFIED, Role.PREFILL: PREFILL, Role.DECODE: DECODE, Role.DECODE_OFFLOAD: DECODE}
# The same by the member's identity (an enum member hashes in Python; its id does not).
_ROLE_BY_ID = {id(role): code for role, code in _ROLE_CODE.items()}


@dataclass(frozen=True)
class ColumnTable:
    """The columns that have a demand, as arrays (index j is the j-th of ``columns``)."""

    columns: tuple[Column, ...]
    service: np.ndarray  # j → index of its demand in problem.demands
    role: np.ndarray  # j → UNIFIED, PREFILL or DECODE
    pool: np.ndarray  # j → index of its pool in problem.pools
    memory_pool: np.ndarray  # j → index of its memory pool, −1 for none
    devices: np.ndarray
    memory_devices: np.ndarray
    price: np.ndarray  # $/h of one replica at its pools' device prices
    idle_watts: np.ndarray
    active_watts: np.ndarray
    handoff: np.ndarray  # Gbit/s a replica hands KV caches at (prefill and decode-only columns; 0 otherwise)
    caps: np.ndarray  # j × bucket: req/s one replica sustains (0: cannot; padded with 0)
    rates: np.ndarray  # service × bucket: req/s (padded with 0)
    by_service: tuple[np.ndarray, ...]  # service → its columns, in order

    @staticmethod
    def of(problem: Problem) -> ColumnTable:
        """The table of a problem's columns (columns of services without a demand are left out)."""
        svc = {d.service: i for i, d in enumerate(problem.demands)}
        pool = {p.id: i for i, p in enumerate(problem.pools)}
        cols = tuple(c for c in problem.columns if c.service in svc)
        width = max([len(d.bucket_rates_rps) for d in problem.demands] + [1])
        rates = np.zeros((len(problem.demands), width))
        for i, d in enumerate(problem.demands):
            rates[i, :len(d.bucket_rates_rps)] = d.bucket_rates_rps
        n = len(cols)
        per_column = [c.capacity_rps for c in cols]
        lengths = np.array([len(x) for x in per_column], dtype=np.int64)
        flat = np.fromiter(chain.from_iterable(per_column), dtype=float, count=int(lengths.sum()))
        caps = np.zeros((n, width))
        caps[np.arange(width)[None, :] < lengths[:, None]] = flat  # row by row, each row's buckets in order
        device_price = np.asarray([p.usd_per_device_hour for p in problem.pools] + [0.0])
        service = np.array([svc[c.service] for c in cols], dtype=np.int64)
        pools = np.array([pool[c.pool] for c in cols], dtype=np.int64)
        mpools = np.array([pool[c.memory_pool] if c.memory_pool is not None else -1 for c in cols],
                          dtype=np.int64)
        devices = np.array([c.devices for c in cols], dtype=float)
        mdevices = np.array([c.memory_devices if c.memory_pool is not None else 0 for c in cols], dtype=float)
        order = np.argsort(service, kind="stable")
        bounds = np.searchsorted(service[order], np.arange(len(problem.demands) + 1))
        return ColumnTable(
            columns=cols, service=service,
            role=np.array([_ROLE_BY_ID[id(c.role)] for c in cols], dtype=np.int8),
            pool=pools, memory_pool=mpools, devices=devices, memory_devices=mdevices,
            price=devices * device_price[pools] + mdevices * device_price[mpools],
            idle_watts=np.array([c.idle_watts for c in cols], dtype=float),
            active_watts=np.array([c.active_watts for c in cols], dtype=float),
            handoff=np.array([c.handoff_gbitps for c in cols], dtype=float),
            caps=caps, rates=rates,
            by_service=tuple(order[bounds[i]:bounds[i + 1]] for i in range(len(problem.demands))))

    def serving(self, j: np.ndarray | int) -> np.ndarray:
        """Whether columns answer requests (unified and decode roles)."""
        return np.asarray(self.role[j] != PREFILL)

    def take(self, rows: np.ndarray, services: np.ndarray) -> ColumnTable:
        """The table of the columns ``rows`` (in that order), for the demands ``services`` (renumbered)."""
        renumber = np.full(len(self.rates), -1, dtype=np.int64)
        renumber[services] = np.arange(len(services))
        service = renumber[self.service[rows]]
        order = np.argsort(service, kind="stable")
        bounds = np.searchsorted(service[order], np.arange(len(services) + 1))
        return ColumnTable(
            columns=tuple(self.columns[j] for j in rows), service=service, role=self.role[rows], pool=self.pool[rows],
            memory_pool=self.memory_pool[rows], devices=self.devices[rows], memory_devices=self.memory_devices[rows],
            price=self.price[rows], idle_watts=self.idle_watts[rows], active_watts=self.active_watts[rows],
            handoff=self.handoff[rows], caps=self.caps[rows], rates=self.rates[services],
            by_service=tuple(order[bounds[i]:bounds[i + 1]] for i in range(len(services))))


def with_columns(problem: Problem, rows: np.ndarray, demands: tuple[Demand, ...] | None = None,
                 **changes: object) -> Problem:
    """The problem with only the table's columns ``rows`` (and only ``demands``, and other fields changed),
    its table cut from the problem's rather than built again. Columns of services without a demand go."""
    t = problem.table
    keep = demands if demands is not None else problem.demands
    index = {d.service: i for i, d in enumerate(problem.demands)}
    services = np.asarray([index[d.service] for d in keep], dtype=np.int64)
    sub = t.take(np.asarray(rows, dtype=np.int64), services)
    out = replace(problem, columns=sub.columns, demands=keep, **changes)  # type: ignore[arg-type]
    out.__dict__["table"] = sub  # the cached_property's slot: the same table Problem.table would build
    return out
