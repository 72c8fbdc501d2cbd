"""Collectives by topology, checked against measured times written here (aiconfigurator's NCCL 2.27.3 and vLLM
custom all-reduce tables; Vidur's DGX send/recv)."""

from __future__ import annotations

import numpy as np
import pytest

from planner.catalog import builtin_catalog
from planner.io.profiles import calibration_for, shipped_calibration
from planner.model.calibration import Calibration
from planner.model.collectives import CollectiveCurve, EngineCollectives, LinkProfile, pipeline_hops
from planner.model.perf import ReplicaShape
from planner.schema import DeviceType

CAT = builtin_catalog()
KIB, MIB = 1024, 1024 * 1024


def coll_ms(device: str, engine: str, message: float, n: int) -> float:
    return float(calibration_for(engine).collectives(CAT.device(device)).all_reduce_ms(message, n))


# Measured on 8 PCIe-only L40S (no NVLink; the fabric of A10G and L4 nodes), NCCL 2.27.3: bus bandwidth
# falls to ~1.5 GB/s, so 0.5 MiB takes 503 µs and 32 MiB 38.9 ms (the ring formula gave 137 µs and 3.1 ms).
@pytest.mark.parametrize("device", ["a10g", "l4", "l40s"])
@pytest.mark.parametrize(("message", "measured_us"), [(0.5 * MIB, 502.6), (32 * MIB, 38854.0)])
def test_pcie_8_gpu_all_reduce_within_25pct_of_measured(device: str, message: float, measured_us: float) -> None:
    # vLLM turns its custom kernel off on more than two PCIe-only GPUs: NCCL is what runs.
    assert coll_ms(device, "vllm", message, 8) * 1e3 == pytest.approx(measured_us, rel=0.25)


def test_pcie_all_reduce_grows_with_gpu_count() -> None:
    """Measured 32 MiB: 1.69 ms on 2, 9.84 ms on 4, 38.9 ms on 8 PCIe GPUs: more GPUs share the host path."""
    t = [coll_ms("a10g", "vllm", 32 * MIB, n) * 1e3 for n in (2, 4, 8)]
    assert t == pytest.approx([1689.3, 9836.6, 38854.0], rel=0.25)
    assert t[0] < t[1] < t[2]


@pytest.mark.parametrize(("engine", "measured_us"), [("vllm", 11.99), ("vllm-2023", 19.51)])
def test_nvlink_8_gpu_512_kib_within_25pct(engine: str, measured_us: float) -> None:
    """8×H100 SXM, 512 KiB: vLLM's custom kernel 12.0 µs, NCCL 19.5 µs (the old fit: 23.9 µs + 2 µs a hop)."""
    assert coll_ms("h100-sxm", engine, 512 * KIB, 8) * 1e3 == pytest.approx(measured_us, rel=0.25)


def test_same_chip_other_memory_shares_the_fabric() -> None:
    """H200 has H100's NVLink 4 / NVSwitch; A100 40 GB the A100 80 GB's NVLink 3."""
    assert coll_ms("h200-sxm", "vllm", 512 * KIB, 8) == coll_ms("h100-sxm", "vllm", 512 * KIB, 8)
    # A100 SXM, 8 GPUs, 32 MiB, NCCL: 367 µs (custom above 8 MiB is not used)
    assert coll_ms("a100-40gb", "vllm", 32 * MIB, 8) * 1e3 == pytest.approx(367.0, rel=0.05)


def test_custom_kernel_choice_follows_vllm_rules() -> None:
    vllm = EngineCollectives(custom_allreduce=True)
    h100, a10g = CAT.device("h100-sxm"), CAT.device("a10g")
    p2p = a10g.model_copy(update={"pcie_p2p": True})
    assert vllm.uses_custom(h100, 8) and vllm.uses_custom(h100, 2)
    assert not vllm.uses_custom(h100, 3)  # world sizes 2, 4, 6, 8 only
    assert not vllm.uses_custom(a10g, 2)  # cloud VMs expose no peer-to-peer access
    assert vllm.uses_custom(p2p, 2) and not vllm.uses_custom(p2p, 4)  # more than two PCIe-only GPUs: off
    assert not EngineCollectives(custom_allreduce=False).uses_custom(h100, 8)
    # Above 8 MiB vLLM falls back to NCCL: measured 32 MiB on 8×H100 NCCL 199.9 µs
    assert coll_ms("h100-sxm", "vllm", 32 * MIB, 8) * 1e3 == pytest.approx(199.9, rel=0.05)


def test_curve_is_flat_below_and_bandwidth_bound_above_its_sizes() -> None:
    c = CollectiveCurve(2, (1e5, 1e6, 1e7), (10.0, 20.0, 110.0))
    assert c.time_us(1e3) == pytest.approx(10.0)  # a smaller message is no faster than the latency floor
    assert float(c.time_us(np.sqrt(1e5 * 1e6))) == pytest.approx(np.sqrt(10.0 * 20.0))  # log-log inside
    assert c.time_us(2e7) == pytest.approx(110.0 + 1e7 * 90.0 / 9e6)  # the last segment's bandwidth
    with pytest.raises(ValueError, match="rise"):
        CollectiveCurve(2, (2.0, 1.0), (1.0, 2.0))


def test_slower_link_scales_only_where_the_link_is_the_bottleneck() -> None:
    """T4 (PCIe Gen3, 16 GB/s) on the PCIe curves measured with Gen4: two GPUs are link-bound (twice the
    time for large messages); on 8 the host path already limits the measured machine (~1.4 GB/s bus)."""
    prof = shipped_calibration().links["pcie"]
    t4, a10g = CAT.device("t4"), CAT.device("a10g")
    two = coll_ms("t4", "vllm", 32 * MIB, 2) / coll_ms("a10g", "vllm", 32 * MIB, 2)
    eight = coll_ms("t4", "vllm", 32 * MIB, 8) / coll_ms("a10g", "vllm", 32 * MIB, 8)
    assert two == pytest.approx(2.0, rel=0.15)
    assert eight == pytest.approx(1.0, rel=0.05)
    assert prof.scaled(1e6, a10g, 8) == 1e6 and prof.scaled(1e6, t4, 2) > 1.9e6


def test_send_within_and_across_nodes() -> None:
    """Vidur, NCCL send/recv of 16 MiB: 54 µs between two H100s of a DGX, 480 µs between two DGX-H100s."""
    coll = calibration_for("vllm").collectives(CAT.device("h100-sxm"))
    assert float(coll.send_ms(16 * MIB)) * 1e3 == pytest.approx(54.0, rel=0.1)
    assert float(coll.send_ms(16 * MIB, cross_node=True)) * 1e3 == pytest.approx(480.0, rel=0.1)
    # A fabric without send measurements uses its 2-GPU all-reduce curve (the same bytes over each link).
    pcie = calibration_for("vllm").collectives(CAT.device("a10g"))
    assert float(pcie.send_ms(32 * MIB)) * 1e3 == pytest.approx(1689.3, rel=0.05)


def test_pipeline_boundaries_cross_nodes_only_between_nodes() -> None:
    m = CAT.model("llama-2-70b")
    h100 = CAT.device("h100-sxm")
    assert pipeline_hops(ReplicaShape(model=m, device=h100, tp=4, pp=2)) == (1, 0)
    assert pipeline_hops(ReplicaShape(model=m, device=h100, tp=8, pp=2)) == (0, 1)
    assert pipeline_hops(ReplicaShape(model=m, device=h100, tp=2, pp=8)) == (6, 1)


def test_nics_are_shared_by_the_node() -> None:
    """AWS g5/g6 nodes have one 100 Gbit/s NIC for eight GPUs; HGX H100 one 400 Gbit/s NIC per GPU."""
    assert CAT.device("a10g").nic_gbitps_per_device() == pytest.approx(12.5)
    assert CAT.device("a10g").nic_gbitps_per_device(4) == pytest.approx(25.0)
    assert CAT.device("h100-sxm").nic_gbitps_per_device() == 400.0


def test_fabric_without_measurement_uses_the_ring_formula() -> None:
    mi300x = CAT.device("mi300x")
    coll = shipped_calibration().collectives(mi300x)
    assert coll.profile is None
    eff = shipped_calibration().efficiency("mi300x", mi300x)
    # α + 2(N−1)·λ + 2(N−1)/N · M / (BW·η), λ = 3 µs on Infinity Fabric
    expected = (eff.ar_base_us + 2 * 7 * 3.0) / 1e3 + 2 * 7 / 8 * 8e6 / (mi300x.link_gbps * 1e6 * eff.link_efficiency)
    assert float(coll.all_reduce_ms(8e6, 8)) == pytest.approx(expected)


def test_link_profile_round_trips_through_the_calibration_mapping() -> None:
    cal = shipped_calibration()
    again = Calibration.from_mapping(cal.to_mapping())
    for name, prof in cal.links.items():
        got: LinkProfile = again.links[name]
        assert got.link_gbps == prof.link_gbps and set(got.all_reduce) == set(prof.all_reduce)
        assert got.all_reduce["nccl"][8].us == pytest.approx(prof.all_reduce["nccl"][8].us, abs=1e-3)


def test_device_without_topology_fields_keeps_defaults() -> None:
    base = CAT.device("l4").model_dump()
    for key in ("pcie_p2p", "nvlink_domain", "nics_per_node", "usable_memory_gib"):
        base.pop(key)
    plain = DeviceType.model_validate({**base, "id": "plain"})
    assert plain.pcie_p2p is False and plain.all_to_all_domain == 1
    assert plain.nic_gbitps_per_device() == plain.nic_gbitps and plain.runtime_memory_gib == plain.memory_gib
    nv = plain.model_copy(update={"link_kind": "nvlink"})
    assert nv.all_to_all_domain == nv.max_devices_per_node
