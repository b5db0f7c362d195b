"""The service branch of the migrations on SQLite and PostgreSQL: tables, triggers, idempotence."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from sqlalchemy import inspect, text

from medscreen.schema import alembic_config_all, migrate_all
from service.db import make_engine


def test_migrate_creates_service_tables_and_is_idempotent(database_url: str) -> None:
    migrate_all(database_url)
    migrate_all(database_url)
    engine = make_engine(database_url)
    try:
        inspector = inspect(engine)
        tables = set(inspector.get_table_names())
        assert {"users", "user_roles", "audit_events", "alembic_version"} <= tables
        assert {c["name"] for c in inspector.get_columns("audit_events")} == {
            "id",
            "at",
            "actor",
            "action",
            "subject_type",
            "subject_id",
            "detail",
        }
        with engine.connect() as connection:
            if engine.dialect.name == "postgresql":
                triggers = connection.execute(
                    text("SELECT tgname FROM pg_trigger WHERE tgrelid = 'audit_events'::regclass AND NOT tgisinternal")
                ).scalars()
            else:
                triggers = connection.execute(
                    text("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit_events'")
                ).scalars()
            assert len(set(triggers)) >= 2
            versions = connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
        from alembic.script import ScriptDirectory

        service_head = ScriptDirectory.from_config(alembic_config_all("sqlite://")).get_revision("service@head")
        assert service_head is not None and service_head.revision in versions
        assert {"outbox_messages", "outbox_cursors"} <= tables
    finally:
        engine.dispose()


def test_service_branch_is_labelled_and_rooted() -> None:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config_all("sqlite://"))
    revision = script.get_revision("3f1a9c2e7b10")
    assert revision is not None
    assert revision.down_revision is None
    assert "service" in revision.branch_labels


def test_platform_applies_only_the_branches_it_is_given(tmp_path) -> None:
    # The platform names no domain package: given only its own branch, it makes only its own tables.
    from service.db import migrate

    url = f"sqlite:///{tmp_path / 'platform.db'}"
    migrate(url, ["service"])
    engine = make_engine(url)
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert {"users", "audit_events"} <= tables
    assert "studies" not in tables


def test_a_first_start_killed_half_way_through_its_migrations_starts_the_next_time(database_url: str) -> None:
    """kill -9 (or SIGTERM, or power) during a first start's migrations: on SQLite each CREATE had been committed
    on its own, so the next start found tables without the revision that made them and failed on every start
    ("table quarantine already exists"). The migrations are one transaction on both backends."""
    # The process kills itself just after creating a table of a late revision: deterministic, unlike a timer.
    script = textwrap.dedent(f"""
        import os, signal
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        @event.listens_for(Engine, "after_cursor_execute")
        def _die(conn, cursor, statement, parameters, context, executemany):
            if statement.lstrip().upper().startswith("CREATE TABLE SERIES"):
                os.kill(os.getpid(), signal.SIGKILL)

        from medscreen.schema import migrate_all
        migrate_all({database_url!r})
    """)
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    engine = make_engine(database_url)
    try:
        assert "quarantine" not in inspect(engine).get_table_names()  # nothing of the killed run was kept
        migrate_all(database_url)
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert {"quarantine", "series", "users", "worklist_entries", "screening_results", "outbox_messages"} <= tables


def test_two_nodes_migrating_an_empty_database_at_once_both_start(database_url: str, tmp_path: Path) -> None:
    """Two nodes started at the same moment on an empty PostgreSQL database: one had failed in the first revision
    (UniqueViolation on alembic_version). The first migrator holds its transaction open after creating the version
    table; the second, started then, waits for it and finds the schema current."""
    created, waiting, seen = tmp_path / "created", tmp_path / "waiting", tmp_path / "seen"
    # The first holds its transaction until the second has asked for the migration lock (a fixed 3 s had been
    # shorter than the second's interpreter start-up on a loaded machine: it then ran after the first, and the
    # test passed without the race it is about). On PostgreSQL it holds until the second is seen waiting on a lock;
    # on SQLite, whose busy wait cannot be seen from outside, for a second more.
    slow = textwrap.dedent(f"""
        import pathlib, time
        from sqlalchemy import create_engine, event, text
        from sqlalchemy.engine import Engine

        def _second_waits():
            deadline = time.monotonic() + 240
            while not pathlib.Path({str(waiting)!r}).exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            if not pathlib.Path({str(waiting)!r}).exists():
                return
            if {database_url!r}.startswith("sqlite"):
                time.sleep(1)
                pathlib.Path({str(seen)!r}).touch()
                return
            probe = create_engine({database_url!r})
            query = text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                         "AND datname = current_database()")
            with probe.connect() as connection:
                while time.monotonic() < deadline:
                    if connection.execute(query).scalar():
                        pathlib.Path({str(seen)!r}).touch()
                        break
                    time.sleep(0.05)
            probe.dispose()

        @event.listens_for(Engine, "after_cursor_execute")
        def _hold(conn, cursor, statement, parameters, context, executemany):
            if statement.lstrip().upper().startswith("CREATE TABLE ALEMBIC_VERSION"):
                pathlib.Path({str(created)!r}).touch()
                _second_waits()

        from medscreen.schema import migrate_all
        migrate_all({database_url!r})
    """)
    # The second says when it asks for the lock: BEGIN IMMEDIATE on SQLite, the advisory lock on PostgreSQL.
    second_script = textwrap.dedent(f"""
        import pathlib
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        @event.listens_for(Engine, "before_cursor_execute")
        def _asking(conn, cursor, statement, parameters, context, executemany):
            if statement.lstrip().upper().startswith("BEGIN IMMEDIATE") or "pg_advisory_xact_lock" in statement:
                pathlib.Path({str(waiting)!r}).touch()

        from medscreen.schema import migrate_all
        migrate_all({database_url!r})
    """)
    first = subprocess.Popen([sys.executable, "-c", slow], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not created.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert created.exists(), first.stderr.read() if first.stderr else ""
        second = subprocess.run([sys.executable, "-c", second_script], capture_output=True, text=True, timeout=300)
        assert first.wait(timeout=300) == 0
    finally:
        if first.poll() is None:
            first.kill()
    assert seen.exists(), "the second migrator never waited for the first: the race was not tested"
    assert second.returncode == 0, second.stderr[-2000:]


def test_a_database_migrated_by_a_newer_release_is_refused_in_one_line(database_url: str, tmp_path: Path) -> None:
    """Going back a version had ended in alembic's "Can't locate revision" traceback (60-80 lines, exit 1)."""
    import os

    import pytest

    from service.errors import DatabaseFromNewerRelease

    migrate_all(database_url)
    engine = make_engine(database_url)
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO alembic_version (version_num) VALUES ('0099_from_the_future')"))
    engine.dispose()
    with pytest.raises(DatabaseFromNewerRelease, match="0099_from_the_future"):
        migrate_all(database_url)
    env = {**os.environ, "MEDSCREEN_HOME": str(tmp_path / "var"), "MEDSCREEN_DATABASE_URL": database_url}
    run = subprocess.run(
        [sys.executable, "-m", "medscreen", "--create-home", "users", "list"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert run.returncode == 2, run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("medscreen users: the database was migrated by a newer medscreen (revision 0099_from_the_future")
    assert "Traceback" not in run.stderr
