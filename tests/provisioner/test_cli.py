"""``medley apply`` / ``medley controller`` command functions: bad input is one line and exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
import yaml
from kube_double import DoubleServer, group, make_fleet, make_plan
from typer.testing import CliRunner

from provisioner.cli import apply_command, controller_command

app = typer.Typer()
app.command("apply")(apply_command)
app.command("controller")(controller_command)


def _files(tmp_path: Path) -> tuple[Path, Path]:
    fleet = make_fleet()
    fleet_path = tmp_path / "fleet.yaml"
    fleet_path.write_text(yaml.safe_dump(fleet.model_dump(mode="json", by_alias=True)), encoding="utf-8")
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(make_plan("p1", [group("chat", "h100-a", "h100-sxm", 1, 2)]).model_dump_json(),
                         encoding="utf-8")
    return plan_path, fleet_path


def _kubeconfig(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "double",
        "clusters": [{"name": "double", "cluster": {"server": url}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "double", "context": {"cluster": "double", "user": "u"}}],
    }), encoding="utf-8")
    return path


def test_bad_plan_field_is_one_line_and_exit_2(tmp_path: Path):
    plan_path, fleet_path = _files(tmp_path)
    plan_path.write_text('{"fleet": "f", "replica_groups": [], "cost_usd_per_hour": -1, '
                         '"solver": {"backend": "x", "status": "optimal"}}', encoding="utf-8")
    result = CliRunner().invoke(app, ["apply", str(plan_path), "--fleet", str(fleet_path)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "cost_usd_per_hour" in lines[0]


def test_plan_naming_an_unknown_pool_is_one_line_and_exit_2(tmp_path: Path):
    plan_path, fleet_path = _files(tmp_path)
    plan_path.write_text(make_plan("p", [group("chat", "nowhere", "h100-sxm", 1, 1)]).model_dump_json(),
                         encoding="utf-8")
    result = CliRunner().invoke(app, ["apply", str(plan_path), "--fleet", str(fleet_path)])
    line = result.output.strip()
    assert result.exit_code == 2 and "\n" not in line
    assert line.endswith("plan.json: the plan places chat on pool 'nowhere', which this fleet does not have")


def test_bad_fleet_file_is_one_line_and_exit_2(tmp_path: Path):
    plan_path, fleet_path = _files(tmp_path)
    fleet_path.write_text("pools: []\nservices: []\nbogus: 1\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["apply", str(plan_path), "--fleet", str(fleet_path)])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1 and "bogus" in result.output


@pytest.mark.integration
def test_dry_run_prints_the_diff_and_apply_then_reports_progress(tmp_path: Path, api: DoubleServer):
    plan_path, fleet_path = _files(tmp_path)
    kubeconfig = _kubeconfig(tmp_path, api.url)
    runner = CliRunner()
    result = runner.invoke(app, ["apply", str(plan_path), "--fleet", str(fleet_path), "--dry-run",
                                 "--kubeconfig", str(kubeconfig)])
    assert result.exit_code == 0, result.output
    assert "+ create Deployment assistants/chat-h100-a-h100-sxm-tp1-unified" in result.output
    assert not api.double.writes
    out = tmp_path / "manifests.yaml"
    result = runner.invoke(app, ["apply", str(plan_path), "--fleet", str(fleet_path), "--wait", "0",
                                 "--kubeconfig", str(kubeconfig), "-o", str(out)])
    assert result.exit_code == 3 and "created 4" in result.output  # nothing Ready yet in the double
    assert len(list(yaml.safe_load_all(out.read_text(encoding="utf-8")))) == 4
    api.mark_ready()
    result = runner.invoke(app, ["apply", str(plan_path), "--fleet", str(fleet_path), "--wait", "0",
                                 "--kubeconfig", str(kubeconfig)])
    assert result.exit_code == 0 and "no changes" in result.output and "complete" in result.output


def test_controller_rejects_bad_options_in_one_line(tmp_path: Path):
    options = tmp_path / "options.yaml"
    options.write_text("port: 0\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["controller", "--options", str(options)])
    assert result.exit_code == 2 and "port" in result.output and len(result.output.strip().splitlines()) == 1


def test_cluster_errors_are_one_line():
    from kubernetes.client.exceptions import ApiException

    from provisioner.cli import cluster_error

    exc = ApiException(status=404, reason="Not Found",
                       body='{"kind":"Status","message":"namespaces \\"assistants\\" not found"}')
    assert cluster_error(exc) == 'HTTP 404 Not Found: namespaces "assistants" not found'
