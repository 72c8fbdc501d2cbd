"""``medley power …``: the power loop, the node agent, the simulator and power planning."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import asdict
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from planner.cli.common import fail

app = typer.Typer(help="Power oversubscription: capping loop, node agent, power planning.", no_args_is_help=True)

DEFAULT_TRACE = "benchmarks/data/traces/azure_llm_2023/AzureLLMInferenceTrace_code.csv"


class TelemetryKind(StrEnum):
    SIM = "sim"
    PROMETHEUS = "prometheus"
    PDU = "pdu"


class ActuatorKind(StrEnum):
    KUBERNETES = "kubernetes"
    DRY_RUN = "dry-run"


def _node_client() -> Any:
    """The Kubernetes node client, or one line saying why there is none (exit 2)."""
    from power.actuators import KubernetesNodeClient

    try:
        return KubernetesNodeClient()
    except Exception as exc:  # noqa: BLE001 - ConfigException, an unreadable or invalid kubeconfig
        fail(f"kubeconfig: no Kubernetes cluster to talk to (not in a cluster, and KUBECONFIG or ~/.kube/config "
             f"gives none: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__})")


def _positive(name: str, value: float) -> None:
    if not value > 0:
        fail(f"{name}: must be positive (got {value})")


@app.command()
def run(
    domain: Annotated[Path, typer.Option(help="power domain file (domain + servers)")],
    telemetry: Annotated[TelemetryKind, typer.Option(help="where domain power comes from")] = TelemetryKind.SIM,
    actuator: Annotated[ActuatorKind, typer.Option(help="where caps go")] = ActuatorKind.KUBERNETES,
    domain_id: Annotated[str | None, typer.Option(help="domain id in a fleet file")] = None,
    prometheus_url: Annotated[str, typer.Option(help="Prometheus base URL")] = "http://prometheus:9090",
    prometheus_selector: Annotated[str, typer.Option(help="DCGM label selector")] = "",
    pdu_url: Annotated[str, typer.Option(help="row meter URL serving JSON")] = "",
    period_s: Annotated[float, typer.Option(help="control period")] = 1.0,
    stale_after_s: Annotated[float, typer.Option(help="sample age by the meter's clock treated as missing")] = 3.0,
    stuck_after_s: Annotated[float, typer.Option(help="meter not moving this long is missing data (set it above "
                                                      "the source's refresh, e.g. a scrape interval)")] = 2.0,
    safe_after_s: Annotated[float, typer.Option(help="missing data this long applies the safe caps")] = 2.0,
    metrics_port: Annotated[int, typer.Option(help="Prometheus metrics port (0: off)")] = 9400,
    sim_load: Annotated[float, typer.Option(help="sim: uncapped demand as share of budget")] = 0.95,
    duration_s: Annotated[float, typer.Option(help="sim: seconds to simulate")] = 300.0,
    max_steps: Annotated[int | None, typer.Option(help="stop after this many periods")] = None,
) -> None:
    """Run the capping loop of one power domain (``--telemetry sim`` replays it on the simulator)."""
    from power.config import InputError, load_domain_file
    from power.loop import LoopConfig

    try:
        spec = load_domain_file(domain, domain_id)
        servers = spec.server_specs()
        loop_cfg = LoopConfig(period_s=period_s, stale_after_s=stale_after_s, stuck_after_s=stuck_after_s,
                              safe_after_s=safe_after_s)
    except (InputError, ValueError) as e:
        fail(str(e))
    if not servers:
        fail("servers: the domain file must list the domain's servers")
    _positive("sim_load", sim_load)
    from power.policy import PolicyConfig

    policy_cfg = PolicyConfig(thresholds=spec.domain.thresholds)
    if telemetry is TelemetryKind.SIM:
        from power.sim import SimConfig, profile_workload, simulate

        _positive("duration_s", duration_s)
        events: list[dict[str, Any]] = []
        sim_cfg = SimConfig()
        wl = profile_workload(servers, spec.domain.budget_watts, lambda t: sim_load, duration_s, sim_cfg.dt_s)
        res = simulate(servers, wl, spec.domain.budget_watts, policy_config=policy_cfg, loop_config=loop_cfg,
                       sim=sim_cfg, on_step=lambda s, p: events.extend(
                           {"t_s": round(ev.time_s, 1), "kind": ev.kind, "message": ev.message} for ev in s.events))
        for line in events:
            typer.echo(json.dumps(line))
        typer.echo(json.dumps({"domain": spec.domain.id, "brake_events": res.brake_events,
                               "peak_share": round(float(res.share.max()), 4),
                               "max_over_budget_s": res.max_over_budget_s(),
                               "cap_transitions": res.cap_transitions}))
        return
    _run_live(spec, servers, telemetry, actuator, prometheus_url, prometheus_selector, pdu_url, loop_cfg,
              policy_cfg, metrics_port, max_steps)


def _run_live(spec: Any, servers: Any, telemetry: TelemetryKind, actuator: ActuatorKind, prometheus_url: str,
              selector: str, pdu_url: str, loop_cfg: Any, policy_cfg: Any, metrics_port: int,
              max_steps: int | None) -> None:
    from prometheus_client import REGISTRY, start_http_server

    from power.actuators import Actuator, ApplyReport, KubernetesCapPublisher
    from power.loop import ControlLoop, LoopMetrics, WallClock
    from power.policy import Policy
    from power.telemetry import PduTelemetry, PowerEnvelope, PrometheusTelemetry, Telemetry

    clock = WallClock()
    source: Telemetry
    if telemetry is TelemetryKind.PROMETHEUS:
        overhead = sum(s.overhead_watts for s in servers)
        source = PrometheusTelemetry(prometheus_url, selector, overhead_watts=overhead,
                                     expected_series=sum(s.gpus for s in servers))
    else:
        if not pdu_url:
            fail("pdu_url: required with --telemetry pdu")
        source = PduTelemetry(pdu_url, clock.now_s)

    class DryRun:
        def apply(self, actions: Any) -> ApplyReport:
            for a in actions:
                typer.echo(json.dumps({"gpu": a.gpu_id, "clock_mhz": a.target.clock_mhz,
                                       "power_limit_watts": a.target.power_limit_watts, "reason": a.reason}))
            return ApplyReport(tuple(a.gpu_id for a in actions))

        def read_back(self) -> dict[str, Any]:
            return {}

    sink: Actuator
    if actuator is ActuatorKind.KUBERNETES:
        sink = KubernetesCapPublisher(_node_client(), sorted({s.node for s in servers}))
    else:
        sink = DryRun()
    gpus = spec.gpus()
    if metrics_port:
        start_http_server(metrics_port)
    overheads = {s.node: s.overhead_watts for s in servers}
    loop = ControlLoop(spec.domain.id, spec.domain.budget_watts, Policy(gpus, policy_cfg, overheads), source, sink,
                       clock, loop_cfg, rng=random.Random(), metrics=LoopMetrics(REGISTRY),
                       on_event=lambda e: typer.echo(json.dumps(asdict(e))), envelope=PowerEnvelope.of(gpus, overheads))
    loop.run(max_steps=max_steps)


@app.command()
def agent(
    node: Annotated[str, typer.Option(envvar="NODE_NAME", help="this node's Kubernetes name")],
    period_s: Annotated[float, typer.Option(help="seconds between enforcement passes")] = 2.0,
    once: Annotated[bool, typer.Option(help="one pass, then exit")] = False,
    probe_port: Annotated[int, typer.Option(
        help="port of /metrics, /healthz and /readyz (0: any free port, -1: none)")] = 8082,
) -> None:
    """Node agent: enforce this node's cap intents through NVML and report what is applied (its node only)."""
    _positive("period_s", period_s)
    import signal
    import threading

    import pynvml

    from planner.cli.probes import ProbeServer
    from power.actuators import NvmlActuator
    from power.agent import AgentMetrics, NodeAgent, OwnNodeClient

    def boot_id() -> str:
        try:
            return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        except OSError:
            return ""

    metrics = AgentMetrics()
    node_agent = NodeAgent(node, OwnNodeClient(node, _node_client()), NvmlActuator(pynvml, boot_id=boot_id),
                           metrics=metrics)
    if once:
        report = node_agent.step()
        typer.echo(json.dumps(asdict(report)))
        raise typer.Exit(1 if report.error or report.failed else 0)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    probes = None
    if probe_port >= 0:
        probes = ProbeServer(metrics.registry, healthy=lambda: node_agent.healthy(period_s),
                             ready=node_agent.ready, port=probe_port).start()
    node_agent.run(period_s, stop=stop.is_set, sleep=lambda s: None if stop.wait(s) else None)
    if probes is not None:
        probes.close()


def _device(name: str) -> Any:
    from planner.catalog import builtin_catalog

    cat = builtin_catalog()
    if name not in cat.devices:
        fail(f"device: unknown device {name!r} (known: {', '.join(sorted(cat.devices))})")
    return cat.devices[name]


def _trace(path: str) -> Any:
    from power.sim import load_azure_trace

    try:
        return load_azure_trace(path)
    except FileNotFoundError:
        fail(f"trace: file {path!r} not found")
    except (KeyError, ValueError) as e:
        fail(f"trace: {path} is not an Azure LLM trace CSV ({e})")


@app.command()
def simulate(
    device: Annotated[list[str], typer.Option(help="device type(s) of the row, cycled over servers")] = ["a100-80gb"],  # noqa: B006
    servers: Annotated[int, typer.Option(help="servers in the row")] = 52,
    budget_servers: Annotated[int, typer.Option(help="servers the budget was provisioned for")] = 40,
    trace: Annotated[str, typer.Option(help="Azure 2023 trace CSV")] = DEFAULT_TRACE,
    peak_share: Annotated[float, typer.Option(help="uncapped peak of the budgeted row, share")] = 0.79,
    duration_s: Annotated[float, typer.Option(help="seconds of trace to replay")] = 3600.0,
    cap_latency_s: Annotated[float, typer.Option(help="time for a cap to take effect")] = 0.2,
    sensor_delay_s: Annotated[float, typer.Option(help="telemetry delay")] = 0.0,
    ignore_share: Annotated[float, typer.Option(help="share of GPUs ignoring caps")] = 0.0,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
) -> None:
    """Replay a trace on an oversubscribed row, capped and uncapped; print the cost of capping as JSON."""
    from power.plan import impact, row_servers
    from power.sim import (
        ServerSpec,
        SimConfig,
        calibrate_load,
        domain_budget_watts,
        server_overhead_watts,
        trace_workload,
    )
    from power.sim import simulate as run_sim

    for name, v in (("servers", servers), ("budget_servers", budget_servers), ("duration_s", duration_s),
                    ("peak_share", peak_share), ("cap_latency_s", cap_latency_s)):
        _positive(name, v)
    if not 0 <= ignore_share <= 1:
        fail("ignore_share: must be in [0, 1]")
    if sensor_delay_s < 0:
        fail("sensor_delay_s: must not be negative")
    devices = [_device(d) for d in device]
    data = _trace(trace)
    template = [ServerSpec("t", d, 8, 0, server_overhead_watts(d)) for d in devices]
    base = row_servers(template, budget_servers)
    budget = domain_budget_watts(base)
    cfg = SimConfig(dt_s=0.2, cap_latency_s=cap_latency_s, sensor_delay_s=sensor_delay_s,
                    ignore_share=ignore_share, seed=seed)
    load = calibrate_load(data, base, budget, peak_share, dt_s=cfg.dt_s, duration_s=duration_s, seed=seed)
    row = row_servers(template, servers)
    wl = trace_workload(data, row, load, dt_s=cfg.dt_s, duration_s=duration_s, seed=seed)
    capped = run_sim(row, wl, budget, sim=cfg)
    free = run_sim(row, wl, budget, sim=cfg, control=False)
    out = asdict(impact(capped, free))
    out.update(servers=servers, budget_servers=budget_servers, budget_watts=round(budget),
               copies_per_server=round(load, 5), cap_transitions=capped.cap_transitions)
    typer.echo(json.dumps(out))


@app.command()
def plan(
    domain: Annotated[Path, typer.Option(help="power domain file (or fleet file)")],
    device: Annotated[str, typer.Option(help="device type of the servers")] = "a100-80gb",
    gpus: Annotated[int, typer.Option(help="GPUs per server")] = 8,
    overhead_watts: Annotated[float | None, typer.Option(help="server power outside GPUs")] = None,
    domain_id: Annotated[str | None, typer.Option(help="domain id in a fleet file")] = None,
    risk: Annotated[float, typer.Option(help="allowed share of seconds with demand over budget")] = 0.001,
    trace: Annotated[str, typer.Option(help="Azure 2023 trace CSV")] = DEFAULT_TRACE,
    peak_share: Annotated[float, typer.Option(help="uncapped peak of the nameplate row, share")] = 0.79,
    copies_per_server: Annotated[float | None, typer.Option(help="trace copies per server (skips calibration)")] = None,
    duration_s: Annotated[float, typer.Option(help="seconds of trace to use")] = 1800.0,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """How many servers the domain can host at a given risk, from the trace's power distribution."""
    from power.config import InputError, load_domain_file
    from power.plan import plan_servers
    from power.sim import ServerSpec, server_overhead_watts

    try:
        spec = load_domain_file(domain, domain_id)
    except InputError as e:
        fail(str(e))
    if not 0 <= risk < 1:
        fail(f"risk: must be in [0, 1) (got {risk})")
    if gpus < 1:
        fail("gpus: must be at least 1")
    _positive("peak_share", peak_share)
    _positive("duration_s", duration_s)
    if copies_per_server is not None:
        _positive("copies_per_server", copies_per_server)
    dev = _device(device)
    overhead = overhead_watts if overhead_watts is not None else server_overhead_watts(dev)
    server = ServerSpec("server", dev, gpus, 1, overhead)
    if server.max_watts > spec.domain.budget_watts:
        fail(f"budget_watts: {spec.domain.budget_watts:.0f} W is below one server's {server.max_watts:.0f} W")
    result = plan_servers(spec.domain, server, _trace(trace), risk=risk, peak_share=peak_share,
                          copies_per_server=copies_per_server, duration_s=duration_s)
    if as_json:
        typer.echo(json.dumps(asdict(result)))
        return
    _print_plan(result, typer.echo)


def _print_plan(result: Any, echo: Callable[[str], None]) -> None:
    echo(f"domain {result.domain}: nameplate {result.nameplate_servers} servers; at risk {result.risk:g} "
         f"(share of seconds with uncapped demand over budget) it hosts {result.max_servers} "
         f"({result.max_servers / result.nameplate_servers:.2f}x)")
    echo("servers  ratio  peak   >T1     >T2     >budget")
    for r in result.rows:
        echo(f"{r.servers:7d}  {r.oversubscription:.2f}  {r.peak_share:.3f}  {r.time_above_t1:.4f}  "
             f"{r.time_above_t2:.4f}  {r.time_above_budget:.5f}")
