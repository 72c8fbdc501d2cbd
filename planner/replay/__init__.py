from planner.replay.sim import (
    Arrivals,
    FittedStepTimes,
    PerfStepTimes,
    ReplayOptions,
    ReplayReport,
    TraceSource,
    build_workload,
    load_azure_trace,
    max_rate_meeting_slo,
    replay,
)

__all__ = [
    "Arrivals",
    "FittedStepTimes",
    "PerfStepTimes",
    "ReplayOptions",
    "ReplayReport",
    "TraceSource",
    "build_workload",
    "load_azure_trace",
    "max_rate_meeting_slo",
    "replay",
]
