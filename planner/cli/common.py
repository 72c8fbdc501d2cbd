"""What every ``medley`` command shares: the one-line error exit, the top-level guard, progress lines, output
formats and the console.

Bad input ends a command with one line on stderr and exit code 2 (``fail``), never a traceback; the power,
provisioner and API commands use the same helper. ``run_guarded`` runs the whole command line: a usage error
is one line (exit 2), an error nobody expected is one line naming its type (exit 1) and ``--debug`` (or
``MEDLEY_DEBUG=1``) prints its traceback instead. ``progress`` writes a line per stage of long work to
stderr, whether or not it is a terminal, so stdout stays the answer.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

DEBUG_FLAG = "--debug"


@cache
def get_console() -> Console:
    """The console tables print to: wide enough for the plan tables when stdout is a file or a pipe, the
    terminal's width otherwise (made on first use, so a command that answers in JSON never imports rich)."""
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 160)


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
        import yaml

        sys.stdout.write(yaml.safe_dump(data, sort_keys=False))
    elif table is not None:
        get_console().print(table)


class Progress:
    """One line per stage on stderr (``medley: stage … (12.3 s)``), timed from the command's start.

    With ``after_s`` the lines of a command that ends sooner are never shown (so a quick answer or error stays
    one line); once it runs longer, the held lines come out first, then each as it comes."""

    def __init__(self, enabled: bool = True, clock: Callable[[], float] = time.monotonic,
                 after_s: float = 0.0) -> None:
        self.enabled = enabled
        self.clock = clock
        self.started = clock()
        self.after_s = after_s
        self._held: list[str] = []

    def __call__(self, line: str) -> None:
        """Say what the command is doing now."""
        if not self.enabled:
            return
        elapsed = self.clock() - self.started
        self._held.append(f"medley: {line} ({elapsed:.1f} s)")
        if elapsed >= self.after_s:
            for held in self._held:
                typer.echo(held, err=True)
            self._held.clear()


def png_or_svg(fig: Any, path: Path) -> str | None:
    """Save a matplotlib figure as PNG when ``path`` ends in .png (None); otherwise its SVG element, without the
    XML prolog and DOCTYPE, which do not belong inside HTML, for the caller's page."""
    if path.suffix.lower() == ".png":
        fig.savefig(path, dpi=110)
        return None
    import io

    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    svg = buf.getvalue()
    return svg[svg.find("<svg"):]


def writable_file(path: str, option: str) -> Path:
    """An output file that can be written: its folder exists and is writable (checked before long work)."""
    out = Path(path)
    folder = out.parent if str(out.parent) else Path(".")
    if out.is_dir():
        fail(f"{option}: {path} is a directory; give a file name")
    if not folder.is_dir():
        fail(f"{option}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        fail(f"{option}: {path} cannot be written (permission denied)")
    return out


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _click_error(exc: Any) -> int:
    """A command-line usage error in one line (help is shown whole when nothing was given)."""
    if type(exc).__name__ == "NoArgsIsHelpError":
        exc.show()
        return int(exc.exit_code)
    ctx = getattr(exc, "ctx", None)
    where = ctx.command_path if ctx is not None else "medley"
    hint = f" (see {where} --help)" if ctx is not None else ""
    typer.echo(f"{where}: {exc.format_message()}{hint}", err=True)
    return int(getattr(exc, "exit_code", 2))


def run_guarded(entry: Callable[[list[str]], Any], argv: Sequence[str] | None = None) -> NoReturn:
    """Run the command line ``entry(args)`` so that nothing ends in a traceback (module docstring)."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in args or os.environ.get("MEDLEY_DEBUG", "") not in ("", "0")
    args = [a for a in args if a != DEBUG_FLAG]
    try:
        code = entry(args)
    except typer.Exit as exc:
        code = exc.exit_code
    except typer.TyperException as exc:  # typer's click: usage errors and the like
        code = _click_error(exc)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("medley: interrupted", err=True)
        code = 130
    except Exception as exc:  # noqa: BLE001 - the one place unexpected errors become a line, not a traceback
        if debug:
            traceback.print_exc()
        else:
            typer.echo(f"medley: unexpected error: {_one_line(exc)} (run with {DEBUG_FLAG} for the traceback)",
                       err=True)
        code = 1
    sys.exit(code if isinstance(code, int) else 0)
