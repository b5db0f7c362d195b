"""The service branch of the migrations on SQLite and PostgreSQL: tables, triggers, idempotence."""

from __future__ import annotations

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
