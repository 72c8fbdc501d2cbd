"""POLCA-style power-capping policy: pure functions from (state, reading, time) to (state, actions).

A power domain's GPUs are capped along a *ladder* of stages. Each stage lowers the clock of one group of
GPUs (a priority class, optionally its decode GPUs before the rest) to a level:

* band T1 (power above ``t1_share`` of the budget): every class but the highest is locked to the T1 clock,
  lowest class first (POLCA: 1275 of 1410 MHz on A100);
* band T2 (above ``t2_share``): those classes go to the T2 clock, their floor (1110 of 1410 MHz), lowest
  first; only then the highest class is locked to its own clock (1305 of 1410 MHz); if the reading still
  stays above T2, deep stages (half clock, power limit at ``deep_power_limit_share`` of the maximum) follow,
  lowest class first: the brake is the only other way down when most of the row's draw is idle and
  overhead (a budget cut), or when backlog after a brake keeps every GPU busy;
* brake (above ``brake_share``): every GPU at its minimum clock and minimum power limit until the reading is
  back below T2.

One stage is added per ``escalation_wait_s`` while the reading stays above a band's threshold (crossing T2
jumps straight to the first T2 stage; at or above ``urgent_share`` a stage is added every period, since a
brake costs far more than one early cap). A band's stages are released only after the reading has been below
``threshold - hysteresis_share`` for ``dwell_s``; the GPUs of released stages go back at random times
spread over ``release_stagger_s`` (so the row does not step up all at once), highest priority class first,
and the release
is cancelled if the reading climbs back over the threshold meanwhile.

Missing data (the loop decides what is missing, ``power.telemetry.judge``) never releases a cap:

* ``hold``: keep every cap, cancel releases in progress and restart the release timers (so trusted data
  must dwell again before anything is released), add none; brake at once if the last trusted reading was
  at or above ``brake_share`` (over budget);
* ``safe`` (missing longer than the loop's safe window): the *safe caps*, the full ladder with each GPU's
  power limit lowered to ``α`` of its maximum, ``α`` the largest share at which the members' nameplate,
  ``Σ clamp(α·P_max, P_min, P_max) + Σ overhead``, stays at or under the T2 line (``t2_share × budget``);
  whatever the load, the domain then stays under budget. When even every GPU at its minimum limit cannot,
  the safe caps are the brake targets.

Caps that are tighter than the ladder position (safe caps, or live caps adopted by a restarted loop with
``adopt``) are *held* on top of the ladder until a release is due; they are released with it.

Targets are absolute MHz and watts, derived per device type from the catalog's ``sm_clock_mhz_*`` and
``power_cap_watts_*`` ranges, so mixed generations share one ladder. The module does no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import IntEnum
from typing import Protocol

from planner.roles import PowerPhase
from planner.schema import DeviceType, PowerThresholds

GpuRole = PowerPhase  # a GPU draws as the role it serves (planner.roles: decode+offload draws as decode)

# Clock levels as shares of the device's maximum SM clock, from POLCA's A100 settings (REFERENCE §4):
# 1275, 1110 and 1305 MHz of 1410 MHz.
T1_CLOCK_SHARE = 1275 / 1410
T2_CLOCK_SHARE = 1110 / 1410
HIGH_PRIORITY_CLOCK_SHARE = 1305 / 1410


class Band(IntEnum):
    NONE = 0
    T1 = 1
    T2 = 2
    BRAKE = 3


class Rng(Protocol):
    """The randomness the policy needs (``random.Random`` fits)."""

    def random(self) -> float: ...


@dataclass(frozen=True)
class Gpu:
    """One GPU of a power domain as the policy sees it."""

    gpu_id: str
    node: str
    device: DeviceType
    priority: int = 1
    role: GpuRole = "unified"


@dataclass(frozen=True)
class CapTarget:
    """What a GPU should run at: an SM clock ceiling and a power limit; ``None`` means uncapped."""

    clock_mhz: float | None = None
    power_limit_watts: float | None = None

    @property
    def capped(self) -> bool:
        return self.clock_mhz is not None or self.power_limit_watts is not None


UNCAPPED = CapTarget()


def _min_or_none(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else min(a, b)


def tighter(a: CapTarget, b: CapTarget) -> CapTarget:
    """The stricter of two targets, setting by setting (the lower clock, the lower power limit)."""
    return CapTarget(_min_or_none(a.clock_mhz, b.clock_mhz), _min_or_none(a.power_limit_watts, b.power_limit_watts))


def at_least_as_tight(a: CapTarget, b: CapTarget) -> bool:
    """True when ``a`` caps at least as hard as ``b`` on both settings."""
    return tighter(a, b) == a


@dataclass(frozen=True)
class CapAction:
    """Set one GPU to ``target``; ``brake`` marks actions the fast power-brake path must carry (the brake,
    and safe caps: while the meter is blind they are as urgent as a brake)."""

    gpu_id: str
    node: str
    target: CapTarget
    reason: str
    brake: bool = False


@dataclass(frozen=True)
class PolicyConfig:
    """Tunable parts of the policy; defaults follow POLCA."""

    thresholds: PowerThresholds = field(default_factory=PowerThresholds)
    dwell_s: float = 15.0
    escalation_wait_s: float = 5.0  # one meter window plus NVML actuation, with margin: see a stage work
    release_stagger_s: float = 10.0
    brake_release_dwell_s: float = 3.0
    t1_clock_share: float = T1_CLOCK_SHARE
    t2_clock_share: float = T2_CLOCK_SHARE
    high_priority_clock_share: float = HIGH_PRIORITY_CLOCK_SHARE
    t2_power_limit_share: float | None = None
    deep_power_limit_share: float | None = 0.6
    deep_clock_share: float = 0.5
    decode_first: bool = False
    urgent_share: float | None = 0.95  # near the brake a stage per period: a brake costs more than a cap

    def __post_init__(self) -> None:
        for name in ("dwell_s", "escalation_wait_s", "release_stagger_s", "brake_release_dwell_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must not be negative")
        if self.urgent_share is not None and self.urgent_share <= 0:
            raise ValueError("urgent_share: must be positive")
        if self.deep_power_limit_share is not None and not 0 < self.deep_power_limit_share <= 1:
            raise ValueError("deep_power_limit_share: must be in (0, 1]")
        for name in ("t1_clock_share", "t2_clock_share", "high_priority_clock_share"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name}: must be in (0, 1]")
        if self.t2_clock_share > self.t1_clock_share:
            raise ValueError("t2_clock_share: must not exceed t1_clock_share")


@dataclass(frozen=True)
class Stage:
    """One rung of the ladder: these GPUs get these targets when the stage is applied."""

    band: Band
    label: str
    targets: Mapping[str, CapTarget]


def clock_target_mhz(device: DeviceType, share: float) -> float:
    """``share`` of the device's maximum SM clock, kept inside its supported range."""
    return max(device.sm_clock_mhz_min, min(device.sm_clock_mhz_max, round(share * device.sm_clock_mhz_max)))


def power_limit_target_watts(device: DeviceType, share: float) -> float:
    """``share`` of the device's maximum power limit, kept inside its supported range."""
    return max(device.power_cap_watts_min, min(device.power_cap_watts_max, share * device.power_cap_watts_max))


def brake_target(device: DeviceType) -> CapTarget:
    """Nearly halted: minimum clock and minimum power limit."""
    return CapTarget(clock_mhz=device.sm_clock_mhz_min, power_limit_watts=device.power_cap_watts_min)


def build_ladder(gpus: Sequence[Gpu], config: PolicyConfig) -> tuple[Stage, ...]:
    """The ladder for a domain's GPUs: T1 stages, then T2 stages, lowest priority class first."""
    classes = sorted({g.priority for g in gpus})
    if not classes:
        return ()
    top = classes[-1]
    lower = classes[:-1]

    def groups(priority: int) -> list[tuple[str, list[Gpu]]]:
        members = [g for g in gpus if g.priority == priority]
        if not config.decode_first:
            return [(f"priority {priority}", members)]
        decode = [g for g in members if g.role == "decode"]
        rest = [g for g in members if g.role != "decode"]
        return [(f"priority {priority} {name}", m) for name, m in (("decode", decode), ("other", rest)) if m]

    def level(members: list[Gpu], clock_share: float, limit_share: float | None) -> dict[str, CapTarget]:
        return {
            g.gpu_id: CapTarget(
                clock_mhz=clock_target_mhz(g.device, clock_share),
                power_limit_watts=None if limit_share is None else power_limit_target_watts(g.device, limit_share),
            )
            for g in members
        }

    stages: list[Stage] = []
    for p in lower:
        for name, members in groups(p):
            stages.append(Stage(Band.T1, f"T1 {name}", level(members, config.t1_clock_share, None)))
    for p in lower:
        for name, members in groups(p):
            stages.append(
                Stage(Band.T2, f"T2 {name}", level(members, config.t2_clock_share, config.t2_power_limit_share))
            )
    for name, members in groups(top):
        stages.append(Stage(Band.T2, f"T2 {name}", level(members, config.high_priority_clock_share, None)))
    if config.deep_power_limit_share is not None:
        for p in classes:
            clock = min(config.deep_clock_share, config.t2_clock_share)
            for name, members in groups(p):
                stages.append(Stage(Band.T2, f"T2 deep {name}",
                                    level(members, clock, config.deep_power_limit_share)))
    return tuple(stages)


@dataclass(frozen=True)
class PolicyState:
    """Where the domain stands on its ladder, and the clocks of its release timers."""

    applied: int = 0
    braked: bool = False
    last_escalation_s: float = float("-inf")
    below_t1_since_s: float | None = None
    below_t2_since_s: float | None = None
    below_brake_release_since_s: float | None = None
    release_to: int | None = None
    release_at_s: Mapping[str, float] = field(default_factory=dict)
    targets: Mapping[str, CapTarget] = field(default_factory=dict)
    held: Mapping[str, CapTarget] = field(default_factory=dict)  # caps tighter than the ladder, until released


@dataclass(frozen=True)
class Decision:
    """The policy's answer for one control period."""

    state: PolicyState
    actions: tuple[CapAction, ...]
    band: Band
    events: tuple[str, ...] = ()


class Policy:
    """A domain's ladder and config; ``decide`` is a pure function of its arguments."""

    def __init__(self, gpus: Sequence[Gpu], config: PolicyConfig | None = None,
                 overhead_watts: Mapping[str, float] | None = None) -> None:
        self.gpus = tuple(gpus)
        self.config = config or PolicyConfig()
        # Server power outside the GPUs, per node: part of the nameplate the safe caps must fit.
        self.overhead_watts = {g.node: (overhead_watts or {}).get(g.node, 0.0) for g in self.gpus}
        self.ladder = build_ladder(self.gpus, self.config)
        self._nodes = {g.gpu_id: g.node for g in self.gpus}
        self._priority = {g.gpu_id: g.priority for g in self.gpus}
        self._brake_targets = {g.gpu_id: brake_target(g.device) for g in self.gpus}
        self._t1_stages = sum(1 for s in self.ladder if s.band is Band.T1)
        self._layer_cache: dict[int, Mapping[str, CapTarget]] = {}
        self._safe_cache: dict[float, Mapping[str, CapTarget]] = {}

    def node_of(self, gpu_id: str) -> str:
        """The node a GPU sits in."""
        return self._nodes[gpu_id]

    def initial_state(self) -> PolicyState:
        """No caps, no timers."""
        return PolicyState(targets={g.gpu_id: UNCAPPED for g in self.gpus})

    def band_of(self, state: PolicyState) -> Band:
        """The deepest band the state applies."""
        if state.braked:
            return Band.BRAKE
        if state.applied == 0:
            return Band.NONE
        return self.ladder[state.applied - 1].band

    def targets_for(self, applied: int, braked: bool, release_to: int | None = None,
                    released: frozenset[str] = frozenset(),
                    held: Mapping[str, CapTarget] | None = None) -> dict[str, CapTarget]:
        """Per-GPU targets with ``applied`` stages on (later stages win) and ``held`` caps on top;
        ``released`` GPUs keep only the first ``release_to`` stages."""
        if braked:
            return dict(self._brake_targets)
        out = dict(self._layered(applied))
        for gid, t in (held or {}).items():
            out[gid] = tighter(out[gid], t)
        if release_to is not None and released:
            kept = self._layered(release_to)
            for gid in released:
                out[gid] = kept[gid]
        return out

    def _layered(self, applied: int) -> Mapping[str, CapTarget]:
        cached = self._layer_cache.get(applied)
        if cached is None:
            out = {g.gpu_id: UNCAPPED for g in self.gpus}
            for stage in self.ladder[:applied]:
                out.update(stage.targets)
            self._layer_cache[applied] = cached = out
        return cached

    def decide(self, state: PolicyState, power_watts: float, budget_watts: float, now_s: float,
               rng: Rng, may_release: bool = True) -> Decision:
        """One control period with a trusted domain reading; with ``may_release`` false (trust not yet
        settled after missing data) the reading can add caps but starts no release timer."""
        th = self.config.thresholds
        share = power_watts / budget_watts
        cfg = self.config
        events: list[str] = []
        s = state

        # Release timers: how long the reading has stayed under each band's release line.
        s = replace(
            s,
            below_t1_since_s=_since(s.below_t1_since_s,
                                    may_release and share < th.t1_share - th.hysteresis_share, now_s),
            below_t2_since_s=_since(s.below_t2_since_s,
                                    may_release and share < th.t2_share - th.hysteresis_share, now_s),
            below_brake_release_since_s=_since(s.below_brake_release_since_s, may_release and share < th.t2_share,
                                               now_s),
        )

        if share >= th.brake_share:
            if not s.braked:
                events.append(f"brake: domain at {share:.1%} of budget")
            s = replace(s, braked=True, applied=len(self.ladder), release_to=None, release_at_s={},
                        last_escalation_s=now_s)
        elif s.braked:
            since = s.below_brake_release_since_s
            if since is not None and now_s - since >= cfg.brake_release_dwell_s:
                events.append(f"brake released to full caps at {share:.1%}")
                s = replace(s, braked=False, last_escalation_s=now_s)
        else:
            s = self._escalate_or_release(s, share, now_s, rng, events)

        released = frozenset(gid for gid, at in s.release_at_s.items() if at <= now_s)
        targets = self.targets_for(s.applied, s.braked, s.release_to, released, s.held)
        if s.release_to is not None and len(released) == len(s.release_at_s):
            events.append(f"released to stage {s.release_to}")
            s = replace(s, applied=s.release_to, release_to=None, release_at_s={}, held={})
        return self._finish(state, s, targets, events)

    def hold(self, state: PolicyState, now_s: float, last_share: float | None = None) -> Decision:
        """Telemetry is missing: keep every cap, cancel pending releases, add none; brake at once if the
        last trusted reading (``last_share`` of the budget) was over budget."""
        s, events = self._missing(state, now_s, last_share)
        targets = self.targets_for(s.applied, s.braked, held=s.held)
        return self._finish(state, s, targets, events)

    def safe(self, state: PolicyState, now_s: float, budget_watts: float,
             last_share: float | None = None) -> Decision:
        """Telemetry missing past the safe window: the safe caps (:meth:`safe_targets`), kept until trusted
        data release them; brake as :meth:`hold` does."""
        s, events = self._missing(state, now_s, last_share)
        held = dict(s.held)
        for gid, t in self.safe_targets(budget_watts).items():
            held[gid] = tighter(held.get(gid, UNCAPPED), t)
        s = replace(s, applied=len(self.ladder), held=held)
        targets = self.targets_for(s.applied, s.braked, held=s.held)
        if targets != self.targets_for(state.applied, state.braked, held=state.held) and not s.braked:
            events.append("safe caps: telemetry missing")
        return self._finish(state, s, targets, events, urgent=True)

    def safe_targets(self, budget_watts: float) -> Mapping[str, CapTarget]:
        """The full ladder with power limits at the share ``α`` of each GPU's maximum that keeps the members'
        nameplate under the T2 line; the brake targets when even the minimum limits cannot."""
        cached = self._safe_cache.get(budget_watts)
        if cached is not None:
            return cached
        full = self._layered(len(self.ladder))
        line = self.config.thresholds.t2_share * budget_watts - sum(self.overhead_watts.values())

        def nameplate(alpha: float) -> float:
            return sum(self._limit_at(g.device, alpha) for g in self.gpus)

        out: Mapping[str, CapTarget]
        if nameplate(1.0) <= line:
            out = dict(full)
        elif nameplate(0.0) > line:
            out = dict(self._brake_targets)
        else:
            lo, hi = 0.0, 1.0
            for _ in range(50):
                mid = (lo + hi) / 2
                lo, hi = (mid, hi) if nameplate(mid) <= line else (lo, mid)
            out = {g.gpu_id: tighter(full[g.gpu_id], CapTarget(None, self._limit_at(g.device, lo)))
                   for g in self.gpus}
        self._safe_cache[budget_watts] = out
        return out

    def adopt(self, live: Mapping[str, CapTarget], now_s: float) -> PolicyState:
        """A (re)started loop's state from the caps already live: the deepest ladder stage that every live
        cap covers, and the live caps tighter than that stage held on top; no cap is loosened."""
        live = {gid: t for gid, t in live.items() if gid in self._nodes and t.capped}
        if not live:
            return self.initial_state()
        applied = max(n for n in range(len(self.ladder) + 1)
                      if all(at_least_as_tight(live.get(gid, UNCAPPED), t) for gid, t in self._layered(n).items()))
        layer = self._layered(applied)
        held = {gid: t for gid, t in live.items() if not at_least_as_tight(layer[gid], t)}
        targets = self.targets_for(applied, False, held=held)
        return PolicyState(applied=applied, last_escalation_s=now_s, targets=targets, held=held)

    # ------------------------------------------------------------------------------------------ internals

    @staticmethod
    def _limit_at(device: DeviceType, alpha: float) -> float:
        return max(device.power_cap_watts_min, min(device.power_cap_watts_max, alpha * device.power_cap_watts_max))

    def _missing(self, state: PolicyState, now_s: float, last_share: float | None) -> tuple[PolicyState, list[str]]:
        events: list[str] = []
        s = replace(state, release_to=None, release_at_s={}, below_t1_since_s=None, below_t2_since_s=None,
                    below_brake_release_since_s=None)
        if last_share is not None and last_share >= self.config.thresholds.brake_share and not s.braked:
            events.append(f"brake: telemetry missing, last trusted reading at {last_share:.1%} of budget")
            s = replace(s, braked=True, applied=len(self.ladder), last_escalation_s=now_s)
        return s, events

    def _escalate_or_release(self, s: PolicyState, share: float, now_s: float, rng: Rng,
                             events: list[str]) -> PolicyState:
        th, cfg = self.config.thresholds, self.config
        n_t1 = self._t1_stages
        if share >= th.t1_share:
            want = s.applied
            if share >= th.t2_share and want < n_t1 + 1:
                want = min(len(self.ladder), n_t1 + 1)
            elif now_s - s.last_escalation_s >= cfg.escalation_wait_s or (
                    cfg.urgent_share is not None and share >= cfg.urgent_share):
                band_limit = len(self.ladder) if share >= th.t2_share else n_t1
                want = min(band_limit, s.applied + 1) if s.applied < band_limit else s.applied
            if s.release_to is not None:
                # Climbing back over a threshold cancels a release in progress.
                events.append("release cancelled")
                s = replace(s, release_to=None, release_at_s={})
            if want > s.applied:
                events.append(f"cap: {self.ladder[want - 1].label} at {share:.1%}")
                s = replace(s, applied=want, last_escalation_s=now_s)
            return s
        if s.release_to is not None or (s.applied == 0 and not s.held):
            return s
        to = s.applied
        if s.below_t2_since_s is not None and now_s - s.below_t2_since_s >= cfg.dwell_s:
            to = min(to, n_t1)
        if s.below_t1_since_s is not None and now_s - s.below_t1_since_s >= cfg.dwell_s:
            to = 0
        if to < s.applied or (to == 0 and s.held):
            # Held caps (safe caps, adopted live caps) go with the first release that is due.
            ids = sorted({gid for st in self.ladder[to:s.applied] for gid in st.targets} | set(s.held))
            # Highest priority first, each class at random times inside its own slot: the reverse of the
            # capping order, so a high-priority GPU is never capped while a lower one is already released.
            classes = sorted({self._priority[gid] for gid in ids}, reverse=True)
            slot = cfg.release_stagger_s / len(classes)
            rank = {p: i for i, p in enumerate(classes)}
            at = {gid: now_s + slot * (rank[self._priority[gid]] + rng.random()) for gid in ids}
            events.append(f"release: from stage {s.applied} to {to} over {cfg.release_stagger_s:g} s")
            s = replace(s, release_to=to, release_at_s=at)
        return s

    def _finish(self, old: PolicyState, new: PolicyState, targets: dict[str, CapTarget],
                events: list[str], urgent: bool = False) -> Decision:
        braking = new.braked or urgent
        actions = tuple(
            CapAction(gid, self._nodes[gid], t, reason="safe" if urgent and not new.braked else
                      _reason(self.band_of(new)), brake=braking)
            for gid, t in targets.items()
            if old.targets.get(gid, UNCAPPED) != t
        )
        new = replace(new, targets=targets)
        return Decision(new, actions, self.band_of(new), tuple(events))


def _since(since: float | None, condition: bool, now_s: float) -> float | None:
    if not condition:
        return None
    return now_s if since is None else since


def _reason(band: Band) -> str:
    return {Band.NONE: "release", Band.T1: "T1", Band.T2: "T2", Band.BRAKE: "brake"}[band]
