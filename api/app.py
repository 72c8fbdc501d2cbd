"""The app factory: ``create_app(settings)`` wires storage, auth, jobs and routers into a FastAPI app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import migrate
from api.auth import TokenCache
from api.db import Database
from api.deps import Services
from api.jobs import JobRunner, Planner, Recovered, default_planner
from api.limits import TeamLimits
from api.middleware import ApiMetrics, BodyLimitMiddleware, MetricsMiddleware
from api.problems import install_handlers
from api.provision import KubernetesProvisioner, Provisioner, RecordingProvisioner
from api.routes import audit, catalog, health, plans, pools, power_domains, services, traces, whatif
from api.settings import Settings
from api.verify import ReplayVerifier, Verifier


def provisioner_for(settings: Settings) -> Provisioner:
    """The provisioner the settings ask for: the real one (``MEDLEY_PROVISIONER=kubernetes``) or a recorder."""
    if settings.provisioner == "record":
        return RecordingProvisioner()
    return KubernetesProvisioner(settings.kubeconfig, create_namespaces=settings.create_namespaces)


def create_app(settings: Settings | None = None, *, planner: Planner | None = None,
               provisioner: Provisioner | None = None, verifier: Verifier | None = None) -> FastAPI:
    """Build the API. Planner, provisioner and verifier are injectable; by default the real planner is imported
    lazily, plans are verified by replay, and applies go to the cluster the settings name."""
    cfg = settings or Settings()
    metrics = ApiMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = Database(cfg.database_url)
        if cfg.auto_migrate:
            migrate.upgrade(db.engine)
        def recovered(found: Recovered) -> None:
            metrics.jobs_recovered.labels("adopted").inc(found.adopted)
            metrics.jobs_recovered.labels("failed").inc(found.failed)

        runner = JobRunner(db, planner or default_planner(cfg.planner_memory_mb << 20), workers=cfg.job_workers,
                           on_outcome=lambda outcome: metrics.jobs.labels(outcome).inc(),
                           heartbeat_s=cfg.job_heartbeat_s, on_recovered=recovered,
                           verifier=verifier or ReplayVerifier(duration_s=cfg.verify_duration_s))
        runner.start()
        app.state.services = Services(settings=cfg, db=db, planner=runner.planner,
                                      provisioner=provisioner or provisioner_for(cfg), runner=runner,
                                      metrics=metrics, tokens=TokenCache(cfg.token_cache_s),
                                      limits=TeamLimits(cfg.whatif_per_team, cfg.whatif_concurrency))
        try:
            yield
        finally:
            runner.close()
            db.dispose()

    app = FastAPI(
        title="Medley API",
        version="1.0.0",
        summary="Register pools and services, request plans and what-ifs, review, approve and apply them.",
        lifespan=lifespan,
    )
    install_handlers(app)
    for router in (catalog.router, pools.router, services.router, power_domains.router, plans.router,
                   whatif.router, traces.router, audit.router, health.router):
        app.include_router(router)
    app.add_middleware(BodyLimitMiddleware, max_bytes=cfg.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app
