r"""A plan at once: greedy by cost per capacity, service by service, inside the pools, power budgets and zones.

For one service with rates λ_b, a column c carrying bucket b alone costs π_c·λ_b/(h·cap_{c,b}) per hour (its
replica price times the replicas' worth of load it takes on). Each bucket goes to the cheapest unified column,
or to the cheapest prefill column plus the cheapest decode column that can take its hand-off when that pair is
cheaper (this is the service's LP without the pools); each column then gets ⌈busy_c/h⌉ replicas. A pair can
take the hand-off when both run in one zone and the decode receives at least as fast as the prefill sends
(ν_d ≥ ν_p, the hand-off family's rows): per zone and per prefill NIC rate v, the cheapest prefill with ν ≤ v
and the cheapest decode with ν ≥ v. Rounding wastes most where many columns each carry little, so a column
gives its buckets (whole) to the spare capacity h·n − busy of the other columns of its phase that can take them
(for a prefill or a decode: a column its bucket's partner can still hand off with) while that saves one of its
replicas. The cheapest plan that uses one unified column for every bucket (or one prefill and one decode column
that can pair) is tried too, and so is the bucket plan of unified columns alone (pairs that win bucket by bucket
may lose once rounded up); the cheapest is kept. Then the serving
replicas are raised to the service's minimum and spread over its zones (one replica of the cheapest serving
column per missing zone).

Services go largest first, each inside what the ones before it left of the pools' devices (D_p·M_p) and of
each power domain's expected and nameplate budgets; a plan that overruns a pool or domain is tried again
without that pool (that domain's pools). A service that finds no room moves to the front of the order and the
fleet is tried again (a few passes). The plan meets every row of the MILP (see formulation): it is an
incumbent, handed to the solvers as a start; it proves nothing about the optimum, so it has no bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from planner.clock import Deadline
from planner.roles import DECODE_ROLES, PREFILL_ROLES, SERVING_ROLES
from planner.solve.formulation import Built, violations
from planner.solve.formulation.churn import churn_usd_per_hour
from planner.solve.formulation.handoff import cross_zone_usd_per_hour, zone_shares
from planner.solve.formulation.zone_roles import role_class
from planner.solve.problem import Problem, Solution, expected_watts, nodes_used, plan_cost_usd_per_hour, pool_usage
from planner.solve.table import DECODE, PREFILL, UNIFIED, ColumnTable

_INF = math.inf
_EPS = 1e-9
_PASSES = 4
_IMPROVE_ROUNDS = 3


@dataclass
class _Fleet:
    """What the services planned so far hold: devices per pool, expected watts per power domain."""

    problem: Problem
    t: ColumnTable
    devices_used: np.ndarray
    watts_used: np.ndarray
    pool_domain: np.ndarray  # pool → index in problem.power_budgets, −1 for none
    pool_zone: np.ndarray
    capacity: np.ndarray = field(init=False)  # devices per pool (inf: no node limit)

    def __post_init__(self) -> None:
        self.capacity = np.asarray([_INF if p.max_nodes is None else float(p.max_nodes * p.devices_per_node)
                                    for p in self.problem.pools])


@dataclass
class _Plan:
    """One service's plan in its own column indices: replicas, and which column carries each bucket's phases."""

    n: np.ndarray
    busy: np.ndarray  # replicas' worth of load (before headroom)
    pre: np.ndarray  # live bucket → local column carrying its prefill
    dec: np.ndarray  # live bucket → local column carrying its decode

    def cost(self, price: np.ndarray) -> float:
        return float(np.dot(price, self.n))


def _cheapest(unit: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per bucket the cheapest column among ``mask`` and its cost (inf where none serves it)."""
    masked = np.where(mask[:, None], unit, _INF)
    if masked.shape[0] == 0:
        return np.zeros(unit.shape[1], dtype=np.int64), np.full(unit.shape[1], _INF)
    best = masked.argmin(axis=0)
    return best, masked[best, np.arange(unit.shape[1])]


def _busy(load: np.ndarray, pre: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """Each column's load from the buckets it carries (a unified column carrying both phases counts once)."""
    cols = np.arange(len(pre))
    busy = np.zeros(load.shape[0])
    np.add.at(busy, pre, load[pre, cols])
    split = dec != pre
    np.add.at(busy, dec[split], load[dec[split], cols[split]])
    return busy


def _replicas(busy: np.ndarray, h: float) -> np.ndarray:
    return np.ceil(busy / h - _EPS).clip(min=0.0)


Pairs = list[tuple[np.ndarray, np.ndarray]]  # (prefills, decodes) any of which can pair (``_Links.pairs``)


@dataclass(frozen=True)
class _Links:
    """Where one service's columns run and how fast they hand off KV caches: which prefill may pair with which
    decode (same zone, ν_decode ≥ ν_prefill)."""

    zone: np.ndarray
    nu: np.ndarray  # Gbit/s a replica hands KV caches at (prefill and decode-only columns)

    def pairs(self, role: np.ndarray, ok: np.ndarray) -> Pairs:
        """Per zone and per NIC rate v of its prefills: the prefills with ν ≤ v and the decodes with ν ≥ v (any
        of the one with any of the other can pair, and every pair that can is in one of them)."""
        pre, dec = ok & (role == PREFILL), ok & (role == DECODE)
        out = []
        for g in np.unique(self.zone[pre]):
            here = self.zone == g
            for v in np.unique(self.nu[pre & here]):
                d = dec & here & (self.nu >= v)
                if d.any():
                    out.append((pre & here & (self.nu <= v), d))
        return out

    def takers(self, plan: _Plan, k: int, role: np.ndarray, b: int) -> np.ndarray:
        """The columns that may take over bucket b's phase from column k: its role and, for a prefill or a
        decode, one that the bucket's other phase can still hand off with."""
        same = np.asarray(role == role[k])
        if role[k] == PREFILL:
            partner = plan.dec[b]
            return np.asarray(same & (self.zone == self.zone[partner]) & (self.nu <= self.nu[partner]))
        if role[k] == DECODE:
            partner = plan.pre[b]
            return np.asarray(same & (self.zone == self.zone[partner]) & (self.nu >= self.nu[partner]))
        return same


def _give_away(plan: _Plan, load: np.ndarray, role: np.ndarray, price: np.ndarray, h: float, links: _Links) -> None:
    """Columns hand whole buckets to the spare capacity of columns of their phase while that saves a replica."""
    for _ in range(_IMPROVE_ROUNDS):
        improved = False
        for k in np.argsort(-price * (plan.n > 0), kind="stable"):
            if plan.n[k] <= 0:
                break
            need = plan.busy[k] - h * (plan.n[k] - 1)  # load to move out to save one replica of k
            mine = np.nonzero((plan.pre == k) | (plan.dec == k))[0]
            others = (plan.n > 0) & (role == role[k])
            others[k] = False
            if not others.any():
                continue
            spare = np.where(others, h * plan.n - plan.busy, 0.0)
            moves: list[tuple[int, int]] = []
            moved = 0.0
            for b in mine[np.argsort(-load[k, mine])]:
                fits = others & links.takers(plan, k, role, int(b)) & (load[:, b] <= spare + _EPS)
                if not fits.any():
                    continue
                j = int(np.argmax(np.where(fits, spare, -_INF)))
                spare[j] -= load[j, b]
                moves.append((int(b), j))
                moved += load[k, b]
                if moved >= need - _EPS:
                    break
            if moved < need - _EPS:
                continue
            for b, j in moves:
                if plan.pre[b] == k:
                    plan.pre[b] = j
                if plan.dec[b] == k:
                    plan.dec[b] = j
            plan.busy = _busy(load, plan.pre, plan.dec)
            plan.n = _replicas(plan.busy, h)
            improved = True
        if not improved:
            return


def _one_column(load: np.ndarray, mask: np.ndarray, price: np.ndarray, h: float) -> tuple[int, float]:
    """The column of ``mask`` that carries every bucket alone most cheaply, and that cost (−1, inf: none)."""
    full = mask & np.all(np.isfinite(load), axis=1)
    if not full.any():
        return -1, _INF
    cost = np.where(full, price * _replicas(np.where(full[:, None], load, 0.0).sum(axis=1), h), _INF)
    j = int(cost.argmin())
    return j, float(cost[j])


def _alone(load: np.ndarray, role: np.ndarray, price: np.ndarray, ok: np.ndarray, h: float,
           pairs: Pairs) -> _Plan | None:
    """The cheapest plan of one unified column, or of one prefill and one decode column that can pair."""
    nb = load.shape[1]
    u, cost_u = _one_column(load, ok & (role == UNIFIED), price, h)
    p, d, cost_pd = -1, -1, _INF
    for pre_ok, dec_ok in pairs:
        pj, cost_p = _one_column(load, pre_ok, price, h)
        dj, cost_d = _one_column(load, dec_ok, price, h)
        if cost_p + cost_d < cost_pd:
            p, d, cost_pd = pj, dj, cost_p + cost_d
    if not math.isfinite(min(cost_u, cost_pd)):
        return None
    pre, dec = (np.full(nb, u), np.full(nb, u)) if cost_u <= cost_pd else (np.full(nb, p), np.full(nb, d))
    busy = _busy(np.where(np.isfinite(load), load, 0.0), pre, dec)
    return _Plan(_replicas(busy, h), busy, pre, dec)


def _bucket_plan(load: np.ndarray, role: np.ndarray, price: np.ndarray, ok: np.ndarray, h: float,
                 links: _Links, pairs: Pairs) -> _Plan | None:
    """Each bucket on its cheapest unified column or prefill + decode pair that can pair, rounded up, then
    improved."""
    unit = np.where(np.isfinite(load), price[:, None] * load / h, _INF)
    bu, vu = _cheapest(unit, ok & (role == UNIFIED))
    nb = load.shape[1]
    bp, bd, vpd = np.zeros(nb, dtype=np.int64), np.zeros(nb, dtype=np.int64), np.full(nb, _INF)
    for pre_ok, dec_ok in pairs:
        p, vp = _cheapest(unit, pre_ok)
        d, vd = _cheapest(unit, dec_ok)
        better = vp + vd < vpd
        bp, bd, vpd = np.where(better, p, bp), np.where(better, d, bd), np.where(better, vp + vd, vpd)
    if not np.all(np.isfinite(np.minimum(vu, vpd))):
        return None
    uni = vu <= vpd
    pre, dec = np.where(uni, bu, bp), np.where(uni, bu, bd)
    busy = _busy(load, pre, dec)
    plan = _Plan(_replicas(busy, h), busy, pre, dec)
    _give_away(plan, load, role, price, h, links)
    return plan


def _floors(plan: _Plan, fleet: _Fleet, cols: np.ndarray, ok: np.ndarray, min_replicas: int,
            spread: int) -> bool:
    """Raise serving replicas to the minimum and spread them over zones; False where no column can."""
    t = fleet.t
    serving = ok & (t.role[cols] != PREFILL)
    zone = fleet.pool_zone[t.pool[cols]]
    price = t.price[cols]
    short = min_replicas - int(plan.n[t.role[cols] != PREFILL].sum())
    if short > 0:
        if not serving.any():
            return False
        plan.n[int(np.argmin(np.where(serving, price, _INF)))] += short
    if spread > 1:
        have = set(zone[(plan.n > 0) & (t.role[cols] != PREFILL)].tolist())
        while len(have) < spread:
            fresh = serving & ~np.isin(zone, list(have))
            if not fresh.any():
                return False
            j = int(np.argmin(np.where(fresh, price, _INF)))
            plan.n[j] += 1
            have.add(int(zone[j]))
    return True


def _overrun(plan: _Plan, fleet: _Fleet, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The plan's devices per pool and expected watts per domain, added to the fleet's, and the pools whose
    devices or whose domain's budgets it breaks (empty: it fits)."""
    t, problem = fleet.t, fleet.problem
    devices = fleet.devices_used.copy()
    np.add.at(devices, t.pool[cols], plan.n * t.devices[cols])
    mem = t.memory_pool[cols] >= 0
    np.add.at(devices, t.memory_pool[cols][mem], (plan.n * t.memory_devices[cols])[mem])
    bad = devices > fleet.capacity + _EPS
    watts = fleet.watts_used.copy()
    if problem.power_budgets:
        dom = fleet.pool_domain[t.pool[cols]]
        draw = plan.n * t.idle_watts[cols] + plan.busy * (t.active_watts[cols] - t.idle_watts[cols])
        np.add.at(watts, dom[dom >= 0], draw[dom >= 0])
        pools = problem.pools
        per_node = np.asarray([p.devices_per_node for p in pools], dtype=float)
        nodes = np.ceil(devices / per_node - _EPS)
        node_idle = np.asarray([p.node_idle_watts for p in pools]) * nodes
        plate = np.asarray([p.nameplate_watts_per_node for p in pools]) * nodes
        for k, budget in enumerate(problem.power_budgets):
            members = fleet.pool_domain == k
            expected = watts[k] + float(node_idle[members].sum())
            if (expected > budget.expected_share * budget.budget_watts + 1e-7 * budget.budget_watts
                    or float(plate[members].sum()) > budget.oversubscription_ratio * budget.budget_watts):
                bad |= members
    return bad, devices


def _plan_service(fleet: _Fleet, s: int, unified_only: bool) -> _Plan | None:
    """Service s's plan inside what the fleet has left, committed to the fleet; None where none fits."""
    t, problem = fleet.t, fleet.problem
    d = problem.demands[s]
    cols = t.by_service[s]
    live = np.nonzero(t.rates[s] > 0)[0]
    caps = t.caps[cols][:, live]
    with np.errstate(divide="ignore"):
        load = np.where(caps > 0, t.rates[s, live] / np.where(caps > 0, caps, 1.0), _INF)
    role, price, h = t.role[cols], t.price[cols], problem.headroom
    links = _Links(fleet.pool_zone[t.pool[cols]], t.handoff[cols])
    ok = (role == UNIFIED) if unified_only else np.ones(len(cols), dtype=bool)
    for _ in range(len(problem.pools) + 1):
        uni = ok & (role == UNIFIED)
        pairs = links.pairs(role, ok)
        tries = (_bucket_plan(load, role, price, ok, h, links, pairs), _alone(load, role, price, ok, h, pairs),
                 _bucket_plan(load, role, price, uni, h, links, []) if (ok & ~uni).any() else None)
        plans = [p for p in tries if p]
        if not plans:
            return None
        plan = min(plans, key=lambda p: p.cost(price))
        if not _floors(plan, fleet, cols, ok, d.min_replicas, d.spread_zones):
            return None
        bad, devices = _overrun(plan, fleet, cols)
        if not bad.any():
            fleet.devices_used = devices
            _commit_watts(fleet, plan, cols)
            return plan
        used = np.isin(t.pool[cols], np.nonzero(bad)[0]) | np.isin(t.memory_pool[cols], np.nonzero(bad)[0])
        if not (ok & used).any():
            return None
        ok &= ~used
    return None


def _commit_watts(fleet: _Fleet, plan: _Plan, cols: np.ndarray) -> None:
    t = fleet.t
    dom = fleet.pool_domain[t.pool[cols]]
    draw = plan.n * t.idle_watts[cols] + plan.busy * (t.active_watts[cols] - t.idle_watts[cols])
    np.add.at(fleet.watts_used, dom[dom >= 0], draw[dom >= 0])


def _size(t: ColumnTable, s: int, h: float) -> float:
    """A service's cost if every bucket rode its cheapest column (for the order: largest first)."""
    cols = t.by_service[s]
    live = t.rates[s] > 0
    caps = t.caps[cols][:, live]
    with np.errstate(divide="ignore"):
        unit = np.where(caps > 0, t.price[cols, None] * t.rates[s, live] / np.where(caps > 0, caps, 1.0), _INF)
    best = unit.min(axis=0) if len(cols) else np.full(int(live.sum()), _INF)
    return float(np.sum(np.where(np.isfinite(best), best, 0.0))) / h


def greedy_plan(problem: Problem, deadline: Deadline | None = None, unified_only: bool = False) -> Solution | None:
    """A plan that meets every row (see module docstring), or None where the greedy found none (which proves
    nothing: the fleet may still have a plan). ``unified_only``: unified replicas alone."""
    start = deadline.now() if deadline is not None else 0.0
    t = ColumnTable.of(problem)
    if not problem.demands:
        return None
    zones = sorted({p.zone for p in problem.pools})
    domains = {k.id: i for i, k in enumerate(problem.power_budgets)}
    pool_domain = np.asarray([domains.get(p.power_domain or "", -1) for p in problem.pools], dtype=np.int64)
    pool_zone = np.asarray([zones.index(p.zone) for p in problem.pools], dtype=np.int64)
    order = sorted(range(len(problem.demands)), key=lambda s: -_size(t, s, problem.headroom))
    for _ in range(_PASSES):
        fleet = _Fleet(problem, t, np.zeros(len(problem.pools)), np.zeros(len(problem.power_budgets)),
                       pool_domain, pool_zone)
        plans: dict[int, _Plan] = {}
        failed = None
        for s in order:
            plan = _plan_service(fleet, s, unified_only)
            if plan is None:
                failed = s
                break
            plans[s] = plan
        if failed is None:
            return _solution(problem, t, plans, (deadline.now() - start) if deadline is not None else 0.0)
        if order[0] == failed or (deadline is not None and deadline.expired()):
            return None
        order.remove(failed)
        order.insert(0, failed)
    return None


def _solution(problem: Problem, t: ColumnTable, plans: dict[int, _Plan], seconds: float) -> Solution:
    """The services' plans as the fleet's Solution (status feasible, no bound)."""
    replicas: dict[str, int] = {}
    pre: dict[tuple[str, int], float] = {}
    dec: dict[tuple[str, int], float] = {}
    for s, plan in plans.items():
        cols = t.by_service[s]
        live = np.nonzero(t.rates[s] > 0)[0]
        for j in np.nonzero(plan.n > 0)[0]:
            replicas[t.columns[cols[j]].key] = int(plan.n[j])
        for i, b in enumerate(live.tolist()):
            cp, cd = t.columns[cols[plan.pre[i]]], t.columns[cols[plan.dec[i]]]
            pre[(cp.key, b)] = 1.0
            dec[(cd.key, b)] = 1.0
    nodes = nodes_used(problem, pool_usage(problem, replicas))
    cost = plan_cost_usd_per_hour(problem, replicas)
    return _with_handoffs(problem, Solution(
        status="feasible", backend="greedy", objective=cost + churn_usd_per_hour(problem, replicas), best_bound=None,
        relative_gap=None, solve_seconds=seconds, variables=0, constraints=0, replicas=replicas,
        prefill_share=pre, decode_share=dec, nodes={k: v for k, v in nodes.items() if v > 0},
        expected_watts=expected_watts(problem, replicas, pre | dec, nodes), cost_usd_per_hour=cost,
        message="greedy plan", backends={"incumbent": "greedy"}))


def _with_handoffs(problem: Problem, plan: Solution) -> Solution:
    """The plan with the cross-zone KV hand-offs it pays for in its objective (as the MILP's objective has)."""
    extra = sum(cross_zone_usd_per_hour(problem, plan).values())
    return replace(plan, objective=plan.objective + extra) if extra > 0 and plan.objective is not None else plan


def start_vector(problem: Problem, built: Built, plan: Solution) -> np.ndarray:
    """A plan as values of ``built``'s variables (replicas, shares, nodes, zone flags, churn): a solver start."""
    values = np.zeros(len(built.m.cost))
    for key, i in built.n.items():
        values[i] = plan.replicas.get(key, 0)
    roles = {c.key: c.role for c in problem.columns}
    zone = {p.id: p.zone for p in problem.pools}
    for key, (bk, xs) in built.shares.items():
        role = roles[key]
        source = plan.prefill_share if role in PREFILL_ROLES else plan.decode_share
        if role not in PREFILL_ROLES and role not in DECODE_ROLES:
            continue
        for b, xv in zip(bk.tolist(), xs, strict=True):
            values[xv] = source.get((key, b), 0.0)
    nodes = nodes_used(problem, pool_usage(problem, plan.replicas))
    for pool, i in built.nodes.items():
        values[i] = nodes[pool]
    served = {(c.service, zone[c.pool]) for c in problem.columns
              if c.role in SERVING_ROLES and plan.replicas.get(c.key, 0) > 0}
    for sz, i in built.zones.items():
        values[i] = 1.0 if sz in served else 0.0
    for key, i in built.churn_var.items():
        values[i] = abs(plan.replicas.get(key, 0) - problem.current_replicas.get(key, 0))
    shares = plan.prefill_share | plan.decode_share
    busy = {k for (k, _), v in shares.items() if v > _EPS}
    carried = {(c.service, role_class(c)) for c in problem.columns if c.key in busy}
    for sr, i in built.role_flags.items():
        values[i] = 1.0 if sr in carried else 0.0
    demands = {d.service: d for d in problem.demands}
    used = {(c.service, c.label or c.key) for c in problem.columns if plan.replicas.get(c.key, 0) > 0}
    for sl, i in built.config_flags.items():
        values[i] = 1.0 if sl in used else 0.0
    for (s, b, g), i in built.crossing.items():
        pre, dec = zone_shares(problem, plan, demands[s], b).get(g, (0.0, 0.0))
        values[i] = max(0.0, pre - dec)
    return values


def checked_greedy_plan(problem: Problem, deadline: Deadline | None = None) -> Solution | None:
    """The greedy plan if it meets every family's rows, else the greedy plan of unified replicas alone if that
    does (a family the greedy does not model, e.g. one on disaggregated pairs, may rule the first out)."""
    for unified_only in (False, True):
        plan = greedy_plan(problem, deadline, unified_only)
        if plan is not None and not plan_violations(problem, plan):
            return plan
    return None


def plan_violations(problem: Problem, plan: Solution) -> list[str]:
    """How a plan breaks the problem's rows, family by family (empty: it is a plan), checked on the problem cut
    down to the plan's own columns: every family's rows over the columns a plan uses are the ones it can break,
    and the check then costs what the plan holds, not what the fleet offers."""
    keys = set(plan.replicas) | {k for k, _ in plan.prefill_share} | {k for k, _ in plan.decode_share}
    mine = tuple(c for c in problem.columns if c.key in keys)
    return violations(replace(problem, columns=mine), plan)


def covers(problem: Problem, plan: Solution) -> bool:
    """Whether every column a plan runs is one of the problem's (so it is a start for the problem's model)."""
    keys = {c.key for c in problem.columns}
    return all(k in keys for k, n in plan.replicas.items() if n > 0)


def restrict(plan: Solution, part: Problem, whole: Problem) -> Solution | None:
    """The part of a fleet plan on ``part`` (one service's problem, its columns possibly pruned) as a plan of
    it; None where the plan runs a column of the part's services that ``part`` no longer has."""
    services = {d.service for d in part.demands}
    mine = {c.key for c in whole.columns if c.service in services}
    replicas = {k: n for k, n in plan.replicas.items() if k in mine and n > 0}
    kept = {c.key for c in part.columns}
    if any(k not in kept for k in replicas):
        return None
    pre = {kb: v for kb, v in plan.prefill_share.items() if kb[0] in mine}
    dec = {kb: v for kb, v in plan.decode_share.items() if kb[0] in mine}
    nodes = nodes_used(part, pool_usage(part, replicas))
    cost = plan_cost_usd_per_hour(part, replicas)
    return _with_handoffs(part, Solution(
        status="feasible", backend=plan.backend, objective=cost + churn_usd_per_hour(part, replicas), best_bound=None,
        relative_gap=None, solve_seconds=0.0, variables=0, constraints=0, replicas=replicas, prefill_share=pre,
        decode_share=dec, nodes={k: v for k, v in nodes.items() if v > 0},
        expected_watts=expected_watts(part, replicas, pre | dec, nodes), cost_usd_per_hour=cost,
        message=plan.message, backends=dict(plan.backends)))
