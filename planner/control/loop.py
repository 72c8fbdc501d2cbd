"""The control loop's decision, one period at a time: observe → forecast → plan over a horizon → the move.

Every ``period_s`` the loop reads each service's observed rates (a ``TrafficSource``), forecasts the next
``horizon_periods + K`` periods (``planner.forecast``; K = ⌈start-up / period⌉) at the quantile the service
plans for (its SLO percentile unless the loop is told one), gives each period the demand it must carry while
its successors' replicas load (``carried_rates``; none when a replica loads within a period), and solves the
horizon model (``planner.solve.horizon``): plans for every period with the moves between them priced. It
applies period 0 and solves again next period.

Start-up is hidden by starting ahead, not by holding the next period's plan all through this one: the
replicas that period 1's plan adds over period 0's start ``Transition.prestart_s`` into the period (KΔ − L),
so they are Ready when period 1 begins and paid only from L before (``Decision.ahead``). That start is
period 1's move: the service counts as moved at the next step (age 0 to its horizon model, whose period 0
then completes the move), so the dwell rule still allows one move per window.

The horizon model works on a *menu* of columns: the union of the single-period optima at a ladder of rate
scales of the fleet's stated (peak) rates, plus whatever runs. The cheapest configuration for each load level
is on that menu, and the horizon model stays small enough to solve in a second or two each period. When the
horizon model finds no plan (a forecast beyond every menu column's reach), the loop solves one period on
every column at period 0's demand instead, and says so in the decision.

Before forecasting, the loop corrects the capacity of every configuration of each (service, role) that runs
by the attainment the service was observed to give over the last period (``planner.control.feedback``): the
correction belongs to the service's traffic, so a configuration the loop has not run yet starts from it too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from planner.catalog import fleet_catalog
from planner.clock import SYSTEM_CLOCK, Clock, Deadline
from planner.control.feedback import Feedback, update_factor
from planner.control.moves import fit_starts, plus, routed
from planner.forecast import Forecast, SeasonalForecaster
from planner.observe.source import TrafficSource
from planner.pipeline import PlanInputs, assemble_plan
from planner.schema import FleetSpec, Plan, Service
from planner.solve import Problem, Solution, SolveOptions, solve
from planner.solve.formulation.transition import Transition
from planner.solve.horizon import HorizonProblem, HorizonSolution, carried_rates, moved_services, solve_horizon

SPREAD_MAX = 2.0  # the highest scale of the planned rates at which a plan's load split is sought
MENU_SCALES = (0.12, 0.2, 0.3, 0.45, 0.6, 0.8, 1.0, 1.25)


@dataclass(frozen=True)
class LoopSettings:
    """How the loop plans: the transition prices, the horizon, the forecast quantile and the solver's limits."""

    transition: Transition = field(default_factory=Transition)
    horizon_periods: int = 4
    quantile: float | None = None  # None: each service's slo.percentile / 100
    solve: SolveOptions = field(default_factory=lambda: SolveOptions(time_limit_s=5.0, relative_gap=0.01))
    history_days: int = 4
    menu_scales: tuple[float, ...] = MENU_SCALES
    feedback: Feedback | None = field(default_factory=Feedback)  # None: trust the capacity model as it is

    @property
    def season_steps(self) -> int:
        """Periods per day."""
        return max(2, int(round(86400.0 / self.transition.period_s)))


@dataclass(frozen=True)
class Decision:
    """What one period's decision saw and chose."""

    step: int
    at_s: float
    before: dict[str, int]
    after: dict[str, int]
    solution: Solution
    horizon: HorizonSolution | None
    forecasts: dict[str, Forecast]
    planned_rps: dict[str, float]  # the rate period 0 is sized for (carried upper quantile)
    moved: frozenset[str]
    fallback: str = ""
    factors: dict[str, float] = field(default_factory=dict)  # capacity factors below 1 (SLO feedback)
    ahead: dict[str, int] = field(default_factory=dict)  # replicas started ``ahead_s`` into the period for period 1
    ahead_s: float = 0.0


def factor_key(service: str, role: str) -> str:
    """The key of a capacity factor: the service's traffic (its bursts) is what the model misses, so every
    configuration of one role of the service shares the correction."""
    return f"{service}/{role}"


def quantile_of(service: Service, settings: LoopSettings) -> float:
    """The forecast quantile a service is planned for."""
    q = settings.quantile if settings.quantile is not None else service.slo.percentile / 100.0
    return min(max(q, 0.5), 0.995)


def scaled_problem(base: Problem, fleet: FleetSpec, rates: Mapping[str, float]) -> Problem:
    """``base`` (demands at the fleet's stated rates) with each service's buckets at ``rates[service]``."""
    stated = {s.id: s.traffic.rate_rps for s in fleet.services}
    demands = []
    for d in base.demands:
        total = stated.get(d.service, 0.0)
        factor = rates.get(d.service, total) / total if total > 0 else 0.0
        demands.append(replace(d, bucket_rates_rps=tuple(r * factor for r in d.bucket_rates_rps),
                               tokens_per_s=d.tokens_per_s * factor))
    return replace(base, demands=tuple(demands))


def menu_columns(base: Problem, fleet: FleetSpec, scales: Sequence[float], options: SolveOptions,
                 clock: Clock = SYSTEM_CLOCK) -> frozenset[str]:
    """Column keys of the single-period optima at each scale of the stated rates."""
    keys: set[str] = set()
    for scale in scales:
        rates = {s.id: s.traffic.rate_rps * scale for s in fleet.services}
        deadline = Deadline.after(options.time_limit_s, clock)
        sol = solve(scaled_problem(base, fleet, rates), options, deadline=deadline)
        keys |= {k for k, n in sol.replicas.items() if n > 0}
    return frozenset(keys)


@dataclass
class ControlLoop:
    """The loop's state between periods: what runs, when each service last moved, the forecasters."""

    fleet: FleetSpec  # the planning fleet: observed length mix, stated (peak) rates as priors
    inputs: PlanInputs  # candidates and the MILP at the stated rates, built once
    settings: LoopSettings = field(default_factory=LoopSettings)
    current: dict[str, int] = field(default_factory=dict)
    last_move: dict[str, int] = field(default_factory=dict)  # service → step of its last move
    menu: frozenset[str] = frozenset()
    clock: Clock = SYSTEM_CLOCK
    step: int = 0
    forecasters: dict[str, SeasonalForecaster] = field(default_factory=dict)
    factors: dict[str, float] = field(default_factory=dict)  # service/role → capacity factor (SLO feedback)
    last: Solution | None = None  # the plan in force (its replicas are ``current``)

    def __post_init__(self) -> None:
        if not self.menu:
            self.menu = menu_columns(self.inputs.problem, self.fleet, self.settings.menu_scales,
                                     self.settings.solve, self.clock)
        for s in self.fleet.services:
            self.forecasters.setdefault(s.id, SeasonalForecaster(self.settings.season_steps,
                                                                 step_s=self.settings.transition.period_s))

    def observe(self, source: TrafficSource, now_s: float) -> dict[str, float]:
        """Correct the capacity of each (service, role) that runs by the attainment the service showed over the
        last period; the factors below 1, keyed ``service/role``."""
        rule = self.settings.feedback
        if rule is not None:
            since = now_s - self.settings.transition.period_s
            columns = {c.key: c for c in self.inputs.problem.columns}
            slos = {s.id: s.slo for s in self.fleet.services}
            running = {(columns[k].service, columns[k].role) for k, n in self.current.items()
                       if n > 0 and k in columns}
            seen = {svc: source.attainment(svc, since, now_s, slos[svc]) for svc in {svc for svc, _ in running}}
            for svc, role in sorted(running):
                key = factor_key(svc, role)
                old = self.factors.get(key, 1.0)
                self.factors[key] = update_factor(old, role, seen[svc], slos[svc].percentile, rule)
        return {k: f for k, f in self.factors.items() if f < 1.0}

    def problem_at(self, rates: Mapping[str, float], restrict: bool = True) -> Problem:
        """The single-period MILP at ``rates`` (on the menu plus what runs, when ``restrict``)."""
        problem = scaled_problem(self.inputs.problem, self.fleet, rates)
        if any(f < 1.0 for f in self.factors.values()):
            problem = replace(problem, columns=tuple(
                replace(c, capacity_rps=tuple(x * self.factors.get(factor_key(c.service, c.role), 1.0)
                                              for x in c.capacity_rps))
                for c in problem.columns))
        if not restrict:
            return problem
        keep = self.menu | {k for k, n in self.current.items() if n > 0}
        return replace(problem, columns=tuple(c for c in problem.columns if c.key in keep))

    def forecast(self, source: TrafficSource, now_s: float) -> dict[str, Forecast]:
        """Each service's forecast for the horizon and its look-ahead, from the observed history."""
        tr = self.settings.transition
        span = self.settings.history_days * self.settings.season_steps * tr.period_s
        steps = self.settings.horizon_periods + tr.lookahead()
        out = {}
        for s in self.fleet.services:
            history = source.rates(s.id, now_s - span, now_s, tr.period_s).rates_rps
            out[s.id] = self.forecasters[s.id].forecast(history, steps, quantile_of(s, self.settings),
                                                        prior_rps=s.traffic.rate_rps)
        return out

    def decide(self, source: TrafficSource, now_s: float) -> Decision:
        """Plan the next periods from what ``source`` observed up to ``now_s``; apply period 0."""
        tr = self.settings.transition
        factors = self.observe(source, now_s)
        forecasts = self.forecast(source, now_s)
        carried = {svc: carried_rates(f.upper_rps.tolist(), tr.carried())[: self.settings.horizon_periods]
                   for svc, f in forecasts.items()}
        periods = tuple(self.problem_at({svc: rates[t] for svc, rates in carried.items()})
                        for t in range(self.settings.horizon_periods))
        ages = {svc: self.step - at for svc, at in self.last_move.items()}
        hp = HorizonProblem(periods, tr, dict(self.current), ages)
        horizon = solve_horizon(hp, self.settings.solve, Deadline.after(self.settings.solve.time_limit_s, self.clock))
        fallback = ""
        planned = {svc: rates[0] for svc, rates in carried.items()}
        if horizon.status in ("optimal", "feasible") and horizon.plans:
            solution = horizon.first
        else:
            fallback = f"horizon model: {horizon.status}; planned one period on every column"
            solution = solve(self.problem_at(planned, restrict=False), self.settings.solve,
                             deadline=Deadline.after(self.settings.solve.time_limit_s, self.clock))
            if solution.status not in ("optimal", "feasible"):
                fallback = f"no plan for the forecast ({solution.status}); kept what runs"
                solution = self.kept(planned)
        before = dict(self.current)
        after = {k: n for k, n in solution.replicas.items() if n > 0}
        moved = frozenset(moved_services(periods[0], before, after))
        for svc in moved:
            self.last_move[svc] = self.step
        ahead = self.ahead_of(horizon, after) if not fallback else {}
        running = plus(after, ahead)
        for svc in moved_services(periods[0], after, running):
            self.last_move[svc] = self.step + 1  # the start of period 1's move
        decision = Decision(self.step, now_s, before, after, solution, horizon, forecasts, planned, moved, fallback,
                            factors, ahead, tr.prestart_s())
        self.current = running
        self.last = solution
        self.step += 1
        return decision

    def ahead_of(self, horizon: HorizonSolution, after: Mapping[str, int]) -> dict[str, int]:
        """Replicas period 1's plan adds over ``after``, those that fit next to it (pools, power): started ahead
        so they are Ready when period 1 begins. None when a replica loads in no time or the horizon is one period."""
        tr = self.settings.transition
        if tr.startup_s <= 0 or len(horizon.plans) < 2:
            return {}
        wanted = {k: n - after.get(k, 0) for k, n in horizon.plans[1].replicas.items() if n > after.get(k, 0)}
        return fit_starts(self.inputs.problem, after, wanted) if wanted else {}

    def kept(self, rates: Mapping[str, float]) -> Solution:
        """What runs, with the load split that carries the most of ``rates`` it can (a plan's routing is part
        of the plan: replicas kept without one would send requests where the failed solve left them)."""
        scaled = dict(rates)
        for _ in range(12):
            sol = routed(self.problem_at(scaled, restrict=False), self.current)
            if sol is not None:
                return sol
            scaled = {svc: 0.8 * r for svc, r in scaled.items()}
        if self.last is not None:
            return self.last
        raise RuntimeError("no routing for the replicas that run")

    def boot(self, source: TrafficSource, now_s: float) -> Decision:
        """Start from what a loop running until ``now_s`` would run: decide once, then forget it as a move."""
        decision = self.decide(source, now_s)
        self.last_move.clear()
        self.step = 0
        return decision

    def spread(self, solution: Solution, rates: Mapping[str, float]) -> Solution:
        """The solution's replicas with the load split they carry at the highest common scale of ``rates`` (up to
        ``SPREAD_MAX``): a split found at the planned rate fills the cheapest groups to their capacity and leaves
        the rest idle, so a burst above the plan overflows them while spare replicas wait; the split at the
        replicas' own limit gives every group its share of the spare."""
        replicas = {k: n for k, n in solution.replicas.items() if n > 0}
        best, lo, hi = solution, 1.0, SPREAD_MAX
        for _ in range(6):
            mid = 0.5 * (lo + hi)
            sol = routed(self.problem_at({svc: r * mid for svc, r in rates.items()}, restrict=False), replicas)
            if sol is None:
                hi = mid
            else:
                lo, best = mid, sol
        return best

    def plan_of(self, solution: Solution, rates: Mapping[str, float], restrict: bool = False) -> Plan:
        """A ``Plan`` of a solution sized for ``rates``, its load split spread over the replicas' spare (the
        replay and the provisioner read plans)."""
        solution = self.spread(solution, rates)
        problem = self.problem_at(rates, restrict=restrict)
        fleet = self.fleet.model_copy(update={"services": [
            s.model_copy(update={"traffic": s.traffic.model_copy(update={"rate_rps": float(rates.get(s.id, 0.0))})})
            for s in self.fleet.services]})
        inputs = PlanInputs(problem, self.inputs.candidates, self.inputs.buckets, self.inputs.stats,
                            self.inputs.pruned)
        return assemble_plan(fleet, inputs, solution, self.settings.solve, fleet_catalog(fleet), [], [], None, "")
