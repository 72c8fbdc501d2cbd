"""``medley apply``, ``render``, ``inventory`` and ``controller``: typer-ready command functions.

Bad input ends with one line ``field: reason`` on stderr and exit code 2; a cluster that refuses ends
with exit code 1; an apply that wrote but has not finished (replicas not Ready yet) with exit code 3.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import ValidationError

from planner.cli.common import fail
from planner.fingerprint import plan_fleet_problem
from planner.io.files import OPEN, FileRefused
from planner.io.fleetfile import FleetError, load_fleet
from planner.io.strict import YamlProblem, load_yaml
from planner.schema import FleetSpec, Plan
from provisioner.apply import Applier, ApplyRefused
from provisioner.cluster import KubeClusterClient, RetryPolicy, error_line, kube_client
from provisioner.render import Manifest, RenderError, RenderOptions, render_plan


def _validation_line(where: str, exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ()))
    return f"{where}: {loc or '(root)'}: {err.get('msg', 'invalid')}"


def cluster_error(exc: BaseException) -> str:
    """An API error in one line: status, reason and the API server's message."""
    return error_line(exc)


def load_plan(path: Path) -> Plan:
    """Read a plan (JSON or YAML); raises ValueError with ``file: field: reason``."""
    try:
        text = OPEN.read_text(path)
    except FileRefused as exc:
        raise ValueError(f"{path}: (file): {exc.reason}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else load_yaml(text)[0]
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}:{exc.lineno}: (file): not valid JSON: {exc.msg}") from None
    except YamlProblem as exc:
        raise ValueError(f"{path}:{exc.line}: {exc.field}: {exc.reason}") from None
    try:
        return Plan.model_validate(data)
    except ValidationError as exc:
        raise ValueError(_validation_line(str(path), exc)) from None


def check_plan_fleet(plan_path: Path, plan: Plan, fleet: FleetSpec) -> None:
    """ValueError naming the plan file when the plan was made for another fleet (planner.fingerprint)."""
    mismatch = plan_fleet_problem(plan, fleet)
    if mismatch is not None:
        raise ValueError(f"{plan_path}: {mismatch}")


def load_options(path: Path | None, image: str | None) -> RenderOptions:
    """Rendering options from a YAML file, with ``--image`` overriding the vLLM image."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = load_yaml(OPEN.read_text(path))[0] or {}
        except FileRefused as exc:
            raise ValueError(f"{path}: (file): {exc.reason}") from None
        except YamlProblem as exc:
            raise ValueError(f"{path}:{exc.line}: {exc.field}: {exc.reason}") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}:1: (file): render options are a YAML mapping")
    try:
        options = RenderOptions.model_validate(data)
    except ValidationError as exc:
        raise ValueError(_validation_line(str(path), exc)) from None
    if image:
        options = options.model_copy(update={"images": {**options.images, "vllm": image}})
    return options


def apply_command(
    plan_path: Annotated[Path, typer.Argument(help="plan JSON written by `medley plan`")],
    fleet_path: Annotated[Path, typer.Option("--fleet", "-f", help="the fleet file the plan was made for")],
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="print what would change and have the API server check every object; write nothing")] = False,
    create_namespaces: Annotated[bool, typer.Option(
        "--create-namespaces", help="create missing team namespaces (labelled as Medley's)")] = False,
    kubeconfig: Annotated[str | None, typer.Option("--kubeconfig", help="default: in-cluster, then ~/.kube")] = None,
    options_path: Annotated[Path | None, typer.Option("--options", help="render options YAML")] = None,
    image: Annotated[str | None, typer.Option("--image", help="vLLM image")] = None,
    wait_s: Annotated[float, typer.Option("--wait", help="seconds to wait for new replicas")] = 900.0,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="also write the manifests here")] = None,
) -> None:
    """Apply a plan to the cluster, make-before-break; with --dry-run the API server checks it, nothing is written.

    Exit codes: 0 done (or a clean dry run), 1 the cluster refused (nothing written when refused up front),
    2 bad input, 3 written but not finished (run again to continue).
    """
    try:
        plan = load_plan(plan_path)
        fleet: FleetSpec = load_fleet(fleet_path)
        check_plan_fleet(plan_path, plan, fleet)
        options = load_options(options_path, image)
        manifests = render_plan(plan, fleet, options)
    except FleetError as exc:
        fail(str(exc))
    except (ValueError, RenderError) as exc:
        fail(str(exc))
    if output is not None:
        output.write_text(yaml.safe_dump_all(manifests, sort_keys=False), encoding="utf-8")
    try:
        applier = Applier(kube_client(kubeconfig), fleet.name, ready_timeout_s=wait_s,
                          create_namespaces=create_namespaces)
        result = applier.apply(manifests, dry_run=dry_run)
    except ApplyRefused as exc:
        fail(f"cluster: refused before writing anything: {'; '.join(exc.problems)}", code=1)
    except Exception as exc:  # the cluster said no: report in one line
        fail(f"cluster: {cluster_error(exc)}", code=1)
    typer.echo(result.diff, nl=False)
    if dry_run:
        if result.failed:
            fail(f"cluster: the API server refused {len(result.failed)} of the changes: "
                        + "; ".join(str(f) for f in result.failed), code=1)
        return
    typer.echo(f"created {len(result.created)}, updated {len(result.updated)}, scaled down "
               f"{len(result.shrunk)}, pruned {len(result.pruned)}"
               + (f", failed {len(result.failed)}" if result.failed else "") + "; "
               + ("complete" if result.complete else "in progress (run again to continue)"))
    for failure in result.failed:
        typer.echo(f"failed: {failure}", err=True)
    if not result.complete:
        raise typer.Exit(code=3)


def controller_command(
    fleet_plan: Annotated[str, typer.Option("--fleet-plan", help="the FleetPlan to reconcile")] = "medley",
    kubeconfig: Annotated[str | None, typer.Option("--kubeconfig")] = None,
    lease_namespace: Annotated[str, typer.Option("--lease-namespace", envvar="POD_NAMESPACE")] = "medley-system",
    identity: Annotated[str | None, typer.Option("--identity", envvar="POD_NAME")] = None,
    options_path: Annotated[Path | None, typer.Option("--options", help="render options YAML")] = None,
    resync_s: Annotated[float, typer.Option("--resync", help="seconds between full passes")] = 30.0,
    debounce_s: Annotated[float, typer.Option("--debounce", help="quiet seconds before a re-plan")] = 2.0,
    watch: Annotated[bool, typer.Option("--watch/--no-watch", help="react to changes via kopf watches")] = True,
    probe_port: Annotated[int, typer.Option(
        "--probe-port", help="port of /metrics, /healthz and /readyz (0: any free port, -1: none)")] = 8081,
    tick_s: Annotated[float, typer.Option("--tick", help="seconds between Lease renewals")] = 1.0,
    fast_exit: Annotated[bool, typer.Option(
        "--fast-exit/--no-fast-exit", hidden=True,
        help="end the process as soon as the Lease is released, skipping the interpreter's teardown")] = True,
) -> None:
    """Run the controller: watch Medley's resources, re-plan, apply per FleetPlan mode, repair drift.

    SIGTERM or SIGINT stops it within a few seconds, giving the leader Lease up for a standby replica.
    """
    from planner.cli.probes import ProbeServer
    from provisioner.controller import Reconciler
    from provisioner.events import EventRecorder
    from provisioner.loop import ControllerLoop, Debouncer, LeaseElector, lease_retry
    from provisioner.operator import login_with, run_controller
    from provisioner.probes import ControllerMetrics

    try:
        options = load_options(options_path, None)
    except ValueError as exc:
        fail(str(exc))
    if debounce_s < 0 or resync_s <= 0 or tick_s <= 0:
        fail("--debounce/--resync/--tick: must be positive")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("kopf", "aiohttp"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # each retry is not news: the start-up check and the elector say once that the API server does not answer
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    logging.getLogger("kopf._core.reactor.observation").setLevel(logging.CRITICAL)
    # kopf runs in a thread of its own on purpose: SIGTERM is handled here, not by kopf
    logging.getLogger("kopf._core.reactor.running").setLevel(logging.ERROR)
    try:
        client = kube_client(kubeconfig, RetryPolicy(attempts=5, initial_s=0.2, max_s=2.0, request_timeout_s=20))
    except Exception as exc:  # noqa: BLE001 - no kubeconfig, no service account
        fail(f"--kubeconfig: {exc}")
    _say_reachability(client)
    who = identity or f"{socket.gethostname()}-{os.getpid()}"
    metrics = ControllerMetrics()
    loop = ControllerLoop(
        reconciler=Reconciler(client, options=options, events=EventRecorder(client, instance=who), metrics=metrics),
        elector=LeaseElector(KubeClusterClient(client.api, lease_retry()), "medley-controller", lease_namespace,
                             who),
        fleetplan=fleet_plan, debouncer=Debouncer(quiet_s=debounce_s), resync_s=resync_s, tick_s=tick_s,
        metrics=metrics)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    probes = None
    if probe_port >= 0:
        probes = ProbeServer(metrics.registry, healthy=loop.healthy, ready=loop.ready, port=probe_port).start()
        logging.getLogger(__name__).info("probes and metrics on :%d", probes.port)
    took = run_controller(loop, stop, login=login_with(client.api.configuration) if watch else None)
    logging.getLogger(__name__).info("stopped in %.2f s; Lease %s", took,
                                     "released" if not loop.leading else "left to expire")
    if probes is not None:
        probes.close()
    if fast_exit:
        # Everything that matters is done (Lease released, pass abandoned); the interpreter's teardown of the
        # solver and plotting modules can take seconds on a busy node, past a pod's termination grace.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def _say_reachability(client: KubeClusterClient) -> None:
    """One line at start: the API server the controller talks to, and whether it answers (within 5 s)."""
    host = client.api.configuration.host
    from kubernetes import client as k8s

    try:
        k8s.VersionApi(client.api).get_code(_request_timeout=5)
    except Exception as exc:  # noqa: BLE001 - whatever the reason, the controller keeps trying
        logging.getLogger(__name__).warning("API server %s does not answer (%s); the controller keeps trying and "
                                            "reports not ready until it does", host, cluster_error(exc)[:300])
    else:
        logging.getLogger(__name__).info("API server %s answers", host)


class _NoAliases(yaml.SafeDumper):
    """YAML without anchors: every manifest stands alone."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump_yaml(docs: list[Any]) -> str:
    """Documents as multi-document YAML, without anchors and in the order given."""
    return yaml.dump_all(docs, Dumper=_NoAliases, sort_keys=False)


def write_manifests(manifests: list[Manifest], directory: Path) -> list[Path]:
    """One file per object under ``DIR/<namespace>/``, the namespaces, and a kustomization listing them."""
    directory.mkdir(parents=True, exist_ok=True)
    namespaces = sorted({m["metadata"]["namespace"] for m in manifests})
    files = [directory / "namespaces.yaml"]
    files[0].write_text(dump_yaml([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}}
                                   for n in namespaces]), encoding="utf-8")
    for m in manifests:
        path = directory / m["metadata"]["namespace"] / f"{m['kind'].lower()}-{m['metadata']['name']}.yaml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(dump_yaml([m]), encoding="utf-8")
        files.append(path)
    kustomization = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                     "resources": [str(f.relative_to(directory)) for f in files]}
    (directory / "kustomization.yaml").write_text(dump_yaml([kustomization]), encoding="utf-8")
    return files


def render_command(
    plan_path: Annotated[Path, typer.Argument(help="plan JSON written by `medley plan`")],
    fleet_path: Annotated[Path, typer.Option("--fleet", "-f", help="the fleet file the plan was made for")],
    output: Annotated[Path, typer.Option("--output", "-o", help="directory for the manifests")],
    options_path: Annotated[Path | None, typer.Option("--options", help="render options YAML")] = None,
    image: Annotated[str | None, typer.Option("--image", help="vLLM image")] = None,
    kube_version: Annotated[str | None, typer.Option(
        "--kube-version", help="target Kubernetes MAJOR.MINOR: 1.20 gets policy/v1beta1 PDBs (default: the "
        "options' pdb_api_version, policy/v1)")] = None,
    kubeconfig: Annotated[str | None, typer.Option(
        "--kubeconfig", help="ask this cluster which API versions it serves (nothing is written to it)")] = None,
) -> None:
    """Write a plan's manifests to a directory, offline (one file per object and a kustomization)."""
    try:
        plan = load_plan(plan_path)
        fleet: FleetSpec = load_fleet(fleet_path)
        check_plan_fleet(plan_path, plan, fleet)
        options = load_options(options_path, image)
        if kube_version is not None:
            from provisioner.inventory import pdb_version_for

            options = options.model_copy(update={"pdb_api_version": pdb_version_for(kube_version)})
    except FleetError as exc:
        fail(str(exc))
    except ValueError as exc:
        fail(str(exc))
    if kubeconfig is not None:
        from provisioner.inventory import served_pdb_version

        try:
            version = served_pdb_version(kube_client(kubeconfig).api)
        except Exception as exc:  # the cluster said no: report in one line
            fail(f"cluster: {cluster_error(exc)}", code=1)
        options = options.model_copy(update={"pdb_api_version": version})
    try:
        manifests = render_plan(plan, fleet, options)
    except RenderError as exc:
        fail(str(exc))
    files = write_manifests(manifests, output)
    typer.echo(f"wrote {len(manifests)} objects in {len(files)} files to {output} (kubectl apply -k {output})")


def inventory_command(
    fleet_path: Annotated[Path | None, typer.Option(
        "--fleet", "-f", help="fill this fleet's pools with the cluster's nodes (default: pools per device and "
        "zone)")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="write YAML here (default: stdout)")] = None,
    kubeconfig: Annotated[str | None, typer.Option("--kubeconfig", help="default: in-cluster, then ~/.kube")] = None,
    selector: Annotated[str, typer.Option("--selector", "-l", help="only nodes with these labels")] = "",
    rack_label: Annotated[list[str] | None, typer.Option(
        "--rack-label", help="node label naming the rack (repeatable; default: topology.kubernetes.io/rack, "
        "rack)")] = None,
    tolerate: Annotated[list[str] | None, typer.Option(
        "--tolerate", help="taint key the rendered pods tolerate (repeatable; see RenderOptions.tolerations)")] = None,
    options_path: Annotated[Path | None, typer.Option("--options", help="render options YAML (device labels, "
                                                       "tolerations)")] = None,
) -> None:
    """Read the cluster's GPU nodes into pools with node lists, for `medley plan --place`."""
    from provisioner.inventory import RACK_LABELS, fill_fleet, pools_from_nodes, read_nodes

    try:
        options = load_options(options_path, None)
        fleet = load_fleet(fleet_path) if fleet_path is not None else None
        raw = yaml.safe_load(fleet_path.read_text(encoding="utf-8")) if fleet_path is not None else None
    except FleetError as exc:
        fail(str(exc))
    except ValueError as exc:
        fail(str(exc))
    try:
        nodes = read_nodes(kube_client(kubeconfig).api, selector)
    except Exception as exc:  # the cluster said no: report in one line
        fail(f"cluster: {cluster_error(exc)}", code=1)
    tolerated = [*(tolerate or []), *(t.get("key", "") for t in options.tolerations)]
    kwargs: dict[str, Any] = {"device_labels": options.device_labels, "tolerated": tolerated,
                              "rack_labels": tuple(rack_label or RACK_LABELS)}
    if fleet is not None and raw is not None:
        result = fill_fleet(raw, fleet, nodes, **kwargs)
        text = dump_yaml([result.fleet])
    else:
        result = pools_from_nodes(nodes, **kwargs)
        text = dump_yaml([{"pools": [p.model_dump(mode="json", exclude_defaults=True) for p in result.pools]}])
    for note in result.notes:
        typer.echo(note, err=True)
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {output}", err=True)
