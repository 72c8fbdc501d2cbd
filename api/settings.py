"""Settings of the REST API, read from ``MEDLEY_*`` environment variables (pydantic-settings)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from platformdirs import user_data_dir
from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_database_url() -> str:
    """SQLite file in the user's data directory: the embedded default of ``medley serve``."""
    path = Path(user_data_dir("medley", appauthor=False)) / "medley.db"
    return f"sqlite+pysqlite:///{path}"


class Settings(BaseSettings):
    """Everything the app factory needs; tests pass an instance, ``medley serve`` reads the environment."""

    model_config = SettingsConfigDict(env_prefix="MEDLEY_", extra="ignore")

    database_url: str = Field(default_factory=default_database_url, description="SQLAlchemy URL")
    auto_migrate: bool = Field(default=True, description="upgrade the schema to head at start-up")
    max_body_bytes: int = Field(default=1 << 20, ge=1024, description="larger request bodies get 413")
    job_workers: int = Field(default=2, ge=1, le=64, description="planning jobs run at once")
    job_time_limit_s: float = Field(default=120.0, gt=0, description="a planning job is failed after this")
    job_heartbeat_s: float = Field(default=10.0, gt=0, le=300, description=(
        "how often a process marks its planning jobs alive; after 3 silent beats other processes (or the "
        "next start) take its queued jobs over and fail its running ones"))
    whatif_time_limit_s: float = Field(default=20.0, gt=0, description="synchronous what-if budget")
    whatif_max_services: int = Field(default=50, ge=1, description="what-ifs larger than this go to jobs")
    whatif_max_pools: int = Field(default=50, ge=1)
    token_cache_s: float = Field(default=5.0, ge=0, le=300,
                                 description="how long a checked token is trusted before it is looked up again")
    provisioner: Literal["kubernetes", "record"] = Field(default="kubernetes", description=(
        "kubernetes: apply approved plans to the cluster of MEDLEY_KUBECONFIG (else in-cluster, else "
        "~/.kube/config; 503 when there is none); record: only record the request"))
    kubeconfig: str | None = Field(default=None, description="kubeconfig of the cluster plans are applied to")
    create_namespaces: bool = Field(default=False, description="create missing team namespaces on apply")
    verify_duration_s: float = Field(default=300.0, gt=0, le=3600,
                                     description="seconds of Poisson traffic replayed to verify a new plan")
    require_shared_database: bool = Field(default=False, description=(
        "refuse to start on SQLite: set where several API replicas run (the shipped Deployment does)"))
    input_dirs: str = Field(default="", description=(
        "directories (separated by ':') from which the files a fleet names are read: a service's "
        "traffic.trace_file, planner.perf_profile; relative names are read from the first. Empty (the default): "
        "no such file is read (upload a trace to POST /v1/traces for its buckets)"))
    max_trace_bytes: int = Field(default=8 << 20, ge=1024, le=1 << 30,
                                 description="largest trace read from an input directory or uploaded")
    planner_memory_mb: int = Field(default=4096, ge=0, description=(
        "address space of each planning worker process (0: no limit); a worker over it fails its job"))
    whatif_per_team: int = Field(default=2, ge=1, le=64, description="synchronous what-ifs a team runs at once")
    whatif_concurrency: int = Field(default=4, ge=1, le=64, description="synchronous what-ifs run at once")
    jobs_per_team: int = Field(default=4, ge=1, le=1000, description="queued and running planning jobs per team")

    @property
    def input_roots(self) -> list[Path]:
        """The input directories, in order."""
        return [Path(p.strip()) for p in self.input_dirs.split(":") if p.strip()]

    @model_validator(mode="after")
    def _shared(self) -> Settings:
        if self.require_shared_database and self.database_url.startswith("sqlite"):
            raise ValueError("MEDLEY_DATABASE_URL: several API replicas cannot share SQLite (each would keep its "
                             "own file); set a PostgreSQL URL (the Secret medley-db, key url) or run one replica "
                             "with MEDLEY_REQUIRE_SHARED_DATABASE=false")
        return self

    @field_validator("database_url")
    @classmethod
    def _driver(cls, url: str) -> str:
        # A bare postgresql:// URL would pick psycopg2, which is not installed; psycopg 3 is.
        if url.startswith("postgresql://") or url.startswith("postgres://"):
            url = "postgresql+psycopg://" + url.split("://", 1)[1]
        scheme = url.split("://", 1)[0] if "://" in url else ""
        backend, _, driver = scheme.partition("+")
        if backend not in ("sqlite", "postgresql") or (backend == "postgresql" and driver not in ("", "psycopg")) \
                or (backend == "sqlite" and driver not in ("", "pysqlite")):
            raise ValueError(f"unsupported database {scheme or url[:20]!r}: use sqlite:///PATH or "
                             "postgresql://USER:PASSWORD@HOST/DB")
        return url
