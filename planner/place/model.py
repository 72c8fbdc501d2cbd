"""The CP-SAT model of one part: unit counts per site, racks, nodes in use, the start, the objective.

The variables and rows are those of the package docstring (``count``, ``rack``, ``node``/``class``; the
objective ``BIG·virtual + W·(units − keep) + used``); ``planner.place.rules`` adds spread and failure-domain
rows through ``replicas_in``. With a ``bounds.Reduction`` (the start keeps all it can) the unit variables take
its domains, groups that keep exactly what they run are constants, and there are no keep or virtual variables.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

from ortools.sat.python import cp_model

from planner.place.bounds import Reduction
from planner.place.hint import Hint, UnitKey
from planner.place.result import Objective
from planner.place.sites import Group, Sites

Counts = dict[tuple[int, int], int]  # (group, site) → units


class ComponentModel:
    """A CP-SAT model over one part's groups and sites, built row family by row family."""

    def __init__(self, groups: list[Group], sites: Sites, cur_stage: Mapping[tuple[int, str], int],
                 cur_mem: Mapping[tuple[int, str], int], reduction: Reduction | None = None) -> None:
        self.m = cp_model.CpModel()
        self.groups, self.s = groups, sites
        self.cur_stage, self.cur_mem = cur_stage, cur_mem
        self.reduction = reduction
        self.x: dict[tuple[int, int], cp_model.IntVar] = {}  # (group, site) stage units
        self.xm: dict[tuple[int, int], cp_model.IntVar] = {}  # (group, site) memory units
        self.y: dict[tuple[int, str], cp_model.IntVar] = {}  # replicas of a racked group per rack
        self.load: dict[int, list[cp_model.LinearExprT]] = defaultdict(list)  # devices per site
        self.keep_vars: dict[UnitKey, cp_model.IntVar] = {}
        self.keep_terms: list[cp_model.IntVar] = []
        self.virtual_terms: list[cp_model.LinearExprT] = []
        self.used_terms: list[cp_model.LinearExprT] = []
        self.hints: list[tuple[cp_model.IntVar, int]] = []
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

    def _domain(self, g: Group, si: int, mem: bool, count: int, unit: int) -> tuple[int, int] | None:
        """Least and most units of ``g`` on a site (None: none there)."""
        s = self.s.sites[si]
        if self.reduction is not None:
            return self.reduction.domain.get((g.index, si, mem))
        most = count if s.virtual else min(count, (s.devices // unit) * len(s.names))
        return (0, most) if most > 0 else None

    def add_units(self, g: Group, mem: bool) -> None:
        """``count[g]``: the group's ``pp·R`` stage units (``m·R`` memory units) over its pool's sites."""
        pool = g.memory_pool if mem else g.pool
        if pool is None:
            return
        unit, count = (1, g.mem * g.replicas) if mem else (g.tp, g.pp * g.replicas)
        red = self.reduction
        target, current = (self.xm, self.cur_mem) if mem else (self.x, self.cur_stage)
        if red is not None and g.index in red.stable:  # constants (``add_fixed``)
            return
        for si in self.s.by_pool[pool]:
            s = self.s.sites[si]
            dom = self._domain(g, si, mem, count, unit) if s.devices >= unit else None
            if dom is None:
                continue
            v = self.m.new_int_var(dom[0], dom[1], f"{'m' if mem else 'x'}{g.index}_{si}")
            target[(g.index, si)] = v
            self.load[si].append(unit * v)
            if s.virtual:
                self.virtual_terms.append(v)
            elif s.individual and red is None:
                self._keep(v, current.get((g.index, s.names[0]), 0), dom[1], (g.index, si, mem),
                           f"k{'m' if mem else ''}{g.index}_{si}")
        self.m.add(sum(target[(g.index, si)] for si in self.s.by_pool[pool] if (g.index, si) in target) == count)

    def add_fixed(self) -> None:
        """The devices of groups that keep exactly what they run, as constants in their sites' loads."""
        if self.reduction is None:
            return
        tp = {g.index: g.tp for g in self.groups}
        for (gi, si, mem), units in self.reduction.fixed.items():
            self.load[si].append(units * (1 if mem else tp[gi]))

    def add_racks(self, g: Group, hint: Hint) -> None:
        """``rack[g,r]``: a racked group's stages and memory units come in whole replicas per rack."""
        if not g.racked or (self.reduction is not None and g.index in self.reduction.stable):
            return
        racks: dict[str, list[int]] = defaultdict(list)
        for si in self.s.by_pool[g.pool]:
            if (g.index, si) in self.x:
                racks[self.s.sites[si].rack].append(si)
        mem_racks: dict[str, list[int]] = defaultdict(list)
        for si in self.s.by_pool[g.memory_pool] if g.memory_pool else ():
            if (g.index, si) in self.xm:
                rk = self.s.sites[si].rack if not self.s.sites[si].virtual else f"virtual:{g.pool}"
                mem_racks[rk].append(si)
        ys = []
        for rack, sis in racks.items():
            y = self.m.new_int_var(0, g.replicas, f"y{g.index}_{rack}")
            ys.append(y)
            self.y[(g.index, rack)] = y
            self.hints.append((y, hint.y.get((g.index, rack), 0)))
            self.m.add(sum(self.x[(g.index, si)] for si in sis) == g.pp * y)
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
            load = sum(self.load[si])
            if isinstance(load, int):  # constants only: the node is in use or empty whatever the solve
                continue
            used = (self.m.new_bool_var(f"used{si}") if s.individual
                    else self.m.new_int_var(0, len(s.names), f"u{si}"))
            self.m.add(load <= s.devices * used)
            self.used_terms.append(used)
            self.hints.append((used, hint.nodes_used.get(si, 0)))

    def add_hints(self, hint: Hint) -> None:
        """Start CP-SAT from the greedy placement (one bulk write: hints one by one cost more than the model)."""
        pairs = self.hints
        pairs.extend((v, hint.x.get((gi, si, False), 0)) for (gi, si), v in self.x.items())
        pairs.extend((v, hint.x.get((gi, si, True), 0)) for (gi, si), v in self.xm.items())
        pairs.extend((v, hint.keep.get(key, 0)) for key, v in self.keep_vars.items())
        proto = self.m.proto.solution_hint
        proto.vars.extend([v.index for v, _ in pairs])
        proto.values.extend([value for _, value in pairs])

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

    def values(self, solver: cp_model.CpSolver) -> tuple[Counts, Counts]:
        """Stage and memory units per (group, site) in the solver's solution, constants included."""
        x = {k: solver.value(v) for k, v in self.x.items()}
        xm = {k: solver.value(v) for k, v in self.xm.items()}
        if self.reduction is not None:
            for (gi, si, mem), units in self.reduction.fixed.items():
                (xm if mem else x)[(gi, si)] = units
        return x, xm


def build_model(groups: list[Group], sites: Sites, cur_stage: Mapping[tuple[int, str], int],
                cur_mem: Mapping[tuple[int, str], int], hint: Hint,
                reduction: Reduction | None = None) -> ComponentModel:
    """The model's unit, rack and node rows with the greedy start (rules and objective come after)."""
    model = ComponentModel(groups, sites, cur_stage, cur_mem, reduction)
    for g in groups:
        model.add_units(g, mem=False)
        model.add_units(g, mem=True)
        model.add_racks(g, hint)
    model.add_fixed()
    model.add_node_use(hint)
    model.add_hints(hint)
    return model
