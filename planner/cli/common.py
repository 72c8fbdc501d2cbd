"""What every ``medley`` command shares: the one-line error exit, output formats and the console.

Bad input ends a command with one line on stderr and exit code 2 (``fail``), never a traceback; the power,
provisioner and API commands use the same helper.
"""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from typing import Any, NoReturn

import typer
import yaml
from rich.console import Console
from rich.table import Table

# Wide enough for the plan tables when stdout is a file or a pipe; the terminal's width otherwise.
console = Console(width=None if sys.stdout.isatty() else 160)


class OutputFormat(StrEnum):
    TABLE = "table"
    JSON = "json"
    YAML = "yaml"


FormatOption = typer.Option(OutputFormat.TABLE, "--format", "-f", help="table, json or yaml")


def fail(message: str, code: int = 2) -> NoReturn:
    """Print the message's first line on stderr and exit (2: bad input; 1: a refusal from outside)."""
    typer.echo(message.splitlines()[0] if message else "error", err=True)
    raise typer.Exit(code=code)


def emit(data: Any, fmt: OutputFormat, table: Table | None = None) -> None:
    """Write ``data`` as JSON/YAML, or print ``table`` for the table format."""
    if fmt is OutputFormat.JSON:
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    elif fmt is OutputFormat.YAML:
        sys.stdout.write(yaml.safe_dump(data, sort_keys=False))
    elif table is not None:
        console.print(table)
