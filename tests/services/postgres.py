"""A throwaway PostgreSQL 15 cluster (Debian binaries) on a free loopback port.

initdb into a temporary directory, ``pg_ctl start``, one role + database; everything runs as the ``postgres``
system user through ``runuser`` when the tests run as root (PostgreSQL refuses to run as root).
Session scoped. If the binaries are missing the fixture FAILS (no skip): the tests need a real database.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

PG_BIN = Path(os.environ.get("KHEOPS_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PostgresService:
    host: str
    port: int
    user: str
    password: str
    dbname: str
    datadir: Path
    _as_postgres: list[str]

    @property
    def conninfo(self) -> str:
        """Full conninfo, password included (tests only)."""
        return f"host={self.host} port={self.port} user={self.user} password={self.password} dbname={self.dbname}"

    @property
    def url(self) -> str:
        """URL without the password (as KHEOPS_GW_DATABASE_URL takes it)."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.dbname}"

    def superuser_conninfo(self, dbname: str = "postgres") -> str:
        return f"host={self.host} port={self.port} user=postgres dbname={dbname}"

    def create_database(self, name: str) -> str:
        """A fresh, empty database owned by the test role; returns its URL (password not included)."""
        self._psql(f'CREATE DATABASE "{name}" OWNER "{self.user}"')
        return f"postgresql://{self.user}@{self.host}:{self.port}/{name}"

    def drop_database(self, name: str) -> None:
        self._psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def pg_ctl(self, *args: str) -> None:
        subprocess.run([*self._as_postgres, str(PG_BIN / "pg_ctl"), "-D", str(self.datadir), "-w", *args],
                       check=True, capture_output=True, timeout=60)

    def stop(self) -> None:
        self.pg_ctl("stop", "-m", "fast")

    def start(self) -> None:
        self.pg_ctl("start", "-l", str(self.datadir.parent / "postgres.log"))

    def _psql(self, sql: str) -> None:
        subprocess.run([*self._as_postgres, str(PG_BIN / "psql"), "-h", self.host, "-p", str(self.port), "-U",
                        "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-qc", sql],
                       check=True, capture_output=True, timeout=60)


def start_postgres() -> PostgresService:
    if not (PG_BIN / "initdb").exists():
        raise RuntimeError(f"PostgreSQL binaries not found in {PG_BIN}: apt-get install postgresql (15)")
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    workdir = Path(tempfile.mkdtemp(prefix="kheops-test-pg-"))
    datadir = workdir / "data"
    if os.geteuid() == 0:
        shutil.chown(workdir, "postgres", "postgres")
    workdir.chmod(0o700)
    port = free_port()
    password = secrets.token_urlsafe(16)
    result = subprocess.run(
        [*as_postgres, str(PG_BIN / "initdb"), "-D", str(datadir), "-U", "postgres", "--auth-local=trust",
         "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8"],
        capture_output=True, text=True, timeout=120,
    )
    if result.returncode != 0:
        shutil.rmtree(workdir, ignore_errors=True)
        raise RuntimeError(f"initdb failed: {result.stderr.strip()}")
    with open(datadir / "postgresql.conf", "a") as conf:
        conf.write(
            f"\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{workdir}'\n"
            "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 200\n"
            "shared_buffers = 64MB\n"
        )
    # superuser over TCP without password from loopback (test cluster only); the test role needs its password
    (datadir / "pg_hba.conf").write_text(
        "local all all trust\nhost all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
    )
    service = PostgresService("127.0.0.1", port, "kheops", password, "kheops", datadir, as_postgres)
    try:
        service.start()
        service._psql(f"CREATE ROLE kheops LOGIN PASSWORD '{password}' CREATEDB")
        service._psql("CREATE DATABASE kheops OWNER kheops")
    except Exception:
        stop_postgres(service)
        raise
    return service


def stop_postgres(service: PostgresService) -> None:
    try:
        service.pg_ctl("stop", "-m", "immediate")
    except Exception:  # noqa: BLE001 - best effort, then remove the files anyway
        pid_file = service.datadir / "postmaster.pid"
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text().split()[0]), 9)
            except (ValueError, ProcessLookupError, PermissionError):
                pass
    shutil.rmtree(service.datadir.parent, ignore_errors=True)
