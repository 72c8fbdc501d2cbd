"""Rendering options: engine images and arguments, model sources and cache, drain, PDB version, router."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from provisioner.workloads.nodes import DeviceLabel

DEFAULT_IMAGES = {
    "vllm": "vllm/vllm-openai:v0.11.0",
    "sglang": "lmsysorg/sglang:v0.5.3",
    "trtllm": "nvcr.io/nvidia/tensorrt-llm/release:1.0.0",
}
PDB_VERSIONS = ("policy/v1", "policy/v1beta1")


class ModelCache(BaseModel):
    """Where engines keep downloaded weights (``HF_HOME``): a fresh emptyDir per pod, a claim, or a host path."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    volume: Literal["emptyDir", "persistentVolumeClaim", "hostPath"] = "emptyDir"
    claim_name: str | None = Field(default=None, description="with persistentVolumeClaim (ReadOnlyMany/ReadWriteMany)")
    host_path: str | None = Field(default=None, description="with hostPath: a directory on every GPU node")
    size_limit: str = Field(default="200Gi", description="with emptyDir")
    mount_path: str = "/models"


class OffloadEngine(BaseModel):
    """An engine that decodes with attention on memory devices (upstream vLLM cannot).

    Command templates take ``{model}``, ``{served_model_name}``, ``{port}``, ``{tp}``, ``{pp}``,
    ``{memory_devices}``, ``{attention_service}`` (host name of the group's attention workers),
    ``{max_model_len}`` and ``{max_num_seqs}``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    image: str = Field(min_length=1)
    decode_command: list[str] = Field(min_length=1)
    attention_command: list[str] = Field(min_length=1)


class RenderOptions(BaseModel):
    """How plans become manifests: engine images and arguments, model sources, namespaces, scheduling."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    images: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_IMAGES))
    model_uris: dict[str, str] = Field(default_factory=dict, description="model id → what the engine loads "
                                       "(default: the catalog's Hugging Face repository)")
    extra_args: list[str] = Field(default_factory=list, description="appended to every engine command")
    role_args: dict[str, list[str]] = Field(default_factory=dict, description="role → appended arguments")
    port: int = Field(default=8000, ge=1, le=65535)
    namespace_prefix: str = ""
    resource_names: dict[str, str] = Field(default_factory=dict, description="device id → extended resource")
    device_labels: dict[str, DeviceLabel] = Field(default_factory=dict, description=(
        "device id → the node label that identifies it (adds to or overrides the built-in table)"))
    tolerations: list[dict[str, str]] = Field(default_factory=list)
    cpu_per_device: str = "4"
    memory_per_device: str = Field(default="32Gi", description="host memory requested per device (× devices)")
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    kv_connector: str = Field(default="NixlConnector", description="vLLM KV connector between prefill and decode")
    model_cache: ModelCache = Field(default_factory=ModelCache)
    hf_token_secret: str | None = Field(default="hf-token", description=(
        "Secret (key `token`) with a Hugging Face token, optional in each pod; None: none"))
    shm_size: str = Field(default="16Gi", description="size of /dev/shm (a memory-backed emptyDir)")
    drain_seconds: int = Field(default=120, ge=0, description="terminationGracePeriodSeconds of serving pods")
    prestop_seconds: int = Field(default=10, ge=0, description="wait after removal from endpoints before SIGTERM")
    startup_seconds: int = Field(default=1800, ge=10, description="time an engine may take to load its model")
    pdb_api_version: Literal["policy/v1", "policy/v1beta1"] = Field(default="policy/v1", description=(
        "policy/v1 from Kubernetes 1.21; policy/v1beta1 before (chosen by discovery when a cluster is given)"))
    router_image: str = "vllm/vllm-router:nightly"
    router_replicas: int = Field(default=2, ge=1)
    router_args: list[str] = Field(default_factory=lambda: ["--prefill-policy", "cache_aware",
                                                            "--decode-policy", "power_of_two"])
    offload_engine: OffloadEngine | None = None
