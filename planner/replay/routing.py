"""The replay's router: per length bucket, the plan's group by smooth weighted round robin over its shares,
then inside the group the engine with the least outstanding work in seconds."""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

import numpy as np

from planner.replay.state import Replica
from planner.roles import DECODE_ONLY_ROLES, PREFILL_ROLES
from planner.schema import ReplicaGroup

FRONT_ROLES = PREFILL_ROLES  # where a request enters: unified or prefill replicas


class Wrr:
    """Smooth weighted round robin: picks follow the weights exactly, with no randomness."""

    def __init__(self, weighted: list[tuple[int, float]]) -> None:
        self.groups = [g for g, _ in weighted]
        self.weights = [w for _, w in weighted]
        self.total = sum(self.weights)
        self.current = [0.0] * len(weighted)

    def next(self) -> int:
        """The next group."""
        best = 0
        for i, w in enumerate(self.weights):
            self.current[i] += w
            if self.current[i] > self.current[best]:
                best = i
        self.current[best] -= self.total
        return self.groups[best]


@dataclass(frozen=True)
class Routes:
    """One service's buckets (log lengths) and, per bucket, its front and back groups."""

    log_in: np.ndarray
    log_out: np.ndarray
    front: list[Wrr]  # per bucket: unified or prefill groups
    back: list[Wrr]  # per bucket: decode groups (after a prefill group)


def _weights(groups: list[ReplicaGroup], mine: list[int], key: tuple[int, int]) -> tuple[list[tuple[int, float]],
                                                                                       list[tuple[int, float]]]:
    """Front and back groups of one bucket with the plan's shares (replicas where it gives none)."""
    f_w: list[tuple[int, float]] = []
    b_w: list[tuple[int, float]] = []
    for gi in mine:
        g = groups[gi]
        share = next(((b.prefill_share, b.decode_share) for b in g.load
                      if (b.input_tokens, b.output_tokens) == key), (0.0, 0.0))
        role = g.configuration.role
        if role in FRONT_ROLES and share[0] > 0:
            f_w.append((gi, share[0]))
        elif role in DECODE_ONLY_ROLES and share[1] > 0:
            b_w.append((gi, share[1]))
    if not f_w:  # the plan gives this bucket to no one (or carries no load split): by replicas
        f_w = [(gi, float(groups[gi].replicas)) for gi in mine if groups[gi].configuration.role in FRONT_ROLES]
    if not b_w:
        b_w = [(gi, float(groups[gi].replicas)) for gi in mine
               if groups[gi].configuration.role in DECODE_ONLY_ROLES]
    return f_w, b_w


def route_table(groups: list[ReplicaGroup], service: str) -> Routes:
    """Per length bucket, the groups that serve it with the plan's shares (replicas where it has none)."""
    mine = [gi for gi, g in enumerate(groups) if g.service == service]
    keys = sorted({(b.input_tokens, b.output_tokens) for gi in mine for b in groups[gi].load}) or [(1, 1)]
    front: list[Wrr] = []
    back: list[Wrr] = []
    for key in keys:
        f_w, b_w = _weights(groups, mine, key)
        front.append(Wrr(f_w))
        back.append(Wrr(b_w))
    return Routes(np.log([k[0] for k in keys]), np.log([k[1] for k in keys]), front, back)


class Router:
    """Routes requests of every service to engines."""

    def __init__(self, groups: list[ReplicaGroup], services: list[str], replicas: list[Replica],
                 group_replicas: list[list[int]]) -> None:
        self.routes = [route_table(groups, sid) for sid in services]
        self.replicas, self.group_replicas = replicas, group_replicas

    def bucket(self, si: int, input_tokens: int, output_tokens: int) -> int:
        """The service's bucket nearest to the request's lengths (in log space)."""
        routes = self.routes[si]
        if len(routes.log_in) == 1:
            return 0
        d = np.abs(routes.log_in - math.log(input_tokens)) + np.abs(routes.log_out - math.log(output_tokens))
        return int(np.argmin(d))

    @staticmethod
    def _work_now(rep: Replica, now: float) -> float:
        if rep.busy and rep.decoding and len(rep.ends_s) > 1:
            done = bisect.bisect_right(rep.ends_s, now)
            return rep.work - rep.n_run * done
        return rep.work

    def _pick(self, group_ids: list[int], now: float, need_tokens: int) -> int:
        best, best_score = -1, math.inf
        for gi in group_ids:
            for ri in self.group_replicas[gi]:
                rep = self.replicas[ri]
                if rep.kv_cap < need_tokens:
                    continue
                score = self._work_now(rep, now) / rep.speed_tps
                if score < best_score:
                    best, best_score = ri, score
        return best

    def route(self, wrr: Wrr, now: float, need_tokens: int) -> int:
        """The plan's group for the next request (weighted round robin), then its least-loaded engine."""
        if not wrr.groups:
            return -1
        ri = self._pick([wrr.next()], now, need_tokens)
        if ri < 0:  # too long for that group's KV cache: any group of the bucket that can hold it
            ri = self._pick(wrr.groups, now, need_tokens)
        return ri
