"""Run the bad-input catalogue (``benchmarks/bad_input_cases.py``) and count how each case ends.

Each command line runs in this process through ``medley``'s own entry point (its top-level guard included) with
its output captured; each HTTP request goes to the real API app (the real planner in worker processes) under a
test client. A case is *clear* when it ends as it should: exit code and one stderr line holding its phrases,
or its 4xx ``application/problem+json`` holding them. Otherwise it is a *traceback* (a traceback or the guard's
"unexpected error" line), *silent* (exit 0 or a 2xx/3xx), a *server error* (5xx) or *unclear* (anything else:
a second line, the wrong code, a reason that does not name the field).

    python benchmarks/bad_inputs.py [-k SUBSTRING] [--verbose]

The last line is JSON: ``{"cases": N, "clear": N, "tracebacks": N, "silent": N, "server_errors": N, ...}``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bad_input_cases import CLI_CASES, HTTP_CASES, CliCase, HttpCase, pool, service  # noqa: E402


@dataclass(frozen=True)
class Verdict:
    """How a case ended: ``kind`` is clear, traceback, silent, server_error or unclear."""

    kind: str
    detail: str


def _classify_cli(case: CliCase, code: int, out: str, err: str) -> Verdict:
    lines = [line for line in err.splitlines() if line.strip()]
    text = err.strip()
    if "Traceback (most recent call last)" in out + err or "unexpected error" in err:
        return Verdict("traceback", text[-300:])
    if code == 0:
        return Verdict("silent", f"exit 0; stderr {text[:200]!r}")
    if code != case.code:
        return Verdict("unclear", f"exit {code}, not {case.code}: {text[:300]}")
    if len(lines) != 1:
        return Verdict("unclear", f"{len(lines)} lines on stderr: {text[:300]}")
    missing = [p for p in case.says if p.lower() not in lines[0].lower()]
    if missing:
        return Verdict("unclear", f"does not say {missing}: {lines[0][:300]}")
    return Verdict("clear", lines[0])


@contextlib.contextmanager
def _environment(env: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def invoke(args: list[str], env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run ``medley ARGS`` in this process through its entry point; (exit code, stdout, stderr)."""
    from planner.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with _environment(env or {}), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(args)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:  # noqa: BLE001 - what escapes the entry point is what a user would see
            import traceback

            traceback.print_exc(file=err)
            code = 1
    return code, out.getvalue(), err.getvalue()


_PLANS: dict[str, str] = {}


def _plan_json(fleet_text: str) -> str:
    """A plan (JSON) of ``fleet_text``, made once per run."""
    if fleet_text not in _PLANS:
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "f.yaml").write_text(fleet_text)
            code, _, err = invoke(["plan", "-q", "--no-baselines", f"{d}/f.yaml", "-o", f"{d}/plan.json"])
            if code != 0:
                raise RuntimeError(f"the good fleet did not plan: {err}")
            _PLANS[fleet_text] = (Path(d) / "plan.json").read_text()
    return _PLANS[fleet_text]


def run_cli(case: CliCase) -> Verdict:
    """Run one command-line case in a scratch folder."""
    with tempfile.TemporaryDirectory() as d:
        for name, content in case.files.items():
            path = Path(d) / name
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content.replace("{dir}", d))
        if case.fifo:
            os.mkfifo(Path(d) / case.fifo)
        if case.plan_of is not None:
            (Path(d) / "plan.json").write_text(_plan_json(case.plan_of))
        env = {"MEDLEY_DATABASE_URL": f"sqlite+pysqlite:///{d}/m.db", "KUBECONFIG": f"{d}/no-kubeconfig",
               **case.env}
        code, out, err = invoke([a.replace("{dir}", d) for a in case.args], env)
    return _classify_cli(case, code, out, err)


# --------------------------------------------------------------------------------------------------- HTTP


class HttpWorld:
    """The real API app (real planner) on a scratch SQLite database, seeded, with tokens per team and role."""

    def __init__(self, folder: Path) -> None:
        from fastapi.testclient import TestClient

        from api.app import create_app
        from api.auth import ApiRole, create_token
        from api.provision import RecordingProvisioner
        from api.settings import Settings

        inputs = folder / "inputs"
        inputs.mkdir()
        settings = Settings(database_url=f"sqlite+pysqlite:///{folder / 'api.db'}", input_dirs=str(inputs),
                            whatif_time_limit_s=10, job_time_limit_s=30, verify_duration_s=10)
        self.app = create_app(settings, provisioner=RecordingProvisioner())
        self.client = TestClient(self.app, raise_server_exceptions=False)
        self.client.__enter__()
        self._tokens: dict[tuple[str, str], str] = {}
        with self.app.state.services.db.write() as s:
            for team in ("assistants", "beta", "platform"):
                for role in ApiRole:
                    self._tokens[(team, role.value)] = create_token(s, team, role)[0]
        admin = self.headers("platform", "admin")
        self.client.post("/v1/pools", json=pool(id="h100-a"), headers=admin)
        self.client.post("/v1/services", json=service(id="chat"), headers=admin)
        traced = service(id="traced", traffic={"rate_rps": 1, "trace_file": "/etc/passwd"})
        self.client.post("/v1/services", json=traced, headers=admin)

    def headers(self, team: str, role: str) -> dict[str, str]:
        """Authorization for ``role`` of ``team``."""
        return {"Authorization": f"Bearer {self._tokens[(team, role)]}"}

    def close(self) -> None:
        """Stop the app."""
        self.client.__exit__(None, None, None)


def run_http(case: HttpCase, world: HttpWorld) -> Verdict:
    """Send one HTTP case and judge the answer."""
    headers = dict(case.headers)
    if case.role is not None:
        headers.update(world.headers(case.team, case.role))
    kwargs: dict[str, Any] = {"headers": headers}
    if case.json is not None:
        kwargs["json"] = case.json
    if case.content is not None:
        kwargs["content"] = case.content
    r = world.client.request(case.method, case.path, **kwargs)
    body = r.text
    if "Traceback (most recent call last)" in body:
        return Verdict("traceback", body[-300:])
    if r.status_code >= 500:
        return Verdict("server_error", f"{r.status_code} {body[:300]}")
    if r.status_code < 400:
        return Verdict("silent", f"{r.status_code} {body[:200]}")
    if not r.headers.get("content-type", "").startswith("application/problem+json"):
        return Verdict("unclear", f"{r.status_code} as {r.headers.get('content-type')}: {body[:200]}")
    if case.status >= 100 and r.status_code != case.status:
        return Verdict("unclear", f"{r.status_code}, not {case.status}: {body[:300]}")
    problem = r.json()
    words = json.dumps(problem).lower()
    missing = [p for p in case.says if p.lower() not in words]
    if missing or not problem.get("detail"):
        return Verdict("unclear", f"does not say {missing}: {body[:300]}")
    return Verdict("clear", f"{r.status_code} {problem['detail'][:200]}")


@contextlib.contextmanager
def http_world() -> Iterator[HttpWorld]:
    """A seeded app for the HTTP cases, stopped afterwards."""
    with tempfile.TemporaryDirectory() as d:
        world = HttpWorld(Path(d))
        try:
            yield world
        finally:
            world.close()


def main() -> None:
    """Run every case (or those whose id holds ``-k``); print the failures and the JSON summary line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", default="", help="only cases whose id contains this")
    parser.add_argument("--verbose", action="store_true", help="print every case, not only the unclear ones")
    opts = parser.parse_args()
    start = time.monotonic()
    counts = {"clear": 0, "traceback": 0, "silent": 0, "server_error": 0, "unclear": 0}
    verdicts: list[tuple[str, Verdict]] = []
    for cli_case in (c for c in CLI_CASES if opts.k in c.id):
        verdicts.append((f"cli:{cli_case.id}", run_cli(cli_case)))
    with http_world() as world:
        for http_case in (c for c in HTTP_CASES if opts.k in c.id):
            verdicts.append((f"http:{http_case.id}", run_http(http_case, world)))
    for name, v in verdicts:
        counts[v.kind] += 1
        if opts.verbose or v.kind != "clear":
            print(f"{v.kind:12} {name}: {v.detail}", file=sys.stderr)
    print(json.dumps({"cases": len(verdicts), "clear": counts["clear"], "tracebacks": counts["traceback"],
                      "silent": counts["silent"], "server_errors": counts["server_error"],
                      "unclear": counts["unclear"], "cli_cases": len([n for n, _ in verdicts if n.startswith("cli:")]),
                      "http_cases": len([n for n, _ in verdicts if n.startswith("http:")]),
                      "seconds": round(time.monotonic() - start, 1)}))




if __name__ == "__main__":
    main()
