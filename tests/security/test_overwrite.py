"""First writer wins: a re-sent SOP Instance UID never replaces the stored file (issue 14, High)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import select

from inference.errors import DifferingDuplicate
from inference.ingest import InstanceIngestor
from inference.receive.status import dicom_status_for
from inference.tables import Instance, QuarantinedItem, Study, StudyEvent
from service.db import make_session_factory
from tests.inference.conftest import INFERENCE_FIXTURES, requires_dcmtk, storescu

CT = INFERENCE_FIXTURES / "ct" / "lidc-0002-0.dcm"


def _forged_copy(tmp_path: Path) -> Path:
    """Same UIDs, another patient's name and other pixels: a copy that passes every check on its own."""
    ds = dcmread(CT)
    ds.PatientName = "Other^Patient"
    ds.PatientID = "OTHER-1"
    ds.PixelData = ds.PixelData[::-1]
    forged = tmp_path / "forged.dcm"
    ds.save_as(forged, enforce_file_format=True)
    return forged


def _session(ingestor: InstanceIngestor):
    return make_session_factory(ingestor.engine)()


def test_a_differing_copy_is_kept_aside_and_reported_never_written_over(
    ingestor: InstanceIngestor, incoming_copy, tmp_path: Path
) -> None:
    first = ingestor.accept_file(incoming_copy(CT), source="dimse", calling_ae="PACS")
    original = first.path.read_bytes()

    with pytest.raises(DifferingDuplicate) as refused:
        ingestor.accept_file(incoming_copy(_forged_copy(tmp_path)), source="dimse", calling_ae="EVIL")
    assert dicom_status_for(refused.value) == 0x0111
    assert first.path.read_bytes() == original, "the stored instance was written over"

    with _session(ingestor) as session:
        study = session.scalars(select(Study)).one()
        assert study.patient_name != "Other^Patient" and study.instance_count == 1
        item = session.scalars(select(QuarantinedItem)).one()
        assert item.kind == "differing-duplicate" and item.calling_ae == "EVIL"
        assert item.path is not None and Path(item.path).is_file(), "the differing copy must be kept aside"
        assert dcmread(item.path).PatientName == "Other^Patient"
        events = list(session.scalars(select(StudyEvent.kind).order_by(StudyEvent.id)))
        assert events == ["receiving", "differing-duplicate"]
    assert not any(ingestor.spool.incoming.iterdir())


def test_an_identical_copy_is_acknowledged_and_stored_once(ingestor: InstanceIngestor, incoming_copy) -> None:
    first = ingestor.accept_file(incoming_copy(CT), source="dimse")
    again = ingestor.accept_file(incoming_copy(CT), source="stow-rs")
    assert again.duplicate and again.path == first.path
    with _session(ingestor) as session:
        assert len(session.scalars(select(Instance)).all()) == 1
        assert session.scalars(select(QuarantinedItem)).all() == []
    assert not any(ingestor.spool.incoming.iterdir())


def test_a_file_left_by_a_crash_before_its_commit_is_replaced(
    ingestor: InstanceIngestor, incoming_copy, tmp_path: Path
) -> None:
    # kill -9 between the link and the database commit leaves a named file nobody acknowledged.
    from inference.instance_headers import read_instance_headers

    final = ingestor.spool.path_for(read_instance_headers(CT))
    final.parent.mkdir(parents=True)
    final.write_bytes(b"half a file")
    stored = ingestor.accept_file(incoming_copy(CT), source="dimse")
    assert stored.path == final and final.read_bytes() == CT.read_bytes() and not stored.duplicate


def test_the_same_uid_under_another_study_does_not_replace_the_first(
    ingestor: InstanceIngestor, incoming_copy, tmp_path: Path
) -> None:
    first = ingestor.accept_file(incoming_copy(CT), source="dimse")
    ds = dcmread(CT)
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.PatientName = "Other^Patient"
    moved = tmp_path / "moved.dcm"
    ds.save_as(moved, enforce_file_format=True)
    with pytest.raises(DifferingDuplicate):
        ingestor.accept_file(incoming_copy(moved), source="dimse")
    assert first.path.read_bytes() == CT.read_bytes()
    assert not (ingestor.spool.studies / "1.2.826.0.1.3680043.8.498.1").exists()


@requires_dcmtk
def test_over_c_store_the_differing_copy_gets_0x0111_and_the_file_stays(
    ingestor: InstanceIngestor, dimse_server, sqlite_settings, tmp_path: Path
) -> None:
    assert "(Success)" in storescu(sqlite_settings.dicom_port, CT)
    with _session(ingestor) as session:
        path = Path(session.scalars(select(Instance.path)).one())
    before = path.read_bytes()
    output = storescu(sqlite_settings.dicom_port, _forged_copy(tmp_path))
    assert "Status: 0x111)" in output, output  # dcmtk prints the general failure code unpadded
    assert path.read_bytes() == before
