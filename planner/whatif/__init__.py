"""What-if planning: changed copies of a fleet planned next to the fleet's own plan.

``expressions`` (the syntax of a change and of a sweep), ``scenarios`` (named lists of expressions, the
scenarios file), ``changes`` (a change made to a fleet), ``results`` (the report values), ``summary`` (a planned
scenario as a row) and ``run`` (scenarios and sweeps through the planner). The names below are the public API.
"""

from planner.whatif.changes import apply_change, apply_changes, compile_scenario
from planner.whatif.expressions import Change, ScenarioError, Sweep, parse_expression, parse_scenario, parse_sweep
from planner.whatif.results import ScenarioResult, SweepPoint, SweepReport, WhatIfReport
from planner.whatif.run import Verifier, default_planner, default_verifier, run_scenarios, run_sweep
from planner.whatif.scenarios import Scenario, file_reader, load_scenarios, scenario_line

__all__ = [
    "Change",
    "Scenario",
    "ScenarioError",
    "ScenarioResult",
    "Sweep",
    "SweepPoint",
    "SweepReport",
    "Verifier",
    "WhatIfReport",
    "apply_change",
    "apply_changes",
    "compile_scenario",
    "default_planner",
    "default_verifier",
    "file_reader",
    "load_scenarios",
    "parse_expression",
    "parse_scenario",
    "parse_sweep",
    "run_scenarios",
    "run_sweep",
    "scenario_line",
]
