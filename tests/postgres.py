"""A real PostgreSQL server for the tests: ``initdb`` in a temporary folder, started on a free loopback port.

``postgres_url`` is one database shared by the whole test session; ``postgres_database_url`` gives each
test a fresh, empty database on the same server (creating one takes tens of milliseconds). The server
refuses to run as root, so as root (CI) it runs as the ``postgres`` user through ``runuser``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.ports import free_port

__all__ = ["PostgresServer", "postgres_server", "postgres_url", "postgres_database_url", "find_postgres_bin"]

SUPERUSER = "medscreen"


def find_postgres_bin() -> Path | None:
    """The newest installed PostgreSQL's bin folder (Debian: /usr/lib/postgresql/<major>/bin)."""
    override = os.environ.get("MEDSCREEN_POSTGRES_BIN")
    candidates = [Path(override)] if override else []
    debian = Path("/usr/lib/postgresql")
    if debian.is_dir():
        candidates += sorted(
            (path / "bin" for path in debian.iterdir() if path.name.isdigit()),
            key=lambda path: int(path.parent.name),
            reverse=True,
        )
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for candidate in candidates:
        if all((candidate / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return candidate
    return None


@dataclass
class PostgresServer:
    bin_dir: Path
    root: Path
    port: int
    run_as: str | None

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _run(self, *command: str) -> subprocess.CompletedProcess[str]:
        prefix = ["runuser", "-u", self.run_as, "--"] if self.run_as else []
        result = subprocess.run(
            [*prefix, *command], capture_output=True, text=True, timeout=120, cwd=self.root, check=False
        )
        if result.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text()[-3000:] if log.exists() else ""
            raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr}\n{tail}")
        return result

    def start(self) -> None:
        self._run(
            str(self.bin_dir / "initdb"),
            "--pgdata",
            str(self.data_dir),
            "--username",
            SUPERUSER,
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--locale",
            "C",
            "--no-sync",
        )
        # Durability is pointless for a throw-away test database; turning it off keeps the tests fast on
        # a shared 2-core machine. The socket goes to our folder: /var/run/postgresql may not exist.
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._run(
            str(self.bin_dir / "pg_ctl"),
            "--pgdata",
            str(self.data_dir),
            "--log",
            str(self.root / "server.log"),
            "--options",
            options,
            "--wait",
            "--timeout",
            "60",
            "start",
        )

    def stop(self) -> None:
        self._run(
            str(self.bin_dir / "pg_ctl"), "--pgdata", str(self.data_dir), "--mode", "fast", "--wait", "stop"
        )

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database and return its SQLAlchemy URL."""
        import psycopg

        name = name or f"test_{uuid.uuid4().hex[:12]}"
        dsn = f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname=postgres"
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    bin_dir = find_postgres_bin()
    if bin_dir is None:
        pytest.skip(
            "PostgreSQL binaries (initdb, pg_ctl, postgres) not found under /usr/lib/postgresql/*/bin "
            "or on PATH: install Debian's `postgresql` (make test does) or set MEDSCREEN_POSTGRES_BIN"
        )
    run_as = None
    if os.geteuid() == 0:
        # Under /tmp, not $TMPDIR: the postgres user must be able to reach the folder (a TMPDIR inside
        # /root would not let it).
        root = Path(tempfile.mkdtemp(prefix="medscreen-pg-", dir="/tmp"))
        # initdb and postgres refuse to run as root; hand the folder to the postgres system user.
        run_as = "postgres"
        account = pwd.getpwnam(run_as)
        os.chown(root, account.pw_uid, account.pw_gid)
    else:
        root = Path(tempfile.mkdtemp(prefix="medscreen-pg-"))
    server = PostgresServer(bin_dir=bin_dir, root=root, port=free_port(), run_as=run_as)
    try:
        server.start()
        yield server
    finally:
        if (server.data_dir / "postmaster.pid").exists():
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """A ``postgresql+psycopg://`` URL of one database shared by the whole test session."""
    return postgres_server.create_database("medscreen_test")


@pytest.fixture
def postgres_database_url(postgres_server: PostgresServer) -> str:
    """A ``postgresql+psycopg://`` URL of a fresh, empty database for this test alone."""
    return postgres_server.create_database()
