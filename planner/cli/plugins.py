"""Lazy commands: listed by name and short help, imported only when they run.

The ``medley`` group (``PluginGroup``) knows its own commands as ``Lazy`` targets (``module:attribute``) and the
commands other packages declare under the ``medley.cli`` entry points. ``medley --help`` lists both from the
names and the short help here, importing neither; a command's module (and the web, database, Kubernetes or
NVML stack behind a plugin) is imported when that command is invoked (``LazyCommand.make_context``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any, ClassVar

import typer
from typer.core import TyperCommand, TyperGroup

PLUGIN_GROUP = "medley.cli"

# click's Command and Context: Typer 0.16 and later vendor click (``typer._click``), earlier ones use the click
# package, so they are typed loosely here and the classes below derive from Typer's own.
Command = Any
Context = Any

# Short help of the plugins this project ships, as their commands state it (a test keeps the two equal).
PLUGIN_HELP = {
    "apply": ("Apply a plan to the cluster, make-before-break; with --dry-run the API server checks it, nothing "
              "is written."),
    "controller": "Run the controller: watch Medley's resources, re-plan, apply per FleetPlan mode, repair drift.",
    "inventory": "Read the cluster's GPU nodes into pools with node lists, for `medley plan --place`.",
    "power": "Power oversubscription: capping loop, node agent, power planning.",
    "render": "Write a plan's manifests to a directory, offline (one file per object and a kustomization).",
    "serve": "Start the REST API (settings from MEDLEY_* variables; SQLite in the user's data dir by default).",
    "token": "API tokens: create and revoke bearer tokens.",
}


@dataclass(frozen=True)
class Lazy:
    """A command defined at ``target`` (``module:attribute``: a Typer app or a command function)."""

    target: str
    help: str


@cache
def plugins() -> dict[str, EntryPoint]:
    """The ``medley.cli`` entry points by command name."""
    return {ep.name: ep for ep in entry_points(group=PLUGIN_GROUP)}


def load_command(name: str, ep: EntryPoint) -> Command:
    """Import a command and make it as ``medley`` mounts it: a Typer app a sub-group, a function a command."""
    sub = ep.load()
    mount = typer.Typer(add_completion=False)
    if not isinstance(sub, typer.Typer):
        mount.command(name=name)(sub)
        return typer.main.get_command(mount)
    mount.add_typer(sub, name=name)
    group = typer.main.get_command(mount)
    assert isinstance(group, TyperGroup)
    return group.commands[name]


class LazyCommand(TyperCommand):
    """A command known by name and short help; it is loaded when invoked (``--help`` on it included)."""

    def __init__(self, name: str, help_text: str, ep: EntryPoint) -> None:
        super().__init__(name, help=help_text, short_help=help_text)
        self.ep = ep

    def load(self) -> Command:
        """The real command."""
        return load_command(self.name or self.ep.name, self.ep)

    def make_context(self, info_name: str | None, args: list[str], parent: Context | None = None,
                     **extra: Any) -> Context:
        """The loaded command's context: the group then invokes that command, not this stand-in."""
        return self.load().make_context(info_name, args, parent=parent, **extra)


class PluginGroup(TyperGroup):
    """A group whose commands beyond its own are ``lazy`` ones and the ``medley.cli`` plugins."""

    lazy: ClassVar[dict[str, Lazy]] = {}

    def list_commands(self, ctx: Context) -> list[str]:
        names = [*self.lazy, *super().list_commands(ctx)]
        return names + sorted(n for n in plugins() if n not in names)

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        own = super().get_command(ctx, cmd_name)
        if own is not None:
            return own
        if cmd_name in self.lazy:
            spec = self.lazy[cmd_name]
            return LazyCommand(cmd_name, spec.help, EntryPoint(cmd_name, spec.target, "medley.builtin"))
        ep = plugins().get(cmd_name)
        if ep is None:
            return None
        return LazyCommand(cmd_name, PLUGIN_HELP.get(cmd_name, f"(plugin from {ep.module})"), ep)
