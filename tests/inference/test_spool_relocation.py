"""A home copied as the README's backup says (``cp -a var ...``) and started on another path: the instance and
quarantine paths the database recorded name the new home's files (they had named the old home's: WADO-RS answered
404 "no longer in the spool (retention)" for every study received before the move)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import select

from inference.errors import IngestError
from inference.ingest import InstanceIngestor
from inference.spool_relocation import relocate_recorded_paths
from inference.tables import Instance, QuarantinedItem
from service.db import make_engine, make_session_factory
from service.settings import Settings
from tests.inference.conftest import INFERENCE_FIXTURES


def _received_and_refused(ingestor: InstanceIngestor, incoming_copy) -> None:  # noqa: ANN001 - fixture
    ingestor.accept_file(incoming_copy(INFERENCE_FIXTURES / "images" / "dx_chest_highdicom.dcm"), source="dimse")
    junk = ingestor.spool.new_incoming_path()
    junk.write_bytes(b"not a DICOM file" * 64)
    with pytest.raises(IngestError):
        ingestor.accept_file(junk, source="dimse")
    ingestor.engine.dispose()


def _recorded(settings: Settings) -> list[str]:
    engine = make_engine(settings.resolved_database_url)
    try:
        with engine.connect() as connection:
            return [*connection.scalars(select(Instance.path)), *connection.scalars(select(QuarantinedItem.path))]
    finally:
        engine.dispose()


def _relocate(settings: Settings) -> list[int]:
    engine = make_engine(settings.resolved_database_url)
    try:
        moved = relocate_recorded_paths(make_session_factory(engine), settings.spool_dir / "studies",
                                        settings.quarantine_dir)
        return [m.rows for m in moved]
    finally:
        engine.dispose()


def test_a_home_restored_on_a_new_path_records_its_own_files(
    sqlite_settings: Settings, ingestor: InstanceIngestor, incoming_copy, tmp_path: Path  # noqa: ANN001
) -> None:
    _received_and_refused(ingestor, incoming_copy)
    new = sqlite_settings.model_copy(update={"home": tmp_path / "new-server" / "var"})
    new.home.parent.mkdir()
    subprocess.run(["cp", "-a", str(sqlite_settings.home), str(new.home)], check=True)
    shutil.rmtree(sqlite_settings.home)

    assert _relocate(new) == [1, 1]
    paths = _recorded(new)
    assert len(paths) == 2
    for path in paths:
        assert path.startswith(f"{new.home}/") and Path(path).is_file(), path
    assert _relocate(new) == [], "a second start has nothing to move"


def test_on_postgresql_the_paths_follow_the_spool(
    settings: Settings, postgres_database_url: str, tmp_path: Path
) -> None:
    """The same rewrite on PostgreSQL (a home whose database is elsewhere): the spool moved to another disk, the old
    one gone."""
    from inference.receive.process import build_ingestor
    from medscreen.schema import migrate_all

    old = settings.model_copy(update={"database_url": postgres_database_url, "spool_path": tmp_path / "old-disk"})
    migrate_all(postgres_database_url)
    settings.home.mkdir(parents=True, exist_ok=True)
    ingestor = build_ingestor(old)
    target = ingestor.spool.new_incoming_path()
    shutil.copyfile(INFERENCE_FIXTURES / "images" / "dx_chest_highdicom.dcm", target)
    ingestor.accept_file(target, source="dimse")
    ingestor.engine.dispose()
    new = old.model_copy(update={"spool_path": tmp_path / "new-disk"})
    shutil.copytree(tmp_path / "old-disk", tmp_path / "new-disk")
    shutil.rmtree(tmp_path / "old-disk")

    assert _relocate(new) == [1]
    (path,) = [p for p in _recorded(new) if "/studies/" in p]
    assert path.startswith(f"{tmp_path / 'new-disk' / 'studies'}/") and Path(path).is_file()


def test_a_copy_started_beside_its_original_reads_its_own_files(
    sqlite_settings: Settings, ingestor: InstanceIngestor, incoming_copy, tmp_path: Path  # noqa: ANN001
) -> None:
    """`cp -a var var.before-upgrade`, then the copy started: it must not read (or let retention remove) the
    original's files."""
    _received_and_refused(ingestor, incoming_copy)
    copy = sqlite_settings.model_copy(update={"home": tmp_path / "var.before-upgrade"})
    subprocess.run(["cp", "-a", str(sqlite_settings.home), str(copy.home)], check=True)

    assert _relocate(copy) == [1, 1]
    assert all(path.startswith(f"{copy.home}/") for path in _recorded(copy))
    assert all(path.startswith(f"{sqlite_settings.home}/") for path in _recorded(sqlite_settings))


def test_paths_of_an_old_folder_still_holding_the_files_are_left(
    sqlite_settings: Settings, ingestor: InstanceIngestor, incoming_copy, tmp_path: Path  # noqa: ANN001
) -> None:
    """MEDSCREEN_SPOOL_PATH pointed at a new, empty disk without copying the files: the recorded files are where they
    were, and the paths keep naming them."""
    _received_and_refused(ingestor, incoming_copy)
    before = _recorded(sqlite_settings)
    moved = sqlite_settings.model_copy(update={"spool_path": tmp_path / "new-disk" / "spool"})

    assert _relocate(moved) == []
    assert _recorded(sqlite_settings) == before
