"""A fault-injecting proxy in front of the real API server, for the controller's fault-tolerance test.

It terminates TLS with the API server's own certificate (from the test control plane's PKI directory, valid
for 127.0.0.1), so clients keep verifying against the cluster CA, and forwards every request over TLS to the
real API server. A share ``rate`` of the requests (watches excepted) fails, drawn from a seeded generator:

- ``500`` / ``503`` / ``429``: answered by the proxy with a Status, never forwarded;
- ``reset``: the connection is dropped before the request is forwarded;
- ``lost``: the request is forwarded and done by the API server, then the connection is dropped before the
  answer (the client cannot know that its write went through).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import ssl
import threading
from collections import Counter
from pathlib import Path

import aiohttp
from aiohttp import web

FAULTS = ("500", "503", "429", "reset", "lost")
_HOP = {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}


class FaultProxy:
    """Runs on 127.0.0.1 in a thread of its own; ``url`` is where clients go instead of ``upstream``."""

    def __init__(self, upstream: str, pki: Path, rate: float, seed: int = 0) -> None:
        self.upstream = upstream.rstrip("/")
        self.pki = pki
        self.rate = rate
        self.rng = random.Random(seed)
        self.faults: Counter[str] = Counter()
        self.requests = 0
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: self._loop.run_until_complete(self._serve()), daemon=True)

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)  # the dropped connections are on purpose
        server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_tls.load_cert_chain(self.pki / "apiserver.crt", self.pki / "apiserver.key")
        upstream_tls = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=upstream_tls)) as session:
            app = web.Application(client_max_size=64 << 20)

            async def handle(request: web.Request) -> web.StreamResponse:
                return await self._handle(request, session)

            app.router.add_route("*", "/{tail:.*}", handle)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_tls)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self.url = f"https://127.0.0.1:{port}"
            self._ready.set()
            await self._stop.wait()
            await runner.cleanup()

    async def _handle(self, request: web.Request, session: aiohttp.ClientSession) -> web.StreamResponse:
        self.requests += 1
        watch = request.query.get("watch") in ("true", "1")
        fault = self.rng.choice(FAULTS) if not watch and self.rng.random() < self.rate else ""
        if fault:
            self.faults[fault] += 1
        if fault in ("500", "503", "429"):
            code = int(fault)
            body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
                    "reason": {500: "InternalError", 503: "ServiceUnavailable", 429: "TooManyRequests"}[code],
                    "message": f"injected by the fault proxy ({fault})"}
            return web.Response(status=code, text=json.dumps(body), content_type="application/json",
                                headers={"Retry-After": "0"} if code == 429 else None)
        if fault == "reset":
            assert request.transport is not None
            request.transport.close()
            raise ConnectionResetError("injected: connection dropped")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        async with session.request(request.method, self.upstream + request.path_qs, headers=headers,
                                   data=await request.read(), timeout=aiohttp.ClientTimeout(total=None)) as up:
            if fault == "lost":
                await up.read()
                assert request.transport is not None
                request.transport.close()
                raise ConnectionResetError("injected: answer lost")
            response = web.StreamResponse(status=up.status, headers={
                k: v for k, v in up.headers.items() if k.lower() not in _HOP})
            await response.prepare(request)
            async for chunk in up.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the fault proxy did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def kubeconfig(self, original: Path, into: Path) -> Path:
        """A copy of ``original`` that points at the proxy (same CA, same credentials)."""
        import yaml

        config = yaml.safe_load(original.read_text(encoding="utf-8"))
        for cluster in config["clusters"]:
            cluster["cluster"]["server"] = self.url
        into.write_text(yaml.safe_dump(config), encoding="utf-8")
        return into
