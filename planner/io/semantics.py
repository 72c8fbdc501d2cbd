"""What a fleet asks that no plan can give, found before planning: the checks of ``medley validate`` beyond shapes.

Each check returns ``(location, reason)`` pairs in the fleet's own terms (``services[i].slo.tpot_ms``):

* lengths: a bucket or histogram row whose prompt plus output exceeds the model's context;
* parallelism: TP sizes (the service's or the planner's) that no allowed pool's node holds, and TP sizes that
  split neither the model's heads nor its KV heads;
* SLOs against the model's best case: one request alone, at the smallest prompt of its traffic, on the
  fastest device and TP its pools allow (``perf.prefill_ms`` for TTFT, ``perf.decode_step_ms`` for TPOT); a
  target below that cannot be met by any number of replicas;
* the fleet's name: a Kubernetes label value;
* planner options: a headroom so small that replicas would be sized for thousands of times their load;
* files a fleet names (traces, the engine profile): readable under the caller's :class:`FileAccess`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from planner.catalog import Catalog
from planner.io.files import FileAccess, FileRefused
from planner.model.perf import PerfModel, ReplicaShape
from planner.schema import DeviceKind, FleetSpec, LengthBucket, ModelSpec, Pool, Service

Problem = tuple[tuple[str | int, ...], str]
MIN_HEADROOM = 0.05  # below this a replica is sized for more than 20× its load: a typo, not a policy


NAME = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$")  # a Kubernetes label value, lower case


def option_problems(fleet: FleetSpec) -> list[Problem]:
    """A fleet name that cannot label the fleet's objects, and planner options no plan can use."""
    out: list[Problem] = []
    if not NAME.match(fleet.name):
        out.append((("name",), f"{fleet.name!r} is not a fleet name: 1 to 63 lower-case letters, digits, '-', '_' "
                    "or '.', starting and ending with a letter or digit (it labels the fleet's objects)"))
    h = fleet.planner.headroom
    if h < MIN_HEADROOM:
        out.append((("planner", "headroom"), f"{h:g} is below {MIN_HEADROOM:g}: replicas would be sized for more "
                    f"than {1 / MIN_HEADROOM:g}× their load (headroom is the share of a replica's capacity used, "
                    "e.g. 0.85)"))
    return out


def file_problems(fleet: FleetSpec, access: FileAccess, base_dir: Path | None = None) -> list[Problem]:
    """Trace files and the engine profile the fleet names, checked under ``access`` (never read here)."""
    out: list[Problem] = []
    for i, svc in enumerate(fleet.services):
        if svc.traffic.trace_file is not None:
            try:
                access.check(svc.traffic.trace_file, base_dir)
            except FileRefused as exc:
                out.append((("services", i, "traffic", "trace_file"), exc.reason))
    if fleet.planner.perf_profile is not None:
        try:
            access.check(fleet.planner.perf_profile)
        except FileRefused as exc:
            out.append((("planner", "perf_profile"), exc.reason))
    return out


def _buckets(svc: Service) -> Iterator[tuple[tuple[str | int, ...], LengthBucket]]:
    """The service's written buckets (a trace is checked where it is read)."""
    t = svc.traffic
    if t.buckets is not None:
        for j, b in enumerate(t.buckets):
            yield ("traffic", "buckets", j), b
    elif t.histogram is not None:
        for b in t.histogram.buckets():
            row = t.histogram.input_tokens.index(b.input_tokens)
            yield ("traffic", "histogram", "input_tokens", row), b


def length_problems(i: int, svc: Service, model: ModelSpec) -> list[Problem]:
    """Buckets whose prompt and output do not fit the model's context."""
    out: list[Problem] = []
    for loc, b in _buckets(svc):
        if b.input_tokens + b.output_tokens > model.max_context_tokens:
            out.append((("services", i, *loc), f"{b.input_tokens} prompt + {b.output_tokens} output tokens exceed "
                        f"{model.id}'s {model.max_context_tokens}-token context"))
    return out


def service_pools(svc: Service, fleet: FleetSpec, cat: Catalog) -> list[Pool]:
    """Accelerator pools of known devices the service may use."""
    return [p for p in fleet.pools if (svc.allowed_pools is None or p.id in svc.allowed_pools)
            and p.device in cat.devices and cat.devices[p.device].kind is DeviceKind.ACCELERATOR]


def parallelism_problems(i: int, svc: Service, model: ModelSpec, pools: list[Pool], fleet: FleetSpec) -> list[Problem]:
    """TP sizes that split the model's heads, but fit no node of the service's pools."""
    out: list[Problem] = []
    where: tuple[str | int, ...] = ("services", i, "tp_options") if svc.tp_options else ("planner", "tp_options")
    for tp in svc.tp_options or []:
        if model.num_heads % tp or (tp <= model.num_kv_heads and model.num_kv_heads % tp) or (
                tp > model.num_kv_heads and tp % model.num_kv_heads):
            out.append((where, f"tp {tp} does not divide {model.id}'s {model.num_heads} heads / "
                        f"{model.num_kv_heads} KV heads"))
    largest = max((p.devices_per_node for p in pools), default=0)
    options = svc.tp_options or fleet.planner.tp_options
    if pools and all(tp > largest for tp in options):
        out.append((where, f"every TP size ({', '.join(map(str, options))}) is larger than a node of the pools "
                    f"{svc.id} may use (at most {largest} devices per node); a TP group runs inside one node"))
    return out


def _shapes(svc: Service, model: ModelSpec, pools: list[Pool], fleet: FleetSpec, cat: Catalog) -> list[ReplicaShape]:
    """TP-only shapes (PP 1) the service could run: TP within a node, splitting the heads."""
    shapes: list[ReplicaShape] = []
    for pool in pools:
        dev = cat.devices[pool.device]
        for tp in svc.tp_options or fleet.planner.tp_options:
            if tp <= pool.devices_per_node and model.num_heads % tp == 0 and model.ffn_hidden_size % tp == 0:
                shapes.append(ReplicaShape(model=model, device=dev, tp=tp))
    return shapes


def slo_problems(i: int, svc: Service, model: ModelSpec, pools: list[Pool], fleet: FleetSpec, cat: Catalog,
                 perf: PerfModel) -> list[Problem]:
    """SLO targets below the model's best case: one request alone on the fastest shape its pools allow."""
    buckets = [b for _, b in _buckets(svc)]
    shapes = _shapes(svc, model, pools, fleet, cat)
    if not buckets or not shapes:
        return []
    prompt = min(b.input_tokens for b in buckets)
    out: list[Problem] = []
    ttft = min((perf.prefill_ms(s, 1, prompt), s) for s in shapes)
    if ttft[0] > svc.slo.ttft_ms:
        out.append((("services", i, "slo", "ttft_ms"), f"{svc.slo.ttft_ms:g} ms is below {model.id}'s best case: "
                    f"{ttft[0]:.1f} ms to prefill its shortest prompt ({prompt} tokens) alone on "
                    f"{_label(ttft[1])}"))
    tpot = min((perf.decode_step_ms(s, 1, prompt), s) for s in shapes)
    if tpot[0] > svc.slo.tpot_ms:
        out.append((("services", i, "slo", "tpot_ms"), f"{svc.slo.tpot_ms:g} ms is below {model.id}'s best case: "
                    f"{tpot[0]:.2f} ms per output token for one request alone on {_label(tpot[1])}"))
    return out


def _label(shape: ReplicaShape) -> str:
    return f"{shape.device.id} tp{shape.tp}"


def service_problems(fleet: FleetSpec, cat: Catalog, perf: PerfModel | None) -> list[Problem]:
    """Length, parallelism and SLO problems of every service whose model the catalog knows."""
    out: list[Problem] = []
    for i, svc in enumerate(fleet.services):
        model = cat.models.get(svc.model)
        if model is None:
            continue
        pools = service_pools(svc, fleet, cat)
        out += length_problems(i, svc, model)
        par = parallelism_problems(i, svc, model, pools, fleet)
        out += par
        if perf is not None and not par:
            out += slo_problems(i, svc, model, pools, fleet, cat, perf)
    return out


def trace_problems(fleet: FleetSpec, base_dir: Path | None = None, access: FileAccess | None = None) -> list[str]:
    """Each service's trace read and bucketed: a bad file or row, or lengths over the model's context, as
    ``services[ID].traffic.trace_file: FILE:LINE: COLUMN: reason``."""
    from planner.catalog import fleet_catalog
    from planner.io.traces import TRACE_ACCESS, bucket, load_trace, trace_path

    cat = fleet_catalog(fleet)
    out: list[str] = []
    for svc in fleet.services:
        if svc.traffic.trace_file is None:
            continue
        where = f"services[{svc.id}].traffic.trace_file"
        path = trace_path(svc.traffic.trace_file, base_dir)
        try:
            trace = load_trace(path, access or TRACE_ACCESS)
            bucket(trace)
        except ValueError as exc:
            out.append(f"{where}: {exc}")
            continue
        model = cat.models.get(svc.model)
        if model is None:
            continue
        total = trace.input_tokens + trace.output_tokens
        over = [int(i) for i in (total > model.max_context_tokens).nonzero()[0][:1]]
        if over:
            row = over[0]
            out.append(f"{where}: {path}:{row + 2}: ContextTokens: {int(trace.input_tokens[row])} prompt + "
                       f"{int(trace.output_tokens[row])} output tokens exceed {model.id}'s "
                       f"{model.max_context_tokens}-token context")
    return out
