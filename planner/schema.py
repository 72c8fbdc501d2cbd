"""Medley's vocabulary: the pydantic models shared by fleet files, REST bodies, CRD specs and plans.

Units stand in the field names (``_ms``, ``_gib``, ``_tbps``, ``_watts``, ``_usd_per_hour``). Catalog values
(devices, models, price books) carry ``source`` and ``as_of`` so every number can be traced.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Id = Annotated[str, Field(pattern=r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$", description="lower-case id")]
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Share = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]


class Value(BaseModel):
    """Frozen value: unknown fields are errors, so a typo in a fleet file is caught."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Sourced(Value):
    source: str = Field(default="user", description="where the numbers come from (paper, data sheet, URL)")
    as_of: str = Field(default="", description="date the numbers were taken, YYYY-MM or YYYY-MM-DD")


# ---------------------------------------------------------------------------------------------- devices


class DeviceKind(StrEnum):
    ACCELERATOR = "accelerator"
    MEMORY = "memory"  # attention-offload device: much memory bandwidth, little compute


class DeviceType(Sourced):
    """One accelerator model as its data sheet describes it."""

    id: Id
    name: str
    kind: DeviceKind = DeviceKind.ACCELERATOR
    vendor: Literal["nvidia", "amd", "intel", "other"] = "nvidia"
    bf16_tflops: PositiveFloat = Field(description="dense BF16 TFLOPS (no sparsity)")
    fp8_tflops: PositiveFloat | None = None
    memory_gib: PositiveFloat
    memory_tbps: PositiveFloat = Field(description="HBM/GDDR bandwidth, TB/s")
    link_gbps: PositiveFloat = Field(description="intra-node device-to-device bandwidth per direction, GB/s")
    link_kind: Literal["nvlink", "pcie", "infinity-fabric", "ethernet"] = "pcie"
    pcie_p2p: bool = Field(default=False, description="PCIe devices of a node reach each other peer-to-peer "
                           "(false on cloud VMs whose GPUs exchange data through host memory)")
    nvlink_domain: int | None = Field(
        default=None, ge=1, description="devices joined all-to-all by NVLink/NVSwitch or Infinity Fabric "
        "(default: the node's devices for nvlink/infinity-fabric links, else 1)")
    nic_gbitps: PositiveFloat = Field(default=100.0, description="line rate of one scale-out NIC, Gbit/s")
    nics_per_node: int | None = Field(
        default=None, ge=1, description="scale-out NICs per node (default: one per device; one per node on "
        "AWS g5/g6)")
    usable_memory_gib: PositiveFloat | None = Field(
        default=None, description="memory the card exposes to the runtime (nvidia-smi total); default memory_gib")
    tdp_watts: PositiveFloat
    idle_watts: PositiveFloat
    prefill_watts: PositiveFloat | None = Field(default=None, description="typical draw in prefill; default TDP")
    decode_watts: PositiveFloat | None = Field(default=None, description="typical draw in decode; default 55% TDP")
    sm_clock_mhz_min: PositiveFloat
    sm_clock_mhz_max: PositiveFloat
    power_cap_watts_min: PositiveFloat
    power_cap_watts_max: PositiveFloat
    max_devices_per_node: int = Field(default=8, ge=1)

    @model_validator(mode="after")
    def _ranges(self) -> DeviceType:
        if self.sm_clock_mhz_min > self.sm_clock_mhz_max:
            raise ValueError("sm_clock_mhz_min: must not exceed sm_clock_mhz_max")
        if self.power_cap_watts_min > self.power_cap_watts_max:
            raise ValueError("power_cap_watts_min: must not exceed power_cap_watts_max")
        if self.idle_watts >= self.tdp_watts:
            raise ValueError("idle_watts: must be below tdp_watts")
        if self.usable_memory_gib is not None and self.usable_memory_gib > self.memory_gib:
            raise ValueError("usable_memory_gib: must not exceed memory_gib")
        return self

    @property
    def runtime_memory_gib(self) -> float:
        """Memory the runtime can allocate from: ``usable_memory_gib`` where the card reports less."""
        return self.usable_memory_gib if self.usable_memory_gib is not None else self.memory_gib

    @property
    def all_to_all_domain(self) -> int:
        """Devices joined all-to-all by a scale-up fabric (NVLink/NVSwitch, Infinity Fabric); 1 for PCIe."""
        if self.nvlink_domain is not None:
            return self.nvlink_domain
        return self.max_devices_per_node if self.link_kind in ("nvlink", "infinity-fabric") else 1

    def nic_gbitps_per_device(self, devices_per_node: int | None = None) -> float:
        """A device's share of its node's scale-out NICs (one NIC per device unless ``nics_per_node``)."""
        if self.nics_per_node is None:
            return self.nic_gbitps
        per_node = devices_per_node or self.max_devices_per_node
        return self.nic_gbitps * self.nics_per_node / per_node

    @property
    def prefill_power_watts(self) -> float:
        return self.prefill_watts if self.prefill_watts is not None else self.tdp_watts

    @property
    def decode_power_watts(self) -> float:
        return self.decode_watts if self.decode_watts is not None else 0.55 * self.tdp_watts


class PriceTier(Sourced):
    """A way of paying for a book's devices other than on demand, per device: a price or a discount off the
    on-demand price; spot tiers also say how likely their capacity is reclaimed (planner.tiers reads them)."""

    tier: Literal["reserved", "committed", "spot"]
    term: str = Field(default="", description="e.g. '1-year, no upfront'")
    usd_per_device_hour: dict[str, NonNegFloat] = Field(default_factory=dict)
    discount: dict[str, Share] = Field(default_factory=dict, description="fraction off the on-demand price")
    interruption_probability: dict[str, Share] = Field(
        default_factory=dict, description="spot: probability that a pool's spot capacity is reclaimed within a "
        "month, per device (AWS's Spot Instance Advisor's frequency of interruption)")
    zone_interruption_probability: dict[str, Share] = Field(
        default_factory=dict, description="spot: the same per zone, where a zone's differs from its device's")


class PriceBook(Sourced):
    """Dated $/device-hour for a set of devices from one provider (on demand), and its other tiers."""

    id: Id
    provider: str = ""
    region: str = ""
    usd_per_device_hour: dict[str, PositiveFloat]
    tiers: list[PriceTier] = Field(default_factory=list)

    def tier(self, name: str) -> PriceTier | None:
        """The book's tier ``name`` (reserved, committed, spot), if it has one."""
        return next((t for t in self.tiers if t.tier == name), None)


# ---------------------------------------------------------------------------------------------- models


class ModelSpec(Sourced):
    """Architecture numbers of a transformer decoder (dense or mixture-of-experts)."""

    id: Id
    name: str
    num_layers: int = Field(gt=0)
    hidden_size: int = Field(gt=0)
    num_heads: int = Field(gt=0)
    num_kv_heads: int = Field(gt=0)
    ffn_hidden_size: int = Field(gt=0)
    vocab_size: int = Field(gt=0)
    gated_mlp: bool = True
    tied_embeddings: bool = False
    num_experts: int = Field(default=1, ge=1)
    experts_per_token: int = Field(default=1, ge=1)
    weight_bytes: PositiveFloat = Field(default=2.0, description="bytes per weight (2 = BF16/FP16, 1 = FP8)")
    kv_bytes: PositiveFloat = Field(default=2.0, description="bytes per KV-cache element")
    max_context_tokens: int = Field(default=4096, gt=0)

    @model_validator(mode="after")
    def _shape(self) -> ModelSpec:
        if self.hidden_size % self.num_heads:
            raise ValueError("hidden_size: must be a multiple of num_heads")
        if self.num_heads % self.num_kv_heads:
            raise ValueError("num_kv_heads: must divide num_heads")
        if self.experts_per_token > self.num_experts:
            raise ValueError("experts_per_token: must not exceed num_experts")
        return self

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def _attn_params_per_layer(self) -> int:
        h, d = self.hidden_size, self.head_dim
        return h * (self.num_heads * d) + 2 * h * (self.num_kv_heads * d) + (self.num_heads * d) * h

    def _mlp_params_per_expert(self) -> int:
        return (3 if self.gated_mlp else 2) * self.hidden_size * self.ffn_hidden_size

    @property
    def params_per_layer(self) -> int:
        router = self.hidden_size * self.num_experts if self.num_experts > 1 else 0
        return self._attn_params_per_layer() + self.num_experts * self._mlp_params_per_expert() + router

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size * (1 if self.tied_embeddings else 2)

    @property
    def total_params(self) -> int:
        """All weights: ``L·P_layer + V·h·(2 if untied)`` (REFERENCE §1)."""
        return self.num_layers * self.params_per_layer + self.embedding_params

    @property
    def active_params(self) -> int:
        """Weights touched per token (mixture-of-experts routes each token to ``experts_per_token``)."""
        per_layer = self._attn_params_per_layer() + self.experts_per_token * self._mlp_params_per_expert()
        return self.num_layers * per_layer + self.embedding_params

    @property
    def weight_bytes_total(self) -> float:
        return self.total_params * self.weight_bytes

    @property
    def kv_bytes_per_token(self) -> float:
        """``2·L·n_kv·d·b_kv`` bytes of KV cache per token."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * self.kv_bytes


# ---------------------------------------------------------------------------------------------- services


class LengthBucket(Value):
    """One cell of the input × output length histogram; lengths are the bucket's representative values."""

    input_tokens: int = Field(gt=0)
    output_tokens: int = Field(gt=0)
    share: Share


class LengthHistogram(Value):
    """Dense form of the 2-D histogram: ``shares[i][j]`` for ``input_tokens[i]`` × ``output_tokens[j]``."""

    input_tokens: list[Annotated[int, Field(gt=0)]]
    output_tokens: list[Annotated[int, Field(gt=0)]]
    shares: list[list[NonNegFloat]]

    @model_validator(mode="after")
    def _dims(self) -> LengthHistogram:
        if len(self.shares) != len(self.input_tokens):
            raise ValueError("shares: needs one row per input_tokens value")
        for row in self.shares:
            if len(row) != len(self.output_tokens):
                raise ValueError("shares: each row needs one value per output_tokens value")
        return self

    def buckets(self) -> list[LengthBucket]:
        total = sum(sum(r) for r in self.shares)
        out = []
        for i, row in enumerate(self.shares):
            for j, v in enumerate(row):
                if v > 0:
                    out.append(LengthBucket(input_tokens=self.input_tokens[i],
                                            output_tokens=self.output_tokens[j], share=v / total))
        return out


class Traffic(Value):
    """Offered load: a rate with a length distribution, or a trace file whose lengths and rate are used."""

    rate_rps: NonNegFloat = Field(description="mean requests per second")
    buckets: list[LengthBucket] | None = None
    histogram: LengthHistogram | None = None
    trace_file: str | None = Field(default=None, description="CSV with ContextTokens, GeneratedTokens columns")

    @model_validator(mode="after")
    def _one_distribution(self) -> Traffic:
        given = [x is not None for x in (self.buckets, self.histogram, self.trace_file)]
        if sum(given) != 1:
            raise ValueError("buckets: give exactly one of buckets, histogram or trace_file")
        if self.buckets is not None:
            if not self.buckets:
                raise ValueError("buckets: must not be empty")
            total = sum(b.share for b in self.buckets)
            if not math.isclose(total, 1.0, rel_tol=1e-3):
                raise ValueError(f"buckets: shares must sum to 1 (they sum to {total:.4f})")
        if self.histogram is not None and sum(sum(r) for r in self.histogram.shares) <= 0:
            raise ValueError("histogram: shares must not all be zero")
        return self

    def length_buckets(self) -> list[LengthBucket]:
        """The distribution as buckets (a trace file is bucketed by ``planner.io.traces``)."""
        if self.buckets is not None:
            return list(self.buckets)
        if self.histogram is not None:
            return self.histogram.buckets()
        raise ValueError("trace_file: load the trace with planner.io.traces.bucket_trace first")


class SLO(Value):
    ttft_ms: PositiveFloat = Field(description="time-to-first-token target")
    tpot_ms: PositiveFloat = Field(description="time-per-output-token target")
    percentile: float = Field(default=90.0, gt=0, le=100, description="share of requests that must meet it")


class Role(StrEnum):
    UNIFIED = "unified"
    PREFILL = "prefill"
    DECODE = "decode"
    DECODE_OFFLOAD = "decode+offload"


class Service(Value):
    """A model served to a team, with its traffic and SLOs."""

    id: Id
    team: str = Field(default="default", min_length=1, max_length=128)
    model: str
    traffic: Traffic
    slo: SLO
    priority: int = Field(default=1, ge=0, description="higher is more important (power caps hit low first)")
    min_replicas: int = Field(default=1, ge=0)
    spread_zones: int = Field(default=1, ge=1, description="serving replicas in at least this many zones")
    allowed_pools: list[str] | None = None
    allowed_roles: list[Role] | None = None
    tp_options: list[Annotated[int, Field(ge=1, le=64)]] | None = Field(
        default=None, min_length=1,
        description="tensor-parallel sizes allowed for this service (default: the planner's)")
    engine: Literal["vllm", "sglang", "trtllm"] = "vllm"
    kv_handoff: Literal["same-zone", "cross-zone"] = Field(
        default="same-zone", description="where a prefill replica may hand a prompt's KV cache to a decode "
        "replica: in its own zone only, or across zones (then timed with the extra hop and priced per GB)")
    max_spot_share: Share = Field(default=1.0, description="largest share of the service's devices on spot "
                                  "pools; 0 forbids spot")
    spot_risk: Share = Field(default=0.001, description="largest probability that spot reclaims within one "
                             "recovery window leave the service short of the capacity its SLO needs; it always "
                             "survives losing any one of its spot pools, and more when this asks")


# ---------------------------------------------------------------------------------------------- pools, power


class Node(Value):
    """One node of a pool's inventory (placement uses these; the planner needs only the count)."""

    name: str
    zone: str | None = None
    rack: str | None = None
    devices: int | None = Field(default=None, ge=1)
    state: Literal["ready", "cordoned", "failed"] = "ready"


class SpotTerms(Value):
    """A pool of spot nodes: cheaper than on demand, and its capacity can be reclaimed at short notice."""

    discount: float | None = Field(default=None, ge=0, lt=1, description="fraction off the pool's on-demand "
                                   "price (default: its price book's spot tier)")
    price_usd_per_device_hour: PositiveFloat | None = Field(default=None, description="the spot price itself")
    interruption_probability: Share | None = Field(
        default=None, description="probability that this pool's spot capacity is reclaimed within a month "
        "(default: its price book's spot tier for its zone or device); each spot pool is one reclaim domain")


class PoolTiers(Value):
    """How a pool's capacity is paid for beyond on demand: reserved nodes, a commitment, or spot."""

    reserved_nodes: int = Field(default=0, ge=0, description="nodes already paid for (reserved instances): "
                                "no marginal cost, their cost is sunk")
    reserved_usd_per_device_hour: NonNegFloat | None = Field(
        default=None, description="what a reserved device costs per hour, sunk (default: the book's reserved tier)")
    committed: bool = Field(default=True, description="on-demand use may draw on the fleet's commitment")
    committed_usd_per_device_hour: NonNegFloat | None = Field(
        default=None, description="what a device-hour draws from the commitment (default: the book's committed "
        "tier)")
    spot: SpotTerms | None = Field(default=None, description="the pool's nodes are spot nodes")

    @model_validator(mode="after")
    def _spot_alone(self) -> PoolTiers:
        if self.spot is not None and self.reserved_nodes:
            raise ValueError("reserved_nodes: a spot pool has no reserved nodes (make a separate pool)")
        return self


class Pool(Value):
    """Where devices can be had: a device type, node shape, availability, price and location."""

    id: Id
    device: str
    devices_per_node: int = Field(default=8, ge=1)
    max_nodes: int = Field(ge=0)
    price_usd_per_device_hour: PositiveFloat | None = None
    price_book: str | None = Field(default=None, description="price book id used when no price is given")
    billing: Literal["device", "node"] = Field(default="device", description="pay per device used or per node")
    region: str = "default"
    zone: str = "default"
    power_domain: str | None = None
    node_overhead_watts: NonNegFloat = Field(default=0.0, description="server power outside the devices")
    node_selector: dict[str, str] = Field(default_factory=dict)
    nodes: list[Node] | None = None
    tiers: PoolTiers | None = Field(default=None, description="reserved nodes, commitment, spot (planner.tiers)")

    @model_validator(mode="after")
    def _reserved_fit(self) -> Pool:
        if self.tiers is not None and self.tiers.reserved_nodes > self.max_nodes:
            raise ValueError(f"tiers: reserved_nodes ({self.tiers.reserved_nodes}) exceeds max_nodes "
                             f"({self.max_nodes})")
        return self

    @property
    def is_spot(self) -> bool:
        """Whether the pool's nodes are spot nodes."""
        return self.tiers is not None and self.tiers.spot is not None


class PowerThresholds(Value):
    t1_share: Share = 0.80
    t2_share: Share = 0.89
    brake_share: PositiveFloat = 1.0
    hysteresis_share: Share = 0.05

    @model_validator(mode="after")
    def _order(self) -> PowerThresholds:
        if not self.t1_share < self.t2_share < self.brake_share:
            raise ValueError("t1_share: thresholds must rise: t1_share < t2_share < brake_share")
        return self


class PowerDomain(Value):
    """A row or rack power budget; its pools' expected draw must stay inside it."""

    id: Id
    budget_watts: PositiveFloat
    oversubscription_ratio: float = Field(default=1.0, ge=1.0, description="nameplate may exceed budget by this")
    thresholds: PowerThresholds = Field(default_factory=PowerThresholds)


SolverName = Literal["highs", "cbc", "cpsat", "scip"]  # the MILP backends a fleet can ask for


class PlannerOptions(Value):
    headroom: float = Field(default=0.85, gt=0, le=1, description="max utilisation of a replica's capacity")
    solver: SolverName = "highs"
    time_limit_s: PositiveFloat = 30.0
    relative_gap: float = Field(default=0.001, ge=0, lt=1)
    churn_usd_per_replica_change: NonNegFloat = 0.0
    tp_options: list[Annotated[int, Field(ge=1, le=64)]] = Field(default_factory=lambda: [1, 2, 4, 8], min_length=1)
    pp_options: list[Annotated[int, Field(ge=1, le=64)]] = Field(default_factory=lambda: [1, 2, 4], min_length=1)
    offload_memory_devices: list[Annotated[int, Field(ge=1, le=64)]] = Field(
        default_factory=lambda: [1, 2, 4, 8], min_length=1)
    roles: list[Role] = Field(default_factory=lambda: list(Role), min_length=1)
    perf_engine: str = Field(default="vllm", description="whose per-step overheads and collective kernels the "
                             "performance model applies: vllm (current releases), vllm-2023 (2023 releases, "
                             "host-bound), or an engine a perf_profile defines")
    perf_profile: str | None = Field(
        default=None, description="engine profile YAML (medley perf calibrate writes one) whose fitted factors "
        "replace the shipped ones; a path relative to the working directory")
    max_num_seqs: int | None = Field(
        default=None, ge=1, le=1024, description="sequences one replica runs at once (the engine's "
        "--max-num-seqs, split over a pipeline's stages); default: the engine profile's (vLLM: 256)")
    robustness: Literal["none", "p50", "p90"] = Field(
        default="none", description="plan against the performance model's held-out error: p50/p90 slow every "
        "step by the median/90th-percentile error of its device, engine and phase before sizing replicas")
    max_configurations_per_service: int | None = Field(
        default=4, ge=1, description="at most this many configurations (device, TP, PP, role) per service, "
        "whatever the pools and zones they run in; null: no limit")
    spot_recovery_hours: PositiveFloat = Field(
        default=1.0, description="how long reclaimed spot capacity stays lost before plans and replacements "
                                 "catch up: the window over which spot losses are judged")
    commitment_usd_per_hour: NonNegFloat = Field(
        default=0.0, description="a savings-plan commitment: $/h paid whatever is used, which covers on-demand "
                                 "device-hours at the pools' committed rates")


class FleetSpec(Value):
    """The file a platform team writes: pools, services, power domains, and their own catalog additions."""

    api_version: Literal["medley.dev/v1alpha1"] = Field(default="medley.dev/v1alpha1", alias="apiVersion")
    kind: Literal["Fleet"] = "Fleet"
    name: str = "fleet"
    devices: list[DeviceType] = Field(default_factory=list)
    models: list[ModelSpec] = Field(default_factory=list)
    price_books: list[PriceBook] = Field(default_factory=list)
    pools: list[Pool]
    services: list[Service]
    power_domains: list[PowerDomain] = Field(default_factory=list)
    planner: PlannerOptions = Field(default_factory=PlannerOptions)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("pools", "services", "power_domains", "devices", "models", "price_books")
    @classmethod
    def _unique_ids(cls, items: list[BaseModel]) -> list[BaseModel]:
        seen: set[str] = set()
        for it in items:
            ident = str(getattr(it, "id"))  # noqa: B009 - every listed model has an id
            if ident in seen:
                raise ValueError(f"duplicate id {ident!r}")
            seen.add(ident)
        return items


# ---------------------------------------------------------------------------------------------- plans


class Configuration(Value):
    """One way to run one replica: device, parallelism, role, and offload partners."""

    device: str
    tp: int = Field(ge=1)
    pp: int = Field(default=1, ge=1)
    role: Role = Role.UNIFIED
    memory_device: str | None = None
    memory_devices: int = Field(default=0, ge=0)

    @property
    def devices(self) -> int:
        return self.tp * self.pp

    def label(self) -> str:
        base = f"{self.device} tp{self.tp}" + (f" pp{self.pp}" if self.pp > 1 else "") + f" {self.role.value}"
        if self.role is Role.DECODE_OFFLOAD:
            base += f" +{self.memory_devices}x{self.memory_device}"
        return base


class BucketLoad(Value):
    """Share of one length bucket's requests served by a replica group (prefill and decode separately)."""

    input_tokens: int
    output_tokens: int
    prefill_share: Share
    decode_share: Share


class ModelErrorBand(Value):
    """The performance model's held-out absolute error (%) for a group's device and engine, per phase its role
    runs, and what it was scored on."""

    prefill_median_pct: float | None = None
    prefill_p90_pct: float | None = None
    decode_median_pct: float | None = None
    decode_p90_pct: float | None = None
    scored_on: str = ""

    def worst(self, which: Literal["median", "p90"]) -> float | None:
        """The larger of the phases' errors at the median or the 90th percentile."""
        vals = [v for v in ((self.prefill_median_pct, self.decode_median_pct) if which == "median"
                            else (self.prefill_p90_pct, self.decode_p90_pct)) if v is not None]
        return max(vals) if vals else None


class ReplicaGroup(Value):
    service: str
    pool: str
    memory_pool: str | None = None
    configuration: Configuration
    replicas: int = Field(ge=0)
    cost_usd_per_hour: NonNegFloat
    expected_watts: NonNegFloat
    utilisation: Share = 0.0
    load: list[BucketLoad] = Field(default_factory=list)
    nodes: list[str] = Field(default_factory=list, description="placement: node per device slot, if placed")
    error_band: ModelErrorBand | None = Field(
        default=None, description="the performance model's held-out error for this device, engine and role")
    utilisation_at_p90_error: float | None = Field(
        default=None, ge=0, description="the group's utilisation if its steps are slower by the p90 error band "
        "(above 1: the plan holds only if the model is that right)")


class SolverProgress(Value):
    """The best plan's cost and the best proven bound at a moment of the planning command."""

    seconds: NonNegFloat = Field(description="since the command started (candidate generation included)")
    incumbent: float | None = Field(default=None, description="$/h of the best plan so far (None: none yet)")
    bound: float | None = Field(default=None, description="best proven lower bound on the optimum so far")
    stage: str = Field(default="", description="the stage that improved either")


class SolverReport(Value):
    backend: str
    status: Literal["optimal", "feasible", "infeasible", "time_limit_no_solution", "error"]
    objective: float | None = None
    best_bound: float | None = None
    relative_gap: float | None = None
    solve_seconds: NonNegFloat = 0.0
    variables: int = 0
    constraints: int = 0
    candidates: int = 0
    candidates_pruned: int = 0
    backends: dict[str, str] = Field(default_factory=dict,
                                     description="stage → backend that ran it (some stages need HiGHS)")
    progress: list[SolverProgress] = Field(default_factory=list,
                                           description="each improvement of the plan or the bound over time")
    seconds: NonNegFloat = Field(default=0.0, description="the whole command so far, candidates included")


class Baseline(Value):
    name: str
    description: str
    cost_usd_per_hour: float | None
    feasible: bool
    devices_by_type: dict[str, int] = Field(default_factory=dict)
    relative_gap: float | None = Field(default=None, description="how far above its own optimum the cost may be "
                                                                  "(None: not proven)")


class Finding(Value):
    """A binding constraint or a marginal value, in words with its numbers."""

    kind: Literal["binding", "marginal", "infeasible", "note"]
    constraint: str
    message: str
    value: float | None = None


class ServiceDemand(Value):
    """The traffic a plan was sized for: one service's rate and its length buckets (request shares).

    Derived once by the planner (from the fleet's buckets, histogram or trace) and stored in the plan, so
    placement, the provisioner and the replay read the same mix instead of deriving it again."""

    service: str
    rate_rps: NonNegFloat
    buckets: list[LengthBucket]


class PlanBilling(Value):
    """What a plan's capacity costs by tier (fleets with pool tiers or a commitment; planner.tiers fills it).

    ``marginal_usd_per_hour`` is the plan's ``cost_usd_per_hour``: on-demand and spot device-hours, and on-demand
    use beyond the commitment. Reserved nodes and the commitment are paid whatever the plan uses (sunk), so
    ``total_usd_per_hour`` adds them."""

    marginal_usd_per_hour: NonNegFloat
    reserved_usd_per_hour: NonNegFloat = Field(default=0.0, description="sunk: every reserved node, used or not")
    commitment_usd_per_hour: NonNegFloat = 0.0
    commitment_used_usd_per_hour: NonNegFloat = 0.0
    total_usd_per_hour: NonNegFloat
    devices_by_tier: dict[str, float] = Field(default_factory=dict,
                                              description="reserved, committed, on_demand, spot")
    spot_risk: dict[str, float] = Field(default_factory=dict, description="per service using spot: probability "
                                        "that reclaims within one recovery window leave it short of capacity")


class Plan(Value):
    """The planner's answer: replica groups with load split and the numbers a platform team checks."""

    id: str = ""
    fleet: str
    created_at: str = ""
    previous_plan_id: str | None = None
    replica_groups: list[ReplicaGroup]
    cost_usd_per_hour: NonNegFloat
    usd_per_million_tokens: NonNegFloat | None = None
    devices_by_type: dict[str, int] = Field(default_factory=dict)
    devices_by_pool: dict[str, int] = Field(default_factory=dict)
    nodes_by_pool: dict[str, int] = Field(default_factory=dict)
    watts_by_power_domain: dict[str, float] = Field(default_factory=dict)
    solver: SolverReport
    baselines: list[Baseline] = Field(default_factory=list)
    findings: list[Finding] = Field(default_factory=list)
    verified: bool = False
    demand: list[ServiceDemand] = Field(default_factory=list, description="traffic each service was sized for")
    fleet_digest: str = Field(default="", max_length=80, description=(
        "SHA-256 of the fleet it was made for (planner.fingerprint); verify and apply refuse another fleet"))
    fleet_snapshot: dict[str, Any] | None = Field(default=None, description=(
        "the fleet it was made for, as canonical JSON (what a refusal names the first difference from)"))
    billing: PlanBilling | None = Field(default=None, description="cost by tier (fleets with tiers)")

    def demand_of(self, service: str) -> ServiceDemand | None:
        """The stored demand of ``service`` (None for plans made before demand was stored)."""
        return next((d for d in self.demand if d.service == service), None)
