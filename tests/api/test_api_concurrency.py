"""50 parallel If-Match updates of one service: one winner per version, the rest 412, nothing lost."""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from apitest_client import Api
from apitest_fakes import service_doc

CLIENTS = 50


def test_parallel_updates_one_winner_per_version(api: Api) -> None:
    h = api.headers("assistants", "planner")
    c = api.client
    assert c.post("/v1/services", json=service_doc(allowed_pools=[]), headers=h).status_code == 201

    # Round 1: everyone read version 1 and writes at once.
    barrier = threading.Barrier(CLIENTS)

    def blind(i: int) -> int:
        barrier.wait(10)
        body = service_doc(allowed_pools=[f"blind-{i}"])
        return c.put("/v1/services/chat", json=body, headers={**h, "If-Match": '"1"'}).status_code

    with ThreadPoolExecutor(CLIENTS) as pool:
        codes = list(pool.map(blind, range(CLIENTS)))
    assert codes.count(200) == 1 and codes.count(412) == CLIENTS - 1, codes
    current = c.get("/v1/services/chat", headers=h)
    assert current.headers["etag"] == '"2"'
    winner = current.json()["allowed_pools"]
    assert len(winner) == 1 and winner[0].startswith("blind-")

    # Round 2: each client adds its own pool with read-modify-write, retrying on 412; none may be lost.
    barrier = threading.Barrier(CLIENTS)

    def add(i: int) -> str:
        barrier.wait(10)
        rng = random.Random(i)
        for attempt in range(500):
            got = c.get("/v1/services/chat", headers=h)
            body = got.json()
            body["allowed_pools"] = [*body["allowed_pools"], f"pool-{i}"]
            r = c.put("/v1/services/chat", json=body, headers={**h, "If-Match": got.headers["etag"]})
            if r.status_code == 200:
                return r.headers["etag"]
            assert r.status_code == 412, r.text
            time.sleep(rng.uniform(0, min(0.4, 0.01 * 2**attempt)))  # exponential backoff, as clients do
        raise AssertionError("no progress")

    with ThreadPoolExecutor(CLIENTS) as pool:
        results = list(pool.map(add, range(CLIENTS)))
    etags = sorted(int(e.strip('"')) for e in results)
    assert etags == list(range(3, 3 + CLIENTS))  # exactly one success per version
    final = c.get("/v1/services/chat", headers=h).json()
    assert sorted(final["allowed_pools"]) == sorted([*winner, *(f"pool-{i}" for i in range(CLIENTS))])
    admin = api.headers("platform", "admin")
    audit = c.get("/v1/audit", params={"resource_kind": "service", "limit": 500}, headers=admin).json()
    assert [e["action"] for e in audit].count("update") == 1 + CLIENTS
