"""The capacity model against the replay on the same step times: at the rate capacity gives one replica the
replay meets the SLO (the model is never optimistic), and not far below the replay's own largest rate; for
pipelines and the batch cap too. Both run on the planner's model, so this checks the queueing, not the steps."""

from __future__ import annotations

import math

import numpy as np
import pytest

from planner.catalog import builtin_catalog
from planner.io.profiles import default_perf_model
from planner.model.capacity import ServingLimits, capacity_table
from planner.model.perf import ReplicaShape
from planner.replay import Arrivals, PerfStepTimes, ReplayOptions, max_rate_meeting_slo, replay
from planner.replay.report import ServiceReplay
from planner.schema import (
    SLO,
    Configuration,
    FleetSpec,
    LengthBucket,
    Plan,
    Pool,
    ReplicaGroup,
    Role,
    Service,
    SolverReport,
    Traffic,
)

CAT = builtin_catalog()
PM = default_perf_model()
CHAT = SLO(ttft_ms=1000, tpot_ms=60)
ENGINE = ReplayOptions(chunked_prefill=False, max_batched_tokens=8192, max_batch=256)  # planner_engine's


def _fleet(device: str, inp: int, out: int) -> FleetSpec:
    return FleetSpec(pools=[Pool(id="p", device=device, max_nodes=100, price_usd_per_device_hour=1.0)],
                     services=[Service(id="s", model="llama-3-8b", slo=CHAT, traffic=Traffic(
                         rate_rps=1.0, buckets=[LengthBucket(input_tokens=inp, output_tokens=out, share=1.0)]))])


def _plan(device: str, groups: list[tuple[Role, int, int, int]]) -> Plan:
    return Plan(fleet="t", cost_usd_per_hour=0.0, solver=SolverReport(backend="t", status="optimal"),
                replica_groups=[ReplicaGroup(service="s", pool="p", replicas=n, expected_watts=0.0,
                                             cost_usd_per_hour=0.0,
                                             configuration=Configuration(device=device, tp=tp, pp=pp, role=role))
                                for role, tp, pp, n in groups])


def _replay(plan: Plan, fleet: FleetSpec, rate: float, inp: int, out: int, engine: ReplayOptions = ENGINE,
            n: int = 2500) -> ServiceReplay:
    rng = np.random.default_rng(0)
    arrivals = {"s": Arrivals(np.cumsum(rng.exponential(1 / rate, n)), np.full(n, inp), np.full(n, out))}
    return replay(plan, fleet, CAT, PerfStepTimes(PM, fleet, CAT), arrivals, engine).services[0]


def _agreement(device: str, role: Role, pp: int, inp: int, out: int, partner: tuple[Role, int, int, int] | None = None,
               engine: ReplayOptions = ENGINE) -> tuple[float, float, ServiceReplay]:
    """(capacity, replay's largest rate meeting the SLO, replay at the capacity rate) of one replica."""
    fleet = _fleet(device, inp, out)
    shape = ReplicaShape(model=CAT.model("llama-3-8b"), device=CAT.device(device), tp=1, pp=pp)
    cap = capacity_table(PM, shape, role, [LengthBucket(input_tokens=inp, output_tokens=out, share=1.0)], CHAT,
                         ServingLimits(max_num_seqs=engine.max_batch))[0]
    plan = _plan(device, [(role, 1, pp, 1), *([partner] if partner else [])])
    best = max_rate_meeting_slo(lambda r: _replay(plan, fleet, r, inp, out, engine).meets_slo, 0.05, 2.5 * cap.rps,
                                tolerance_rps=0.03 * cap.rps)
    return cap.rps, best, _replay(plan, fleet, cap.rps, inp, out, engine)


def test_unified_capacity_agrees_with_replay() -> None:
    """A10G, Llama-3-8B, 1,024 in / 256 out: capacity 0.84 req/s, the replay's largest rate 0.82 (prompts
    that queue are prefilled together in the replay, as vLLM does, which the model times one by one)."""
    cap, best, _ = _agreement("a10g", Role.UNIFIED, 1, 1024, 256)
    print(f"\nunified: capacity {cap:.3f}, replay {best:.3f} req/s")
    assert 0.95 * cap <= best <= 1.15 * cap


@pytest.mark.parametrize("pp", [1, 2])
def test_pipeline_decode_capacity_agrees_with_replay(pp: int) -> None:
    """PP decode runs pp micro-batches in both (A10G: 1.67 req/s at PP1, KV-bound; 7.29 at PP2, where each
    stage holds half the weights and the batch grows until TPOT binds)."""
    cap, best, at_cap = _agreement("a10g", Role.DECODE, pp, 1024, 256, (Role.PREFILL, 1, 1, 20))
    print(f"\ndecode pp{pp}: capacity {cap:.3f}, replay {best:.3f} req/s; attainment at capacity "
          f"{at_cap.attainment:.3f}")
    assert at_cap.meets_slo
    assert cap <= best <= 1.2 * cap


def test_pipeline_prefill_capacity_is_never_optimistic() -> None:
    """PP2 prefill: each of the two engines is its own queue in the model; the replay gives a prompt to the
    least-loaded engine (as vLLM does with its virtual engines), which pools them, so it sustains more (about
    1.6×; the admission allowance of two decode steps at the TPOT target is the rest of the margin)."""
    cap, best, at_cap = _agreement("a10g", Role.PREFILL, 2, 1024, 256, (Role.DECODE, 1, 1, 20))
    print(f"\nprefill pp2: capacity {cap:.3f}, replay {best:.3f} req/s")
    assert at_cap.meets_slo and cap <= best <= 1.8 * cap


@pytest.mark.parametrize("max_num_seqs", [256, 64])
def test_batch_cap_binds_in_both(max_num_seqs: int) -> None:
    """H100 decode of 256/128 requests is held by max_num_seqs in the model and in the replay (cap 256: 147
    req/s in the model, 161 in the replay; cap 64: 56 and 67). The model keeps the batch's 95th percentile
    within the cap; the replay fills the cap and lets the rest wait for admission, which TTFT still allows."""
    engine = ReplayOptions(chunked_prefill=False, max_batched_tokens=8192, max_batch=max_num_seqs)
    cap, best, at_cap = _agreement("h100-sxm", Role.DECODE, 1, 256, 128, (Role.PREFILL, 1, 1, 20), engine)
    print(f"\nbatch cap {max_num_seqs}: capacity {cap:.1f}, replay {best:.1f} req/s")
    assert at_cap.meets_slo and cap <= best <= 1.25 * cap
    small = capacity_table(PM, ReplicaShape(model=CAT.model("llama-3-8b"), device=CAT.device("h100-sxm"), tp=1),
                           Role.DECODE, [LengthBucket(input_tokens=256, output_tokens=128, share=1.0)], CHAT,
                           ServingLimits(max_num_seqs=max_num_seqs))[0]
    z = 1.6448536269514722
    assert small.limited_by == "max-num-seqs"
    assert small.batch + z * math.sqrt(small.batch) == pytest.approx(max_num_seqs)


def test_pipeline_prefill_gains_nothing_over_tp1_replicas_in_either() -> None:
    """A10G, Llama-3-8B, 1,024-token prompts: one PP2 prefill replica against two TP1 prefill replicas (the
    same two devices). The model gives them the same rate within 10% (PP2 3.28 req/s, two TP1 3.03: each
    pipeline stage sends its own layers' KV cache, over two devices' NIC shares); the replay, whose router pools
    the pipeline's engines and the replicas alike, gives both 5.27."""
    fleet, partner = _fleet("a10g", 1024, 256), (Role.DECODE, 1, 1, 20)
    b = [LengthBucket(input_tokens=1024, output_tokens=256, share=1.0)]
    tp1, pp2 = (capacity_table(PM, ReplicaShape(model=CAT.model("llama-3-8b"), device=CAT.device("a10g"), tp=1,
                                                pp=pp), Role.PREFILL, b, CHAT)[0].rps for pp in (1, 2))
    assert pp2 == pytest.approx(2 * tp1, rel=0.10)
    best = []
    for groups in ([(Role.PREFILL, 1, 2, 1), partner], [(Role.PREFILL, 1, 1, 2), partner]):
        plan = _plan("a10g", groups)
        best.append(max_rate_meeting_slo(lambda r, p=plan: _replay(p, fleet, r, 1024, 256).meets_slo, 0.05,
                                         2.5 * pp2, tolerance_rps=0.03 * pp2))
    print(f"\nprefill: capacity PP2 {pp2:.3f} vs 2 x TP1 {2 * tp1:.3f}; replay PP2 {best[0]:.3f} vs 2 x TP1 "
          f"{best[1]:.3f} req/s")
    assert best[0] == pytest.approx(best[1], rel=0.10)
