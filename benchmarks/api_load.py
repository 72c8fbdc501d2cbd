"""Read load on the REST API: N concurrent clients GET services and plans from a local server.

Starts ``medley``'s API in a subprocess on 127.0.0.1 (a fresh SQLite database, or ``--database-url``), seeds
services and plans, then runs N asyncio clients with httpx, each looping GET → think → GET until the request
budget or the time budget is spent. Prints p50/p90/p99/max latency and throughput, and ends with one JSON line
of the same figures: {"clients", "think_ms", "services", "plans", "db", "cpus", "requests_ok", "errors",
"elapsed_s", "req_per_s", "latency_ms": {"p50", "p90", "p99", "max", "mean"}, "server_cpu_s",
"server_cpu_ms_per_request", "client_cpu_s", "client_cpu_ms_per_request", "p99_target_ms", "p99_target_met"}.
Loopback only; bounded.

    .venv/bin/python benchmarks/api_load.py --clients 200 --requests 6000 --think-ms 1000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from api import migrate  # noqa: E402
from api.auth import ApiRole, create_token  # noqa: E402
from api.db import Database  # noqa: E402
from api.store import POOLS, SERVICES, create_doc, store_plan  # noqa: E402
from planner.schema import (  # noqa: E402
    Configuration,
    Plan,
    Pool,
    ReplicaGroup,
    Service,
    SolverReport,
)

P99_TARGET_MS = 50.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_s(pid: int) -> float:
    """User+system CPU seconds of a process (Linux /proc); 0 where unavailable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def seed(url: str, services: int, plans: int) -> tuple[str, list[str], list[str]]:
    """Tokens, pools, services and plans straight into the database; returns a token and the ids."""
    from api.auth import Principal

    db = Database(url)
    migrate.upgrade(db.engine)
    with db.write() as s:
        token, row = create_token(s, "bench", ApiRole.ADMIN)
        who = Principal(token_id=row.id, team="bench", role=ApiRole.ADMIN)
        create_doc(s, POOLS, Pool(id="h100", device="h100-sxm", max_nodes=64, price_usd_per_device_hour=11.0), who)
        svc_ids = []
        for i in range(services):
            svc = Service.model_validate({
                "id": f"svc-{i:03d}", "team": f"team-{i % 8}", "model": "llama-3-8b",
                "traffic": {"rate_rps": 5 + i, "buckets": [{"input_tokens": 512, "output_tokens": 128, "share": 1}]},
                "slo": {"ttft_ms": 1000, "tpot_ms": 60}})
            create_doc(s, SERVICES, svc, who)
            svc_ids.append(svc.id)
        plan_ids: list[str] = []
        for p in range(plans):
            groups = [ReplicaGroup(service=sid, pool="h100", configuration=Configuration(device="h100-sxm", tp=1),
                                   replicas=1 + (p + j) % 4, cost_usd_per_hour=11.0, expected_watts=700.0)
                      for j, sid in enumerate(svc_ids)]
            plan = Plan(fleet="bench", replica_groups=groups, cost_usd_per_hour=11.0 * len(groups),
                        solver=SolverReport(backend="bench", status="optimal"))
            stored = store_plan(s, plan, teams=sorted({f"team-{i % 8}" for i in range(services)}),
                                created_by=who.actor, previous_plan_id=plan_ids[-1] if plan_ids else None)
            plan_ids.append(stored.id)
    db.dispose()
    return token, svc_ids, plan_ids


async def client_loop(http: httpx.AsyncClient, rng: random.Random, paths: list[str], think_s: float,
                      budget: dict[str, int], deadline: float, latencies: list[float], errors: list[str]) -> None:
    """One client: GET a random read path, think, repeat until the shared budget or the deadline."""
    await asyncio.sleep(rng.uniform(0, think_s))  # spread the start so clients do not march in step
    while budget["left"] > 0 and time.monotonic() < deadline:
        budget["left"] -= 1
        path = rng.choice(paths)
        start = time.perf_counter()
        try:
            r = await http.get(path)
            if r.status_code != 200:
                errors.append(f"{r.status_code} {path}")
        except httpx.HTTPError as exc:
            errors.append(f"{type(exc).__name__} {path}")
            continue
        latencies.append(time.perf_counter() - start)
        if think_s > 0:
            await asyncio.sleep(rng.expovariate(1 / think_s))


async def run_clients(base: str, token: str, svc_ids: list[str], plan_ids: list[str], args: argparse.Namespace,
                      ) -> tuple[list[float], list[str], float]:
    paths = (["/v1/services", "/v1/plans"] + [f"/v1/services/{s}" for s in svc_ids]
             + [f"/v1/plans/{p}" for p in plan_ids] + [f"/v1/plans/{p}/status" for p in plan_ids])
    latencies: list[float] = []
    errors: list[str] = []
    budget = {"left": args.requests}
    # One client object (one keep-alive connection) per simulated client: httpx's shared pool gets slow to
    # search with hundreds of connections, and real clients do not share a pool either.
    clients = [httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30,
                                 limits=httpx.Limits(max_connections=1, max_keepalive_connections=1))
               for _ in range(args.clients)]
    try:
        start = time.perf_counter()
        deadline = time.monotonic() + args.duration_s
        await asyncio.gather(*(client_loop(http, random.Random(i), paths, args.think_ms / 1000, budget, deadline,
                                           latencies, errors) for i, http in enumerate(clients)))
        elapsed = time.perf_counter() - start
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
    return latencies, errors, elapsed


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--requests", type=int, default=6000, help="total request budget (all clients)")
    ap.add_argument("--duration-s", type=float, default=60.0, help="hard time limit for the load phase")
    ap.add_argument("--think-ms", type=float, default=1000.0, help="mean pause between a client's requests")
    ap.add_argument("--services", type=int, default=50)
    ap.add_argument("--plans", type=int, default=20)
    ap.add_argument("--database-url", default=None, help="default: a fresh SQLite file in a temp dir")
    args = ap.parse_args()
    if not (1 <= args.clients <= 1000 and 1 <= args.requests <= 200_000 and 0 < args.duration_s <= 600):
        ap.error("clients 1..1000, requests 1..200000, duration 0..600 s")

    tmp = tempfile.mkdtemp(prefix="medley-load-")
    url = args.database_url or f"sqlite+pysqlite:///{tmp}/load.db"
    token, svc_ids, plan_ids = seed(url, args.services, args.plans)
    port = _free_port()
    # The server runs as `medley serve` does (same entry point, same settings from the environment).
    server = subprocess.Popen(
        [sys.executable, "-c", f"from api.cli import serve; serve(host='127.0.0.1', port={port}, access_log=False)"],
        cwd=ROOT, env={**os.environ, "MEDLEY_DATABASE_URL": url}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            print("server did not become ready", file=sys.stderr)
            return 1
        server_cpu0, client_cpu0 = _cpu_s(server.pid), time.process_time()
        latencies, errors, elapsed = asyncio.run(run_clients(base, token, svc_ids, plan_ids, args))
        server_cpu, client_cpu = _cpu_s(server.pid) - server_cpu0, time.process_time() - client_cpu0
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    if not latencies:
        print("no successful requests", file=sys.stderr)
        return 1
    p99 = pct(latencies, 99)
    db = url.split(':', 1)[0]
    print(f"clients {args.clients}, think {args.think_ms:.0f} ms, {args.services} services, {args.plans} plans, "
          f"db {db}, {os.cpu_count()} cpus (client and server share them)")
    print(f"requests {len(latencies)} ok, {len(errors)} errors in {elapsed:.1f} s "
          f"-> {len(latencies) / elapsed:.0f} req/s")
    print(f"latency ms: p50 {pct(latencies, 50):.1f}  p90 {pct(latencies, 90):.1f}  p99 {p99:.1f}  "
          f"max {max(latencies) * 1000:.1f}  mean {statistics.fmean(latencies) * 1000:.1f}")
    print(f"cpu: server {server_cpu:.1f} s ({server_cpu / len(latencies) * 1000:.2f} ms/request), "
          f"clients {client_cpu:.1f} s ({client_cpu / len(latencies) * 1000:.2f} ms/request)")
    print(f"p99 target {P99_TARGET_MS:.0f} ms: {'met' if p99 <= P99_TARGET_MS else 'MISSED'}")
    if errors:
        print("first errors:", errors[:5])
    print(json.dumps({
        "clients": args.clients, "think_ms": args.think_ms, "services": args.services, "plans": args.plans,
        "db": db, "cpus": os.cpu_count(), "requests_ok": len(latencies), "errors": len(errors),
        "elapsed_s": round(elapsed, 2), "req_per_s": round(len(latencies) / elapsed, 1),
        "latency_ms": {"p50": round(pct(latencies, 50), 1), "p90": round(pct(latencies, 90), 1),
                       "p99": round(p99, 1), "max": round(max(latencies) * 1000, 1),
                       "mean": round(statistics.fmean(latencies) * 1000, 1)},
        "server_cpu_s": round(server_cpu, 1), "server_cpu_ms_per_request": round(server_cpu / len(latencies) * 1000, 2),
        "client_cpu_s": round(client_cpu, 1), "client_cpu_ms_per_request": round(client_cpu / len(latencies) * 1000, 2),
        "p99_target_ms": P99_TARGET_MS, "p99_target_met": p99 <= P99_TARGET_MS,
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
