"""The shipped catalog: values corrected from data sheets and from what the cards report, each sourced."""

from __future__ import annotations

import pytest

from planner.catalog import builtin_catalog
from planner.io.fleetfile import max_replica_memory_gib, parse_fleet
from planner.model.memory import GPU_MEMORY_UTILIZATION, NCCL_RESERVE_GIB, RESERVE_GIB_PER_DEVICE

CAT = builtin_catalog()


def test_a10g_is_not_an_a10() -> None:
    """AWS's A10G: 300 W board limit as nvidia-smi reports it on g5 (NVIDIA/DCGM#232), not the A10's 150 W;
    70 dense BF16 TFLOPS (80 SMs × 1710 MHz × 512 FLOP/clock), not the A10's 125; 23,028 MiB exposed."""
    a10g = CAT.device("a10g")
    assert a10g.tdp_watts == 300 and a10g.power_cap_watts_max == 300
    assert a10g.bf16_tflops == pytest.approx(80 * 1710e6 * 512 / 1e12, rel=0.01)
    assert a10g.runtime_memory_gib * 1024 == pytest.approx(23028, abs=1)
    assert a10g.nics_per_node == 1 and not a10g.pcie_p2p
    for fact in ("DCGM#232", "70 TFLOPS", "23,028 MiB", "one 100 Gbit/s ENA NIC"):
        assert fact in a10g.source


def test_cards_expose_less_memory_than_their_data_sheet() -> None:
    assert CAT.device("l4").runtime_memory_gib == pytest.approx(22.5, abs=0.02)  # REFERENCE §3
    assert CAT.device("h100-sxm").runtime_memory_gib * 1024 == pytest.approx(81559, abs=1)
    for d in CAT.devices.values():
        assert d.runtime_memory_gib <= d.memory_gib
        if d.usable_memory_gib is not None and d.usable_memory_gib < d.memory_gib:
            assert "MiB" in d.source, d.id


def test_gaudi3_has_its_fp8_peak() -> None:
    """Intel Gaudi 3: its MMEs give 1835 TFLOPS in BF16 and in FP8 alike."""
    g3 = CAT.device("gaudi3")
    assert g3.fp8_tflops == g3.bf16_tflops == 1835


def test_node_topology_is_declared() -> None:
    assert CAT.device("h100-sxm").all_to_all_domain == 8 and CAT.device("a100-40gb").all_to_all_domain == 8
    assert CAT.device("mi300x").all_to_all_domain == 8
    for pcie in ("a10g", "l4", "l40s", "t4"):
        assert CAT.device(pcie).all_to_all_domain == 1 and not CAT.device(pcie).pcie_p2p
    for d in CAT.devices.values():
        assert d.source and d.as_of, d.id


def test_validate_budgets_memory_as_the_model_does() -> None:
    """One memory budget: validation's largest replica uses the model's share (0.9), reserve (1.5 GiB per
    device, 0.4 GiB more for NCCL across devices) and the memory the card exposes."""
    a10g = CAT.device("a10g")
    model = CAT.model("codellama-34b")
    expected = 4 * (23028 / 1024 * GPU_MEMORY_UTILIZATION - RESERVE_GIB_PER_DEVICE - NCCL_RESERVE_GIB)
    assert max_replica_memory_gib(model, a10g, 4) == pytest.approx(expected, rel=1e-3)
    text = """\
pools:
  - {id: g5, device: a10g, devices_per_node: 8, max_nodes: 1, price_book: aws-us-east-1-2026q1}
services:
  - id: code
    model: codellama-34b
    traffic: {rate_rps: 1, buckets: [{input_tokens: 512, output_tokens: 64, share: 1.0}]}
    slo: {ttft_ms: 2000, tpot_ms: 100}
planner: {tp_options: [1, 2], pp_options: [1]}
"""
    # 2 × (22.5 × 0.9 − 1.9) = 36.7 GiB for 63 GiB of weights
    with pytest.raises(ValueError, match="holds 37 GiB: it fits no device"):
        parse_fleet(text, "f.yaml")
