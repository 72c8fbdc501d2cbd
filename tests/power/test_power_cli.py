"""``medley power`` commands, power planning, and the node-agent manifest."""

from __future__ import annotations

import json
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from typer.testing import CliRunner

from planner.catalog import builtin_catalog
from planner.schema import PowerDomain
from power.cli import app
from power.config import InputError, load_domain_file
from power.plan import plan_servers
from power.sim import ServerSpec, load_azure_trace

ROOT = Path(__file__).resolve().parents[2]
TRACE = ROOT / "benchmarks/data/traces/azure_llm_2023/AzureLLMInferenceTrace_code.csv"
runner = CliRunner()


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "domain.yaml"
    p.write_text(text)
    return p


GOOD = """
domain: {id: row-a, budget_watts: 20000}
servers:
  - {node: n1, device: a100-80gb, priority: 0}
  - {node: n2, device: a100-80gb, priority: 0}
  - {node: n3, device: a100-80gb}
  - {node: n4, device: h100-sxm}
"""


@pytest.mark.parametrize(("text", "field"), [
    ("domain: {id: row-a, budget_watts: -5}\n", "domain.budget_watts"),
    ("domain: {id: row-a}\n", "domain.budget_watts"),
    ("domain: {id: row-a, budget_watts: 1000, thresholds: {t1_share: 0.95, t2_share: 0.9}}\n",
     "domain.thresholds.t1_share"),
    ("domain: {id: row-a, budget_watts: 9000}\nservers: [{node: n1, device: tpu-v9}]\n", "servers.0.device"),
    ("domain: {id: row-a, budget_watts: 9000}\nservers: [{node: n1, device: l4, gpus: 0}]\n", "servers.0.gpus"),
    ("- just a list\n", "domain"),
])
def test_bad_domain_file_exits_2_with_one_line_naming_the_field(tmp_path: Path, text: str, field: str) -> None:
    result = runner.invoke(app, ["run", "--domain", str(write(tmp_path, text)), "--duration-s", "10"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(field), lines


def test_bad_options_exit_2(tmp_path: Path) -> None:
    dom = str(write(tmp_path, GOOD))
    for args, field in ((["plan", "--domain", dom, "--risk", "1.5"], "risk"),
                        (["plan", "--domain", dom, "--device", "nope"], "device"),
                        (["plan", "--domain", dom, "--trace", str(tmp_path / "missing.csv")], "trace"),
                        (["run", "--domain", dom, "--sim-load", "0"], "sim_load"),
                        (["simulate", "--ignore-share", "2"], "ignore_share")):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr.strip().startswith(field)


def test_run_on_the_simulator_prints_events_and_a_summary(tmp_path: Path) -> None:
    result = runner.invoke(app, ["run", "--domain", str(write(tmp_path, GOOD)), "--telemetry", "sim",
                                 "--sim-load", "0.95", "--duration-s", "120"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in result.stdout.strip().splitlines()]
    assert lines[-1]["domain"] == "row-a" and lines[-1]["max_over_budget_s"] <= 5
    assert any(x.get("kind") == "policy" for x in lines[:-1])


def test_fleet_file_domain_is_picked_by_id(tmp_path: Path) -> None:
    p = write(tmp_path, "power_domains:\n  - {id: a, budget_watts: 100}\n  - {id: b, budget_watts: 200}\n")
    assert load_domain_file(p, "b").domain.budget_watts == 200
    with pytest.raises(InputError, match="domain_id"):
        load_domain_file(p, "c")


def test_plan_answers_more_servers_at_higher_risk() -> None:
    trace = load_azure_trace(TRACE)
    a100 = builtin_catalog().device("a100-80gb")
    server = ServerSpec("s", a100, 8, 1, 1500.0)
    domain = PowerDomain(id="row", budget_watts=20 * server.max_watts)
    strict = plan_servers(domain, server, trace, risk=0.0, copies_per_server=0.035, duration_s=600)
    loose = plan_servers(domain, server, trace, risk=0.05, copies_per_server=0.035, duration_s=600)
    assert strict.nameplate_servers == 20
    assert strict.max_servers >= 20 and loose.max_servers > strict.max_servers
    chosen = next(r for r in loose.rows if r.servers == loose.max_servers)
    assert chosen.time_above_budget <= 0.05
    beyond = [r for r in loose.rows if r.servers > loose.max_servers]
    assert beyond and beyond[0].time_above_budget > 0.05


def test_plan_command_prints_json(tmp_path: Path) -> None:
    dom = write(tmp_path, "domain: {id: row-a, budget_watts: 47000}\n")
    result = runner.invoke(app, ["plan", "--domain", str(dom), "--trace", str(TRACE), "--copies-per-server",
                                 "0.03", "--duration-s", "300", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["nameplate_servers"] == 10 and out["max_servers"] >= 10


def test_agent_manifest_is_valid_kubernetes() -> None:
    docs = list(yaml.safe_load_all((ROOT / "k8s/power-agent-daemonset.yaml").read_text()))
    assert [d["kind"] for d in docs] == ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "DaemonSet"]
    for d in docs:
        kubernetes_validate.validate(d, "1.30", strict=True)
    ds = docs[-1]
    pod = ds["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == docs[0]["metadata"]["name"]
    container = pod["containers"][0]
    assert container["command"] == ["medley", "power", "agent"]
    assert container["env"][0]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    rules = docs[1]["rules"]
    assert any("nodes" in r["resources"] and "patch" in r["verbs"] for r in rules)
