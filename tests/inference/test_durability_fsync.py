"""What a power loss cannot take back, and what refused files may cost (mutation review 3: Q1, Q2, Q9, Q10, Q11).

The fsyncs are observed, not mocked away: ``inference.spool``'s own ``fsync_file`` and ``fsync_dir`` still run, and
each call is recorded with its path, so an acknowledged instance's bytes and its folder's entry for it are seen
flushed before the instance is recorded (the SIGKILL tests cannot see a lost fsync). The real ingestor on SQLite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import select

import inference.ingest
import inference.spool
from inference.errors import MissingAttribute, NotDicom
from inference.ingest import InstanceIngestor
from inference.receive.process import build_ingestor
from inference.tables import QuarantinedItem
from service.db import make_session_factory
from service.settings import Settings
from tests.inference.conftest import INFERENCE_FIXTURES

DX_CHEST = INFERENCE_FIXTURES / "images" / "dx_chest_highdicom.dcm"


@pytest.fixture
def fsynced(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Path]]:
    """Every fsync the spool makes, in order: ("file" | "dir", resolved path)."""
    calls: list[tuple[str, Path]] = []
    real_file, real_dir = inference.spool.fsync_file, inference.spool.fsync_dir

    def fsync_file(path: Path) -> None:
        calls.append(("file", Path(path).resolve()))
        real_file(path)

    def fsync_dir(path: Path) -> None:
        calls.append(("dir", Path(path).resolve()))
        real_dir(path)

    monkeypatch.setattr(inference.spool, "fsync_file", fsync_file)
    monkeypatch.setattr(inference.spool, "fsync_dir", fsync_dir)
    return calls


def _incoming(ingestor: InstanceIngestor, data: bytes) -> Path:
    target = ingestor.spool.new_incoming_path()
    target.write_bytes(data)
    return target


def _rows(ingestor: InstanceIngestor) -> list[QuarantinedItem]:
    with make_session_factory(ingestor.engine)() as session:
        return list(session.scalars(select(QuarantinedItem).order_by(QuarantinedItem.id)))


def test_a_stored_instance_is_flushed_and_named_durably_before_it_is_recorded(
    ingestor: InstanceIngestor, fsynced: list[tuple[str, Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    received = _incoming(ingestor, DX_CHEST.read_bytes())
    seen_at_record: list[list[tuple[str, Path]]] = []
    real_record = inference.ingest.record_instance

    def record_instance(*args, **kwargs):  # type: ignore[no-untyped-def]
        seen_at_record.append(list(fsynced))
        return real_record(*args, **kwargs)

    monkeypatch.setattr(inference.ingest, "record_instance", record_instance)
    stored = ingestor.accept_file(received, source="dimse", calling_ae="PACS")
    final = Path(stored.path).resolve()
    assert final.is_file() and not received.exists()
    [before] = seen_at_record
    assert ("file", received.resolve()) in before  # the bytes, under their incoming name, before any link to them
    assert ("dir", final.parent) in before  # the series folder's entry for the final name
    assert before.index(("file", received.resolve())) < before.index(("dir", final.parent))


def test_a_quarantined_file_is_named_durably(ingestor: InstanceIngestor, fsynced: list[tuple[str, Path]]) -> None:
    with pytest.raises(MissingAttribute):
        ingestor.accept_file(
            _incoming(ingestor, (INFERENCE_FIXTURES / "bad" / "missing_uids.dcm").read_bytes()), source="dimse"
        )
    [row] = _rows(ingestor)
    kept = Path(row.path).resolve()
    assert kept.is_file()
    assert ("file", kept.with_suffix(".json")) in fsynced and ("dir", kept.parent) in fsynced


def test_refused_files_are_kept_within_the_quarantine_quota(sqlite_settings: Settings) -> None:
    ingestor = build_ingestor(sqlite_settings.model_copy(update={"quarantine_max_mb": 1}))
    try:
        for _ in range(2):  # two different 0.6 MB files that are not DICOM
            with pytest.raises(NotDicom):
                ingestor.accept_file(_incoming(ingestor, os.urandom(600_000)), source="dimse", calling_ae="MOD1")
        first, second = _rows(ingestor)
    finally:
        ingestor.engine.dispose()
    assert first.path is not None and Path(first.path).is_file() and "quota" not in first.reason
    assert second.path is None and second.size == 600_000
    assert second.reason.endswith("(file not kept: quarantine is at its 1 MB quota)")
    assert len([p for p in ingestor.spool.quarantine.rglob("*.dcm")]) == 1


def test_the_same_refused_file_again_is_counted_on_its_row_not_kept_again(ingestor: InstanceIngestor) -> None:
    data = (INFERENCE_FIXTURES / "bad" / "missing_uids.dcm").read_bytes()
    for _ in range(3):
        with pytest.raises(MissingAttribute):
            ingestor.accept_file(_incoming(ingestor, data), source="dimse", calling_ae="MOD1")
    [row] = _rows(ingestor)
    assert row.repeats == 3 and row.last_at is not None
    assert [p.name for p in ingestor.spool.quarantine.rglob("*.dcm")] == [Path(row.path).name]
    assert not any(ingestor.spool.incoming.iterdir())
