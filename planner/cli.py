"""The ``medley`` command line: planning commands here; other packages plug in through entry points."""

from __future__ import annotations

from importlib.metadata import entry_points

import typer

app = typer.Typer(
    name="medley",
    help="Plan, place, provision and power-cap LLM services on heterogeneous accelerators.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _register_plugins() -> None:
    """Mount sub-commands that other packages (power, provisioner, api) declare under ``medley.cli``."""
    for ep in entry_points(group="medley.cli"):
        sub = ep.load()
        if isinstance(sub, typer.Typer):
            app.add_typer(sub, name=ep.name)
        else:
            app.command(name=ep.name)(sub)


def main() -> None:
    _register_plugins()
    app()


@app.command()
def version() -> None:
    """Print Medley's version."""
    from importlib.metadata import version as _v

    typer.echo(_v("medley"))
