"""The replay's mutable state: engine knobs, one engine per replica (pipeline stage), requests as flat lists."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from planner.schema import Role


@dataclass(frozen=True)
class ReplayOptions:
    """Engine knobs shared by every replica (vLLM-like defaults; ``max_batch`` is the engine's
    ``max_num_seqs``, split over a pipeline's engines)."""

    chunked_prefill: bool = True
    max_batched_tokens: int = 8192
    max_batch: int = 256
    kv_watermark: float = 0.01
    max_macro_steps: int = 4096
    power_bin_s: float = 10.0
    first_token_from_prefill: bool = False  # DistServe's prototype; vLLM streams it from the decode replica


@dataclass
class Replica:
    """One engine: its queue, its running batch (a heap of finish steps) and the iteration in flight."""

    idx: int
    group: int
    role: Role
    kv_cap: int
    speed_tps: float  # tokens of work per second, for the router
    batch_cap: int = 256  # sequences it runs at once (max_num_seqs of one engine; 1 for a prefill engine)
    waiting: deque[int] = field(default_factory=deque)
    running: list[tuple[int, int]] = field(default_factory=list)  # heap of (finish step, rid)
    order: list[int] = field(default_factory=list)  # running rids in admission order (for preemption)
    n_run: int = 0
    ctx_base: int = 0  # Σ (ctx at join − join step): Σctx = ctx_base + n_run·step
    step: int = 0
    kv_prefill: int = 0  # KV tokens held by prompts being prefilled
    work: float = 0.0  # outstanding tokens
    busy: bool = False
    version: int = 0
    # the iteration (or decode stretch) in flight
    start_s: float = 0.0
    ends_s: list[float] = field(default_factory=list)
    chunks: list[tuple[int, int]] = field(default_factory=list)  # (rid, tokens) prefilled in this iteration
    decoding: bool = False
    busy_s: float = 0.0
    first_pending: list[int] = field(default_factory=list)  # joined requests whose first token is this step's

    def sum_ctx(self) -> int:
        """Tokens of context the running batch holds."""
        return self.ctx_base + self.n_run * self.step

    def kv_used(self) -> int:
        """KV-cache tokens in use: the running batch's context and the prompts being prefilled."""
        return self.sum_ctx() + self.kv_prefill


@dataclass
class Requests:
    """Every request of the replay, one list per field, indexed by request id (arrival order)."""

    service: list[int] = field(default_factory=list)
    arrival: list[float] = field(default_factory=list)
    input: list[int] = field(default_factory=list)
    output: list[int] = field(default_factory=list)
    prompt_left: list[int] = field(default_factory=list)  # tokens still to prefill
    prompt_need: list[int] = field(default_factory=list)  # prompt to (re)compute
    generated: list[int] = field(default_factory=list)  # tokens generated before joining the batch
    join_step: list[int] = field(default_factory=list)
    join_ctx: list[int] = field(default_factory=list)
    alive: list[int] = field(default_factory=list)  # version bumped on preemption (lazy heap deletion)
    first_token: list[float] = field(default_factory=list)
    finish: list[float] = field(default_factory=list)
    preempted: list[int] = field(default_factory=list)
    running_on: list[int] = field(default_factory=list)  # replica whose running batch holds it, else -1

    def add(self, t: float, service: int, input_tokens: int, output_tokens: int) -> None:
        """Append a request arriving at ``t``."""
        self.service.append(service)
        self.arrival.append(t)
        self.input.append(input_tokens)
        self.output.append(output_tokens)
        self.prompt_left.append(input_tokens)
        self.prompt_need.append(input_tokens)
        self.generated.append(0)
        self.join_step.append(0)
        self.join_ctx.append(0)
        self.alive.append(0)
        self.first_token.append(-1.0)
        self.finish.append(-2.0)  # -2: not finished, -1: dropped
        self.preempted.append(0)
        self.running_on.append(-1)
