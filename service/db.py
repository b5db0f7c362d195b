"""Database engine, sessions and migrations.

Each package keeps its own tables (``inference/tables.py``, ...) on the shared :class:`Base` and its own
Alembic branch under ``<package>/migrations/versions``. The platform knows no domain package: the list of
branches to apply is passed in (``medscreen.schema`` names them all and applies ``heads``).
SQLite is the embedded default (WAL, ``synchronous=FULL`` so a committed row survives power loss, not
only a crash); PostgreSQL works through ``MEDSCREEN_DATABASE_URL``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import DateTime, Engine, TypeDecorator, create_engine, event
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from service.errors import DatabaseFromNewerRelease

__all__ = ["Base", "UTCDateTime", "utcnow", "make_engine", "make_session_factory", "migrate", "session_scope",
           "alembic_config"]


class Base(DeclarativeBase):
    pass


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always returned timezone-aware (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    # Several receiving processes write; wait for the lock instead of failing a C-STORE.
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def make_engine(url: str, *, serialise_writes: bool = False) -> Engine:
    """Create an engine; ``serialise_writes`` makes every SQLite transaction ``BEGIN IMMEDIATE``.

    Writers that read then update (ingest, completeness) need it on SQLite: a deferred transaction that
    upgrades to a write after another process committed fails at once with SQLITE_BUSY instead of waiting.
    Bound parameters are hidden from SQLAlchemy's exception text and echo: a failed write (a lock held past the
    busy timeout, a full disk, a lost connection) is logged with its traceback, and the parameters of a screening
    or audit row are a child's name, record number and study UIDs.
    """
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, hide_parameters=True)
        event.listen(engine, "connect", _sqlite_pragmas)
        if serialise_writes:
            # Take over transaction control from the sqlite3 module so BEGIN can be IMMEDIATE.
            event.listen(engine, "connect", lambda dbapi_connection, _record: setattr(
                dbapi_connection, "isolation_level", None))
            event.listen(engine, "begin", lambda connection: connection.exec_driver_sql("BEGIN IMMEDIATE"))
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=20, max_overflow=40, hide_parameters=True)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def _version_locations(packages: Sequence[str]) -> list[str]:
    """``<package>/migrations/versions`` of each named package, found without importing the package."""
    locations = []
    for package in packages:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        versions = Path(next(iter(spec.submodule_search_locations))) / "migrations" / "versions"
        if versions.is_dir():
            locations.append(str(versions))
    return locations


def alembic_config(url: str, packages: Sequence[str]) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    config.set_main_option("version_locations", " ".join(_version_locations(packages)))
    config.set_main_option("path_separator", "space")
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrate(url: str, packages: Sequence[str]) -> None:
    """Bring the database to the newest schema of the named packages' branches (idempotent).

    ``packages`` is passed in by the composition root (``medscreen.schema.migrate_all``), so the platform
    never lists the domain packages itself.

    A database migrated by a newer release is refused before anything is done (``DatabaseFromNewerRelease``):
    going back a version had ended in alembic's "Can't locate revision" traceback, with nothing said of what to do.
    """
    config = alembic_config(url, packages)
    _refuse_unknown_revisions(config, url)
    command.upgrade(config, "heads")


def _refuse_unknown_revisions(config: Config, url: str) -> None:
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    known = {script.revision for script in ScriptDirectory.from_config(config).walk_revisions()}
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            applied = set(MigrationContext.configure(connection).get_current_heads())
    finally:
        engine.dispose()
    unknown = sorted(applied - known)
    if unknown:
        raise DatabaseFromNewerRelease(
            f"the database was migrated by a newer medscreen (revision {', '.join(unknown)}, which this release does "
            "not know); run that release, or restore the backup taken before upgrading (README, Upgrading)"
        )
