"""The ``medley`` command line: the root of the commands, each imported only when it runs.

The planning commands live in ``fleet`` (``validate``, ``capacity``, ``plan``, ``verify``), ``catalog``,
``perf``, ``whatif`` and ``simulate``; other packages (power, provisioner, api) plug in through the ``medley.cli`` entry
points. ``medley --help`` lists them all from ``COMMANDS`` and the entry points without importing any (see
``plugins``), so a command pays only for the modules it uses: ``medley plan`` imports no web, database or
Kubernetes library.
"""

from __future__ import annotations

import typer

from planner.cli.plugins import Lazy, PluginGroup

# The planner's own commands: where each is defined and its short help (a test keeps these equal).
COMMANDS = {
    "plan": Lazy("planner.cli.fleet:plan",
                 "Find the cheapest replicas, parallelism and roles that meet every SLO within pools and power."),
    "validate": Lazy("planner.cli.fleet:validate",
                     "Check a fleet file: shapes, units, catalog, context lengths, TP, SLOs and trace files."),
    "capacity": Lazy("planner.cli.fleet:capacity",
                     "Max req/s one replica sustains under each service's SLO, per configuration and length bucket."),
    "verify": Lazy("planner.cli.fleet:verify",
                   "Replay traffic against a plan; exit 0 only when every service meets its SLO (verified)."),
    "whatif": Lazy("planner.cli.whatif:whatif_command",
                   "Plan what-if scenarios side by side with the baseline, or find the best commitment "
                   "(--commitment)."),
    "simulate": Lazy("planner.cli.simulate:simulate_command",
                     "Replay a day of traffic through observe → forecast → plan → rollout → replay, beside the "
                     "static plan."),
    "catalog": Lazy("planner.cli.catalog:catalog_app", "The shipped catalog: devices, models, price books."),
    "perf": Lazy("planner.cli.perf:perf_app", "The performance model: prefill and decode times, memory fit."),
}


class MedleyGroup(PluginGroup):
    """``medley``: the planner's commands, then the plugins'."""

    lazy = COMMANDS


app = typer.Typer(
    cls=MedleyGroup,
    name="medley",
    help="Plan, place, provision and power-cap LLM services on heterogeneous accelerators.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    # a callback keeps ``medley`` a group: its other commands are added lazily, so Typer sees only ``version``
    pass


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: every error ends in one line and a non-zero exit (``--debug``: the trace)."""
    import os

    # The planner's arrays are small vectors: OpenBLAS threads never pay, yet they start and spin when numpy is
    # imported (0.1 s CPU or more per command). Set before any command imports numpy; a user's value stands.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from planner.cli.common import run_guarded

    run_guarded(lambda args: app(args=args, prog_name="medley", standalone_mode=False), argv)


@app.command()
def version() -> None:
    """Print Medley's version."""
    from importlib.metadata import version as _v

    typer.echo(_v("medley"))
