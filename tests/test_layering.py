"""Import layering and purity, read from the source with ``ast`` (no module is imported or run).

Rules (each offence is reported as ``file:line: rule``):
- ``planner`` imports nothing of ``api``, ``provisioner`` or ``power``; ``power`` and ``provisioner`` import
  ``planner`` only (never ``api`` or each other).
- A core module (every module of the four packages except the command lines ``planner.cli``, ``power.cli``,
  ``provisioner.cli`` and ``api.cli``) imports no command-line module.
- The pure core (``planner.model``, ``planner.solve``, ``planner.place``, ``power.policy``) imports no edge
  library (Kubernetes, databases, web servers, NVML), reads no clock (``time.time/monotonic/perf_counter/sleep``,
  ``datetime.now/utcnow/today``; a ``Clock`` or ``Deadline`` comes in as a value) and touches no file (``open``,
  ``Path.read_text/read_bytes/open/write_*``, ``os.listdir`` and friends, ``csv.reader`` over a file,
  ``json.load``, ``importlib.resources``), not even through a loader (``planner.io``): files are read at the edge.
  The solver adapters (``planner.solve.backends``) may silence and read their solver's output.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("planner", "power", "provisioner", "api")
CLI_MODULES = ("planner.cli", "power.cli", "provisioner.cli", "api.cli")
PURE = ("planner.model", "planner.solve", "planner.place", "power.policy")
# The solver adapters: the libraries behind them print to the process's stdout and write logs, and silencing
# and reading those is the adapter's job (the only file access the pure core may hold; clock and edge rules
# still apply to them).
SOLVER_ADAPTERS = ("planner.solve.backends",)
# What each package may not import (``api`` may import every other package).
FORBIDDEN_PACKAGES = {"planner": ("api", "provisioner", "power"), "power": ("api", "provisioner"),
                      "provisioner": ("api", "power")}
EDGE_LIBRARIES = ("kubernetes", "kopf", "sqlalchemy", "alembic", "psycopg", "psycopg2", "fastapi", "starlette",
                  "uvicorn", "pynvml", "py3nvml", "nvidia_smi")
CLOCK = frozenset({
    "time.time", "time.time_ns", "time.monotonic", "time.monotonic_ns", "time.perf_counter", "time.perf_counter_ns",
    "time.process_time", "time.process_time_ns", "time.sleep", "datetime.datetime.now", "datetime.datetime.utcnow",
    "datetime.datetime.today", "datetime.date.today"})
FILESYSTEM = frozenset({
    "builtins.open", "io.open", "codecs.open", "os.open", "os.listdir", "os.scandir", "os.walk", "os.stat",
    "os.remove", "os.unlink", "os.rename", "os.replace", "os.mkdir", "os.makedirs", "os.rmdir", "os.path.exists",
    "os.path.isfile", "os.path.isdir", "os.path.getsize", "os.path.getmtime", "glob.glob", "glob.iglob",
    "json.load", "json.dump", "pickle.load", "pickle.dump", "numpy.load", "numpy.loadtxt", "numpy.genfromtxt",
    "numpy.fromfile", "numpy.save", "numpy.savez", "numpy.savetxt", "pandas.read_csv", "pandas.read_parquet",
    "pkgutil.get_data"})
FILESYSTEM_MODULES = ("importlib.resources", "importlib_resources", "shutil", "tempfile")
# Methods of pathlib.Path (and importlib's Traversable) that touch the file system.
PATH_IO = frozenset({"read_text", "read_bytes", "write_text", "write_bytes", "open", "iterdir", "glob", "rglob",
                     "exists", "is_file", "is_dir", "mkdir", "unlink", "touch", "rmdir"})
CSV_READERS = frozenset({"csv.reader", "csv.DictReader"})
LOADERS = ("planner.io",)  # the modules that read files; the pure core is given what they read


@dataclass(frozen=True)
class Offence:
    file: str
    line: int
    kind: str  # layer, cli or pure
    rule: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.rule}"


def _within(name: str, prefixes: Iterable[str]) -> str | None:
    """The prefix ``name`` is (or lies under), if any: ``planner.cli.main`` lies under ``planner.cli``."""
    return next((p for p in prefixes if name == p or name.startswith(p + ".")), None)


def module_name(path: Path) -> str:
    """``planner/cli/main.py`` → ``planner.cli.main``; a package's ``__init__.py`` is the package."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package_of(module: str, is_package: bool) -> str:
    return module if is_package else module.rpartition(".")[0]


def imported_modules(tree: ast.Module, module: str, is_package: bool) -> Iterator[tuple[int, list[str]]]:
    """Each import statement's line and the absolute modules it may import, most general first: ``import a, b``
    gives [a], [b]; ``from a import b`` gives [a, a.b] (``b`` may be a submodule; relative imports resolved);
    a literal ``importlib.import_module("a")`` gives [a]."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, [alias.name]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = _package_of(module, is_package).split(".")
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, *([base] if base else [])])
            yield node.lineno, [base, *(f"{base}.{a.name}" for a in node.names if a.name != "*")]
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module"
                   or isinstance(node.func, ast.Name) and node.func.id in ("import_module", "__import__"))):
            yield node.lineno, [node.args[0].value]


def _aliases(tree: ast.Module) -> dict[str, str]:
    """Local name → what it names: ``import numpy as np`` gives np → numpy, ``from time import sleep`` gives
    sleep → time.sleep, ``from datetime import datetime`` gives datetime → datetime.datetime."""
    out: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    out[alias.asname] = alias.name
                else:
                    top = alias.name.partition(".")[0]
                    out[top] = top
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                out[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return out


def _qualified(node: ast.expr, aliases: dict[str, str]) -> str | None:
    """The dotted name an expression stands for when it starts at an import (``np.load`` → numpy.load);
    the builtin ``open`` is ``builtins.open``; None for anything else (a local, a call's result)."""
    if isinstance(node, ast.Name):
        if node.id in aliases:
            return aliases[node.id]
        return "builtins.open" if node.id == "open" else None
    if isinstance(node, ast.Attribute):
        base = _qualified(node.value, aliases)
        return f"{base}.{node.attr}" if base else None
    return None


def _opens_file(node: ast.expr, aliases: dict[str, str]) -> bool:
    """Whether an expression is a call that opens a file (``open(p)``, ``path.open()``)."""
    if not isinstance(node, ast.Call):
        return False
    name = _qualified(node.func, aliases)
    if name in FILESYSTEM:
        return True
    return name is None and isinstance(node.func, ast.Attribute) and node.func.attr == "open"


def _file_handles(tree: ast.Module, aliases: dict[str, str]) -> set[str]:
    """Names bound to an opened file: ``with open(p) as fh`` and ``fh = path.open()``."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.With | ast.AsyncWith):
            for item in node.items:
                if isinstance(item.optional_vars, ast.Name) and _opens_file(item.context_expr, aliases):
                    out.add(item.optional_vars.id)
        elif isinstance(node, ast.Assign) and _opens_file(node.value, aliases):
            out.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return out


def _impurities(tree: ast.Module, files: bool = True) -> Iterator[tuple[int, str]]:
    """Edge-library imports, clock reads and (with ``files``) file-system access in one source."""
    aliases = _aliases(tree)
    handles = _file_handles(tree, aliases)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for name in names:
                lib = _within(name, EDGE_LIBRARIES)
                if lib and not getattr(node, "level", 0):
                    yield node.lineno, f"imports {lib}: the pure core takes the cluster, databases, web and NVML " \
                                       "through Protocols at the edge"
        elif isinstance(node, ast.Name | ast.Attribute) and isinstance(node.ctx, ast.Load):
            name = _qualified(node, aliases)
            if name in CLOCK:
                yield node.lineno, f"reads the clock ({name}): take a planner.clock.Clock or Deadline"
        if files and isinstance(node, ast.Call):
            yield from _call_impurity(node, aliases, handles)


def _call_impurity(node: ast.Call, aliases: dict[str, str], handles: set[str]) -> Iterator[tuple[int, str]]:
    name = _qualified(node.func, aliases)
    if name in FILESYSTEM or (name and _within(name, FILESYSTEM_MODULES)):
        yield node.lineno, f"touches the file system ({name}): files are read by the loaders (planner.io)"
    elif (isinstance(node.func, ast.Attribute) and node.func.attr in PATH_IO
          and (name is None or name.startswith("pathlib."))):
        yield node.lineno, f"touches the file system (.{node.func.attr}()): files are read by the loaders " \
                           "(planner.io)"
    if name in CSV_READERS and node.args and (
            _opens_file(node.args[0], aliases)
            or isinstance(node.args[0], ast.Name) and node.args[0].id in handles):
        yield node.lineno, f"reads a CSV file ({name} over a file): files are read by the loaders (planner.io)"


def check_source(source: str, module: str, file: str, is_package: bool = False) -> list[Offence]:
    """Every offence in one module's source against the rules above."""
    tree = ast.parse(source, filename=file)
    out: list[Offence] = []
    top = module.partition(".")[0]
    cli = _within(module, CLI_MODULES)
    for line, names in imported_modules(tree, module, is_package):
        other = next((n for n in names if _within(n, FORBIDDEN_PACKAGES.get(top, ()))), None)
        if other:
            out.append(Offence(file, line, "layer", f"{top} imports {other}: {top} may not import "
                                                     f"{_within(other, FORBIDDEN_PACKAGES[top])}"))
        target = next((n for n in names if _within(n, CLI_MODULES)), None)
        if target and not cli:
            out.append(Offence(file, line, "cli", f"core module imports the command line ({target})"))
    if _within(module, PURE):
        files = not _within(module, SOLVER_ADAPTERS)
        out.extend(Offence(file, line, "pure", rule) for line, rule in _impurities(tree, files))
        for line, names in imported_modules(tree, module, is_package):
            loader = next((n for n in names if _within(n, LOADERS)), None)
            if loader:
                out.append(Offence(file, line, "pure", f"imports the loader {loader}: files are read at the edge "
                                                       "and their contents passed in"))
    return sorted(set(out), key=lambda o: (o.line, o.rule))


def _sources(prefix: str) -> Iterator[tuple[Path, str]]:
    """The source files of a package or module (``power.policy``), with their module names."""
    base = ROOT.joinpath(*prefix.split("."))
    paths = sorted(base.rglob("*.py")) if base.is_dir() else [base.with_suffix(".py")]
    for path in paths:
        yield path, module_name(path)


def offences(prefix: str) -> list[Offence]:
    """All offences in a package or module of this repository."""
    out: list[Offence] = []
    for path, module in _sources(prefix):
        out.extend(check_source(path.read_text(encoding="utf-8"), module, str(path.relative_to(ROOT)),
                                path.name == "__init__.py"))
    return out


def _report(found: list[Offence]) -> str:
    return "\n" + "\n".join(str(o) for o in found)


# ---------------------------------------------------------------------------------------------- the repository


@pytest.mark.parametrize("package", PACKAGES)
def test_packages_import_only_what_their_layer_may(package: str) -> None:
    found = [o for o in offences(package) if o.kind in ("layer", "cli")]
    assert not found, _report(found)


@pytest.mark.parametrize("package", PURE)
def test_the_pure_core_reads_no_clock_or_file_and_imports_no_edge_library(package: str) -> None:
    found = offences(package)
    assert not found, _report(found)


def test_every_pure_package_and_cli_module_exists() -> None:
    """The rules name real code: a renamed package would otherwise pass unchecked."""
    for prefix in (*PURE, *CLI_MODULES):
        assert list(_sources(prefix)) and all(p.is_file() for p, _ in _sources(prefix)), prefix


# ---------------------------------------------------------------------------------------------- the checker

DIRTY = '''\
import time
from datetime import datetime
from time import perf_counter as tick
import csv, os
import numpy as np
from pathlib import Path
from importlib import resources
import kubernetes.client
from sqlalchemy import select
import pynvml
from api.jobs import JobRunner
from planner.cli.common import fail
from ..cli import main
from planner.io.traces import bucket_trace

def f(path, clock):
    started = time.monotonic()
    stamp = datetime.now()
    elapsed = tick() - started
    text = Path(path).read_text()
    with open(path) as fh:
        rows = list(csv.reader(fh))
    names = os.listdir(".")
    data = np.load(path)
    shipped = resources.files("planner").joinpath("data").read_text()
    mod = importlib.import_module("provisioner.render")
    time.sleep(1)
    return clock.now()
'''

CLEAN = '''\
import csv
import io
import json
import math
from pathlib import Path

from planner.clock import Deadline
from planner.schema import Plan
from . import milp


def f(text: str, path: Path, clock, deadline: Deadline) -> object:
    rows = list(csv.reader(io.StringIO(text)))
    doc = json.loads(text)
    name = path.name, path.suffix, Path("a") / "b"
    now = clock.now()
    left = deadline.remaining()
    time_limit_s = math.inf
    return rows, doc, name, now, left, time_limit_s
'''


def test_the_checker_catches_every_kind_of_offence_at_its_line() -> None:
    found = check_source(DIRTY, "planner.solve.fake", "planner/solve/fake.py")
    lines = {o.line for o in found}
    text = _report(found)
    for line, lib in ((8, "kubernetes"), (9, "sqlalchemy"), (10, "pynvml")):
        assert f"planner/solve/fake.py:{line}: imports {lib}: " in text
    assert "planner/solve/fake.py:11: planner imports api.jobs: planner may not import api" in text
    assert "planner/solve/fake.py:26: planner imports provisioner.render: planner may not import provisioner" in text
    assert "planner/solve/fake.py:12: core module imports the command line (planner.cli.common)" in text
    assert "planner/solve/fake.py:13: core module imports the command line (planner.cli)" in text  # relative
    assert "planner/solve/fake.py:14: imports the loader planner.io.traces" in text
    for line, what in ((17, "time.monotonic"), (18, "datetime.datetime.now"), (19, "time.perf_counter"),
                       (27, "time.sleep")):
        assert f"planner/solve/fake.py:{line}: reads the clock ({what})" in text
    for line, what in ((20, ".read_text()"), (21, "builtins.open"), (23, "os.listdir"), (24, "numpy.load"),
                       (25, "importlib.resources.files")):
        assert f"planner/solve/fake.py:{line}: touches the file system ({what})" in text
    assert "planner/solve/fake.py:22: reads a CSV file (csv.reader over a file)" in text
    assert lines == set(range(8, 28)) - {15, 16}, text  # nothing on the blank line, the def or clock.now()


def test_the_checker_passes_pure_code_and_applies_purity_only_to_the_pure_core() -> None:
    assert check_source(CLEAN, "planner.solve.fake", "planner/solve/fake.py") == []
    # outside the pure core the clock and files are allowed; the layering still holds
    found = check_source(DIRTY, "planner.whatif.fake", "planner/whatif/fake.py")
    assert {o.line for o in found} == {11, 12, 13, 26}, _report(found)
    # the command lines may import each other, and api may import every package
    assert check_source("from planner.cli.common import fail\nimport provisioner.render\n", "api.cli",
                        "api/cli.py") == []
    assert [o.line for o in check_source("import api.db\n", "power.policy", "power/policy.py")] == [1]
    # a solver adapter may redirect its solver's output, but reads no clock
    adapter = check_source(DIRTY, "planner.solve.backends.fake", "planner/solve/backends/fake.py")
    assert not any("file system" in o.rule or "CSV" in o.rule for o in adapter), _report(adapter)
    assert {17, 18, 19, 27} <= {o.line for o in adapter}, _report(adapter)
