"""The bad-input catalogue: command lines and HTTP requests that must each get one clear refusal.

A command-line case is the arguments of ``medley`` and the files it needs (written into a scratch folder; the
text ``{dir}`` in an argument or a file names that folder); it must exit with its code (2 unless it says
otherwise) and one line on stderr holding each of its ``says`` phrases (the file or option and the reason).
An HTTP case is a request to the API with a token of its role and team; it must get a 4xx
``application/problem+json`` of its status whose detail holds each ``says`` phrase. ``benchmarks/bad_inputs.py``
runs them all; ``tests/test_bad_inputs.py`` makes each a test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

GOOD = """\
name: t
power_domains:
  - {id: row, budget_watts: 20000}
pools:
  - id: h100
    device: h100-sxm
    devices_per_node: 8
    max_nodes: 2
    price_usd_per_device_hour: 4.0
    zone: a
    power_domain: row
  - {id: l4, device: l4, max_nodes: 2, price_book: aws-us-east-1-2026q1, zone: b}
services:
  - id: chat
    team: assistants
    model: llama-3-8b
    traffic:
      rate_rps: 5
      buckets:
        - {input_tokens: 512, output_tokens: 128, share: 1.0}
    slo:
      ttft_ms: 500
      tpot_ms: 50
"""

TRACE = "ContextTokens,GeneratedTokens\n100,20\n300,40\n"


def edit(old: str, new: str, text: str = GOOD) -> str:
    """``text`` with ``old`` replaced once (which must be there)."""
    if old not in text:
        raise ValueError(f"not in the fleet: {old!r}")
    return text.replace(old, new, 1)


def with_trace(name: str) -> str:
    """The good fleet whose service takes its lengths from the trace file ``name``."""
    return edit("      buckets:\n        - {input_tokens: 512, output_tokens: 128, share: 1.0}\n",
                f"      trace_file: {name}\n")


@dataclass(frozen=True)
class CliCase:
    """``medley ARGS`` with ``files`` in a scratch folder; exit ``code`` with one line holding ``says``."""

    id: str
    args: list[str]
    says: list[str]
    files: dict[str, str | bytes] = field(default_factory=dict)
    code: int = 2
    env: dict[str, str] = field(default_factory=dict)
    fifo: str | None = None  # a FIFO of this name is made in the folder
    plan_of: str | None = None  # plan.json is made from this fleet first (a good plan of another fleet)


def _validate(case_id: str, text: str | bytes, *says: str) -> CliCase:
    return CliCase(case_id, ["validate", "{dir}/f.yaml"], ["f.yaml", *says], files={"f.yaml": text})


def _fleet_edit(case_id: str, old: str, new: str, *says: str) -> CliCase:
    return _validate(case_id, edit(old, new), *says)


FILE_CASES = [
    _validate("empty-file", "", "mapping"),
    _validate("binary-file", bytes(range(256)) * 4, "not UTF-8"),
    _validate("utf16-file", GOOD.encode("utf-16"), "UTF-16"),
    _validate("nul-in-file", GOOD.replace("name: t", "name: t\x00"), "NUL"),
    _validate("not-yaml", "name: [t\npools: {\n", "YAML"),
    _validate("top-level-list", "- a\n- b\n", "mapping"),
    _validate("top-level-scalar", "just words\n", "mapping"),
    _validate("duplicate-key", edit("name: t\n", "name: t\nname: u\n"), "duplicate"),
    _validate("duplicate-services-block", GOOD + "services: []\n", "duplicate"),
    _validate("tab-indent", edit("    max_nodes: 2\n", "\tmax_nodes: 2\n"), "YAML"),
    _validate("unknown-top-field", edit("name: t\n", "name: t\npoolz: []\n"), "poolz"),
    _validate("pools-mapping", GOOD[:GOOD.index("pools:")] + "pools:\n  h100: {device: h100-sxm}\n"
              + GOOD[GOOD.index("services:"):], "pools"),
    CliCase("missing-file", ["validate", "{dir}/nope.yaml"], ["nope.yaml", "No such file"]),
    CliCase("directory-as-fleet", ["validate", "{dir}"], ["not a regular file"]),
    CliCase("dev-zero-as-fleet", ["validate", "/dev/zero"], ["/dev/zero", "not a regular file"]),
    CliCase("fifo-as-fleet", ["validate", "{dir}/pipe.yaml"], ["pipe.yaml", "not a regular file"], fifo="pipe.yaml"),
    _validate("alias-bomb", "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
              "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
              "e: [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nname: t\n", "e"),
]

POOL_CASES = [
    _fleet_edit("max-nodes-bool", "    max_nodes: 2\n", "    max_nodes: true\n", "max_nodes"),
    _fleet_edit("max-nodes-negative", "    max_nodes: 2\n", "    max_nodes: -1\n", "max_nodes"),
    _fleet_edit("max-nodes-text", "    max_nodes: 2\n", "    max_nodes: two\n", "max_nodes"),
    _fleet_edit("max-nodes-float", "    max_nodes: 2\n", "    max_nodes: 2.5\n", "max_nodes"),
    _fleet_edit("devices-per-node-zero", "devices_per_node: 8", "devices_per_node: 0", "devices_per_node"),
    _fleet_edit("unknown-device", "device: h100-sxm", "device: h900", "device", "h900"),
    _fleet_edit("negative-price", "price_usd_per_device_hour: 4.0", "price_usd_per_device_hour: -4", "price"),
    _fleet_edit("nan-price", "price_usd_per_device_hour: 4.0", "price_usd_per_device_hour: .nan", "price"),
    _fleet_edit("unknown-price-book", "price_book: aws-us-east-1-2026q1", "price_book: nowhere", "nowhere"),
    _fleet_edit("no-price", "    price_usd_per_device_hour: 4.0\n", "", "price"),
    _fleet_edit("unknown-power-domain", "    power_domain: row\n", "    power_domain: rowz\n", "rowz"),
    _fleet_edit("duplicate-pool-id", "{id: l4,", "{id: h100,", "h100"),
    _fleet_edit("pool-id-spaces", "  - id: h100\n", "  - id: H100 pool!\n", "id"),
    _fleet_edit("pool-unknown-field", "    zone: a\n", "    zone: a\n    gpus: 8\n", "gpus"),
    _fleet_edit("pool-missing-device", "    device: h100-sxm\n", "", "device"),
    _fleet_edit("pool-zone-empty", "    zone: a\n", "    zone: ''\n", "zone"),
    _fleet_edit("node-overhead-negative", "    zone: a\n", "    zone: a\n    node_overhead_watts: -5\n",
                "node_overhead_watts"),
    _fleet_edit("pool-cpu-device", "device: h100-sxm", "device: cpu", "device"),
]

SERVICE_CASES = [
    _fleet_edit("unknown-model", "model: llama-3-8b", "model: llama-9b", "model", "llama-9b"),
    _fleet_edit("negative-rate", "rate_rps: 5", "rate_rps: -5", "rate_rps"),
    _fleet_edit("nan-rate", "rate_rps: 5", "rate_rps: .nan", "rate_rps"),
    _fleet_edit("inf-rate", "rate_rps: 5", "rate_rps: .inf", "rate_rps"),
    _fleet_edit("text-rate", "rate_rps: 5", "rate_rps: lots", "rate_rps"),
    _fleet_edit("shares-half", "share: 1.0}", "share: 0.5}", "share"),
    _fleet_edit("share-negative", "share: 1.0}", "share: -1.0}", "share"),
    _fleet_edit("input-tokens-zero", "input_tokens: 512", "input_tokens: 0", "input_tokens"),
    _fleet_edit("output-tokens-negative", "output_tokens: 128", "output_tokens: -3", "output_tokens"),
    _fleet_edit("prompt-over-context", "input_tokens: 512", "input_tokens: 30000", "context"),
    _fleet_edit("buckets-empty", "      buckets:\n        - {input_tokens: 512, output_tokens: 128, share: 1.0}\n",
                "      buckets: []\n", "buckets"),
    _fleet_edit("buckets-and-trace", "      buckets:\n", "      trace_file: t.csv\n      buckets:\n", "buckets"),
    _fleet_edit("no-distribution", "      buckets:\n        - {input_tokens: 512, output_tokens: 128, share: 1.0}\n",
                "", "buckets"),
    _fleet_edit("ttft-zero", "ttft_ms: 500", "ttft_ms: 0", "ttft_ms"),
    _fleet_edit("tpot-negative", "tpot_ms: 50", "tpot_ms: -1", "tpot_ms"),
    _fleet_edit("ttft-with-unit", "ttft_ms: 500", "ttft_ms: 0.5s", "ttft_ms"),
    _fleet_edit("percentile-150", "      tpot_ms: 50\n", "      tpot_ms: 50\n      percentile: 150\n", "percentile"),
    _fleet_edit("tpot-below-best-case", "tpot_ms: 50", "tpot_ms: 0.001", "tpot_ms"),
    _fleet_edit("ttft-below-best-case", "ttft_ms: 500", "ttft_ms: 0.01", "ttft_ms"),
    _fleet_edit("slo-unknown-field", "      tpot_ms: 50\n", "      tpot_ms: 50\n      p99: true\n", "p99"),
    _fleet_edit("spread-zones-5", "    team: assistants\n", "    team: assistants\n    spread_zones: 5\n",
                "spread_zones"),
    _fleet_edit("min-replicas-negative", "    team: assistants\n", "    team: assistants\n    min_replicas: -1\n",
                "min_replicas"),
    _fleet_edit("priority-negative", "    team: assistants\n", "    team: assistants\n    priority: -1\n", "priority"),
    _fleet_edit("allowed-pool-unknown", "    team: assistants\n", "    team: assistants\n    allowed_pools: [gone]\n",
                "gone"),
    _fleet_edit("allowed-roles-bogus", "    team: assistants\n", "    team: assistants\n    allowed_roles: [boss]\n",
                "allowed_roles"),
    _fleet_edit("tp-larger-than-node", "    team: assistants\n", "    team: assistants\n    tp_options: [16]\n",
                "tp_options"),
    _fleet_edit("tp-splits-no-heads", "    team: assistants\n", "    team: assistants\n    tp_options: [3]\n",
                "tp_options"),
    _fleet_edit("tp-options-empty", "    team: assistants\n", "    team: assistants\n    tp_options: []\n",
                "tp_options"),
    _fleet_edit("tp-options-zero", "    team: assistants\n", "    team: assistants\n    tp_options: [0]\n",
                "tp_options"),
    _fleet_edit("engine-unknown", "    team: assistants\n", "    team: assistants\n    engine: tgi\n", "engine"),
    _fleet_edit("team-empty", "    team: assistants\n", "    team: ''\n", "team"),
    _fleet_edit("service-id-upper", "  - id: chat\n", "  - id: Chat Bot\n", "id"),
    _fleet_edit("service-unknown-field", "    team: assistants\n", "    team: assistants\n    replicas: 3\n",
                "replicas"),
    _validate("duplicate-service-id", GOOD + GOOD[GOOD.index("  - id: chat"):], "chat"),
    _fleet_edit("service-missing-slo", "    slo:\n      ttft_ms: 500\n      tpot_ms: 50\n", "", "slo"),
    _fleet_edit("service-model-list", "model: llama-3-8b", "model: [llama-3-8b]", "model"),
]

POWER_AND_OPTION_CASES = [
    _fleet_edit("budget-negative", "budget_watts: 20000", "budget_watts: -1", "budget_watts"),
    _fleet_edit("budget-text", "budget_watts: 20000", "budget_watts: 20kW", "budget_watts"),
    _fleet_edit("oversubscription-zero", "budget_watts: 20000}", "budget_watts: 20000, oversubscription_ratio: 0}",
                "oversubscription_ratio"),
    _fleet_edit("duplicate-domain", "  - {id: row, budget_watts: 20000}\n",
                "  - {id: row, budget_watts: 20000}\n  - {id: row, budget_watts: 10000}\n", "row"),
    _fleet_edit("headroom-denormal", "name: t\n", "name: t\nplanner: {headroom: 5e-324}\n", "headroom"),
    _fleet_edit("headroom-two", "name: t\n", "name: t\nplanner: {headroom: 2}\n", "headroom"),
    _fleet_edit("time-limit-negative", "name: t\n", "name: t\nplanner: {time_limit_s: -1}\n", "time_limit_s"),
    _fleet_edit("planner-tp-empty", "name: t\n", "name: t\nplanner: {tp_options: []}\n", "tp_options"),
    _fleet_edit("planner-unknown-field", "name: t\n", "name: t\nplanner: {solver_threads: 4}\n", "solver_threads"),
    _fleet_edit("perf-profile-missing", "name: t\n", "name: t\nplanner: {perf_profile: /nonexistent/p.csv}\n",
                "perf_profile"),
    _fleet_edit("perf-engine-unknown", "name: t\n", "name: t\nplanner: {perf_engine: tgi}\n", "perf_engine"),
    _fleet_edit("solver-unknown", "name: t\n", "name: t\nplanner: {solver: gurobi}\n", "solver"),
    _fleet_edit("name-empty", "name: t\n", "name: ''\n", "name"),
    _fleet_edit("name-bad-chars", "name: t\n", "name: 'my fleet/../x'\n", "name"),
]

TRACE_CASES = [
    CliCase("trace-missing", ["validate", "{dir}/f.yaml"], ["trace_file", "No such file"],
            files={"f.yaml": with_trace("nope.csv")}),
    CliCase("trace-directory", ["validate", "{dir}/f.yaml"], ["trace_file", "not a regular file"],
            files={"f.yaml": with_trace("."), "x": ""}),
    CliCase("trace-dev-zero", ["validate", "{dir}/f.yaml"], ["trace_file", "not a regular file"],
            files={"f.yaml": with_trace("/dev/zero")}),
    CliCase("trace-fifo", ["validate", "{dir}/f.yaml"], ["trace_file", "not a regular file"],
            files={"f.yaml": with_trace("t.csv")}, fifo="t.csv"),
    CliCase("trace-empty", ["validate", "{dir}/f.yaml"], ["t.csv", "empty"],
            files={"f.yaml": with_trace("t.csv"), "t.csv": ""}),
    CliCase("trace-header-only", ["validate", "{dir}/f.yaml"], ["t.csv", "no requests"],
            files={"f.yaml": with_trace("t.csv"), "t.csv": "ContextTokens,GeneratedTokens\n"}),
    CliCase("trace-binary", ["validate", "{dir}/f.yaml"], ["t.csv", "not UTF-8"],
            files={"f.yaml": with_trace("t.csv"), "t.csv": b"\x00\xff\xfe\x80" * 50}),
    CliCase("trace-negative-row", ["validate", "{dir}/f.yaml"], ["t.csv:3", "GeneratedTokens", "negative"],
            files={"f.yaml": with_trace("t.csv"), "t.csv": TRACE.replace("300,40", "300,-40")}),
    CliCase("trace-huge-row", ["validate", "{dir}/f.yaml"], ["t.csv:2", "ContextTokens"],
            files={"f.yaml": with_trace("t.csv"), "t.csv": TRACE.replace("100,20", "99999999999,20")}),
    CliCase("trace-text-cell", ["validate", "{dir}/f.yaml"], ["t.csv:2", "not an integer"],
            files={"f.yaml": with_trace("t.csv"), "t.csv": TRACE.replace("100,20", "many,20")}),
    CliCase("trace-missing-column", ["validate", "{dir}/f.yaml"], ["t.csv:1", "GeneratedTokens", "missing column"],
            files={"f.yaml": with_trace("t.csv"), "t.csv": "ContextTokens,Out\n1,2\n"}),
    CliCase("trace-bad-timestamp", ["validate", "{dir}/f.yaml"], ["t.csv", "TIMESTAMP"],
            files={"f.yaml": with_trace("t.csv"),
                   "t.csv": "TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,10,10\n"}),
    CliCase("trace-over-context", ["validate", "{dir}/f.yaml"], ["t.csv:2", "context"],
            files={"f.yaml": with_trace("t.csv"), "t.csv": "ContextTokens,GeneratedTokens\n30000,100\n"}),
    CliCase("trace-short-row", ["validate", "{dir}/f.yaml"], ["t.csv:2", "GeneratedTokens"],
            files={"f.yaml": with_trace("t.csv"), "t.csv": "ContextTokens,GeneratedTokens\n100\n"}),
]

_NO_SERVICES = GOOD[:GOOD.index("services:")] + "services: []\n"
PLAN_CASES = [
    CliCase("plan-missing-file", ["plan", "{dir}/nope.yaml"], ["nope.yaml"]),
    CliCase("plan-no-services", ["plan", "-q", "{dir}/f.yaml"], ["f.yaml", "no services"],
            files={"f.yaml": _NO_SERVICES}),
    CliCase("plan-zero-nodes", ["plan", "-q", "{dir}/f.yaml"], ["f.yaml", "nodes"],
            files={"f.yaml": GOOD.replace("max_nodes: 2", "max_nodes: 0")}),
    CliCase("plan-10w-budget", ["plan", "-q", "--no-baselines", "{dir}/f.yaml"], ["f.yaml", "row"],
            files={"f.yaml": edit("{id: l4, device: l4, max_nodes: 2, price_book: aws-us-east-1-2026q1, zone: b}",
                                  "{id: l4, device: l4, max_nodes: 2, price_book: aws-us-east-1-2026q1, zone: b, "
                                  "power_domain: row}", edit("budget_watts: 20000", "budget_watts: 10"))}),
    CliCase("plan-huge-rate", ["plan", "-q", "{dir}/f.yaml"], ["f.yaml", "chat", "req/s"],
            files={"f.yaml": edit("rate_rps: 5", "rate_rps: 1e308")}),
    CliCase("plan-bad-format", ["plan", "{dir}/f.yaml", "--format", "bogus"], ["--format"], files={"f.yaml": GOOD}),
    CliCase("plan-unknown-option", ["plan", "{dir}/f.yaml", "--plot", "x.png"], ["--plot"], files={"f.yaml": GOOD}),
    CliCase("plan-out-missing-dir", ["plan", "{dir}/f.yaml", "-o", "/nonexistent/dir/p.json"], ["-o", "/nonexistent"],
            files={"f.yaml": GOOD}),
    CliCase("plan-out-is-dir", ["plan", "{dir}/f.yaml", "-o", "{dir}"], ["directory"], files={"f.yaml": GOOD}),
    CliCase("plan-failed-unknown-node", ["plan", "-q", "--no-baselines", "{dir}/f.yaml", "--place", "--failed",
                                         "nosuchnode"], ["--failed", "nosuchnode"], files={"f.yaml": GOOD}),
    CliCase("plan-current-not-json", ["plan", "{dir}/f.yaml", "--current", "{dir}/f.yaml"], ["f.yaml", "JSON"],
            files={"f.yaml": GOOD}),
    CliCase("plan-current-other-fleet", ["plan", "-q", "{dir}/f.yaml", "--current", "{dir}/plan.json"],
            ["plan.json", "fleet 't'"], files={"f.yaml": edit("name: t", "name: other")}, plan_of=GOOD),
    CliCase("plan-current-missing", ["plan", "{dir}/f.yaml", "--current", "{dir}/none.json"], ["none.json"],
            files={"f.yaml": GOOD}),
    CliCase("plan-melange-missing", ["plan", "--melange", "{dir}/none.yaml"], ["none.yaml"]),
    CliCase("plan-melange-negative-cost", ["plan", "--melange", "{dir}/m.json"], ["m.json", "cost"],
            files={"m.json": '{"gpu_info": {"a10g": {"cost": -1, "tputs": [[1]]}}, "workload_distribution": [[1]], '
                   '"total_request_rate": 1}'}),
    CliCase("plan-melange-not-json", ["plan", "--melange", "{dir}/m.json"], ["m.json", "JSON"],
            files={"m.json": "gpu_info: {}"}),
    CliCase("plan-melange-missing-key", ["plan", "--melange", "{dir}/m.json"], ["m.json", "gpu_info"],
            files={"m.json": '{"workload_distribution": [[1]], "total_request_rate": 1}'}),
    CliCase("plan-solver-unknown", ["plan", "{dir}/f.yaml", "--solver", "gurobi"], ["--solver"],
            files={"f.yaml": GOOD}),
    CliCase("plan-tolerate-unknown", ["plan", "{dir}/f.yaml", "--tolerate", "galaxy"], ["--tolerate"],
            files={"f.yaml": GOOD}),
]

PLAN_USE_CASES = [
    CliCase("verify-other-fleet", ["verify", "{dir}/plan.json", "--fleet", "{dir}/f.yaml"],
            ["plan.json", "another fleet"], files={"f.yaml": edit("name: t", "name: other")}, plan_of=GOOD),
    CliCase("verify-unknown-pool", ["verify", "{dir}/plan.json", "--fleet", "{dir}/f.yaml"],
            ["plan.json"], files={"f.yaml": edit("{id: l4,", "{id: l4x,")}, plan_of=GOOD),
    CliCase("verify-plan-not-json", ["verify", "{dir}/f.yaml", "--fleet", "{dir}/f.yaml"], ["f.yaml", "JSON"],
            files={"f.yaml": GOOD}),
    CliCase("verify-plan-binary", ["verify", "{dir}/p.json", "--fleet", "{dir}/f.yaml"], ["p.json"],
            files={"f.yaml": GOOD, "p.json": b"\x89PNG\r\n\x1a\n\x00\x00"}),
    CliCase("verify-plan-wrong-shape", ["verify", "{dir}/p.json", "--fleet", "{dir}/f.yaml"], ["p.json"],
            files={"f.yaml": GOOD, "p.json": '{"fleet": 3}'}),
    CliCase("verify-trace-missing", ["verify", "{dir}/plan.json", "--fleet", "{dir}/f.yaml", "--trace",
                                     "{dir}/none.csv"], ["none.csv"], files={"f.yaml": GOOD}, plan_of=GOOD),
    CliCase("verify-trace-bad-row", ["verify", "{dir}/plan.json", "--fleet", "{dir}/f.yaml", "--trace",
                                     "{dir}/t.csv"], ["t.csv:2"], files={"f.yaml": GOOD, "t.csv": "ContextTokens,"
                                     "GeneratedTokens,TIMESTAMP\n-5,10,2024-01-01\n"}, plan_of=GOOD),
    CliCase("verify-rate-scale-negative", ["verify", "{dir}/plan.json", "--fleet", "{dir}/f.yaml", "--rate-scale",
                                           "-1"], ["--rate-scale"], files={"f.yaml": GOOD}, plan_of=GOOD),
    CliCase("verify-duration-zero", ["verify", "{dir}/plan.json", "--fleet", "{dir}/f.yaml", "--duration-s", "0"],
            ["--duration-s"], files={"f.yaml": GOOD}, plan_of=GOOD),
    CliCase("verify-missing-fleet-option", ["verify", "{dir}/plan.json"], ["--fleet"], plan_of=GOOD),
    CliCase("render-other-fleet", ["render", "{dir}/plan.json", "--fleet", "{dir}/f.yaml", "-o", "{dir}/out"],
            ["plan.json", "another fleet"], files={"f.yaml": edit("name: t", "name: other")}, plan_of=GOOD),
    CliCase("apply-other-fleet", ["apply", "{dir}/plan.json", "--fleet", "{dir}/f.yaml", "--dry-run"],
            ["plan.json", "another fleet"], files={"f.yaml": edit("name: t", "name: other")}, plan_of=GOOD),
    CliCase("render-plan-missing", ["render", "{dir}/none.json", "--fleet", "{dir}/f.yaml", "-o", "{dir}/out"],
            ["none.json"], files={"f.yaml": GOOD}),
]

OTHER_CLI_CASES = [
    CliCase("capacity-bad-fleet", ["capacity", "{dir}/f.yaml"], ["f.yaml", "llama-9b"],
            files={"f.yaml": edit("model: llama-3-8b", "model: llama-9b")}),
    CliCase("whatif-bad-expression", ["whatif", "{dir}/f.yaml", "--scenario", "rate*=banana"], ["rate"],
            files={"f.yaml": GOOD}),
    CliCase("whatif-unknown-service", ["whatif", "{dir}/f.yaml", "--scenario", "slo[nope].tpot_ms=40"], ["nope"],
            files={"f.yaml": GOOD}),
    CliCase("perf-unknown-model", ["perf", "predict", "--model", "llama-9b", "--device", "h100-sxm"], ["llama-9b"]),
    CliCase("perf-unknown-device", ["perf", "predict", "--model", "llama-3-8b", "--device", "h900"], ["h900"]),
    CliCase("perf-tp-zero", ["perf", "predict", "--model", "llama-3-8b", "--device", "h100-sxm", "--tp", "0"],
            ["tp"]),
    CliCase("perf-batch-negative", ["perf", "predict", "--model", "llama-3-8b", "--device", "h100-sxm", "--batch",
                                    "-1"], ["batch"]),
    CliCase("serve-port-99999", ["serve", "--port", "99999"], ["--port"]),
    CliCase("serve-port-negative", ["serve", "--port", "-1"], ["--port"]),
    CliCase("serve-mysql", ["serve"], ["mysql"], env={"MEDLEY_DATABASE_URL": "mysql://u:p@h/db"}),
    CliCase("token-mysql", ["token", "create", "--team", "a", "--role", "viewer"], ["mysql"],
            env={"MEDLEY_DATABASE_URL": "mysql://u:p@h/db"}),
    CliCase("token-bad-role", ["token", "create", "--team", "a", "--role", "god"], ["--role"]),
    CliCase("unknown-command", ["frobnicate"], ["frobnicate"]),
    CliCase("validate-bad-format", ["validate", "{dir}/f.yaml", "--format", "xml"], ["--format"],
            files={"f.yaml": GOOD}),
    CliCase("catalog-bad-format", ["catalog", "models", "--format", "xml"], ["--format"]),
    CliCase("power-simulate-missing", ["power", "simulate", "{dir}/none.yaml"], ["none.yaml"]),
]

CLI_CASES: list[CliCase] = [*FILE_CASES, *POOL_CASES, *SERVICE_CASES, *POWER_AND_OPTION_CASES, *TRACE_CASES,
                            *PLAN_CASES, *PLAN_USE_CASES, *OTHER_CLI_CASES]


# --------------------------------------------------------------------------------------------------- HTTP


@dataclass(frozen=True)
class HttpCase:
    """A request as ``role`` of ``team``; a 4xx problem+json of ``status`` whose detail holds ``says``."""

    id: str
    method: str
    path: str
    status: int
    says: list[str] = field(default_factory=list)
    json: Any = None
    content: str | bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    role: str | None = "admin"  # None: no token
    team: str = "assistants"


def pool(**changes: Any) -> dict[str, Any]:
    """A good pool document with ``changes``."""
    return {"id": "p1", "device": "h100-sxm", "devices_per_node": 8, "max_nodes": 2,
            "price_usd_per_device_hour": 4.0, "zone": "a", **changes}


def service(**changes: Any) -> dict[str, Any]:
    """A good service document with ``changes`` (``traffic`` and ``slo`` replace the whole field)."""
    return {"id": "s1", "team": "assistants", "model": "llama-3-8b",
            "traffic": {"rate_rps": 5, "buckets": [{"input_tokens": 512, "output_tokens": 128, "share": 1.0}]},
            "slo": {"ttft_ms": 500, "tpot_ms": 50}, **changes}


def _traffic(**changes: Any) -> dict[str, Any]:
    return {"rate_rps": 5, "buckets": [{"input_tokens": 512, "output_tokens": 128, "share": 1.0}], **changes}


def _pool_case(case_id: str, status: int, *says: str, **changes: Any) -> HttpCase:
    return HttpCase(case_id, "POST", "/v1/pools", status, list(says), json=pool(**changes))


def _service_case(case_id: str, status: int, *says: str, **changes: Any) -> HttpCase:
    return HttpCase(case_id, "POST", "/v1/services", status, list(says), json=service(**changes))


J = {"Content-Type": "application/json"}
CSV = {"Content-Type": "text/csv"}
HTTP_CASES: list[HttpCase] = [
    HttpCase("no-token", "GET", "/v1/pools", 401, ["bearer"], role=None),
    HttpCase("bad-token", "GET", "/v1/pools", 401, ["token"], role=None, headers={"Authorization": "Bearer nope"}),
    HttpCase("basic-auth", "GET", "/v1/pools", 401, [], role=None, headers={"Authorization": "Basic eDp5"}),
    HttpCase("viewer-writes", "POST", "/v1/pools", 403, ["role"], json=pool(), role="viewer"),
    HttpCase("planner-creates-pool", "POST", "/v1/pools", 403, ["role"], json=pool(), role="planner"),
    HttpCase("not-json", "POST", "/v1/pools", 422, [], content="{not json", headers=J),
    HttpCase("json-array", "POST", "/v1/pools", 422, [], json=[pool()]),
    HttpCase("empty-body", "POST", "/v1/pools", 422, [], content="", headers=J),
    HttpCase("text-plain-body", "POST", "/v1/pools", 422, [], content="id=p1", headers={"Content-Type": "text/plain"}),
    HttpCase("huge-body", "POST", "/v1/pools", 413, [], content="[" + "1," * 600_000 + "1]", headers=J),
    HttpCase("nul-in-text", "POST", "/v1/pools", 422, ["NUL"], json=pool(zone="a\x00b")),
    _pool_case("pool-missing-id", 422, "id", id=None),
    _pool_case("pool-unknown-device", 422, "h900", device="h900"),
    _pool_case("pool-max-nodes-bool", 422, "max_nodes", max_nodes=True),
    _pool_case("pool-max-nodes-negative", 422, "max_nodes", max_nodes=-1),
    _pool_case("pool-max-nodes-huge", 422, "max_nodes", max_nodes=10**30),
    _pool_case("pool-price-negative", 422, "price", price_usd_per_device_hour=-1),
    _pool_case("pool-price-string", 422, "price", price_usd_per_device_hour="cheap"),
    _pool_case("pool-id-spaces", 422, "id", id="my pool"),
    _pool_case("pool-id-long", 422, "id", id="p" * 300),
    _pool_case("pool-extra-field", 422, "gpus", gpus=8),
    _pool_case("pool-devices-zero", 422, "devices_per_node", devices_per_node=0),
    HttpCase("pool-nan", "POST", "/v1/pools", 422, ["price"],
             content='{"id": "p2", "device": "h100-sxm", "max_nodes": 2, "price_usd_per_device_hour": NaN, '
                     '"zone": "a"}', headers=J),
    HttpCase("pool-infinity", "POST", "/v1/pools", 422, ["price"],
             content='{"id": "p2", "device": "h100-sxm", "max_nodes": 2, "price_usd_per_device_hour": 1e999, '
                     '"zone": "a"}', headers=J),
    HttpCase("pool-duplicate", "POST", "/v1/pools", 409, ["h100-a"], json=pool(id="h100-a")),
    HttpCase("put-without-if-match", "PUT", "/v1/pools/h100-a", 428, ["If-Match"], json=pool(id="h100-a")),
    HttpCase("put-stale-if-match", "PUT", "/v1/pools/h100-a", 412, ["changed"], json=pool(id="h100-a"),
             headers={"If-Match": '"99"'}),
    HttpCase("put-id-mismatch", "PUT", "/v1/pools/h100-a", 422, ["id"], json=pool(id="other"),
             headers={"If-Match": "*"}),
    HttpCase("delete-without-if-match", "DELETE", "/v1/pools/h100-a", 428, ["If-Match"]),
    HttpCase("get-missing-pool", "GET", "/v1/pools/nope", 404, ["nope"]),
    HttpCase("pool-id-path-traversal", "GET", "/v1/pools/..%2F..%2Fetc", 0, []),
    HttpCase("limit-negative", "GET", "/v1/pools?limit=-1", 422, ["limit"]),
    HttpCase("limit-huge", "GET", "/v1/pools?limit=1000000", 422, ["limit"]),
    HttpCase("offset-text", "GET", "/v1/pools?offset=x", 422, ["offset"]),
    HttpCase("method-not-allowed", "PATCH", "/v1/pools", 405, []),
    HttpCase("method-not-allowed-item", "POST", "/v1/pools/h100-a", 405, []),
    HttpCase("unknown-path", "GET", "/v1/nothing", 404, []),
    HttpCase("domain-infinity", "POST", "/v1/power-domains", 422, ["budget_watts"],
             content='{"id": "row-b", "budget_watts": 1e999}', headers=J),
    HttpCase("domain-negative", "POST", "/v1/power-domains", 422, ["budget_watts"],
             json={"id": "row-b", "budget_watts": -5}),
    _service_case("service-unknown-model", 422, "llama-9b", model="llama-9b"),
    _service_case("service-rate-negative", 422, "rate_rps", traffic=_traffic(rate_rps=-1)),
    _service_case("service-shares", 422, "share",
                  traffic=_traffic(buckets=[{"input_tokens": 1, "output_tokens": 1, "share": 0.3}])),
    _service_case("service-no-distribution", 422, "buckets", traffic={"rate_rps": 5}),
    _service_case("service-prompt-over-context", 422, "context",
                  traffic=_traffic(buckets=[{"input_tokens": 30000, "output_tokens": 100, "share": 1.0}])),
    _service_case("service-tpot-zero", 422, "tpot_ms", slo={"ttft_ms": 500, "tpot_ms": 0}),
    _service_case("service-percentile", 422, "percentile", slo={"ttft_ms": 500, "tpot_ms": 50, "percentile": 101}),
    _service_case("service-team-empty", 422, "team", team=""),
    _service_case("service-extra", 422, "replicas", replicas=2),
    _service_case("service-tp-zero", 422, "tp_options", tp_options=[0]),
    HttpCase("service-other-team", "POST", "/v1/services", 403, ["beta"], json=service(team="beta"),
             role="planner"),
    HttpCase("service-rate-nan", "POST", "/v1/services", 422, ["rate_rps"],
             content='{"id": "s2", "model": "llama-3-8b", "traffic": {"rate_rps": NaN, "buckets": [{"input_tokens": '
                     '1, "output_tokens": 1, "share": 1}]}, "slo": {"ttft_ms": 500, "tpot_ms": 50}}', headers=J),
    HttpCase("plan-unknown-service", "POST", "/v1/plans", 422, ["ghost"], json={"services": ["ghost"]}),
    HttpCase("plan-other-team-service", "POST", "/v1/plans", 403, ["chat"], json={"services": ["chat"]},
             role="planner", team="beta"),
    HttpCase("plan-unknown-based-on", "POST", "/v1/plans", 422, ["based_on"], json={"based_on": "plan-999"}),
    HttpCase("plan-headroom-denormal", "POST", "/v1/plans", 422, ["headroom"], json={"options": {"headroom": 5e-324}}),
    HttpCase("plan-tp-empty", "POST", "/v1/plans", 422, ["tp_options"], json={"options": {"tp_options": []}}),
    HttpCase("plan-extra-field", "POST", "/v1/plans", 422, ["priority"], json={"priority": 1}),
    HttpCase("plan-fleet-bad-id", "POST", "/v1/plans", 422, ["fleet"], json={"fleet": "../etc"}),
    HttpCase("plan-time-limit-negative", "POST", "/v1/plans", 422, ["time_limit_s"],
             json={"options": {"time_limit_s": -1}}),
    HttpCase("plan-trace-outside", "POST", "/v1/plans", 422, ["not a file this server reads"],
             json={"services": ["traced"]}),
    HttpCase("plan-perf-profile-outside", "POST", "/v1/plans", 422, ["not a file this server reads"],
             json={"options": {"perf_profile": "/etc/passwd"}}),
    HttpCase("job-bad-id", "GET", "/v1/plan-jobs/xyz", 422, []),
    HttpCase("job-missing", "GET", "/v1/plan-jobs/0123456789abcdef", 404, ["0123456789abcdef"]),
    HttpCase("retry-missing", "POST", "/v1/plan-jobs/0123456789abcdef/retry", 404, []),
    HttpCase("plan-bad-id", "GET", "/v1/plans/xyz", 422, []),
    HttpCase("plan-missing", "GET", "/v1/plans/plan-999999", 404, ["plan-999999"]),
    HttpCase("diff-bad-against", "GET", "/v1/plans/plan-1/diff?against=x", 422, ["against"]),
    HttpCase("approve-missing", "POST", "/v1/plans/plan-999999/approve", 404, [], headers={"If-Match": "*"}),
    HttpCase("apply-missing", "POST", "/v1/plans/plan-999999/apply", 404, [], headers={"If-Match": "*"}),
    HttpCase("whatif-other-team-upsert", "POST", "/v1/whatif", 403, ["chat"],
             json={"upsert_services": [service(id="chat", team="beta")]}, role="planner", team="beta"),
    HttpCase("whatif-other-team-remove", "POST", "/v1/whatif", 403, ["chat"], json={"remove_services": ["chat"]},
             role="planner", team="beta"),
    HttpCase("whatif-too-many", "POST", "/v1/whatif", 422, ["what-if limit"],
             json={"upsert_services": [service(id=f"w{i}") for i in range(60)]}),
    HttpCase("whatif-bad-upsert", "POST", "/v1/whatif", 422, ["rate_rps"],
             json={"upsert_services": [service(traffic=_traffic(rate_rps=-3))]}),
    HttpCase("whatif-extra", "POST", "/v1/whatif", 422, ["bogus"], json={"bogus": 1}),
    HttpCase("scenario-bad-expression", "POST", "/v1/whatif/scenarios", 422, ["scenarios"],
             json={"scenarios": [{"name": "x", "set": ["rate*=banana"]}]}),
    HttpCase("scenario-empty", "POST", "/v1/whatif/scenarios", 422, ["scenarios"], json={"scenarios": []}),
    HttpCase("trace-empty", "POST", "/v1/traces", 422, ["empty"], content="", headers=CSV),
    HttpCase("trace-binary", "POST", "/v1/traces", 422, ["not UTF-8"], content=b"\x80\x81\x82", headers=CSV),
    HttpCase("trace-utf16", "POST", "/v1/traces", 422, ["UTF-16"], content=TRACE.encode("utf-16"), headers=CSV),
    HttpCase("trace-negative", "POST", "/v1/traces", 422, ["GeneratedTokens"], content=TRACE.replace("40", "-40"),
             headers=CSV),
    HttpCase("trace-huge-length", "POST", "/v1/traces", 422, ["ContextTokens"],
             content=TRACE.replace("100,", "99999999999,"), headers=CSV),
    HttpCase("trace-no-column", "POST", "/v1/traces", 422, ["missing column"], content="a,b\n1,2\n", headers=CSV),
    HttpCase("trace-header-only", "POST", "/v1/traces", 422, ["no requests"], content="ContextTokens,GeneratedTokens\n",
             headers=CSV),
    HttpCase("trace-viewer", "POST", "/v1/traces", 403, ["role"], content=TRACE, headers=CSV, role="viewer"),
    HttpCase("audit-as-planner", "GET", "/v1/audit", 403, ["role"], role="planner"),
]

Setup = Callable[[Any], None]
