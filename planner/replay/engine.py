"""The replay's event engine: arrivals, engine iterations and KV hand-offs on one event heap.

Iteration semantics (continuous batching, chunked prefill, KV admission and preemption, decode stretches)
are stated in the package docstring (``planner.replay``).
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Mapping

from planner.catalog import Catalog
from planner.replay.power import PowerMeter
from planner.replay.report import ReplayReport, build_report
from planner.replay.routing import Router
from planner.replay.state import ReplayOptions, Replica, Requests
from planner.replay.steptimes import StepTimes
from planner.replay.workload import Arrivals
from planner.roles import DECODE_ONLY_ROLES, DECODE_ROLES, PREFILL_ROLES
from planner.schema import FleetSpec, Plan, ReplicaGroup, Role

_ITER_END, _KV_ARRIVE = 1, 2
PREFILL_ONLY_ROLES = PREFILL_ROLES - DECODE_ROLES  # replicas that hand their KV cache on


class Sim:
    """One replay; mutable state lives here and nowhere else."""

    def __init__(
        self,
        plan: Plan,
        fleet: FleetSpec,
        catalog: Catalog,
        times: StepTimes,
        workload: Mapping[str, Arrivals],
        opts: ReplayOptions,
    ) -> None:
        self.plan, self.fleet, self.catalog, self.times, self.opts = plan, fleet, catalog, times, opts
        self.services = [s for s in fleet.services if s.id in workload]
        self.svc_index = {s.id: i for i, s in enumerate(self.services)}
        self.groups = [g for g in plan.replica_groups if g.replicas > 0 and g.service in self.svc_index]
        self.replicas: list[Replica] = []
        self.group_replicas: list[list[int]] = []
        for gi, g in enumerate(self.groups):
            self.group_replicas.append(self._engines(gi, g))
        self.req = Requests()
        self.events: list[tuple[float, int, int, int, int]] = []
        self.seq = 0
        self.dropped = [0] * len(self.services)
        self.router = Router(self.groups, [s.id for s in self.services], self.replicas, self.group_replicas)
        self.span_end = 0.0
        self.power = PowerMeter(opts.power_bin_s)
        self.workload = workload
        self._pending_join: list[int] = []

    # ------------------------------------------------------------------ setup

    def _engines(self, gi: int, g: ReplicaGroup) -> list[int]:
        """The group's engines. A pipeline of pp stages runs pp micro-batches at once: pp engines, each with
        1/pp of the KV cache and of the batch cap and the full (all-stage) step latency, so throughput is pp×
        and latency unchanged. A prefill engine takes one prompt at a time (the rendered ``--max-num-seqs``)."""
        pp = g.configuration.pp
        cap = int(self.times.kv_capacity_tokens(g)) // pp
        seqs = 1 if g.configuration.role in PREFILL_ONLY_ROLES else max(1, self.opts.max_batch // pp)
        speed = self._speed(g)
        ids = []
        for _ in range(g.replicas * pp):
            rep = Replica(idx=len(self.replicas), group=gi, role=g.configuration.role, kv_cap=cap, speed_tps=speed,
                          batch_cap=seqs)
            ids.append(rep.idx)
            self.replicas.append(rep)
        return ids

    def _speed(self, g: ReplicaGroup) -> float:
        """Tokens of outstanding work a replica clears per second (router weight)."""
        if g.configuration.role in PREFILL_ONLY_ROLES:
            return 2048 / max(self.times.prefill_ms(g, [2048]), 1e-6) * 1e3
        batch = 32
        return batch / max(self.times.decode_step_ms(g, batch, batch * 1024), 1e-6) * 1e3

    # ------------------------------------------------------------------ events

    def _push(self, t: float, kind: int, a: int, b: int) -> None:
        self.seq += 1
        heapq.heappush(self.events, (t, self.seq, kind, a, b))

    def _drop(self, rid: int) -> None:
        self.dropped[self.req.service[rid]] += 1
        self.req.finish[rid] = -1.0

    def _arrive(self, rid: int, now: float) -> None:
        r = self.req
        si = r.service[rid]
        wrr = self.router.routes[si].front[self.router.bucket(si, r.input[rid], r.output[rid])]
        ri = self.router.route(wrr, now, r.input[rid] + 1)
        if ri < 0:
            self.dropped[si] += 1
            return
        rep = self.replicas[ri]
        rep.waiting.append(rid)
        rep.work += r.input[rid] + (r.output[rid] - 1 if rep.role is Role.UNIFIED else 0)
        self._wake(rep, now)

    def _to_decode(self, rid: int, src: Replica, now: float) -> None:
        r = self.req
        si = r.service[rid]
        wrr = self.router.routes[si].back[self.router.bucket(si, r.input[rid], r.output[rid])]
        ri = self.router.route(wrr, now, r.input[rid] + 1)
        if ri < 0:
            self._drop(rid)
            return
        dst = self.replicas[ri]
        dst.work += r.output[rid] - r.generated[rid]
        delay = self.times.kv_transfer_ms(self.groups[src.group], self.groups[dst.group], r.input[rid])
        self._push(now + delay / 1e3, _KV_ARRIVE, rid, ri)

    def _wake(self, rep: Replica, now: float) -> None:
        """A replica got new work: start it if idle, or cut a decode stretch at the next iteration."""
        if not rep.busy:
            self._start(rep, now)
            return
        if rep.decoding and len(rep.ends_s) > 1:
            i = bisect.bisect_left(rep.ends_s, now)
            if i < len(rep.ends_s) - 1:
                del rep.ends_s[i + 1:]
                rep.version += 1
                self._push(rep.ends_s[-1], _ITER_END, rep.idx, rep.version)

    # ------------------------------------------------------------------ the running batch

    def _join(self, rep: Replica, rid: int) -> None:
        """Put a request whose prompt is in the KV cache into the running batch."""
        r = self.req
        left = r.output[rid] - r.generated[rid]
        if left <= 0:
            return
        ctx = r.input[rid] + r.generated[rid]
        r.join_step[rid] = rep.step
        r.join_ctx[rid] = ctx
        heapq.heappush(rep.running, (rep.step + left, rid * 1024 + (r.alive[rid] & 1023)))
        if r.first_token[rid] < 0:  # handed off by a prefill replica: its first token is this replica's
            rep.first_pending.append(rid)
        rep.order.append(rid)
        rep.n_run += 1
        rep.ctx_base += ctx - rep.step
        r.running_on[rid] = rep.idx

    def _leave(self, rep: Replica, rid: int) -> None:
        self.req.running_on[rid] = -1
        rep.n_run -= 1
        rep.ctx_base -= self.req.join_ctx[rid] - self.req.join_step[rid]

    def _preempt_until_fits(self, rep: Replica, extra: int) -> None:
        """Preempt the newest requests while the batch outgrows the KV cache (recomputed on a unified
        replica, swapped back into the queue on a decode replica)."""
        limit = rep.kv_cap
        r = self.req
        while rep.n_run > 1 and rep.kv_used() + rep.n_run + extra > limit:
            rid = rep.order.pop()
            if r.running_on[rid] != rep.idx:
                continue
            gen = r.generated[rid] + (rep.step - r.join_step[rid])
            self._leave(rep, rid)
            r.alive[rid] += 1  # invalidates its heap entry
            r.generated[rid] = gen
            r.preempted[rid] += 1
            if rep.role is Role.UNIFIED:
                r.prompt_need[rid] = r.input[rid] + gen
                r.prompt_left[rid] = r.prompt_need[rid]
                rep.work += r.prompt_need[rid]
            rep.waiting.appendleft(rid)

    def _admit_decode(self, rep: Replica) -> None:
        """Admit waiting requests whose KV cache fits (a watermark kept free)."""
        r = self.req
        free = rep.kv_cap * (1 - self.opts.kv_watermark) - rep.kv_used()
        while rep.waiting and rep.n_run < rep.batch_cap:
            rid = rep.waiting[0]
            need = r.input[rid] + r.generated[rid] + 1
            if need > free:
                if rep.n_run == 0 and need > rep.kv_cap:  # can never fit here
                    rep.waiting.popleft()
                    self._drop(rid)
                    continue
                break
            rep.waiting.popleft()
            self._join(rep, rid)
            free -= need

    # ------------------------------------------------------------------ iterations

    def _take_prompts(self, rep: Replica) -> None:
        """This iteration's prompt chunks within the token budget, the batch limit and the free KV cache."""
        opts, r = self.opts, self.req
        budget = opts.max_batched_tokens - (rep.n_run if opts.chunked_prefill else 0)
        free = int(rep.kv_cap * (1 - opts.kv_watermark)) - rep.kv_used() - rep.n_run
        seqs = rep.n_run
        for rid in rep.waiting:
            if budget <= 0 or seqs >= rep.batch_cap:
                break
            left = r.prompt_left[rid]
            take = min(left, budget) if opts.chunked_prefill else left
            if not opts.chunked_prefill and take > budget and rep.chunks:
                break
            need = r.prompt_need[rid] + 1 if left == r.prompt_need[rid] else take
            if need > free:  # waits for room (or, never fitting this KV cache, is dropped by ``_start``)
                break
            rep.chunks.append((rid, take))
            budget -= take
            free -= need
            seqs += 1

    def _iteration_ends(self, rep: Replica, now: float) -> list[float] | None:
        """When the next iteration (or decode stretch) ends; None when there is nothing to run."""
        g = self.groups[rep.group]
        decode_now = rep.n_run > 0 and (self.opts.chunked_prefill or not rep.chunks)
        step_ms = self.times.decode_step_ms
        if rep.chunks:
            dt = self.times.prefill_ms(g, [c for _, c in rep.chunks])
            if decode_now:  # a mixed step pays the fixed step overhead once
                dt += step_ms(g, rep.n_run, rep.sum_ctx() + rep.n_run) - step_ms(g, 0, 0)
            rep.decoding = decode_now
            return [now + max(dt, 1e-3) / 1e3]
        if rep.n_run == 0:
            return None
        rep.decoding = True
        # a decode stretch: every iteration up to the next finish, bounded by the KV cache
        next_finish = rep.running[0][0] - rep.step
        kv_room = (rep.kv_cap - rep.kv_used()) // rep.n_run
        k = max(1, min(next_finish, kv_room, self.opts.max_macro_steps))
        ends = []
        t = now
        ctx = rep.sum_ctx()
        n = rep.n_run
        for _ in range(k):
            ctx += n
            t += step_ms(g, n, ctx) / 1e3
            ends.append(t)
        return ends

    def _start(self, rep: Replica, now: float) -> None:
        """Start the replica's next iteration, or leave it idle."""
        r = self.req
        rep.chunks = []
        rep.decoding = False
        if rep.role in DECODE_ONLY_ROLES:
            self._admit_decode(rep)
            self._preempt_until_fits(rep, 0)
        else:
            self._preempt_until_fits(rep, 0)
            self._take_prompts(rep)
            if not rep.chunks and rep.waiting and rep.n_run == 0:
                rid = rep.waiting.popleft()  # too long for this replica's KV cache
                self._drop(rid)
                rep.work -= r.prompt_left[rid]
                self._start(rep, now)
                return
        for rid, take in rep.chunks:
            rep.kv_prefill += take if r.prompt_left[rid] != r.prompt_need[rid] else take + 1
        ends = self._iteration_ends(rep, now)
        if ends is None:
            rep.busy = False
            return
        rep.ends_s = ends
        rep.busy = True
        rep.start_s = now
        rep.version += 1
        self._push(rep.ends_s[-1], _ITER_END, rep.idx, rep.version)

    def _prefilled(self, rep: Replica, now: float) -> None:
        """Account the iteration's prompt chunks; finished prompts get their first token and move on."""
        r = self.req
        for rid, take in rep.chunks:
            r.prompt_left[rid] -= take
            rep.work -= take
            if r.prompt_left[rid] > 0:
                continue
            if rep.waiting and rep.waiting[0] == rid:
                rep.waiting.popleft()
            else:
                rep.waiting.remove(rid)
            rep.kv_prefill -= r.prompt_need[rid] + 1
            if rep.role in PREFILL_ONLY_ROLES:
                # vLLM's disaggregated serving streams the client's tokens from the decode replica: the first
                # waits for the KV hand-off, admission and the first decode step. DistServe's prototype returns
                # the first token from the prefill instance (first_token_from_prefill).
                if self.opts.first_token_from_prefill and r.first_token[rid] < 0:
                    r.first_token[rid] = now
                    r.generated[rid] = max(r.generated[rid], 1)
                self._to_decode(rid, rep, now)
                continue
            if r.first_token[rid] < 0:
                r.first_token[rid] = now
                r.generated[rid] = max(r.generated[rid], 1)
            if r.output[rid] - r.generated[rid] <= 0:
                r.finish[rid] = now
            else:
                self._pending_join.append(rid)

    def _decoded(self, rep: Replica, now: float, steps: int) -> None:
        """Advance the running batch ``steps`` iterations; requests that reach their length finish."""
        r = self.req
        rep.step += steps
        rep.work -= rep.n_run * steps
        while rep.running and rep.running[0][0] <= rep.step:
            _, key = heapq.heappop(rep.running)
            rid, ver = divmod(key, 1024)
            if r.running_on[rid] != rep.idx or (r.alive[rid] & 1023) != ver:
                continue
            self._leave(rep, rid)
            r.finish[rid] = now
        if len(rep.order) > 4 * rep.n_run + 64:
            rep.order = [x for x in rep.order if r.running_on[x] == rep.idx]

    def _end(self, rep: Replica, now: float) -> None:
        steps = len(rep.ends_s) if rep.decoding else 0
        rep.busy_s += now - rep.start_s
        self.power.book(self.groups[rep.group], rep.start_s, now, prefill=bool(rep.chunks))
        if steps and rep.first_pending:
            for rid in rep.first_pending:  # still in the batch (not preempted before its first step)
                if self.req.running_on[rid] == rep.idx and self.req.first_token[rid] < 0:
                    self.req.first_token[rid] = rep.ends_s[0]
            rep.first_pending = [rid for rid in rep.first_pending if self.req.first_token[rid] < 0
                                 and self.req.running_on[rid] == rep.idx]
        self._prefilled(rep, now)
        if steps:
            self._decoded(rep, now, steps)
        for rid in self._pending_join:
            self._join(rep, rid)
        self._pending_join.clear()
        rep.busy = False
        self._start(rep, now)

    # ------------------------------------------------------------------ run

    def _load_requests(self) -> int:
        """Every service's arrivals as requests, merged in time order; returns how many."""
        merged: list[tuple[float, int, int, int]] = []
        for sid, arr in self.workload.items():
            if sid not in self.svc_index:
                continue
            si = self.svc_index[sid]
            for t, i, o in zip(arr.arrival_s.tolist(), arr.input_tokens.tolist(), arr.output_tokens.tolist(),
                               strict=True):
                merged.append((t, si, int(i), int(o)))
        merged.sort()
        for t, si, i, o in merged:
            self.req.add(t, si, i, o)
        return len(merged)

    def run(self) -> None:
        """Process arrivals and events in time order until none is left."""
        r = self.req
        n = self._load_requests()
        nxt = 0
        events = self.events
        now = 0.0
        while nxt < n or events:
            if nxt < n and (not events or r.arrival[nxt] <= events[0][0]):
                now = r.arrival[nxt]
                self._arrive(nxt, now)
                nxt += 1
                continue
            now, _, kind, a, b = heapq.heappop(events)
            if kind == _ITER_END:
                rep = self.replicas[a]
                if b == rep.version and rep.busy:
                    self._end(rep, now)
            elif kind == _KV_ARRIVE:
                rep = self.replicas[b]
                rep.waiting.append(a)
                self._wake(rep, now)
        self.span_end = now

    def report(self) -> ReplayReport:
        """What the replay saw."""
        busy = [sum(self.replicas[ri].busy_s for ri in ids) for ids in self.group_replicas]
        return build_report(self.req, self.services, self.groups, busy, self.span_end,
                            lambda span: self.power.series(span, self.groups, self.plan, self.fleet, self.catalog),
                            self.opts.power_bin_s, self.times.description, self.times.checks)
