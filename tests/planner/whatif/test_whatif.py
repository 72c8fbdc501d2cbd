"""What-if expressions: each kind changes exactly what it names; errors point at the bad part; sweeps; plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from planner.cli.whatif import markdown_table, report_sections, series, sweep_figure, whatif_command, write_plot
from planner.io.fleetfile import load_fleet
from planner.pipeline import InfeasibleFleet
from planner.schema import Finding, FleetSpec, Plan, SolverReport
from planner.whatif import (
    Scenario,
    ScenarioError,
    ScenarioResult,
    SweepPoint,
    SweepReport,
    apply_changes,
    load_scenarios,
    parse_expression,
    parse_scenario,
    parse_sweep,
    run_scenarios,
)

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
QUICKSTART = EXAMPLES / "quickstart.yaml"


@pytest.fixture(scope="module")
def fleet() -> FleetSpec:
    return load_fleet(QUICKSTART)


def flat(fleet: FleetSpec) -> dict[str, Any]:
    """Every leaf of the fleet by path, list items named by id, so a diff says exactly what changed."""
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(value, list) and value and all(isinstance(x, dict) and "id" in x for x in value):
            for x in value:
                walk(f"{prefix}[{x['id']}]", x)
        else:
            out[prefix] = value

    walk("", fleet.model_dump(mode="json"))
    return out


def changed(before: FleetSpec, after: FleetSpec) -> dict[str, tuple[Any, Any]]:
    a, b = flat(before), flat(after)
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def apply(fleet: FleetSpec, *exprs: str, docs: dict[str, Any] | None = None) -> FleetSpec:
    return apply_changes(fleet, parse_scenario(list(exprs), read=(docs or {}).__getitem__))


# ---------------------------------------------------------------------------------------------- each kind


def test_rate_all_services_scales_only_rates(fleet: FleetSpec) -> None:
    diff = changed(fleet, apply(fleet, "rate*=2"))
    assert diff == {f"services[{s.id}].traffic.rate_rps": (s.traffic.rate_rps, 2 * s.traffic.rate_rps)
                    for s in fleet.services}


def test_rate_of_one_service(fleet: FleetSpec) -> None:
    assert changed(fleet, apply(fleet, "rate[chat]=10")) == {"services[chat].traffic.rate_rps": (24.0, 10.0)}
    assert changed(fleet, apply(fleet, "rate[code]+=1")) == {"services[code].traffic.rate_rps": (4.0, 5.0)}


def test_price_of_a_device_type_changes_its_pools_only(fleet: FleetSpec) -> None:
    assert changed(fleet, apply(fleet, "price[h100-sxm]=2.5")) == {
        "pools[h100-a].price_usd_per_device_hour": (11.06, 2.5)}
    # Pools priced by a price book get their own price; scaling starts from the book's price.
    diff = changed(fleet, apply(fleet, "price[l4]*=0.5"))
    assert set(diff) == {"pools[l4-a].price_usd_per_device_hour", "pools[l4-b].price_usd_per_device_hour"}
    assert diff["pools[l4-a].price_usd_per_device_hour"][1] > 0


def test_price_of_one_pool(fleet: FleetSpec) -> None:
    assert changed(fleet, apply(fleet, "price[l4-a]=0.5")) == {
        "pools[l4-a].price_usd_per_device_hour": (None, 0.5)}


def test_pool_field(fleet: FleetSpec) -> None:
    assert changed(fleet, apply(fleet, "pool[h20-a].max_nodes=16")) == {"pools[h20-a].max_nodes": (2, 16)}
    assert changed(fleet, apply(fleet, "pool[l4-b].max_nodes*=2")) == {"pools[l4-b].max_nodes": (4, 8)}


def test_remove_pool_and_zone(fleet: FleetSpec) -> None:
    after = apply(fleet, "remove-pool=a100-b")
    assert [p.id for p in after.pools] == [p.id for p in fleet.pools if p.id != "a100-b"]
    assert all(k.startswith("pools[a100-b].") for k in changed(fleet, after))
    after = apply(fleet, "remove-zone=zone-b")
    assert {p.zone for p in after.pools} == {"zone-a"}
    assert all(k.startswith(("pools[a100-b].", "pools[l4-b].", "pools[a10g-b].")) for k in changed(fleet, after))


def test_remove_pool_drops_it_from_allowed_pools(fleet: FleetSpec) -> None:
    limited = apply(fleet, "remove-service=summarise")
    chat = limited.services[0].model_copy(update={"allowed_pools": ["l4-a", "l4-b"]})
    limited = limited.model_copy(update={"services": [chat, *limited.services[1:]]})
    after = apply(limited, "remove-pool=l4-b")
    assert after.services[0].allowed_pools == ["l4-a"]


def test_slo_fields(fleet: FleetSpec) -> None:
    assert changed(fleet, apply(fleet, "slo[chat].tpot_ms=50")) == {"services[chat].slo.tpot_ms": (60.0, 50.0)}
    assert changed(fleet, apply(fleet, "slo[code].ttft_ms*=0.5")) == {"services[code].slo.ttft_ms": (2000.0, 1000.0)}
    assert changed(fleet, apply(fleet, "slo.percentile=99")) == {
        f"services[{s.id}].slo.percentile": (90.0, 99.0) for s in fleet.services}


def test_power_budget(fleet: FleetSpec) -> None:
    assert changed(fleet, apply(fleet, "power[row-a].budget_watts=40000")) == {
        "power_domains[row-a].budget_watts": (60000.0, 40000.0)}


def test_add_and_remove_services_models_pools(fleet: FleetSpec) -> None:
    svc = fleet.services[0].model_dump(mode="json") | {"id": "rag"}
    after = apply(fleet, "add-service=rag.yaml", docs={"rag.yaml": svc})
    assert [s.id for s in after.services] == [*[s.id for s in fleet.services], "rag"]
    assert all(k.startswith("services[rag].") for k in changed(fleet, after))
    model = {"id": "tiny", "name": "Tiny", "num_layers": 2, "hidden_size": 256, "num_heads": 4, "num_kv_heads": 4,
             "ffn_hidden_size": 512, "vocab_size": 1000}
    after = apply(fleet, "add-model=m.yaml", docs={"m.yaml": model})
    assert all(k.startswith("models") for k in changed(fleet, after)) and after.models[-1].id == "tiny"
    pool = {"id": "h20-b", "device": "h20", "max_nodes": 2, "zone": "zone-b", "price_usd_per_device_hour": 4.0}
    after = apply(fleet, "add-pool=p.yaml", docs={"p.yaml": pool})
    assert all(k.startswith("pools[h20-b].") for k in changed(fleet, after))
    after = apply(fleet, "remove-service=code")
    assert all(k.startswith("services[code].") for k in changed(fleet, after))


def test_combined_expressions_apply_in_order(fleet: FleetSpec) -> None:
    after = apply(fleet, "rate[chat]=10; rate[chat]*=3")
    assert changed(fleet, after) == {"services[chat].traffic.rate_rps": (24.0, 30.0)}


def test_the_fleet_itself_is_untouched(fleet: FleetSpec) -> None:
    before = fleet.model_dump()
    apply(fleet, "rate*=2", "remove-pool=h100-a", "slo[chat].tpot_ms=10")
    assert fleet.model_dump() == before


# ---------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(("expr", "reason", "bad"), [
    ("rate[chta]*=2", "unknown service 'chta' (did you mean 'chat'?)", "chta"),
    ("price[h200]=3", "no pool or pool device 'h200' (did you mean 'h20'?)", "h200"),
    ("pool[h20-a].max_node=3", "unknown pool field 'max_node' (did you mean 'max_nodes'?)", "max_node"),
    ("slo[chat].tpot_ms=fast", "expected a number, got 'fast'", "fast"),
    ("pool[h20-a].max_nodes=-1", "max_nodes: Input should be greater than or equal to 0", "-1"),
    ("pool[h20-a].max_nodes=2.5", "max_nodes must be a whole number, got 2.5", "2.5"),
    ("remove-pool=h100", "unknown pool 'h100' (did you mean 'h100-a'?)", "h100"),
    ("power[row-b].budget_watts=1", "unknown power domain 'row-b' (did you mean 'row-a'?)", "row-b"),
    ("rates*=2", "unknown change 'rates' (did you mean 'rate'?)", "rates"),
    ("rate**2", "expected NAME[ID].FIELD OP VALUE", "rate**2"),
])
def test_errors_point_at_the_offending_part(fleet: FleetSpec, expr: str, reason: str, bad: str) -> None:
    with pytest.raises(ScenarioError) as info:
        apply(fleet, expr)
    err = info.value
    assert err.reason.startswith(reason)
    assert expr[err.start:err.end] == bad
    assert err.caret().splitlines()[1] == " " * expr.index(bad) + "^" * len(bad)


def test_add_service_without_a_reader_is_an_error() -> None:
    with pytest.raises(ScenarioError, match="files cannot be read"):
        parse_expression("add-service=x.yaml")


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.command("whatif")(whatif_command)

    @app.callback()
    def _root() -> None:
        """Root, so that ``whatif`` is a sub-command as under ``medley``."""

    return app


def test_cli_parse_error_is_one_line_and_exit_2() -> None:
    res = CliRunner().invoke(_cli(), ["whatif", str(QUICKSTART), "--scenario", "rate[chta]*=2"])
    assert res.exit_code == 2
    assert res.stderr.strip() == "--scenario 'rate[chta]*=2': unknown service 'chta' (did you mean 'chat'?)"


def test_cli_sweep_error_points_at_the_sweep() -> None:
    res = CliRunner().invoke(_cli(), ["whatif", str(QUICKSTART), "--sweep", "slo[chat].tpot=1..4+1"])
    assert res.exit_code == 2
    assert res.stderr.startswith("--sweep 'slo[chat].tpot=1..4+1': unknown slo field 'tpot'")


def test_cli_scenarios_file_error_names_the_file(tmp_path: Path) -> None:
    f = tmp_path / "s.yaml"
    f.write_text("- name: a\n  set: ['rate*=2']\n- name: b\n  set: ['slo[chat].tpot_ms=0']\n", encoding="utf-8")
    res = CliRunner().invoke(_cli(), ["whatif", str(QUICKSTART), "--scenarios", str(f)])
    assert res.exit_code == 2
    assert res.stderr.startswith(f"{f}:4: 'slo[chat].tpot_ms=0': tpot_ms: Input should be greater than 0")


def test_scenarios_file_shapes() -> None:
    scs = load_scenarios("- {name: a, set: 'rate*=2'}\n- {name: b, set: [rate*=3, 'price[l4]=1']}\n")
    assert scs == [Scenario(name="a", set=["rate*=2"]), Scenario(name="b", set=["rate*=3", "price[l4]=1"])]
    with pytest.raises(ScenarioError, match="duplicate scenario name"):
        load_scenarios("- {name: a, set: [rate*=2]}\n- {name: a, set: [rate*=3]}\n", "s.yaml")
    with pytest.raises(ScenarioError, match=r"s.yaml:2: .*set"):
        load_scenarios("- {name: a, set: [rate*=2]}\n- {name: b}\n", "s.yaml")


# ---------------------------------------------------------------------------------------------- sweeps


def test_sweep_ranges() -> None:
    assert parse_sweep("rate=1..64x2").values == [1, 2, 4, 8, 16, 32, 64]
    assert parse_sweep("rate=1..10+1").values == list(range(1, 11))
    assert parse_sweep("price[h100-sxm]=1..4+0.5").values == [1, 1.5, 2, 2.5, 3, 3.5, 4]
    assert parse_sweep("slo[chat].tpot_ms=40..120+20").values == [40, 60, 80, 100, 120]
    assert parse_sweep("rate*=0.5,1,3").values == [0.5, 1, 3]
    assert parse_sweep("rate=0.1..0.3+0.1").values == [0.1, 0.2, 0.3]
    sw = parse_sweep("slo[chat].tpot_ms=40..120+20")
    assert sw.expression(60) == "slo[chat].tpot_ms=60" and sw.label == "slo[chat].tpot_ms"
    for bad in ("rate=4..1x2", "rate=1..4x1", "rate=0..4x2", "rate=1..4+0", "rate=1..4", "rate=1..1e6+1"):
        with pytest.raises(ScenarioError):
            parse_sweep(bad)


# ---------------------------------------------------------------------------------------------- running


def test_infeasible_scenarios_are_rows_not_crashes(fleet: FleetSpec) -> None:
    base = Plan(fleet="quickstart", replica_groups=[], cost_usd_per_hour=10.0,
                solver=SolverReport(backend="fake", status="optimal"))

    def planner(f: FleetSpec, *, current: Plan | None = None) -> Plan:
        if len(f.pools) < len(fleet.pools):
            raise InfeasibleFleet([Finding(kind="infeasible", constraint="pool:x", message="pools run short")])
        return base

    report = run_scenarios(fleet, [Scenario(name="lose", set=["remove-pool=a10g-b"]),
                                   Scenario(name="zone", set=["remove-zone=zone-b"]),
                                   Scenario(name="same", set=["rate*=1"])], planner=planner)
    lose, zone, same = report.scenarios
    assert (lose.feasible, lose.reason) == (False, "pools run short")
    # A fleet the catalog check rejects (chat asks for two zones) is infeasible with that reason.
    assert not zone.feasible and zone.reason == "services[chat].spread_zones: asks for 2 zones but its pools span 1"
    assert same.feasible and same.cost_delta_usd_per_hour == 0.0
    assert json.loads(report.model_dump_json())["scenarios"][0]["feasible"] is False


def _synthetic_sweep(slo: bool) -> SweepReport:
    def row(cost: float | None, devices: dict[str, int]) -> ScenarioResult:
        return ScenarioResult(name="x", feasible=cost is not None, cost_usd_per_hour=cost, devices_by_type=devices,
                              reason=None if cost is not None else "short")

    pts = [SweepPoint(value=v, result=row(c, d)) for v, c, d in [
        (30, 120.0, {"h100-sxm": 8, "l4": 2}), (45, 110.0, {"h100-sxm": 6, "l4": 4}),
        (60, 112.0, {"h100-sxm": 6, "l4": 6}), (75, 100.0, {"l4": 20}), (90, None, {})]]
    return SweepReport(fleet="f", sweep="slo[chat].tpot_ms=30..90+15" if slo else "rate=30..90+15",
                       label="slo[chat].tpot_ms" if slo else "rate", geometric=False,
                       slo_field="tpot_ms" if slo else None, baseline=row(110.0, {}), points=pts)


def test_frontier_keeps_points_cheaper_than_every_tighter_one() -> None:
    assert [p.value for p in _synthetic_sweep(True).frontier()] == [30, 45, 75]


def test_sweep_figure_has_the_series() -> None:
    report = _synthetic_sweep(True)
    fig = sweep_figure(report)
    cost, mix, frontier = fig.axes[:3]
    assert np.asarray(cost.lines[0].get_xdata()).tolist() == [30, 45, 60, 75]
    assert np.asarray(cost.lines[0].get_ydata()).tolist() == [120.0, 110.0, 112.0, 100.0]
    assert [c.get_label() for c in mix.containers] == ["h100-sxm", "l4"]
    assert [r.get_height() for r in mix.containers[1]] == [2, 4, 6, 20, 0]
    assert [line.get_label() for line in frontier.lines] == ["all points", "frontier"]
    assert np.asarray(frontier.lines[1].get_xdata()).tolist() == [30, 45, 75]
    assert len(sweep_figure(_synthetic_sweep(False)).axes) == 2  # no frontier unless an SLO is swept


def test_html_plot_is_self_contained(tmp_path: Path) -> None:
    out = tmp_path / "sweep.html"
    write_plot(_synthetic_sweep(True), out)
    text = out.read_text(encoding="utf-8")
    assert "<svg" in text and "<script src" not in text and "<link" not in text
    data = json.loads(text.split("id='series'>")[1].split("</script>")[0])
    assert data == series(_synthetic_sweep(True))
    assert data["cost_usd_per_hour"] == [120.0, 110.0, 112.0, 100.0, None]


def test_markdown_sections() -> None:
    md = "\n".join(markdown_table(t, rows) for t, rows in report_sections(_synthetic_sweep(True)))
    assert "### Cost/SLO frontier" in md and "| 90 | infeasible |" in md


def test_cli_says_its_progress_off_a_terminal_and_quiet_drops_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Off a terminal (CI logs, pipes) the bar is off, so each plan gets a line on stderr; stdout stays JSON."""
    import planner.cli.whatif as cli_whatif

    monkeypatch.setattr(cli_whatif, "PROGRESS_AFTER_S", 0.0)
    args = ["whatif", str(QUICKSTART), "-s", "rate*=0.5", "--format", "json"]
    res = CliRunner().invoke(_cli(), args)
    assert res.exit_code == 0, res.stderr
    said = [line.split(" (")[0] for line in res.stderr.splitlines()]
    assert said == ["medley: [0/2] planning baseline", "medley: [1/2] planning rate*=0.5", "medley: [2/2] all planned"]
    assert json.loads(res.stdout)["scenarios"][0]["name"] == "rate*=0.5"
    quiet = CliRunner().invoke(_cli(), [*args, "--quiet"])
    assert quiet.exit_code == 0 and quiet.stderr == ""
    cost = [json.loads(r.stdout)["baseline"]["cost_usd_per_hour"] for r in (res, quiet)]
    assert cost[0] == pytest.approx(cost[1])
