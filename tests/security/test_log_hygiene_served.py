"""`medscreen serve` at MEDSCREEN_LOG_LEVEL=DEBUG, as an operator turns it on at a live site: a study received over
DICOM, scored (SR and heat-map built), viewed and retrieved; the whole log names no patient and no study in clear."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from pydicom import dcmread
from pydicom.dataelem import DataElement
from pydicom.uid import generate_uid

from tests.inference.conftest import INFERENCE_FIXTURES, requires_dcmtk, storescu
from tests.peers import MedscreenService, wait_for

pytestmark = [pytest.mark.integration, requires_dcmtk]


def _instance(folder: Path, name: str, patient_id: str, birth_date: str) -> Path:
    ds = dcmread(INFERENCE_FIXTURES / "images" / "dx_chest_highdicom.dcm")
    ds.PatientName, ds.PatientID, ds.AccessionNumber = f"{name}^Secret", patient_id, f"ACC{patient_id}"
    ds["PatientBirthDate"] = DataElement(0x00100030, "DA", birth_date)
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path = folder / f"{patient_id}.dcm"
    ds.save_as(path)
    return path


def test_a_service_at_debug_logs_no_patient_and_no_study(
    tmp_path: Path, medscreen_service: Callable[..., MedscreenService]
) -> None:
    scored = _instance(tmp_path, "Leakname", "PIDLEAK4242", "20190101")
    malformed = _instance(tmp_path, "Otherleak", "PIDLEAK5353", "03.12.2019")  # pydicom warns, quoting the value
    service = medscreen_service(quiet_period_s=1, log_level="DEBUG")
    assert "Success" in storescu(service.dicom_port, scored, malformed)
    headers = service.token_headers()
    uid = str(dcmread(scored, stop_before_pixels=True).StudyInstanceUID)

    def scored_study() -> dict[str, object] | None:
        items = service.studies(headers)["items"]
        study = next((item for item in items if item["study_instance_uid"] == uid), None)
        return study if study and study["status"] not in ("receiving", "complete", "routed") else None

    wait_for(scored_study, 120, "the study to be scored")
    for path in (f"/api/studies/{uid}", f"/api/worklist/{uid}", f"/dicomweb/studies/{uid}",
                 "/api/worklist/ACCPIDLEAK4242", "/fhir/RiskAssessment/case-leak-7", "/api/studies?patient=PIDLEAK4242"):
        httpx.get(f"{service.url}{path}", headers=headers, timeout=30)
    service.stop()
    log = service.log_path.read_text()
    assert "/api/worklist/uid:" in log, "the access lines are there, with digests"
    identity = ["Leakname", "Otherleak", "PIDLEAK", "03.12.2019", "case-leak-7"]
    uids = [str(getattr(dcmread(p, stop_before_pixels=True), k)) for p in (scored, malformed)
            for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")]
    leaked = [value for value in identity + uids if value in log]
    assert not leaked, [line for line in log.splitlines() if any(value in line for value in leaked)][:5]
