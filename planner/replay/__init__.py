"""Replay of traffic against a plan: a discrete-event, iteration-level simulator of continuous batching.

Every replica of every replica group is an engine that runs iterations one after another:

- ``unified``: continuous batching with a chunked-prefill token budget (``max_batched_tokens``, decode
  tokens count against it) or, with ``chunked_prefill=False``, whole prompts first (prefill priority, as
  vLLM before chunking and DistServe's colocated baseline). A mixed iteration costs
  ``prefill_ms + decode_step_ms − decode_step_ms(0, 0)``: the fixed step overhead is paid once.
- ``prefill``: prompts only, one at a time per engine (the provisioner renders ``--max-num-seqs`` so); at the
  end of its prefill a request's KV cache moves to a decode replica (``kv_transfer_ms``: the prompt's bytes at
  the slower end's share of its nodes' NICs, plus a hop across zones), chosen by the router. The client's
  first token is the decode replica's first step (vLLM's disaggregated serving), so TTFT includes the
  hand-off and admission; ``first_token_from_prefill`` counts it at the prefill instead (DistServe's
  prototype, for reproductions).
- ``decode`` and ``decode+offload``: admit requests whose KV cache fits, step the batch; the offload pair's
  step (dense on compute devices, attention on memory devices) is whatever the latency function says for
  that group.

KV cache: a request is admitted when its tokens fit (a 1% watermark kept free); when the running batch
outgrows the cache the newest request is preempted (recomputed on a unified replica, swapped back into the
admission queue on a decode replica). A replica with ``pp`` pipeline stages is ``pp`` engines, each with
1/pp of the KV cache and of the batch cap ``max_batch`` (the engine's ``max_num_seqs``) and the full step
latency (micro-batches in flight: pp× throughput, same latency), as the capacity model counts it.

Router: for each request, the plan's group for its length bucket by smooth weighted round robin over the
plan's shares (``prefill_share`` picks a unified or prefill group; after a prefill group, ``decode_share``
picks the decode group), then, inside the group, the engine with the least outstanding work in seconds
(outstanding tokens over the engine's token rate). A plan without load shares is routed by replicas.

Speed: requests live in flat lists, a replica's running batch is a heap of finish steps with the context
sum kept as an aggregate, and a decode-only stretch is advanced as one event covering all iterations up to
the next finish (cut short when a request arrives): no per-token Python work.

Step times come from a :class:`StepTimes` (the planner's performance model, a measured table or engine
profile, or a fitted profile such as DistServe's), so the replay is only as good as the latency function
behind it: on the planner's own model it checks queueing, not step times, and its report says which step
times it ran on and what that can show. Traffic comes in as arrivals
(``build_workload`` over traces loaded by the caller, and the plan's stored demand): the replay reads no
files and no clock.

Modules: ``steptimes`` (latency functions), ``workload`` (arrivals, trace sources), ``state`` (engine knobs,
replicas, requests), ``routing`` (the router), ``engine`` (the event loop and iterations), ``power`` (watts
per bin), ``report`` (the report values), ``runner`` (``replay``, ``max_rate_meeting_slo``).
"""

from planner.replay.report import GroupReplay, Percentiles, ReplayReport, ServiceReplay
from planner.replay.runner import max_rate_meeting_slo, replay
from planner.replay.state import ReplayOptions
from planner.replay.steptimes import FittedStepTimes, PerfStepTimes, StepTimes
from planner.replay.workload import Arrivals, TraceSource, build_workload, rescale, synthetic_arrivals

__all__ = [
    "Arrivals",
    "FittedStepTimes",
    "GroupReplay",
    "Percentiles",
    "PerfStepTimes",
    "ReplayOptions",
    "ReplayReport",
    "ServiceReplay",
    "StepTimes",
    "TraceSource",
    "build_workload",
    "max_rate_meeting_slo",
    "replay",
    "rescale",
    "synthetic_arrivals",
]
