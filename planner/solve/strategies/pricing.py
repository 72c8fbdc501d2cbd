r"""Column pricing: solve a large model by pricing columns into a restricted one.

The LP with a few cheap columns per bucket, priced slacks on the shared rows, and left-out columns joining
while their reduced cost is negative; then the MILP on the priced columns, warm-started from a MILP on the
LP's support. The reported bound is max(L, min(B_R, L + min_{c left out} g_c)): B_R the restricted MILP's
bound, L the full LP bound and g_c the least a replica of c adds to L (see best_gain); every plan either uses
only restricted columns or some left-out one, so it holds for the whole problem and the gap is honest.

LP phase: with the restricted LP's duals and reduced costs r, a left-out column c could lower the LP iff its
gain g_c = max_{u≥0} r_n − h·u − Σ_b max(0, −r_x[b] − load_b·u) is negative (u, v free duals of its own
capacity and link rows). Once no gain is negative, the restricted LP value L bounds the whole problem.
MILP phase: a plan using c (n_c ≥ 1) costs at least L + g_c, so with an incumbent U every left-out column
with g_c ≥ U − L is out of every better plan and the restricted MILP's bound holds for the whole problem
(certified). Otherwise the columns with the lowest g_c join (a batch at a time, a better plan narrows the
threshold).

With ``lagrange`` (a fleet whose services share only pool and power rows, see services.decomposable), the
pool rows' duals μ price each service's own MILP (see lagrange): L(μ) bounds the fleet whatever μ, so the LP
may stop before it converges once its time share is spent (its value then bounds nothing, and neither do the
gains), and the services' plans join the LP's support in the first restricted MILP, which then gets most of
the time left.

The LPs and the first restricted MILP (which stops at an objective through HiGHS's callback) run on HiGHS
whatever backend was asked for; the later restricted MILPs run on the backend asked for. ``stages`` records
which ran where.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from planner.clock import Deadline
from planner.roles import SERVING_ROLES
from planner.schema import Role
from planner.solve.backends import Backend, HighsBackend, RawResult
from planner.solve.formulation import Arrays, Built, submatrix
from planner.solve.incumbent import start_vector
from planner.solve.problem import Column, Problem, Solution, SolveOptions, Status, nodes_used, pool_usage
from planner.solve.progress import plans_only
from planner.solve.strategies.base import nested
from planner.solve.strategies.lagrange import LagrangeStrategy

_INF = math.inf
_START_PER_BUCKET = 3
_MAX_ROUNDS = 40
_ADD_PER_SERVICE = 25
# With the services priced, the LP may stop unfinished once it has settled or after this share of the time,
# and the services' own MILPs end by _LAGRANGE_SERVICES_UNTIL of it.
_LAGRANGE_LP_SHARE = 0.3
_LAGRANGE_LP_SETTLED = 0.01  # the LP has settled when a round lowers it by less than this share
_LAGRANGE_SERVICES_UNTIL = 0.65
_LAGRANGE_GRACE = 0.1  # more time for a service that had no bound by then
_SOFT_ROWS = ("pool[", "power_expected[", "power_nameplate[", "min_replicas[", "spread[", "work[")
_NO_SLACK = 1e-7


@dataclass(frozen=True)
class _Index:
    """Where each column's variables and rows sit in the model, as arrays for vectorised pricing."""

    arr: Arrays
    n_of: np.ndarray  # column j → its replicas variable
    row_owner: np.ndarray  # row → the column j whose capacity or link row it is (−1: a shared row)
    owner: np.ndarray  # variable → column j (−1: no column's)
    share_var: np.ndarray
    share_owner: np.ndarray
    share_load: np.ndarray
    share_group: np.ndarray  # service × bucket
    share_phase: np.ndarray  # 0 unified, 1 prefill, 2 decode
    all_links: np.ndarray
    soft: np.ndarray  # shared rows that get priced slack in the LPs
    soft_sign: np.ndarray
    svc_of: np.ndarray  # column j → service index

    @property
    def price(self) -> np.ndarray:
        """Column j → its replica's objective coefficient."""
        price: np.ndarray = self.arr.cost[self.n_of]
        return price


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The concatenation of range(start, start + length) for each pair, as one array."""
    total = int(lengths.sum())
    offsets = np.repeat(np.cumsum(lengths) - lengths, lengths)
    out: np.ndarray = np.repeat(starts, lengths) + np.arange(total, dtype=np.int64) - offsets
    return out


def _index(problem: Problem, built: Built) -> tuple[list[Column], _Index] | None:
    """The column index of a built model (None: nothing to price)."""
    cols = [c for c in problem.columns if c.key in built.n]
    if not cols:
        return None
    arr = Arrays.of(built.m)
    owner = np.full(len(arr.cost), -1, dtype=np.int64)
    n_of = np.fromiter((built.n[c.key] for c in cols), dtype=np.int64, count=len(cols))
    owner[n_of] = np.arange(len(cols))
    svc_id = {d.service: i for i, d in enumerate(problem.demands)}
    n_buckets = max(len(d.bucket_rates_rps) for d in problem.demands)
    shares = [built.shares[c.key] for c in cols]
    lengths = np.fromiter((len(xs) for _, xs in shares), dtype=np.int64, count=len(cols))
    if not lengths.any():
        return None
    share_var = _ranges(np.fromiter((xs.start for _, xs in shares), dtype=np.int64, count=len(cols)), lengths)
    share_owner = np.repeat(np.arange(len(cols), dtype=np.int64), lengths)
    owner[share_var] = share_owner
    svc_of = np.fromiter((svc_id[c.service] for c in cols), dtype=np.int64, count=len(cols))
    phase_of = np.fromiter((0 if c.role is Role.UNIFIED else (1 if c.role is Role.PREFILL else 2) for c in cols),
                           dtype=np.int64, count=len(cols))
    buckets = np.concatenate([bk for bk, _ in shares]).astype(np.int64)
    share_load = np.concatenate([built.loads[c.key] for c in cols])
    links = [built.link_rows[c.key] for c in cols]
    link_len = np.fromiter((len(r) for r in links), dtype=np.int64, count=len(cols))
    all_links = _ranges(np.fromiter((r.start for r in links), dtype=np.int64, count=len(cols)), link_len)
    row_owner = np.full(len(arr.row_lb), -1, dtype=np.int64)
    row_owner[np.fromiter((built.cap_row[c.key] for c in cols), dtype=np.int64, count=len(cols))] = np.arange(
        len(cols))
    row_owner[all_links] = np.repeat(np.arange(len(cols), dtype=np.int64), link_len)
    soft = np.asarray([i for i, name in enumerate(built.m.row_names) if name.startswith(_SOFT_ROWS)], dtype=np.int64)
    return cols, _Index(
        arr, n_of, row_owner, owner, share_var, share_owner, share_load, svc_of[share_owner] * n_buckets + buckets,
        phase_of[share_owner], all_links, soft, np.where(np.isfinite(arr.row_ub[soft]), -1.0, 1.0), svc_of)


def _top_per_group(order: np.ndarray, groups: np.ndarray, count: int) -> np.ndarray:
    """The first ``count`` entries of each run of equal groups in an ordering."""
    first = np.r_[True, groups[1:] != groups[:-1]]
    starts = np.nonzero(first)[0]
    rank = np.arange(len(groups)) - np.repeat(starts, np.diff(np.r_[starts, len(groups)]))
    return order[rank < count]


def priced_bound(restricted: float, lp_bound: float, left_out_gains: np.ndarray) -> float:
    """A bound for the whole problem: a plan uses only the restricted MILP's columns (cost ≥ its bound) or
    some left-out column c (cost ≥ L + g_c)."""
    floor_others = lp_bound + float(left_out_gains.min()) if len(left_out_gains) else _INF
    return max(lp_bound, min(restricted, floor_others))


def round_up(problem: Problem, built: Built, lp: np.ndarray) -> np.ndarray:
    """A start for the MILP from an LP point: replicas and zone flags rounded up, nodes and churn to match."""
    out = lp.copy()
    integer = np.asarray(built.m.integer, dtype=bool)
    out[integer] = np.ceil(lp[integer] - 1e-6)
    replicas = {k: int(out[i]) for k, i in built.n.items()}
    nodes = nodes_used(problem, pool_usage(problem, replicas))
    for p in problem.pools:
        if p.id in built.nodes:
            out[built.nodes[p.id]] = nodes[p.id]
    for k, dv in built.churn_var.items():
        out[dv] = abs(replicas[k] - problem.current_replicas.get(k, 0))
    return out


class PricingStrategy:
    """Column pricing on a built model: the LP on HiGHS, the restricted MILPs on the backend asked for."""

    def __init__(self, options: SolveOptions, backend: Backend, lagrange: bool = False,
                 lp_backend: Backend | None = None) -> None:
        self.options = options
        self.backend = backend
        self.lagrange = lagrange
        self.lp = lp_backend or HighsBackend()  # duals and the incumbent callback come from HiGHS
        self.stages: dict[str, str] = {}

    def solve(self, problem: Problem, built: Built, deadline: Deadline,
              start: Solution | None = None) -> RawResult | None:
        """A raw result on ``built`` with an honest bound; None: no answer here, solve the full model. A
        ``start`` (a plan of the problem) joins the restricted models and is the plan to beat."""
        found = _index(problem, built)
        if found is None:
            return None
        cols, ix = found
        return _PricingRun(self, problem, built, cols, ix, deadline, start).run()


class _PricingRun:
    """One pricing solve's state: which columns are in, the LP's duals and gains, the incumbent."""

    def __init__(self, strategy: PricingStrategy, problem: Problem, built: Built, cols: list[Column], ix: _Index,
                 deadline: Deadline, start: Solution | None = None) -> None:
        self.s = strategy
        self.opts = strategy.options
        # The restricted models' plans are the fleet's, their bounds are not.
        self.restricted_opts = replace(self.opts, progress=plans_only(self.opts.progress))
        self.problem = problem
        self.built = built
        self.cols = cols
        self.ix = ix
        self.deadline = deadline
        self.start = deadline.now()
        self.total = deadline.end - self.start  # this solve's whole budget (its time shares are of this)
        self.selected = self._starting_columns()
        nvar, nrow = len(ix.arr.cost), len(ix.arr.row_lb)
        self.lp_bound = 0.0
        self.lp_values = np.zeros(nvar)
        self.gain = np.zeros(len(cols))
        self.y = np.zeros(nrow)
        self.converged = False
        self.best: RawResult | None = None
        self.best_keep: np.ndarray | None = None
        self.best_sel = self.selected.copy()
        self.solved = False  # whether a restricted MILP gave a plan (not only the start)
        self.certified = False
        self.start_sel = np.zeros(len(cols), dtype=bool)
        if start is not None and start.objective is not None:
            self.start_sel = np.asarray([start.replicas.get(c.key, 0) > 0 for c in cols], dtype=bool)
            self.selected |= self.start_sel
            keep_col, _ = self._masks(self.start_sel, self.opts.link_rows)
            full = start_vector(problem, built, start)
            self.best = RawResult("feasible", full[keep_col], start.objective, None, "start")
            self.best_keep, self.best_sel = keep_col, self.start_sel.copy()

    def _remaining(self) -> Deadline:
        return self.deadline

    def _keep(self, res: RawResult, keep_col: np.ndarray, selected: np.ndarray) -> bool:
        """Keep a restricted MILP's plan if it beats the best so far (its bound is the caller's to read)."""
        self.solved = True
        if self.best is not None and self.best.objective is not None and res.objective is not None \
                and res.objective >= self.best.objective - 1e-9 * max(1.0, abs(res.objective)):
            self.best = replace(self.best, best_bound=res.best_bound, message=res.message)
            self.best_sel = self.best_sel | selected
            return False
        self.best, self.best_keep, self.best_sel = res, keep_col, selected.copy()
        return True

    def _full_best(self) -> np.ndarray | None:
        """The best plan on the whole model's variables."""
        if self.best is None or self.best.values is None or self.best_keep is None:
            return None
        full = np.zeros(len(self.ix.arr.cost))
        full[self.best_keep] = self.best.values
        return full

    def _starting_columns(self) -> np.ndarray:
        """Per (service, bucket, phase) the few columns that carry it most cheaply, per service and zone the
        cheapest serving column (minimum replicas, spread), and every column of the running plan."""
        ix, h = self.ix, self.problem.headroom
        price = ix.price
        selected = np.zeros(len(self.cols), dtype=bool)
        eff = price[ix.share_owner] * ix.share_load / h
        for phase_set in ((0, 1), (0, 2)):
            mask = np.isin(ix.share_phase, phase_set)
            order = np.lexsort((eff[mask], ix.share_group[mask]))
            selected[_top_per_group(ix.share_owner[mask][order], ix.share_group[mask][order], _START_PER_BUCKET)] = True
        zone = {p.id: p.zone for p in self.problem.pools}
        cheapest: dict[tuple[str, str], int] = {}
        for j, c in enumerate(self.cols):
            if self.problem.current_replicas.get(c.key, 0) > 0:
                selected[j] = True
            if c.role in SERVING_ROLES:
                group = (c.service, zone[c.pool])
                if group not in cheapest or price[j] < price[cheapest[group]]:
                    cheapest[group] = j
        selected[list(cheapest.values())] = True
        return selected

    def _masks(self, selected: np.ndarray, with_links: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Kept variables and rows of the model restricted to the selected columns."""
        ix = self.ix
        keep_col = (ix.owner < 0) | selected[np.maximum(ix.owner, 0)]
        keep_row = np.ones(len(ix.arr.row_lb), dtype=bool)
        if not with_links:
            keep_row[ix.all_links] = False
        owned = ix.row_owner >= 0
        keep_row[owned] &= selected[ix.row_owner[owned]]
        return keep_col, keep_row

    def best_gain(self, r: np.ndarray) -> np.ndarray:
        """g_c = max_{u≥0} r_n − h·u − Σ_b max(0, −r_x[b] − load_b·u): the least a replica of c adds to L."""
        ix, h = self.ix, self.problem.headroom
        a = np.maximum(0.0, -r[ix.share_var])
        bp = a / ix.share_load
        order = np.lexsort((-bp, ix.share_owner))
        own, a_s, l_s, bp_s = ix.share_owner[order], a[order], ix.share_load[order], bp[order]
        first = np.r_[True, own[1:] != own[:-1]]
        start = np.maximum.accumulate(np.where(first, np.arange(len(own)), 0))
        cum_a, cum_l = np.cumsum(a_s), np.cumsum(l_s)
        pre_a = cum_a - (cum_a[start] - a_s[start])
        pre_l = cum_l - (cum_l[start] - l_s[start])
        r_n = r[ix.n_of]
        f_k = r_n[own] - h * bp_s - (pre_a - pre_l * bp_s)
        g: np.ndarray = r_n - np.bincount(ix.share_owner, weights=a, minlength=len(self.cols))
        np.maximum.at(g, own, f_k)
        return g

    def _lp_round(self) -> tuple[RawResult, float] | None:
        """Solve the restricted LP with priced slacks on the shared rows; the result and the slack it used."""
        ix = self.ix
        keep_col, keep_row = self._masks(self.selected)
        sub = submatrix(ix.arr, keep_col, keep_row, relax=True)
        row_at = np.cumsum(keep_row) - 1
        n_real, k = len(sub.cost), len(ix.soft)
        # The first restricted models may lack the columns that fit the pools and power budgets; priced slacks
        # on those rows keep every restricted LP feasible, and their duals then point at the columns that fit.
        big = 1e4 * max(1.0, float(np.max(np.abs(ix.arr.cost))))
        sub = replace(
            sub,
            col_lb=np.r_[sub.col_lb, np.zeros(k)], col_ub=np.r_[sub.col_ub, np.full(k, _INF)],
            cost=np.r_[sub.cost, np.full(k, big)], integer=np.r_[sub.integer, np.zeros(k, dtype=bool)],
            nz_row=np.r_[sub.nz_row, row_at[ix.soft]], nz_col=np.r_[sub.nz_col, n_real + np.arange(k)],
            nz_val=np.r_[sub.nz_val, ix.soft_sign],
        )
        res = self.s.lp.solve(sub, self.opts, self._remaining())
        self.s.stages["pricing-lp"] = self.s.lp.name
        if res.status != "optimal" or res.row_dual is None or res.objective is None or res.values is None:
            return None
        self.lp_values = np.zeros(len(ix.arr.cost))
        self.lp_values[keep_col] = res.values[:n_real]
        self.y = np.zeros(len(ix.arr.row_lb))
        self.y[keep_row] = res.row_dual
        r = ix.arr.cost - np.bincount(ix.arr.nz_col, weights=ix.arr.nz_val * self.y[ix.arr.nz_row],
                                      minlength=len(ix.arr.cost))
        self.gain = self.best_gain(r)
        self.lp_bound = res.objective
        return res, float(np.sum(res.values[n_real:]))

    def _price_lp(self) -> bool:
        """Price columns into the LP until none can lower it (converged) or, with the services priced, until
        it settles or spends its share of the time. False: no answer here (solve the full model)."""
        last_value: float | None = None
        for _ in range(_MAX_ROUNDS):
            round_start = self.deadline.now()
            found = self._lp_round()
            if found is None:
                return False
            res, slack_used = found
            assert res.objective is not None
            tol = 1e-9 * max(1.0, abs(res.objective))
            cand = np.nonzero(~self.selected & (self.gain < -tol))[0]
            if not len(cand):
                if slack_used > _NO_SLACK:
                    return False  # no column can close the shortfall: the full model will say infeasible
                self.converged = True
                return True
            now = self.deadline.now()
            # The first round without slack may still price the pools far off; from the second on, stop once
            # the value settles or another round would overrun the LP's share of the time.
            if self.s.lagrange and slack_used <= _NO_SLACK and last_value is not None and (
                    last_value - res.objective <= _LAGRANGE_LP_SETTLED * abs(res.objective)
                    or now + (now - round_start) - self.start > _LAGRANGE_LP_SHARE * self.total):
                return True
            last_value = res.objective if slack_used <= _NO_SLACK else None
            # The few most improving left-out columns per service join, so each round stays small.
            order = cand[np.lexsort((self.gain[cand], self.ix.svc_of[cand]))]
            self.selected[_top_per_group(order, self.ix.svc_of[order], _ADD_PER_SERVICE)] = True
        return False

    def _services(self) -> tuple[float | None, set[str]]:
        """L(μ) at the LP's pool duals and the columns of the services' plans (see lagrange)."""
        built = self.built
        prices = {p.id: max(0.0, -float(self.y[row])) for p in self.problem.pools if p.max_nodes is not None
                  for row in [built.pool_row.get(p.id)] if row is not None}
        until = Deadline(self.start + self.total * _LAGRANGE_SERVICES_UNTIL, self.deadline.clock)
        late = Deadline(until.end + _LAGRANGE_GRACE * self.total, self.deadline.clock)
        found = LagrangeStrategy(self.opts, self.s.lp).plans(self.problem, prices, until, late)
        self.s.stages.update(nested("lagrange", found.backends))
        return found.bound, found.columns

    def _join_below(self, objective: float, selected: np.ndarray) -> np.ndarray:
        """Left-out columns whose floor L + g_c could beat a plan of this cost by more than the gap."""
        target = objective - self.opts.relative_gap * abs(objective)
        return ~selected & (self.gain < target - self.lp_bound + 1e-9 * max(1.0, abs(objective)))

    def _cap(self, idx: np.ndarray) -> np.ndarray:
        """At most a quarter of the selected columns (at least 50) join at once: the most promising ones."""
        cap = max(50, int(self.selected.sum()) // 4)
        return idx[np.argsort(self.gain[idx], kind="stable")[:cap]] if len(idx) > cap else idx

    def _first_restricted(self, plan_cols: set[str], stop_at: float | None) -> None:
        """A first plan from the columns the LP uses (and the services' plans): small, so found fast, and a
        warm start for the real search. On HiGHS, which stops at ``stop_at``."""
        support = (self.selected & (self.lp_values[self.ix.n_of] > 1e-7)) | self.start_sel
        if plan_cols:
            # The services' own plans at the pool prices: with the LP's support, columns that fit together.
            in_plans = np.asarray([c.key in plan_cols for c in self.cols], dtype=bool)
            support |= in_plans
            self.selected |= in_plans
        keep_col, keep_row = self._masks(support, self.opts.link_rows)
        left = self._remaining()
        if plan_cols:
            # The fleet's plan comes from here: search until a plan is within the gap of L(μ) (stop_at), not
            # of this restricted model's own bound.
            opts = replace(self.restricted_opts, relative_gap=self.opts.relative_gap * 0.1)
            until = left.share(0.9)
        else:
            opts, until = self.restricted_opts, left.share(0.3)
        full = self._full_best()
        res = self.s.lp.solve(submatrix(self.ix.arr, keep_col, keep_row, relax=False), opts, until,
                              None if full is None else full[keep_col], stop_at)
        self.s.stages["support-milp"] = self.s.lp.name
        if res.values is None or res.objective is None:
            return
        self._keep(res, keep_col, support)
        # The columns that could beat this plan by more than the gap join now, so the first restricted MILP
        # is usually the last (solving it once without them, then again with them, costs twice).
        if self.converged and self.best is not None and self.best.objective is not None:
            # (the gains of an unfinished LP rule nothing out)
            join = self._join_below(self.best.objective, self.selected)
            self.selected[self._cap(np.nonzero(join)[0])] = True

    def _restricted_rounds(self, stop_at: float | None) -> RawResult | None:
        """Restricted MILPs on the backend asked for until no left-out column can beat the plan by more than
        the gap. A raw result without a plan when none came out; None when the restricted model is
        infeasible; otherwise None with self.best set."""
        for _ in range(_MAX_ROUNDS):
            best = self.best
            if best is not None and best.objective is not None and stop_at is not None and best.objective <= stop_at:
                break  # within the gap of a bound that holds for the whole fleet
            if self.solved and not self.converged:
                break  # the gains of an unfinished LP cannot say which columns could do better
            if self.deadline.remaining() <= 0:
                break
            keep_col, keep_row = self._masks(self.selected, self.opts.link_rows)
            full = self._full_best()
            if full is None:
                full = round_up(self.problem, self.built, self.lp_values)
            res = self.s.backend.solve(submatrix(self.ix.arr, keep_col, keep_row, relax=False),
                                       self.restricted_opts, self._remaining(), full[keep_col], stop_at)
            self.s.stages["restricted-milp"] = self.s.backend.name
            if res.values is None or res.objective is None:
                if best is None:
                    return None if res.status == "infeasible" else res
                break
            self._keep(res, keep_col, self.selected)
            if not self.converged:
                break  # the gains of an unfinished LP certify nothing: the plan stands against L(μ)
            assert self.best is not None
            if self._certified(self.best.objective, res.best_bound):
                self.certified = True
                break
            if self.deadline.now() - self.start > self.total * 0.9:
                break  # no time left to rule the other columns out: report against the LP bound
            assert self.best.objective is not None
            self.selected[self._cap(np.nonzero(self._join_below(self.best.objective, self.selected))[0])] = True
        return None

    def _certified(self, objective: float | None, restricted_bound: float | None) -> bool:
        """No left-out column can beat the plan by more than the gap (or the restricted bound with the
        left-out columns' floors already proves the gap): the restricted bound holds for the fleet."""
        assert objective is not None
        target = objective - self.opts.relative_gap * abs(objective)
        join = self._join_below(objective, self.selected)
        return not join.any() or (restricted_bound is not None and priced_bound(
            restricted_bound, self.lp_bound, self.gain[~self.selected]) >= target - 1e-9 * max(1.0, abs(objective)))

    def run(self) -> RawResult | None:
        """The pricing solve, start to end."""
        if not self._price_lp():
            return None
        bound_known = self.lp_bound if self.converged else -_INF
        lagrange_bound: float | None = None
        plan_cols: set[str] = set()
        if self.s.lagrange:
            lagrange_bound, plan_cols = self._services()
            if lagrange_bound is not None:
                bound_known = max(bound_known, lagrange_bound)
        if self.opts.progress is not None and math.isfinite(bound_known):
            self.opts.progress.report(bound=bound_known, stage="lagrange" if plan_cols else "pricing-lp")
        # Stop as soon as a plan is within the gap of a bound that holds for the whole fleet (if there is one).
        stop_at = bound_known + self.opts.relative_gap * abs(bound_known) if math.isfinite(bound_known) else None
        self._first_restricted(plan_cols, stop_at)
        failed = self._restricted_rounds(stop_at)
        if self.best is None:
            return failed
        return self._answer(bound_known, lagrange_bound)

    def _answer(self, bound_known: float, lagrange_bound: float | None) -> RawResult:
        """The incumbent on the whole model's variables with the best bound that holds for the whole fleet."""
        best, keep = self.best, self.best_keep
        assert best is not None and best.values is not None and best.objective is not None and keep is not None
        values = np.zeros(len(self.ix.arr.cost))
        values[keep] = best.values
        priced = f"priced {int(self.selected.sum())} of {len(self.cols)} columns"
        bound = bound_known
        if best.best_bound is not None and self.converged:
            bound = max(bound, priced_bound(best.best_bound, self.lp_bound, self.gain[~self.best_sel]))
        if not math.isfinite(bound):
            # An unfinished LP and no bound from the services: a plan without a bound.
            return replace(best, status="feasible", values=values, best_bound=None,
                           message=f"{best.message}; no bound; {priced}")
        bound = min(bound, best.objective)
        gap = (best.objective - bound) / max(abs(best.objective), 1e-9)
        status: Status = "optimal" if gap <= self.opts.relative_gap + 1e-12 else "feasible"
        if self.opts.progress is not None:
            self.opts.progress.report(best.objective, bound, "pricing")
        how = "restricted bound" if self.certified else ("priced bound" if bound > bound_known else (
            "Lagrangian bound" if lagrange_bound is not None and bound_known == lagrange_bound else "LP bound"))
        return replace(best, status=status, values=values, best_bound=bound, message=f"{best.message}; {how}; {priced}")
