"""``medley apply`` and ``medley controller``: typer-ready command functions.

Bad input ends with one line ``field: reason`` on stderr and exit code 2; a cluster that refuses ends
with exit code 1.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import ValidationError

from planner.cli.common import fail
from planner.io.fleetfile import FleetError, load_fleet
from planner.schema import FleetSpec, Plan
from provisioner.apply import Applier
from provisioner.cluster import kube_client
from provisioner.render import RenderError, RenderOptions, render_plan


def _validation_line(where: str, exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ()))
    return f"{where}: {loc or '(root)'}: {err.get('msg', 'invalid')}"


def cluster_error(exc: BaseException) -> str:
    """An API error in one line: status, reason and the API server's message."""
    status = getattr(exc, "status", None)
    if status is None:
        return str(exc).replace("\n", " ")
    message = ""
    with contextlib.suppress(ValueError, AttributeError):  # a body that is not a Status
        message = json.loads(getattr(exc, "body", "") or "{}").get("message", "")
    return f"HTTP {status} {getattr(exc, 'reason', '') or ''}: {message}".strip().rstrip(":")


def load_plan(path: Path) -> Plan:
    """Read a plan (JSON or YAML); raises ValueError with ``file: field: reason``."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"{path}: (file): cannot read: {exc.strerror}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: (file): not valid JSON/YAML: {exc}") from None
    try:
        return Plan.model_validate(data)
    except ValidationError as exc:
        raise ValueError(_validation_line(str(path), exc)) from None


def load_options(path: Path | None, image: str | None) -> RenderOptions:
    """Rendering options from a YAML file, with ``--image`` overriding the vLLM image."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"{path}: (file): {exc}") from None
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
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print what would change; write nothing")] = False,
    kubeconfig: Annotated[str | None, typer.Option("--kubeconfig", help="default: in-cluster, then ~/.kube")] = None,
    options_path: Annotated[Path | None, typer.Option("--options", help="render options YAML")] = None,
    image: Annotated[str | None, typer.Option("--image", help="vLLM image")] = None,
    wait_s: Annotated[float, typer.Option("--wait", help="seconds to wait for new replicas")] = 900.0,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="also write the manifests here")] = None,
) -> None:
    """Apply a plan to the cluster, make-before-break; with --dry-run print the diff only."""
    try:
        plan = load_plan(plan_path)
        fleet: FleetSpec = load_fleet(fleet_path)
        options = load_options(options_path, image)
        manifests = render_plan(plan, fleet, options)
    except FleetError as exc:
        fail(str(exc))
    except (ValueError, RenderError) as exc:
        fail(str(exc))
    if output is not None:
        output.write_text(yaml.safe_dump_all(manifests, sort_keys=False), encoding="utf-8")
    try:
        applier = Applier(kube_client(kubeconfig), fleet.name, ready_timeout_s=wait_s)
        result = applier.apply(manifests, dry_run=dry_run)
    except Exception as exc:  # the cluster said no: report in one line
        fail(f"cluster: {cluster_error(exc)}", code=1)
    typer.echo(result.diff, nl=False)
    if not dry_run:
        typer.echo(f"created {len(result.created)}, updated {len(result.updated)}, scaled down "
                   f"{len(result.shrunk)}, pruned {len(result.pruned)}; "
                   + ("complete" if result.complete else "in progress (run again to continue)"))
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
) -> None:
    """Run the controller: watch Medley's resources, re-plan, apply per FleetPlan mode, repair drift."""
    from provisioner.controller import ControllerLoop, Debouncer, LeaseElector, Reconciler

    try:
        options = load_options(options_path, None)
    except ValueError as exc:
        fail(str(exc))
    if debounce_s < 0 or resync_s <= 0:
        fail("--debounce/--resync: must be positive")
    client = kube_client(kubeconfig)
    loop = ControllerLoop(
        reconciler=Reconciler(client, options=options),
        elector=LeaseElector(client, "medley-controller", lease_namespace,
                             identity or f"{socket.gethostname()}-{os.getpid()}"),
        fleetplan=fleet_plan, debouncer=Debouncer(quiet_s=debounce_s), resync_s=resync_s)
    stop = threading.Event()
    if watch:
        from provisioner.operator import run_operator

        if kubeconfig:  # kopf's own login reads the same file
            os.environ["KUBECONFIG"] = kubeconfig

        run_operator(loop, stop)
    else:
        try:
            loop.run(stop)
        except KeyboardInterrupt:
            stop.set()
