"""The public profiles the performance model is calibrated on, loaded as ``planner.model.fit.Group`` values.

Sources (in ``benchmarks/data/profiles``, see ATTRIBUTION.md there):

* ``vidur``: per-operator CUDA times (A100-80GB, H100, A40) of Llama-2-7B/70B, Llama-3-8B/70B, CodeLlama-34B,
  InternLM-20B, Qwen-72B against tokens and TP → the sum of a layer's dense operators (no overhead, no
  communication); plus NCCL all-reduce times within a DGX, scored against the measured fabric curves (a
  check: nothing is fitted on them), and NCCL send/recv times within and across DGX nodes → the send curves
  of the A100 and H100 fabrics.
* ``collectives`` (not a source of groups: :func:`load_links`): aiconfigurator's measured all-reduce of NCCL
  2.27 and vLLM's custom kernel on 2/4/8 H100 SXM, A100 SXM and L40S (PCIe only) → the measured fabrics.
* ``helix``: vLLM per-layer times of Llama-2-70B and LLaMA-1-30B on A100-40GB, L4, L4×2, T4, T4×2, T4×4
  (×N = TP over PCIe). Assumed, as the profiles do not say: a prompt batch of ``x`` tokens is made of
  sequences of at most 1024 tokens, and decode requests hold 1024 tokens of context.
* ``distserve``: DistServe's fitted vLLM latency (A100-80GB, OPT-13B TP1/2/4, OPT-66B TP2/3/4/8):
  ``prefill = a + b·Σlen + c·Σlen²``, ``decode = a + b·Σctx + c·B``, sampled inside the fitted ranges.
  They calibrate engine ``vllm-2023`` (the others engine ``vllm``).
* ``splitwise``: Splitwise's characterisation runs (splitwise-sim ``data/perf_model.csv``): prompt and
  token times of Llama-2-70B (TP2/4/8) and BLOOM-176B (TP8) on DGX-A100 and DGX-H100, batches 1–64, prompts
  128–8192 tokens; the measurements behind REFERENCE §1's flat 43–46 / 28–31 ms decode steps and §2's
  TTFTs. They calibrate engine ``splitwise-2023``: a 2023 engine whose host overhead grows with TP (a
  host-bound step), neither today's ``vllm`` nor DistServe's ``vllm-2023``.

Engine ``vllm`` (current releases) is calibrated on Vidur's kernels and Helix's vLLM per-layer times; the
measured fabrics give its collectives. Held out in turn (``HELD_OUT_SOURCES``), devices the training sources
do not cover start from generic seeds read off their data sheets (``planner.model.calibration.generic_seed``):
the REFERENCE seeds were read off these same data.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import numpy.typing as npt

from planner.catalog import builtin_catalog
from planner.model.calibration import PCIE_CLASS
from planner.model.collectives import CollectiveCurve, LinkProfile
from planner.model.fit import Group
from planner.schema import ModelSpec

FloatArray = npt.NDArray[np.float64]
PROFILES = Path(__file__).resolve().parent / "data" / "profiles"
SOURCES = ("vidur", "helix", "distserve", "splitwise")
HELD_OUT_SOURCES = ("vidur", "helix", "distserve", "splitwise")
# DistServe profiled the vLLM of mid-2023 (before CUDA graphs), whose per-step host overhead is several
# times today's: its fits calibrate an engine of their own (with Splitwise's), not the default one.
DISTSERVE_ENGINE = "vllm-2023"
HELIX_MAX_SEQ_TOKENS = 1024
HELIX_DECODE_CONTEXT = 1024

LLAMA_1_30B = ModelSpec(id="llama-1-30b", name="LLaMA-1-30B", num_layers=60, hidden_size=6656, num_heads=52,
                        num_kv_heads=52, ffn_hidden_size=17920, vocab_size=32000, max_context_tokens=2048,
                        source="LLaMA paper (Touvron et al., 2023), table 2", as_of="2023-02")
VIDUR_DEVICES = {"a100": "a100-80gb", "h100": "h100-sxm", "a40": "a40"}
HELIX_DEVICES = {"a100": ("a100-40gb", 1), "l4": ("l4", 1), "l4x2": ("l4", 2), "t4": ("t4", 1),
                 "t4x2": ("t4", 2), "t4x4": ("t4", 4)}
HELIX_MODELS = {"llama2_70b": "llama-2-70b", "llama1_30b": "llama-1-30b"}
DISTSERVE_MODELS = {"facebook/opt-13b": "opt-13b", "facebook/opt-66b": "opt-66b"}
VIDUR_OPS = ("input_layernorm", "attn_pre_proj", "attn_rope", "attn_post_proj", "post_attention_layernorm",
             "mlp_up_proj", "mlp_act", "mlp_down_proj", "add")


def _vidur_model(row: dict[str, str], name: str) -> ModelSpec:
    h, n_h = int(row["n_embd"]), int(row["n_head"])
    return ModelSpec(id=name.split("/")[-1].lower().replace("_", "-")[:60].strip("-."), name=name,
                     num_layers=1, hidden_size=h, num_heads=n_h, num_kv_heads=int(row["n_kv_head"]),
                     ffn_hidden_size=int(row["n_expanded_embd"]), vocab_size=int(row["vocab_size"]),
                     gated_mlp=row["use_gated_mlp"].strip().lower() == "true")


def load_vidur(root: Path = PROFILES / "vidur") -> list[Group]:
    """Per-layer dense-operator sums and all-reduce times from the reduced Vidur profiles."""
    cat = builtin_catalog()
    acc: dict[tuple[str, str, int], tuple[ModelSpec, list[float], list[float]]] = {}
    with (root / "compute_median.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            key = (row["device"], row["model"], int(row["tp"]))
            if key not in acc:
                acc[key] = (_vidur_model(row, row["model"]), [], [])
            acc[key][1].append(float(row["num_tokens"]))
            acc[key][2].append(sum(float(row[f"{op}_ms"]) for op in VIDUR_OPS))
    groups = []
    for (label, _, tp), (model, toks, times) in acc.items():
        t = np.array(toks)
        groups.append(Group("vidur", label, cat.device(VIDUR_DEVICES[label]), model, tp, "dense", "prefill",
                            np.ones_like(t), t, np.array(times)))
    ar: dict[tuple[str, int], list[tuple[float, float]]] = {}
    with (root / "network_median.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            system = row["system"]
            if row["collective"] != "all_reduce" or not system.endswith("_dgx"):
                continue
            n = int(row["num_workers"])
            if int(row["devices_per_node"]) != n or int(row["size_bytes"]) < 1 << 16:
                continue  # one node, messages of 64 KiB and more (decode's all-reduces are smaller still)
            ar.setdefault((system.split("_")[0], n), []).append((float(row["size_bytes"]),
                                                                 float(row["time_ms"])))
    dummy = cat.model("llama-2-7b")
    for (label, n), pts in ar.items():
        size = np.array([p[0] for p in pts])
        groups.append(Group("vidur", label, cat.device(VIDUR_DEVICES[label]), dummy, n, "allreduce", "prefill",
                            np.ones_like(size), size, np.array([p[1] for p in pts])))
    return groups


def _read_pairs(path: Path) -> tuple[FloatArray, FloatArray]:
    xs, ys = [], []
    with path.open(newline="") as fh:
        for row in csv.reader(fh):
            if len(row) < 2 or not row[0].strip() or float(row[0]) <= 0:
                continue
            xs.append(float(row[0]))
            ys.append(float(row[1]))
    return np.array(xs), np.array(ys)


def load_helix(root: Path = PROFILES / "helix") -> list[Group]:
    """vLLM per-layer times (prompt: tokens in the batch; decode: sequences in the batch)."""
    cat = builtin_catalog()
    groups = []
    for mdir, mid in HELIX_MODELS.items():
        model = LLAMA_1_30B if mid == "llama-1-30b" else cat.model(mid)
        for label, (dev, tp) in HELIX_DEVICES.items():
            base = root / mdir / label
            if not base.is_dir():
                continue
            x, y = _read_pairs(base / "prompt_bs2time.csv")
            seq = np.minimum(x, HELIX_MAX_SEQ_TOKENS)
            groups.append(Group("helix", label, cat.device(dev), model, tp, "layer", "prefill", x / seq, seq, y))
            x, y = _read_pairs(base / "decode_bs2time.csv")
            groups.append(Group("helix", label, cat.device(dev), model, tp, "layer", "decode", x,
                                np.full_like(x, HELIX_DECODE_CONTEXT), y))
    return groups


def load_distserve(root: Path = PROFILES / "distserve") -> list[Group]:
    """Points sampled from DistServe's fitted vLLM latency model inside its fitted range."""
    cat = builtin_catalog()
    a100 = cat.device("a100-80gb")
    data = json.loads((root / "profiler-a100-80g.vllm.json").read_text())
    kv_tokens: dict[tuple[str, int], int] = {}
    with (root / "max_num_tokens.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            if int(row["pp"]) == 1:
                kv_tokens[(row["model"], int(row["tp"]))] = int(row["max_num_tokens"])
    groups = []
    for hf, per_tp in data.items():
        if hf not in DISTSERVE_MODELS:
            continue
        model = cat.model(DISTSERVE_MODELS[hf])
        for tp_text, c in per_tp.items():
            tp = int(tp_text)
            a, b, q = c["prefill"]
            lens = np.array([128.0, 256, 512, 1024, 1536, 2048])
            groups.append(Group("distserve", f"a100-80gb-tp{tp}", a100, model, tp, "step", "prefill",
                                np.ones_like(lens), lens, a + b * lens + q * lens**2, DISTSERVE_ENGINE))
            thr = c["decoding_large_small_bs_threshold"]
            bs, ctx = np.meshgrid(np.array([1.0, 8, 32, 64, 128, 192]), np.array([256.0, 512, 1024]))
            bs, ctx = bs.ravel(), ctx.ravel()
            # Only batches whose KV cache fits (the fits extrapolate wildly beyond what was profiled).
            inside = bs * ctx <= kv_tokens.get((hf, tp), 0)
            bs, ctx = bs[inside], ctx[inside]
            if len(bs) == 0:
                continue
            small, large = c["decoding_smallbs"], c["decoding_largebs"]
            t = np.where(bs < thr, small[0] + small[1] * bs * ctx + small[2] * bs,
                         large[0] + large[1] * bs * ctx + large[2] * bs)
            groups.append(Group("distserve", f"a100-80gb-tp{tp}", a100, model, tp, "step", "decode",
                                bs, ctx, t, DISTSERVE_ENGINE))
    return groups


BLOOM_176B = ModelSpec(id="bloom-176b", name="BLOOM-176B", num_layers=70, hidden_size=14336, num_heads=112,
                       num_kv_heads=112, ffn_hidden_size=57344, vocab_size=250880, gated_mlp=False,
                       tied_embeddings=True, max_context_tokens=2048,
                       source="BLOOM paper (BigScience, 2022), table 1", as_of="2022-11")
SPLITWISE_MODELS = {"llama2-70b": "llama-2-70b", "bloom-176b": "bloom-176b"}
SPLITWISE_DEVICES = {"a100-80gb": "a100-80gb", "h100-80gb": "h100-sxm"}  # h100-80gb-pcap: power-capped, left out
SPLITWISE_ENGINE = "splitwise-2023"  # the engine of Splitwise's characterisation (planner.model.calibration)


def load_splitwise(root: Path = PROFILES / "splitwise") -> list[Group]:
    """Splitwise's characterisation runs on DGX-A100 / DGX-H100 (``perf_model.csv``, five repeats each: the
    median is kept): Llama-2-70B at TP2/4/8 and BLOOM-176B at TP8, batches 1–64, prompts 128–8192 tokens.

    * prefill: ``prompt_time`` of a batch of ``batch_size`` prompts of ``prompt_size`` tokens. Batch-64 rows
      are left out: their prompt times fall below batch 32's (794 vs 6,633 ms on A100 TP2), which no
      prefill of twice the tokens does;
    * decode: ``token_time``, the mean time between tokens of the batch, at the mean context of the
      generation (prompt + output/2).

    The engine (2023) is host-bound: its steps stay at ~45 ms on A100 and ~30 ms on H100 at TP4 and TP8
    whatever the batch (REFERENCE §1), and its host cost grows with TP faster than DistServe's vLLM's (A100,
    TP4 → TP8: +11 ms against +3 ms), so it calibrates an engine of its own, ``splitwise-2023``.
    """
    cat = builtin_catalog()
    rows: dict[tuple[str, str, int, int, int, int], list[tuple[float, float]]] = {}
    with (root / "perf_model.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            if row["hardware"] not in SPLITWISE_DEVICES:
                continue
            key = (row["model"], row["hardware"], int(row["tensor_parallel"]), int(row["batch_size"]),
                   int(row["prompt_size"]), int(row["token_size"]))
            rows.setdefault(key, []).append((float(row["prompt_time"]), float(row["token_time"])))
    pre: dict[tuple[str, str, int], list[tuple[float, float, float]]] = {}
    dec: dict[tuple[str, str, int], list[tuple[float, float, float]]] = {}
    for (model, hw, tp, batch, prompt, out), times in rows.items():
        key = (model, hw, tp)
        if batch < 64:
            pre.setdefault(key, []).append((batch, prompt, float(np.median([t[0] for t in times]))))
        dec.setdefault(key, []).append((batch, prompt + out / 2, float(np.median([t[1] for t in times]))))
    groups = []
    for phase, table in (("prefill", pre), ("decode", dec)):
        for (model, hw, tp), pts in sorted(table.items()):
            spec = BLOOM_176B if model == "bloom-176b" else cat.model(SPLITWISE_MODELS[model])
            arr = np.array(sorted(pts))
            dev = SPLITWISE_DEVICES[hw]
            groups.append(Group("splitwise", f"{dev}-tp{tp}", cat.device(dev), spec, tp, "step", phase,
                                arr[:, 0], arr[:, 1], arr[:, 2], SPLITWISE_ENGINE))
    return groups


# aiconfigurator's device names → the fabric they measure (the L40S box stands for every PCIe-only node).
COLLECTIVE_FABRICS = {"h100-sxm": "h100-sxm", "a100-80gb": "a100-80gb", "l40s": PCIE_CLASS}
VIDUR_SEND_SYSTEMS = {"h100-sxm": "h100_dgx", "a100-80gb": "a100_dgx"}
COLLECTIVES_SOURCE = ("aiconfigurator @ 095f58a: NCCL 2.27.3 and vLLM custom all-reduce (benchmarks/data/profiles/"
                      "collectives)")


def _curve(gpus: int, points: list[tuple[float, float]]) -> CollectiveCurve:
    """A curve from (bytes, µs) points, repeated sizes replaced by their median."""
    by_size: dict[float, list[float]] = {}
    for b, t in points:
        by_size.setdefault(b, []).append(t)
    sizes = sorted(by_size)
    return CollectiveCurve(gpus, tuple(sizes), tuple(float(np.median(by_size[b])) for b in sizes))


def _vidur_send(root: Path, system: str) -> dict[str, CollectiveCurve]:
    """Vidur's NCCL send/recv between two GPUs of one DGX (``intra``) and of two DGX nodes (``inter``)."""
    pts: dict[str, list[tuple[float, float]]] = {}
    with (root / "network_median.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            if row["system"] != system or row["collective"] != "send_recv" or int(row["num_workers"]) != 2:
                continue
            where = "intra" if int(row["devices_per_node"]) == 2 else "inter"
            pts.setdefault(where, []).append((float(row["size_bytes"]), float(row["time_ms"]) * 1e3))
    return {k: _curve(2, v) for k, v in pts.items()}


def load_links(root: Path = PROFILES) -> dict[str, LinkProfile]:
    """The measured fabrics: all-reduce curves by kernel and GPU count (aiconfigurator), send curves
    within and across nodes (Vidur, A100/H100 DGX)."""
    cat = builtin_catalog()
    curves: dict[str, dict[str, dict[int, list[tuple[float, float]]]]] = {}
    with (root / "collectives" / "allreduce_measured.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            fabric = COLLECTIVE_FABRICS[row["device"]]
            n, size = int(row["gpus"]), float(row["bytes"])
            for kernel, col in (("nccl", "nccl_us"), ("custom", "vllm_custom_allreduce_us")):
                curves.setdefault(fabric, {}).setdefault(kernel, {}).setdefault(n, []).append((size, float(row[col])))
    links = {}
    for device, fabric in COLLECTIVE_FABRICS.items():
        system = VIDUR_SEND_SYSTEMS.get(device)
        send = _vidur_send(root / "vidur", system) if system else {}
        source = COLLECTIVES_SOURCE + (f"; NCCL send/recv: Vidur {system}" if system else "")
        links[fabric] = LinkProfile(fabric, cat.device(device).link_gbps,
                                    {k: {n: _curve(n, pts) for n, pts in by_n.items()}
                                     for k, by_n in curves[fabric].items()}, send, source)
    return links


MEASURED = Path(__file__).resolve().parent / "data" / "measured"
HELIX_MEASUREMENTS = MEASURED / "helix_llama2_70b.csv"


def helix_measurement_rows(root: Path = PROFILES / "helix") -> list[dict[str, object]]:
    """Helix's Llama-2-70B per-layer vLLM times as ``medley perf calibrate`` rows (``scope: layer``): a prompt
    batch of ``x`` tokens as ``⌈x/1024⌉`` prompts of equal length (the profiles do not say; the same
    1024-token cap as :func:`load_helix`), a decode batch of ``x`` sequences at 1024 tokens of context."""
    rows: list[dict[str, object]] = []
    for label, (dev, tp) in HELIX_DEVICES.items():
        base = root / "llama2_70b" / label
        for phase, name in (("prefill", "prompt_bs2time.csv"), ("decode", "decode_bs2time.csv")):
            xs, ys = _read_pairs(base / name)
            for x, y in zip(xs, ys, strict=True):
                batch = int(np.ceil(x / HELIX_MAX_SEQ_TOKENS)) if phase == "prefill" else int(x)
                tokens = int(round(x / batch)) if phase == "prefill" else HELIX_DECODE_CONTEXT
                rows.append({"model": "llama-2-70b", "device": dev, "tp": tp, "pp": 1, "phase": phase,
                             "batch": batch, "tokens": tokens, "time_ms": float(y), "scope": "layer"})
    return rows


def write_helix_measurements(path: Path = HELIX_MEASUREMENTS) -> None:
    """Write :func:`helix_measurement_rows` as the CSV the README's ``medley perf calibrate`` example reads."""
    rows = helix_measurement_rows()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def load_all() -> dict[str, list[Group]]:
    """Every source's groups by source name."""
    return {"vidur": load_vidur(), "helix": load_helix(), "distserve": load_distserve(),
            "splitwise": load_splitwise()}

