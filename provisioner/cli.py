"""``medley apply``, ``medley render``, ``medley inventory`` and ``medley controller``: typer-ready command functions.

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
from provisioner.render import Manifest, RenderError, RenderOptions, render_plan


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


def discovered(options: RenderOptions, api: Any) -> RenderOptions:
    """The options with the PodDisruptionBudget version the cluster serves (unchanged when it cannot say)."""
    from provisioner.inventory import served_pdb_version

    try:
        version = served_pdb_version(api)
    except Exception:  # no discovery answer: keep the configured version; the apply reports what fails
        return options
    return options.model_copy(update={"pdb_api_version": version})


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
    try:
        client = kube_client(kubeconfig)
        if (found := discovered(options, client.api)) != options:  # e.g. policy/v1beta1 PDBs on Kubernetes 1.20
            manifests = render_plan(plan, fleet, found)
        if output is not None:
            output.write_text(yaml.safe_dump_all(manifests, sort_keys=False), encoding="utf-8")
        applier = Applier(client, fleet.name, ready_timeout_s=wait_s)
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
