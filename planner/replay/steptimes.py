"""Step times behind the replay: a ``StepTimes`` Protocol, DistServe-style fitted latencies, and a performance
model (``planner.model.perf``: the planner's own, or a measured table or engine profile) with its answers
cached.

The replay is only as good as the latency function behind it. Run on the planner's own model it checks the
queueing (batching, interference, KV admission, hand-offs) the capacity model approximates, not the step
times; run on measured steps (a table, a profile fitted on the user's runs) it also catches model error.
Every ``StepTimes`` says what it is (``description``), and the report repeats it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from planner.catalog import Catalog
from planner.model.handoff import handoff_bytes, handoff_ms, handoff_nic_gbitps
from planner.model.measured import TablePerfModel
from planner.model.perf import PerfModel, ReplicaShape
from planner.schema import Configuration, FleetSpec, ReplicaGroup

PLANNER_MODEL = "the planner's performance model"
QUEUEING_ONLY = ("queueing only (batching, prefill/decode interference, KV admission and hand-offs): the step "
                 "times are the planner's own, so an error in them does not show here")
INDEPENDENT_CHECKS = ("queueing and the step times the plan was sized with: these step times are not the "
                      "planner's model, so where they differ the replay shows it")


class StepTimes(Protocol):
    """Latency of one engine iteration of a replica group (milliseconds) and its KV-cache size."""

    @property
    def description(self) -> str:
        """Where the step times come from, in words (the replay report repeats it)."""
        ...

    @property
    def checks(self) -> str:
        """What a replay on these step times checks, in words (the replay report repeats it)."""
        ...

    def prefill_ms(self, group: ReplicaGroup, prompt_lens: Sequence[int]) -> float:
        """One prefill iteration over prompts (or prompt chunks) of these lengths."""
        ...

    def decode_step_ms(self, group: ReplicaGroup, batch: int, sum_ctx_tokens: int) -> float:
        """One decode iteration of ``batch`` requests holding ``sum_ctx_tokens`` tokens of context."""
        ...

    def kv_capacity_tokens(self, group: ReplicaGroup) -> int:
        """Tokens of KV cache one replica holds."""
        ...

    def kv_transfer_ms(self, src: ReplicaGroup, dst: ReplicaGroup, tokens: int) -> float:
        """Moving ``tokens`` of KV cache from a prefill replica to a decode replica."""
        ...


@dataclass(frozen=True)
class FittedStepTimes:
    """DistServe-style fitted latency: prefill ``a + b·Σlen + c·Σlen²``; decode ``a + b·Σctx + c·batch``.

    Decode has a small-batch and a large-batch fit switching at ``decode_threshold``; one set of
    coefficients per TP degree. A pipeline's step takes the same time (its stages run in sequence); the
    replay runs ``pp`` micro-batches at once, which is where pipelining gains throughput.
    """

    prefill: Mapping[int, tuple[float, float, float]]
    decode_small: Mapping[int, tuple[float, float, float]]
    decode_large: Mapping[int, tuple[float, float, float]]
    decode_threshold: Mapping[int, int]
    kv_tokens: Mapping[tuple[int, int], int]  # (tp, pp) → KV-cache tokens of one replica
    kv_transfer_gbps: float = 0.0  # 0: transfer not modelled (prefill and decode share a node's NVLink)
    kv_bytes_per_token: float = 0.0
    source: str = "fitted step times"

    @property
    def description(self) -> str:
        """The fit's name."""
        return self.source

    @property
    def checks(self) -> str:
        """A fit of measured steps: the replay checks queueing on steps the planner did not model."""
        return INDEPENDENT_CHECKS

    @staticmethod
    def from_distserve(
        profile: Mapping[str, Any], max_tokens: Iterable[Mapping[str, str]], model: str
    ) -> FittedStepTimes:
        """DistServe's fit for one model: ``profile`` is its ``profiler-*.json`` read as JSON, ``max_tokens``
        the rows of its ``max_num_tokens.csv`` (``planner.io.distserve`` reads both files)."""
        data = profile[model]
        kv = {(int(row["tp"]), int(row["pp"])): int(row["max_num_tokens"]) for row in max_tokens
              if row["model"] == model}

        def coef(tp: str, key: str) -> tuple[float, float, float]:
            a, b, c = data[tp][key]
            return float(a), float(b), float(c)

        return FittedStepTimes(
            prefill={int(tp): coef(tp, "prefill") for tp in data},
            decode_small={int(tp): coef(tp, "decoding_smallbs") for tp in data},
            decode_large={int(tp): coef(tp, "decoding_largebs") for tp in data},
            decode_threshold={int(tp): int(data[tp]["decoding_large_small_bs_threshold"]) for tp in data},
            kv_tokens=kv, source=f"DistServe's fitted step times for {model}",
        )

    def prefill_ms(self, group: ReplicaGroup, prompt_lens: Sequence[int]) -> float:
        """``a + b·Σlen + c·Σlen²``."""
        a, b, c = self.prefill[group.configuration.tp]
        total = sum(prompt_lens)
        squares = sum(x * x for x in prompt_lens)
        return a + b * total + c * squares

    def decode_step_ms(self, group: ReplicaGroup, batch: int, sum_ctx_tokens: int) -> float:
        """``a + b·Σctx + c·batch`` with the small- or large-batch fit."""
        tp = group.configuration.tp
        a, b, c = self.decode_small[tp] if batch < self.decode_threshold[tp] else self.decode_large[tp]
        return a + b * sum_ctx_tokens + c * batch

    def kv_capacity_tokens(self, group: ReplicaGroup) -> int:
        """The profiled KV-token capacity for the group's (TP, PP)."""
        c = group.configuration
        got = self.kv_tokens.get((c.tp, c.pp))
        return got if got is not None else self.kv_tokens[(c.tp, 1)] * c.pp

    def kv_transfer_ms(self, src: ReplicaGroup, dst: ReplicaGroup, tokens: int) -> float:
        """Bytes over the configured link, or 0 when not modelled."""
        if self.kv_transfer_gbps <= 0:
            return 0.0
        return tokens * self.kv_bytes_per_token / (self.kv_transfer_gbps * 1e9 / 8) * 1e3


GroupKey = tuple[str, Configuration]


class PerfStepTimes:
    """The performance model behind the replay: ``PerfModel`` answers cached per (group, batch, context).

    A batch of mixed prompt lengths is timed as ``batch`` prompts of the mean length; decode contexts are
    rounded to ``ctx_quantum_tokens`` per request so repeated steps hit the cache. ``source`` says whose model
    it is (the planner's own: the replay then checks queueing only).
    """

    def __init__(self, perf: PerfModel, fleet: FleetSpec, catalog: Catalog, *, ctx_quantum_tokens: int = 32,
                 source: str = PLANNER_MODEL) -> None:
        self.perf, self.catalog, self.quantum, self.source = perf, catalog, ctx_quantum_tokens, source
        self.models = {s.id: s.model for s in fleet.services}
        self.zones = {p.id: p.zone for p in fleet.pools}
        # Keyed by what a group is (service, configuration), not by id(): one StepTimes serves many plans, and
        # a finished plan's group ids are reused by the next plan's objects.
        self._shapes: dict[GroupKey, ReplicaShape] = {}
        self._decode: dict[tuple[GroupKey, int, int], float] = {}
        self._prefill: dict[tuple[GroupKey, int, int], float] = {}

    @property
    def description(self) -> str:
        """Whose model gives the step times; for a measured table, how much of what the replay asked it covered."""
        if not isinstance(self.perf, TablePerfModel):
            return self.source
        asked = covered = 0
        for phase, cache in (("prefill", self._prefill), ("decode", self._decode)):
            for gid, batch, tokens in cache:
                shape = self._shapes[gid]
                asked += 1
                covered += self.perf.lookup(shape, phase, batch, tokens) is not None
        share = covered / asked if asked else 0.0
        return (f"{self.source} (it covered {share:.0%} of the {asked} distinct steps the replay timed; the "
                "rest came from the planner's model)")

    @property
    def checks(self) -> str:
        """Queueing only on the planner's own model; queueing and step times on anything else."""
        return QUEUEING_ONLY if self.source == PLANNER_MODEL else INDEPENDENT_CHECKS

    def shape(self, group: ReplicaGroup) -> ReplicaShape:
        """The replica shape of a group (model from its service)."""
        key = (group.service, group.configuration)
        got = self._shapes.get(key)
        if got is None:
            c = group.configuration
            got = ReplicaShape(
                model=self.catalog.model(self.models[group.service]), device=self.catalog.device(c.device),
                tp=c.tp, pp=c.pp,
                memory_device=self.catalog.device(c.memory_device) if c.memory_device else None,
                memory_devices=c.memory_devices if c.memory_device else 0,
            )
            self._shapes[key] = got
        return got

    def prefill_ms(self, group: ReplicaGroup, prompt_lens: Sequence[int]) -> float:
        """Prefill of ``len(prompt_lens)`` prompts of their mean length."""
        n = len(prompt_lens)
        mean = max(1, round(sum(prompt_lens) / n))
        key = ((group.service, group.configuration), n, mean)
        got = self._prefill.get(key)
        if got is None:
            got = self.perf.prefill_ms(self.shape(group), n, mean)
            self._prefill[key] = got
        return got

    def decode_step_ms(self, group: ReplicaGroup, batch: int, sum_ctx_tokens: int) -> float:
        """One decode step, the per-request context rounded up to the quantum."""
        if batch <= 0:
            return 0.0  # no overhead credit for a mixed step: the model does not expose its intercept
        q = self.quantum
        ctx = max(1, -(-sum_ctx_tokens // (batch * q))) * q
        key = ((group.service, group.configuration), batch, ctx)
        got = self._decode.get(key)
        if got is None:
            got = self.perf.decode_step_ms(self.shape(group), batch, ctx)
            self._decode[key] = got
        return got

    def kv_capacity_tokens(self, group: ReplicaGroup) -> int:
        """KV tokens from the model's memory fit."""
        return int(self.perf.memory(self.shape(group)).kv_capacity_tokens)

    def kv_transfer_ms(self, src: ReplicaGroup, dst: ReplicaGroup, tokens: int) -> float:
        """KV bytes at the slower end's share of its nodes' NICs, plus a hop when the pools' zones differ
        (``planner.model.handoff``)."""
        a, b = self.shape(src), self.shape(dst)
        gbitps = min(handoff_nic_gbitps(a), handoff_nic_gbitps(b))
        cross = self.zones.get(src.pool) != self.zones.get(dst.pool)
        return float(handoff_ms(handoff_bytes(a.model, float(tokens)), gbitps, cross))

