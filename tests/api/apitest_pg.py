"""A throwaway PostgreSQL cluster for integration tests (initdb into a temp dir, pg_ctl on loopback)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg


def pg_bin_dir() -> Path | None:
    """Directory of Debian's PostgreSQL server binaries (newest version), or of ``initdb`` on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgCluster:
    """A running cluster: superuser ``medley`` over TCP on 127.0.0.1, trust auth (loopback only)."""

    root: Path
    bin_dir: Path
    port: int
    run_as: list[str]

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://medley@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A fresh, empty database; returns its SQLAlchemy URL."""
        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=medley dbname=postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        subprocess.run([*self.run_as, str(self.bin_dir / "pg_ctl"), "-D", str(self.root / "data"), "-m",
                        "immediate", "stop"], check=False, capture_output=True, timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)


def start_cluster() -> PgCluster:
    """initdb + pg_ctl start; as the ``postgres`` user when running as root (initdb refuses root)."""
    bin_dir = pg_bin_dir()
    if bin_dir is None:
        raise FileNotFoundError("PostgreSQL server binaries (initdb, pg_ctl) not found")
    root = Path(tempfile.mkdtemp(prefix="medley-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    data, sock = root / "data", root
    subprocess.run([*run_as, str(bin_dir / "initdb"), "-D", str(data), "-U", "medley", "-A", "trust",
                    "-E", "UTF8", "--no-sync"], check=True, capture_output=True, timeout=120)
    port = _free_port()
    opts = (f"-p {port} -c listen_addresses=127.0.0.1 -k {sock} -c fsync=off -c synchronous_commit=off "
            "-c full_page_writes=off -c max_connections=200 -c shared_buffers=64MB")
    subprocess.run([*run_as, str(bin_dir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(root / "log"),
                    "-w", "-t", "60", "start"], check=True, capture_output=True, timeout=90)
    return PgCluster(root=root, bin_dir=bin_dir, port=port, run_as=run_as)
