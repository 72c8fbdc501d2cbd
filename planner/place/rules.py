"""Spread and failure-domain rows of the placement model (``spread[s]`` and ``tolerate[s,d]``).

``spread[s]``: ``z[s,zone] ≤ replicas of s in zone``, ``Σ z ≥ spread_zones_s`` over the serving replicas.
``tolerate[s,d]``: for each need of a phase (``phase_needs``: the whole load, each bucket on its groups), the
capacity lost with domain ``d`` stays within what the phase holds beyond the need, in whole
``CAPACITY_SCALE`` units: weights rounded up and the budget down within ``CAPACITY_SLACK``, so a placement
that keeps these rows keeps ``tolerance_losses``' check too.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping

from ortools.sat.python import cp_model

from planner.place.capacity import CAPACITY_SLACK, PREFILL_ONLY_ROLES, PhaseKey
from planner.place.model import ComponentModel
from planner.place.result import Tolerate
from planner.place.sites import Group
from planner.roles import SERVING_ROLES
from planner.schema import FleetSpec

CAPACITY_SCALE = 10_000  # CP-SAT units per service load in the failure-domain rule

Needs = Mapping[PhaseKey, list[tuple[float, frozenset[int]]]]
Rule = tuple[list[Group], dict[int, int], int]  # (groups of a need, weight per group, spare units)


def add_spread(model: ComponentModel, sid: str, gs: list[Group], want: int, explanations: list[str]) -> bool:
    """``spread[s]``: the service's serving replicas in at least ``want`` zones; True when the row was added
    (a spread the pools or replicas cannot meet is explained instead)."""
    serving = [g for g in gs if g.role in SERVING_ROLES]
    if want <= 1 or not serving:
        return False
    sites = model.s
    zones = sorted({sites.sites[si].zone for g in serving for si in sites.real(g.pool)})
    total = sum(g.replicas for g in serving)
    if len(zones) < want:
        explanations.append(f"service {sid}: asks for {want} zones but its pools reach only "
                            f"{len(zones)} ({', '.join(zones)}); spread not enforced")
        return False
    if total < want:
        explanations.append(f"service {sid}: {total} serving replica(s) cannot spread over {want} "
                            "zones; spread not enforced")
        return False
    zs = []
    for zone in zones:
        z = model.m.new_bool_var(f"z{sid}_{zone}")
        model.m.add(model.replicas_in(serving, "zone", zone) >= z)
        zs.append(z)
    model.m.add(sum(zs) >= want)
    return True


def _rules(phase: list[Group], needs: list[tuple[float, frozenset[int]]]) -> tuple[list[Rule], str]:
    """Per need: its groups, their weights and the spare capacity; or why the phase has none to spare."""
    rules: list[Rule] = []
    why = ""
    for need, members in needs:
        ms = [g for g in phase if g.index in members]
        held = sum(g.replicas * g.capacity for g in ms)
        spare = math.floor((held - need + CAPACITY_SLACK) * CAPACITY_SCALE)
        weight = {g.index: math.ceil(g.capacity * CAPACITY_SCALE - 1e-9) for g in ms}
        if held < need + CAPACITY_SLACK:
            why = f"its replicas hold {held / need:.0%} of the capacity its load needs: none to spare"
        elif max(weight.values()) > spare:
            why = "one replica holds more capacity than it has to spare"
        rules.append((ms, weight, spare))
    return rules, why


def add_tolerance(model: ComponentModel, sid: str, gs: list[Group], tolerate: Tolerate, needs: Needs,
                  explanations: list[str]) -> bool:
    """``tolerate[s,d]`` for both phases of a service; True when a row was added."""
    added = False
    for phase in ([g for g in gs if g.role in SERVING_ROLES], [g for g in gs if g.role in PREFILL_ONLY_ROLES]):
        if not phase:
            continue
        rules, why = _rules(phase, needs.get((sid, phase[0].role in PREFILL_ONLY_ROLES), []))
        if why or not rules:
            explanations.append(f"service {sid}: {why or 'no load recorded'}; it cannot survive losing "
                                f"a {tolerate}")
            continue
        added = True
        if tolerate == "node":  # node tolerance models every node singly
            _add_node_rules(model, phase, rules)
        else:
            _add_domain_rules(model, phase, rules, tolerate)
    return added


def _add_domain_rules(model: ComponentModel, phase: list[Group], rules: list[Rule], tolerate: Tolerate) -> None:
    """Capacity lost with each zone or rack stays within each need's spare."""
    sites = model.s.sites
    domains = sorted({(sites[si].zone if tolerate == "zone" else sites[si].rack)
                      for g in phase for si in model.s.real(g.pool)})
    for d in domains:
        for ms, weight, spare in rules:
            model.m.add(model.replicas_in(ms, tolerate, d, weight) <= spare)


def _add_node_rules(model: ComponentModel, phase: list[Group], rules: list[Rule]) -> None:
    """Capacity lost with each node (a replica with a stage or memory device on it) stays within the spare."""
    by_pool = model.s.by_pool
    for si in sorted({si for g in phase for si in by_pool[g.pool]}
                     | {si for g in phase if g.memory_pool for si in by_pool[g.memory_pool]}):
        if model.s.sites[si].virtual:
            continue
        lost: dict[int, cp_model.LinearExprT] = {}
        for g in phase:
            units = [v[(g.index, si)] for v in (model.x, model.xm) if (g.index, si) in v]
            if not units:
                continue
            if not g.racked:
                lost[g.index] = units[0]
                continue
            # replicas with a stage or memory device here: at most its units, at most R_g
            hit = model.m.new_int_var(0, g.replicas, f"hit{g.index}_{si}")
            model.m.add_min_equality(hit, [sum(units), g.replicas])
            lost[g.index] = hit
        for ms, weight, spare in rules:
            terms = [weight[g.index] * lost[g.index] for g in ms if g.index in lost]
            if terms:
                model.m.add(sum(terms) <= spare)


def add_rules(model: ComponentModel, fleet: FleetSpec, tolerate: Tolerate, needs: Needs) -> tuple[bool, list[str]]:
    """Spread and failure-domain rows for every service of the component, service by service.

    Returns whether any row was added (the greedy start ignores them) and the explanations of rules that
    could not be kept.
    """
    svc_groups: dict[str, list[Group]] = defaultdict(list)
    for g in model.groups:
        svc_groups[g.service].append(g)
    spread = {s.id: s.spread_zones for s in fleet.services}
    explanations: list[str] = []
    added = False
    for sid, gs in svc_groups.items():
        added = add_spread(model, sid, gs, spread.get(sid, 1), explanations) or added
        if tolerate != "none":
            added = add_tolerance(model, sid, gs, tolerate, needs, explanations) or added
    return added, explanations
