"""The fleet a request plans: stored documents scoped to the caller's team, checked, bad services kept to their
own team, and the files a fleet names read only from the configured input directories.

Scoping: a planner plans its own team's services (naming another team's is 403); an admin plans the whole
fleet or the services named. Checking runs the same layer as ``medley validate`` (``planner.io.fleetfile
.check_fleet``, ``planner.io.semantics``): a problem in a service the caller owns — their team's, or one they
named — is a 422 naming it; a problem in anyone else's service leaves that service out, and the plan says so
in a note, so one team's bad service never fails another team's plan. A trace or engine profile path must
lie in ``MEDLEY_INPUT_DIRS`` (none by default) and every refusal reads the same, so no answer tells whether
a path exists; relative names are read from the first input directory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from api.auth import ApiRole, Principal
from api.problems import ApiError, FieldError, field_error, from_validation_error
from api.settings import Settings
from planner.io.files import FileAccess
from planner.io.fleetfile import check_fleet
from planner.io.semantics import trace_problems
from planner.io.traces import bucket_trace
from planner.schema import Finding, FleetSpec, PlannerOptions, Pool, PowerDomain, Service, Traffic

NOT_READ = ("not a file this server reads (files a fleet names are read only from MEDLEY_INPUT_DIRS; upload a "
            "trace to POST /v1/traces and put its buckets in traffic.buckets)")


def input_access(settings: Settings) -> FileAccess:
    """Where the files a fleet names may be read from (the input directories; none by default)."""
    return FileAccess.within(settings.input_roots, max_bytes=settings.max_trace_bytes, refusal=NOT_READ)


@dataclass(frozen=True)
class Built:
    """A checked fleet, and the services left out of it with why (as notes for the plan)."""

    fleet: FleetSpec
    notes: list[Finding] = field(default_factory=list)

    @property
    def teams(self) -> list[str]:
        """Teams of the services planned: the plan's lineage."""
        return sorted({s.team for s in self.fleet.services})


def scope_services(services: list[Service], who: Principal, wanted: Sequence[str] | None) -> list[Service]:
    """The services a request plans: the named ones (403 for a planner naming another team's), else the
    caller's team's (a planner) or all (an admin)."""
    if wanted is not None:
        by_id = {x.id: x for x in services}
        for i, sid in enumerate(wanted):
            if sid not in by_id:
                raise field_error(422, f"body.services.{i}", f"unknown service {sid!r}")
            team = by_id[sid].team
            if not who.may_change_team(team):
                raise ApiError(403, f"team {who.team!r} may not plan service {sid!r} of team {team!r}",
                               errors=[FieldError(field=f"body.services.{i}", reason=f"owned by team {team!r}")])
        chosen = set(wanted)
        return [x for x in services if x.id in chosen]
    if who.role is ApiRole.ADMIN:
        return services
    return [x for x in services if x.team == who.team]


def checked_fleet(name: str, pools: list[Pool], services: list[Service], domains: list[PowerDomain],
                  options: PlannerOptions, *, settings: Settings, owns: Callable[[Service], bool]) -> Built:
    """These documents as one checked fleet (module docstring): 422 for the caller's own problems, other
    teams' bad services left out with a note. Traces come back read into buckets, so planning reads no file."""
    access = input_access(settings)
    base = settings.input_roots[0] if settings.input_roots else None
    services = [_absolute_trace(s, base) for s in services]
    if options.perf_profile is not None and base is not None and not Path(options.perf_profile).is_absolute():
        options = options.model_copy(update={"perf_profile": str(base / options.perf_profile)})
    notes: list[Finding] = []
    kept = list(services)
    for _ in range(len(services) + 1):
        fleet = _fleet(name, pools, kept, domains, options)
        problems = check_fleet(fleet, access=access)
        if not problems and any(s.traffic.trace_file for s in kept):
            problems = [(("services", _index(kept, line), "traffic", "trace_file"), line.split(": ", 1)[1])
                        for line in trace_problems(fleet, None, access)]
        if not problems:
            return Built(_with_bucketed_traces(fleet, access), notes)
        foreign = {loc[1] for loc, _ in problems if len(loc) >= 2 and loc[0] == "services"
                   and isinstance(loc[1], int) and not owns(kept[loc[1]])}
        if not foreign or len(foreign) < len({p[0][:2] for p in problems}):
            raise _refusal(problems, fleet)
        for index in sorted(foreign, reverse=True):
            why = next(r for loc, r in problems if loc[:2] == ("services", index))
            gone = kept.pop(index)
            notes.append(Finding(kind="note", constraint=f"service[{gone.id}]",
                                 message=f"service {gone.id} of team {gone.team} was left out: {why}"))
    raise ApiError(422, "fleet: cannot be checked")  # unreachable: each round removes a service


def _absolute_trace(svc: Service, base: Path | None) -> Service:
    """The service with a relative trace path made relative to the first input directory."""
    name = svc.traffic.trace_file
    if name is None or base is None or Path(name).is_absolute():
        return svc
    return svc.model_copy(update={"traffic": svc.traffic.model_copy(update={"trace_file": str(base / name)})})


def _fleet(name: str, pools: list[Pool], services: list[Service], domains: list[PowerDomain],
           options: PlannerOptions) -> FleetSpec:
    try:
        return FleetSpec(name=name, pools=pools, services=services, power_domains=domains, planner=options)
    except ValidationError as exc:
        raise from_validation_error(exc, ("fleet",)) from exc


def _index(services: list[Service], line: str) -> int:
    """The service a ``services[ID]...`` problem line names."""
    sid = line.split("]", 1)[0].removeprefix("services[")
    return next(i for i, s in enumerate(services) if s.id == sid)


def _refusal(problems: list[tuple[tuple[str | int, ...], str]], fleet: FleetSpec) -> ApiError:
    """422 naming the stored documents (services and pools by id, not list index)."""
    names = {"services": [x.id for x in fleet.services], "pools": [p.id for p in fleet.pools]}
    errors = []
    for loc, reason in problems:
        parts = [str(p) for p in loc]
        if len(loc) >= 2 and isinstance(loc[1], int) and str(loc[0]) in names:
            parts[1] = names[str(loc[0])][loc[1]]  # name the stored document, not a list index
        errors.append(FieldError(field="fleet." + ".".join(parts), reason=reason))
    return ApiError(422, "; ".join(f"{e.field}: {e.reason}" for e in errors[:5]), errors=errors)


def _with_bucketed_traces(fleet: FleetSpec, access: FileAccess) -> FleetSpec:
    """The fleet with each trace read (under ``access``, checked already) into length buckets."""
    if not any(s.traffic.trace_file for s in fleet.services):
        return fleet
    services = []
    for s in fleet.services:
        if s.traffic.trace_file is not None:
            try:
                buckets = bucket_trace(Path(s.traffic.trace_file), access=access).buckets
            except ValueError as exc:  # changed since it was checked
                raise field_error(422, f"fleet.services.{s.id}.traffic.trace_file", str(exc)) from exc
            traffic = Traffic(rate_rps=s.traffic.rate_rps, buckets=buckets)
            s = s.model_copy(update={"traffic": traffic})
        services.append(s)
    return fleet.model_copy(update={"services": services})
