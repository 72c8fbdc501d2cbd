"""Start-up cost of the command line: CPU seconds of ``medley --help`` and of ``medley plan`` on the quickstart
fleet, and which web, database or Kubernetes libraries a plan imports (it should import none).

Each command runs ``--runs`` times as a child process (``python -m planner.cli``); its CPU time (user + system)
is read with ``getrusage(RUSAGE_CHILDREN)``, which a loaded machine disturbs far less than wall time. Prints
the minimum and median per command and ends with one JSON line: {"runs", "commands": [{"args", "cpu_s_min",
"cpu_s_median"}], "plan_imports_heavy": [...]}.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("fastapi", "sqlalchemy", "kubernetes", "kopf", "uvicorn", "prometheus_client", "starlette", "alembic")
COMMANDS = (("--help",), ("plan", "examples/quickstart.yaml", "--no-baselines"), ("plan", "examples/quickstart.yaml"))


def child_cpu_s(args: tuple[str, ...], *flags: str) -> tuple[float, str]:
    """CPU seconds of one ``python -m planner.cli ARGS`` child, and its stderr."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run([sys.executable, *flags, "-m", "planner.cli", *args], cwd=ROOT, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, proc.stderr


def heavy_imports(args: tuple[str, ...]) -> list[str]:
    """The heavy libraries a command imports (from ``-X importtime``)."""
    _, stderr = child_cpu_s(args, "-X", "importtime")
    names = {line.rsplit("|", 1)[1].strip().split(".")[0] for line in stderr.splitlines()
             if line.startswith("import time:") and line.count("|") == 2}
    return sorted(names & set(HEAVY))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    rows = []
    for cmd in COMMANDS:
        cpu = [child_cpu_s(cmd)[0] for _ in range(args.runs)]
        rows.append({"args": " ".join(cmd), "cpu_s_min": round(min(cpu), 3),
                     "cpu_s_median": round(statistics.median(cpu), 3)})
        print(f"medley {rows[-1]['args']:<45} CPU min {min(cpu):6.3f} s, median {statistics.median(cpu):6.3f} s")
    heavy = heavy_imports(COMMANDS[1])
    print(f"medley plan imports: {', '.join(heavy) or 'no web, database or Kubernetes library'}")
    print(json.dumps({"runs": args.runs, "commands": rows, "plan_imports_heavy": heavy}))


if __name__ == "__main__":
    main()
