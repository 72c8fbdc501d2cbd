"""The serving engine's command line, derived from the plan.

vLLM (``vllm serve``): ``--tensor-parallel-size``/``--pipeline-parallel-size`` from the configuration,
``--served-model-name`` (the service's model id: what clients ask for), ``--max-model-len`` and
``--max-num-seqs`` from ``sizing``, ``--gpu-memory-utilization`` from the options, and for a service whose
plan splits prefill from decode, vLLM's KV-transfer configuration: ``kv_producer`` on prefill replicas,
``kv_consumer`` on decode replicas and ``kv_both`` on unified replicas of such a service (the router may use
them for either phase), over ``RenderOptions.kv_connector`` (NIXL by default). SGLang and TensorRT-LLM get
their parallelism flags; their own prefill/decode hand-off is not rendered (see ``entry``).

Attention offload (``decode+offload``) needs an engine that can run attention on memory devices, which
upstream vLLM cannot: it renders only with ``RenderOptions.offload_engine`` (image and command templates).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from planner.roles import ROLES
from planner.schema import Configuration, Service
from provisioner.workloads.sizing import Sizing

# Hugging Face repositories of the shipped catalog's models (RenderOptions.model_uris overrides).
MODEL_SOURCES: Mapping[str, str] = {
    "llama-2-7b": "meta-llama/Llama-2-7b-chat-hf",
    "llama-2-13b": "meta-llama/Llama-2-13b-chat-hf",
    "llama-2-70b": "meta-llama/Llama-2-70b-chat-hf",
    "llama-3-8b": "meta-llama/Meta-Llama-3-8B-Instruct",
    "llama-3-70b": "meta-llama/Meta-Llama-3-70B-Instruct",
    "mixtral-8x7b": "mistralai/Mixtral-8x7B-Instruct-v0.1",
    "qwen-72b": "Qwen/Qwen-72B-Chat",
    "opt-13b": "facebook/opt-13b",
    "opt-66b": "facebook/opt-66b",
    "codellama-34b": "codellama/CodeLlama-34b-Instruct-hf",
}

KvRole = str  # "kv_producer" | "kv_consumer" | "kv_both"


@dataclass(frozen=True)
class EngineCall:
    """What one replica's engine is asked to do."""

    service: Service
    cfg: Configuration
    model_source: str
    sizing: Sizing
    port: int
    gpu_memory_utilization: float
    kv_role: KvRole | None  # None: no KV hand-off (the service is not disaggregated)
    kv_connector: str
    multi_node: bool  # stages on several pods (a Ray cluster the leader heads)


def kv_role(cfg: Configuration, disaggregated_service: bool) -> KvRole | None:
    """The KV-transfer role of a replica, or None when its service does not split prefill from decode."""
    if not disaggregated_service:
        return None
    side = ROLES[cfg.role].kv_role
    return "kv_both" if side is None else f"kv_{side}"


def _sizing_args(sizing: Sizing, flag_len: str, flag_seqs: str) -> list[str]:
    out: list[str] = []
    if sizing.max_model_len is not None:
        out += [flag_len, str(sizing.max_model_len)]
    if sizing.max_num_seqs is not None:
        out += [flag_seqs, str(sizing.max_num_seqs)]
    return out


def vllm_command(call: EngineCall) -> list[str]:
    """``vllm serve`` with the plan's parallelism, sizing and KV-transfer role."""
    cfg = call.cfg
    cmd = ["vllm", "serve", call.model_source, "--host", "0.0.0.0", "--port", str(call.port),
           "--served-model-name", call.service.model,
           "--tensor-parallel-size", str(cfg.tp), "--pipeline-parallel-size", str(cfg.pp),
           *_sizing_args(call.sizing, "--max-model-len", "--max-num-seqs"),
           "--gpu-memory-utilization", f"{call.gpu_memory_utilization:g}"]
    if call.kv_role is not None:
        config = {"kv_connector": call.kv_connector, "kv_role": call.kv_role}
        cmd += ["--kv-transfer-config", json.dumps(config, separators=(",", ":"))]
    if call.multi_node:
        cmd += ["--distributed-executor-backend", "ray"]
    return cmd


def engine_command(call: EngineCall) -> list[str]:
    """The engine's command line for one replica (vLLM, SGLang or TensorRT-LLM)."""
    engine = call.service.engine
    port = str(call.port)
    if engine == "vllm":
        return vllm_command(call)
    if engine == "sglang":
        return ["python3", "-m", "sglang.launch_server", "--model-path", call.model_source, "--host", "0.0.0.0",
                "--port", port, "--served-model-name", call.service.model, "--tp-size", str(call.cfg.tp),
                "--pp-size", str(call.cfg.pp), *_sizing_args(call.sizing, "--context-length", "--max-running-requests"),
                "--mem-fraction-static", f"{call.gpu_memory_utilization:g}"]
    return ["trtllm-serve", call.model_source, "--host", "0.0.0.0", "--port", port,
            "--tp_size", str(call.cfg.tp), "--pp_size", str(call.cfg.pp),
            *_sizing_args(call.sizing, "--max_seq_len", "--max_batch_size")]


def fill(template: list[str], values: Mapping[str, object]) -> list[str]:
    """An offload engine's command template with ``{name}`` placeholders filled (unknown names are errors)."""
    out = []
    for arg in template:
        for name in re.findall(r"{([a-z_]+)}", arg):
            if name not in values:
                raise KeyError(f"offload_engine: unknown placeholder {{{name}}} (known: {', '.join(sorted(values))})")
        out.append(re.sub(r"{([a-z_]+)}", lambda m: str(values[m.group(1)]), arg))
    return out
