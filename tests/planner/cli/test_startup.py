"""Start-up: ``medley plan`` imports no web, database or Kubernetes library (nor rich for a JSON answer);
``medley --help`` lists every command, plugins included, without importing them; a plugin still runs when
invoked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from planner.cli.main import COMMANDS, app
from planner.cli.plugins import PLUGIN_HELP, LazyCommand, load_command, plugins

ROOT = Path(__file__).resolve().parents[3]
HEAVY = ("fastapi", "sqlalchemy", "kubernetes", "kopf", "uvicorn", "prometheus_client", "starlette", "alembic")
PLUGIN_PACKAGES = ("api", "power", "provisioner")


def medley(*args: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run ``python -X importtime -m planner.cli ARGS``: the process and the modules it imported."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="240", TERMINAL_WIDTH="240")
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "planner.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    imported = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:") and line.count("|") == 2}
    return proc, imported


def tops(modules: set[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


def test_plan_imports_no_web_database_or_kubernetes_library() -> None:
    proc, imported = medley("plan", "examples/quickstart.yaml", "--no-baselines", "--format", "json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["replica_groups"]
    assert "planner.pipeline" in imported  # the importtime record is read right
    assert not tops(imported) & {*HEAVY, *PLUGIN_PACKAGES}
    assert "rich" not in tops(imported)  # an answer in JSON prints no table


def test_help_lists_every_command_without_importing_one() -> None:
    proc, imported = medley("--help")
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in [*COMMANDS, *plugins()]:
        assert f" {name} " in proc.stdout, name
    for name, text in PLUGIN_HELP.items():
        assert text[:60] in proc.stdout, name
    assert not tops(imported) & {*HEAVY, *PLUGIN_PACKAGES}
    assert not {"planner.schema", "planner.pipeline", "planner.cli.fleet", "numpy"} & imported


def test_every_shipped_plugin_has_its_own_short_help() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    names = set(declared["project"]["entry-points"]["medley.cli"])
    assert names == set(PLUGIN_HELP)
    for name in names:
        assert load_command(name, plugins()[name]).get_short_help_str(limit=500) == PLUGIN_HELP[name]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_listed_help_is_the_commands_own(name: str) -> None:
    lazy = typer.main.get_command(app).get_command(None, name)  # type: ignore[attr-defined]
    assert isinstance(lazy, LazyCommand)
    assert lazy.load().get_short_help_str(limit=500) == COMMANDS[name].help


def test_a_plugin_runs_when_invoked_through_the_root() -> None:
    result = CliRunner().invoke(app, ["render", "--help"])
    assert result.exit_code == 0 and "manifests" in result.output
    result = CliRunner().invoke(app, ["token", "revoke", "--help"])
    assert result.exit_code == 0 and "Usage" in result.output
    result = CliRunner().invoke(app, ["no-such-command"])
    assert result.exit_code == 2


@pytest.mark.parametrize(("given", "expected"), [(None, "1"), ("4", "4")])
def test_medley_runs_numpy_without_blas_threads_unless_told(monkeypatch: pytest.MonkeyPatch, given: str | None,
                                                            expected: str) -> None:
    import planner.cli.common
    from planner.cli.main import main

    monkeypatch.setenv("OPENBLAS_NUM_THREADS", given or "")  # restored after the test, whatever main() sets
    if given is None:
        monkeypatch.delenv("OPENBLAS_NUM_THREADS")
    monkeypatch.setattr(planner.cli.common, "run_guarded", lambda entry, argv: None)
    main(["version"])
    assert os.environ["OPENBLAS_NUM_THREADS"] == expected
