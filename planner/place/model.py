"""The CP-SAT model of one component: unit counts per site, racks, nodes in use, the start, the objective.

The variables and rows are those of the package docstring (``count``, ``rack``, ``node``/``class``; the
objective ``BIG·virtual + W·(units − keep) + used``); ``planner.place.rules`` adds spread and failure-domain
rows through ``replicas_in``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

from ortools.sat.python import cp_model

from planner.place.hint import Hint, UnitKey
from planner.place.result import Objective
from planner.place.sites import Group, Sites


class ComponentModel:
    """A CP-SAT model over one component's groups and sites, built row family by row family."""

    def __init__(self, groups: list[Group], sites: Sites, cur_stage: Mapping[tuple[int, str], int],
                 cur_mem: Mapping[tuple[int, str], int]) -> None:
        self.m = cp_model.CpModel()
        self.groups, self.s = groups, sites
        self.cur_stage, self.cur_mem = cur_stage, cur_mem
        self.x: dict[tuple[int, int], cp_model.IntVar] = {}  # (group, site) stage units
        self.xm: dict[tuple[int, int], cp_model.IntVar] = {}  # (group, site) memory units
        self.y: dict[tuple[int, str], cp_model.IntVar] = {}  # replicas of a racked group per rack
        self.load: dict[int, list[cp_model.LinearExprT]] = defaultdict(list)  # devices per site
        self.keep_vars: dict[UnitKey, cp_model.IntVar] = {}
        self.keep_terms: list[cp_model.IntVar] = []
        self.virtual_terms: list[cp_model.LinearExprT] = []
        self.used_terms: list[cp_model.LinearExprT] = []
        self.zone_of_rack = {s.rack: s.zone for s in sites.sites if not s.virtual}

    @property
    def units_total(self) -> int:
        return sum(g.pp * g.replicas + g.mem * g.replicas for g in self.groups)

    def _keep(self, v: cp_model.IntVar, current: int, cap: int, key: UnitKey, name: str) -> None:
        """Count units already on a site that stay there (at most what is placed there now)."""
        if current:
            k = self.m.new_int_var(0, min(current, cap), name)
            self.m.add(k <= v)
            self.keep_terms.append(k)
            self.keep_vars[key] = k

    def add_stage_units(self, g: Group) -> None:
        """``count[g]``: the group's ``pp·R`` stage units over its pool's sites (virtual included)."""
        count = g.pp * g.replicas
        for si in self.s.by_pool[g.pool]:
            s = self.s.sites[si]
            if s.devices < g.tp:
                continue
            cap = count if s.virtual else min(count, (s.devices // g.tp) * len(s.names))
            if cap <= 0:
                continue
            v = self.m.new_int_var(0, cap, f"x{g.index}_{si}")
            self.x[(g.index, si)] = v
            self.load[si].append(g.tp * v)
            if s.virtual:
                self.virtual_terms.append(v)
            elif s.individual:
                self._keep(v, self.cur_stage.get((g.index, s.names[0]), 0), cap, (g.index, si, False),
                           f"k{g.index}_{si}")
        self.m.add(sum(self.x[(g.index, si)] for si in self.s.by_pool[g.pool] if (g.index, si) in self.x) == count)

    def add_memory_units(self, g: Group) -> None:
        """``count[g]`` of memory units: ``m·R`` one-device units over the memory pool's sites."""
        if not g.memory_pool:
            return
        mcount = g.mem * g.replicas
        for si in self.s.by_pool[g.memory_pool]:
            s = self.s.sites[si]
            cap = mcount if s.virtual else min(mcount, s.devices * max(1, len(s.names)))
            v = self.m.new_int_var(0, cap, f"m{g.index}_{si}")
            self.xm[(g.index, si)] = v
            self.load[si].append(v)
            if s.virtual:
                self.virtual_terms.append(v)
            elif s.individual:
                self._keep(v, self.cur_mem.get((g.index, s.names[0]), 0), cap, (g.index, si, True),
                           f"km{g.index}_{si}")
        self.m.add(sum(self.xm[(g.index, si)] for si in self.s.by_pool[g.memory_pool]) == mcount)

    def add_racks(self, g: Group, hint: Hint) -> None:
        """``rack[g,r]``: a racked group's stages and memory units come in whole replicas per rack."""
        if not g.racked:
            return
        racks: dict[str, list[int]] = defaultdict(list)
        for si in self.s.by_pool[g.pool]:
            racks[self.s.sites[si].rack].append(si)
        mem_racks: dict[str, list[int]] = defaultdict(list)
        if g.memory_pool:
            for si in self.s.by_pool[g.memory_pool]:
                rk = self.s.sites[si].rack if not self.s.sites[si].virtual else f"virtual:{g.pool}"
                mem_racks[rk].append(si)
        ys = []
        for rack, sis in racks.items():
            y = self.m.new_int_var(0, g.replicas, f"y{g.index}_{rack}")
            ys.append(y)
            self.y[(g.index, rack)] = y
            self.m.add_hint(y, hint.y.get((g.index, rack), 0))
            self.m.add(sum(self.x[(g.index, si)] for si in sis if (g.index, si) in self.x) == g.pp * y)
            if g.memory_pool:
                self.m.add(sum(self.xm[(g.index, si)] for si in mem_racks.get(rack, [])) == g.mem * y)
        for rack, sis in mem_racks.items():
            if rack not in racks:
                for si in sis:
                    self.m.add(self.xm[(g.index, si)] == 0)
        self.m.add(sum(ys) == g.replicas)

    def add_node_use(self, hint: Hint) -> None:
        """``node[n]``/``class[c]``: devices on a site fit its nodes in use."""
        for si, s in enumerate(self.s.sites):
            if not self.load[si] or s.virtual:
                continue
            used = (self.m.new_bool_var(f"used{si}") if s.individual
                    else self.m.new_int_var(0, len(s.names), f"u{si}"))
            self.m.add(sum(self.load[si]) <= s.devices * used)
            self.used_terms.append(used)
            self.m.add_hint(used, hint.nodes_used.get(si, 0))

    def add_hints(self, hint: Hint) -> None:
        """Start CP-SAT from the greedy placement."""
        for (gi, si), v in self.x.items():
            self.m.add_hint(v, hint.x.get((gi, si, False), 0))
        for (gi, si), v in self.xm.items():
            self.m.add_hint(v, hint.x.get((gi, si, True), 0))
        for key, v in self.keep_vars.items():
            self.m.add_hint(v, hint.keep.get(key, 0))

    def replicas_in(self, gs: list[Group], pick: str, domain: str,
                    weight: Mapping[int, int] | None = None) -> cp_model.LinearExprT:
        """Replicas of ``gs`` in a zone or rack (each times its weight, when given)."""
        terms: list[cp_model.LinearExprT] = []
        for g in gs:
            w = weight[g.index] if weight is not None else 1
            if g.racked:  # a racked replica lies in one rack
                terms.extend(w * y for (gi, rack), y in self.y.items() if gi == g.index and domain
                             == (self.zone_of_rack.get(rack) if pick == "zone" else rack))
                continue
            for si in self.s.by_pool[g.pool]:
                s = self.s.sites[si]
                if (g.index, si) not in self.x or s.virtual:
                    continue
                if (s.zone if pick == "zone" else s.rack) == domain:
                    terms.append(w * self.x[(g.index, si)])  # a stage puts its replica in the stage's domain
        return sum(terms)

    def minimize(self, objective: Objective) -> None:
        """Virtual units first, then moves (units not kept), then nodes in use (unless ``moves`` only)."""
        nodes = sum(len(s.names) for s in self.s.sites)
        big = (self.units_total + 1) * (nodes + 1)
        w_move = nodes + 1
        obj: list[cp_model.LinearExprT] = [big * sum(self.virtual_terms)] if self.virtual_terms else []
        if self.keep_terms:
            obj.append(-w_move * sum(self.keep_terms))
        if objective == "moves_then_fragmentation" and self.used_terms:
            obj.append(sum(self.used_terms))
        if obj:
            self.m.minimize(sum(obj))


def build_model(groups: list[Group], sites: Sites, cur_stage: Mapping[tuple[int, str], int],
                cur_mem: Mapping[tuple[int, str], int], hint: Hint) -> ComponentModel:
    """The model's unit, rack and node rows with the greedy start (rules and objective come after)."""
    model = ComponentModel(groups, sites, cur_stage, cur_mem)
    for g in groups:
        model.add_stage_units(g)
        model.add_memory_units(g)
        model.add_racks(g, hint)
    model.add_node_use(hint)
    model.add_hints(hint)
    return model
