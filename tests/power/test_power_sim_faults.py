"""The telemetry-fault scenarios on a ten-server row, and the simulated Kubernetes path they use."""

from __future__ import annotations

import pytest

from planner.catalog import builtin_catalog
from power.actuators import INTENT_ANNOTATION, NvmlActuator, decode_targets
from power.loop import LoopConfig
from power.policy import CapAction, CapTarget
from power.sim import SimConfig, _Plant, _SpeedTables, domain_budget_watts, row, safety_bound_s
from power.sim_faults import SCENARIOS, AgentPath, PlantNvml, run_scenario
from power.workloads import SimpleStepTimes

A100 = builtin_catalog().device("a100-80gb")
SERVERS = row(A100, 10)
BUDGET = domain_budget_watts(SERVERS) / 1.3
CFG = SimConfig(dt_s=0.2)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_every_fault_scenario_stays_within_the_bound_without_a_brake(scenario) -> None:  # type: ignore[no-untyped-def]
    res = run_scenario(scenario, SERVERS, BUDGET, CFG)
    assert res.max_over_budget_s() <= safety_bound_s(CFG, LoopConfig()) + 1e-9, scenario.describe
    assert res.brake_events == 0
    assert res.capped_gpus[-1] > 0  # the row still runs capped at the end (its load is over budget)


def test_plant_nvml_sets_read_back_at_once_and_land_after_the_cap_latency() -> None:
    plant = _Plant(SERVERS, CFG, 10, _SpeedTables(SERVERS, SimpleStepTimes()))
    node = SERVERS[0].node
    act = NvmlActuator(PlantNvml(plant, node), attempts=1)
    gid = f"{node}/3"
    report = act.apply([CapAction(gid, node, CapTarget(1110.0, 250.0), "t")])
    assert report.applied == (gid,) and act.read_back()[gid] == CapTarget(1110.0, 250.0)
    i = plant.index[gid]
    assert plant.clock[i] == A100.sm_clock_mhz_max
    plant.now_s = CFG.cap_latency_s
    plant.land_due()
    assert plant.clock[i] == 1110.0 and plant.limit[i] == 250.0
    act.apply([CapAction(gid, node, CapTarget(None, None), "t")])
    assert act.read_back()[gid] == CapTarget(None, None)


def test_agent_path_publishes_intents_that_agents_enforce() -> None:
    plant = _Plant(SERVERS, CFG, 10, _SpeedTables(SERVERS, SimpleStepTimes()))
    path = AgentPath(intent_deleted=((1.0, (SERVERS[0].node,)),))
    pub = path.actuator(plant)
    node = SERVERS[0].node
    pub.apply([CapAction(f"{node}/0", node, CapTarget(1275.0, None), "T1")])
    path.tick(plant, 0.0)
    assert plant.reported[f"{node}/0"] == CapTarget(1275.0, None)
    assert pub.read_back()[f"{node}/0"] == CapTarget(1275.0, None)  # the agent's applied report
    path.tick(plant, 1.0)  # the intent annotation is deleted: the agent keeps the cap
    assert INTENT_ANNOTATION not in path.api.annotations[node]
    assert plant.reported[f"{node}/0"] == CapTarget(1275.0, None)
    assert decode_targets(path.api.annotations[node]["power.medley.dev/applied"]) == {
        f"{node}/0": CapTarget(1275.0, None)}
