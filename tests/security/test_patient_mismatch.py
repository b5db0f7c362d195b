"""Another patient's instance does not join a stored study (security review D5).

A new SOP instance carrying an existing StudyInstanceUID and another PatientID had been stored in that study,
which went to a new revision and was scored again, with the other patient's image in it.
"""

from __future__ import annotations

import logging

import pytest
from pydicom import Dataset, dcmread
from pydicom.uid import generate_uid
from pynetdicom import AE
from sqlalchemy import select

from inference.ingest import InstanceIngestor
from inference.tables import QuarantinedItem, Study
from service.settings import Settings
from tests.security.bombs import CT


def _instance(patient_id: str) -> Dataset:
    ds = dcmread(CT)
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientID = patient_id
    return ds


def _study(ingestor: InstanceIngestor, study_uid: str) -> tuple[int, int, str]:
    with ingestor.engine.connect() as connection:
        row = connection.execute(
            select(Study.instance_count, Study.revision, Study.patient_id).where(Study.study_instance_uid == study_uid)
        ).one()
    return row.instance_count, row.revision, row.patient_id


def test_an_instance_of_another_patient_is_refused_and_the_study_left_as_it_was(
    ingestor: InstanceIngestor, dimse_server, sqlite_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    first = _instance("MRN-0001")
    ae = AE(ae_title="PACS")
    ae.add_requested_context(first.SOPClassUID, "1.2.840.10008.1.2.1")
    assoc = ae.associate("127.0.0.1", sqlite_settings.dicom_port, ae_title="MEDSCREEN")
    assert assoc.is_established
    try:
        assert assoc.send_c_store(first).Status == 0x0000
        before = _study(ingestor, first.StudyInstanceUID)

        intruder = _instance("OTHER-999")
        status = assoc.send_c_store(intruder)
        assert status.Status == 0xA900, "refused, as an instance that does not match its study"
        assert _study(ingestor, first.StudyInstanceUID) == before, "the study is untouched"

        # The same patient's next instance still joins the study.
        assert assoc.send_c_store(_instance("MRN-0001")).Status == 0x0000
        assert _study(ingestor, first.StudyInstanceUID)[0] == before[0] + 1
    finally:
        assoc.release()

    with ingestor.engine.connect() as connection:
        quarantined = connection.execute(
            select(QuarantinedItem.kind, QuarantinedItem.reason, QuarantinedItem.sop_instance_uid, QuarantinedItem.path)
        ).all()
    assert len(quarantined) == 1
    kind, reason, sop_instance_uid, path = quarantined[0]
    assert kind == "patient-mismatch" and sop_instance_uid == intruder.SOPInstanceUID and path is not None
    assert reason.startswith("patient identity differs from the study's (")
    assert "OTHER-999" not in reason and "MRN-0001" not in reason, "digests only, no patient identifiers"
    assert "OTHER-999" not in caplog.text and "MRN-0001" not in caplog.text
