"""The worklist's Alembic branch creates exactly the tables ``worklist/tables.py`` declares."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

import inference.tables  # noqa: F401  (tables the worklist's refer to)
import worklist.tables as worklist_tables
from medscreen.schema import alembic_config_all, migrate_all
from service.db import Base, make_engine

TABLES = {
    table.name
    for table in Base.metadata.sorted_tables
    if table.name
    in {model.__tablename__ for model in (getattr(worklist_tables, name) for name in worklist_tables.__all__)}
}


def test_branch_is_labelled_and_depends_on_scoring() -> None:
    revision = ScriptDirectory.from_config(alembic_config_all("sqlite://")).get_revision("0001_worklist")
    assert revision is not None and revision.down_revision is None
    assert "worklist" in revision.branch_labels and revision.dependencies == "0002_inference"


def test_migrated_schema_matches_the_tables(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'medscreen.db'}"
    migrate_all(url)
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    finally:
        engine.dispose()
    ours = [d for d in differences if any(name in repr(d) for name in TABLES)]
    assert len(TABLES) == 6 and ours == []
