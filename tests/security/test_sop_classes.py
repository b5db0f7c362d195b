"""Every storage SOP class gets a per-instance answer, retired ones included, and nothing is left in incoming."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE, _config
from pynetdicom.presentation import AllStoragePresentationContexts, StoragePresentationContexts
from sqlalchemy import select

from inference.ingest import InstanceIngestor
from inference.receive.dimse import retired_storage_classes
from inference.tables import NotScoredInstance
from service.db import make_session_factory
from tests.inference.conftest import INFERENCE_FIXTURES

CT = INFERENCE_FIXTURES / "ct" / "lidc-0002-0.dcm"
_COMMON = {context.abstract_syntax for context in StoragePresentationContexts}
# Storage classes outside pynetdicom's default 120: newer ones (parametric maps, ...) and retired ones (old US, NM).
OUTSIDE_DEFAULT = sorted(
    {str(c.abstract_syntax) for c in AllStoragePresentationContexts if c.abstract_syntax not in _COMMON}
    | set(retired_storage_classes())
)


def _as_class(tmp_path: Path, sop_class_uid: str) -> Path:
    ds = dcmread(CT)
    ds.SOPClassUID = sop_class_uid
    ds.file_meta.MediaStorageSOPClassUID = sop_class_uid
    target = tmp_path / f"{sop_class_uid}.dcm"
    ds.save_as(target, enforce_file_format=True)
    return target


def test_retired_storage_classes_are_acknowledged_as_ignored_and_leave_nothing_in_incoming(
    ingestor: InstanceIngestor, dimse_server, sqlite_settings, tmp_path: Path
) -> None:
    retired = ["1.2.840.10008.5.1.4.1.1.6", "1.2.840.10008.5.1.4.1.1.3", "1.2.840.10008.5.1.4.1.1.5"]
    assert set(retired) <= set(OUTSIDE_DEFAULT)
    for start in range(0, len(OUTSIDE_DEFAULT), 100):  # at most 128 presentation contexts per association
        batch = OUTSIDE_DEFAULT[start : start + 100]
        ae = AE(ae_title="OLDMODALITY")
        for uid in [*batch, CTImageStorage]:
            ae.add_requested_context(uid, ExplicitVRLittleEndian)
        assoc = ae.associate("127.0.0.1", sqlite_settings.dicom_port, ae_title="MEDSCREEN")
        assert assoc.is_established
        try:
            statuses = [assoc.send_c_store(_as_class(tmp_path, uid)).Status for uid in batch]
            # Issue 11: valid DICOM medscreen does not score is acknowledged (a refusal aborts a PACS batch)
            # and recorded as ignored with the reason.
            assert statuses == [0x0000] * len(batch)
            # The association carries on after the refusals.
            assert assoc.send_c_store(CT).Status == 0x0000
        finally:
            assoc.release()
    assert not any(ingestor.spool.incoming.iterdir())
    with make_session_factory(ingestor.engine)() as session:
        ignored = session.scalars(select(NotScoredInstance).where(NotScoredInstance.kind == "ignored")).all()
    # Every copy carries the CT's SOP Instance UID: one record, counting each arrival.
    assert sum(row.times_received for row in ignored) == len(OUTSIDE_DEFAULT)
    assert all("medscreen scores no such object" in row.reason for row in ignored)


def _meta_only(target: Path, body: bytes) -> Path:
    """A Part 10 file whose data set is ``body`` (b"": a zero-length data set), sent as it is."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.8.498.77"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    buffer.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(buffer, meta, enforce_standard=True)
    target.write_bytes(buffer.getvalue() + body)
    return target


@pytest.mark.parametrize("body", [b"", b"\x08\x00\x05\x00CS\x0a\x00ISO_IR 100"], ids=["zero-length", "header-only"])
def test_an_empty_data_set_is_answered_at_once(
    ingestor: InstanceIngestor, dimse_server, sqlite_settings, tmp_path: Path, body: bytes, monkeypatch
) -> None:
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)  # send the file's bytes as they are
    ae = AE(ae_title="EMPTY")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", sqlite_settings.dicom_port, ae_title="MEDSCREEN")
    assert assoc.is_established
    started = time.monotonic()
    try:
        status = assoc.send_c_store(_meta_only(tmp_path / "empty.dcm", body))
        elapsed = time.monotonic() - started
        assert status and status.Status not in (0x0000,), status
        # The association is still usable: the next instance is stored.
        assert assoc.send_c_store(CT).Status == 0x0000
    finally:
        assoc.release()
    # At once (a fraction of a second), not after waiting for a data set that never comes: that runs into the peer's
    # 20 s timeout. 15 s leaves room for a loaded machine.
    assert elapsed < 15, f"the answer took {elapsed:.1f} s"
    assert not any(ingestor.spool.incoming.iterdir())
