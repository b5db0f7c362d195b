"""End to end with a real PACS: Orthanc sends wrapped real studies, medscreen scores them and writes the
IHE AI Results back (TID 1500 SR + heat-map SC) into the same study in Orthanc; a re-score by a newly
promoted version supersedes the first SR."""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import highdicom as hd
import httpx
import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from benchmarks.study_factory import wrap_mammogram, wrap_radiograph
from inference.shipped_models import SHIPPED_MODELS_DIR
from tests.conftest import FIXTURES
from tests.inference.conftest import requires_dcmtk
from tests.peers import (
    MedscreenService,
    Orthanc,
    start_orthanc,
    stop_orthanc,
    wait_for,
)

pytestmark = [pytest.mark.integration, requires_dcmtk]
KERMANY = FIXTURES / "datasets" / "kermany" / "train"
MIAS = FIXTURES / "datasets" / "mias"


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    pacs = start_orthanc(tmp_path / "orthanc")
    yield pacs
    stop_orthanc(pacs)


def _orthanc_instances(pacs: Orthanc, study_uid: str) -> list[dict[str, object]]:
    found = pacs.client.post("/tools/lookup", content=study_uid).json()
    study_id = next(item["ID"] for item in found if item["Type"] == "Study")
    return pacs.client.get(f"/studies/{study_id}/instances").json()


def _download(pacs: Orthanc, instance_id: str):
    return dcmread(io.BytesIO(pacs.client.get(f"/instances/{instance_id}/file").content))


def test_studies_from_orthanc_are_scored_and_written_back(
    tmp_path: Path, orthanc: Orthanc, medscreen_service: Callable[..., MedscreenService]
) -> None:
    service = medscreen_service(
        quiet_period_s=30, pacs_ae_title="ORTHANC", pacs_host="127.0.0.1", pacs_port=orthanc.dicom_port,
        model_refresh_s=1, ct_min_slices=3,
    )
    orthanc.client.put(
        "/modalities/medscreen", json={"AET": "MEDSCREEN", "Host": "127.0.0.1", "Port": service.dicom_port}
    ).raise_for_status()
    dx = wrap_radiograph(KERMANY / "PNEUMONIA" / "person1000_virus_1681.jpeg", tmp_path / "dx.dcm", patient_id="P1")
    mg_study = str(generate_uid())
    mg = [
        wrap_mammogram(MIAS / "mdb001.png", tmp_path / "mg1.dcm", laterality="L", study_uid=mg_study, patient_id="P2"),
        wrap_mammogram(MIAS / "mdb002.png", tmp_path / "mg2.dcm", laterality="R", study_uid=mg_study, patient_id="P2"),
    ]
    ct = sorted((FIXTURES / "inference" / "ct").glob("*.dcm"))
    orthanc.store_to("medscreen", orthanc.upload([dx, *mg, *ct]))
    headers = service.token_headers()
    shipped = {task for task in ("chest-xray", "mammography", "ct-chest") if (SHIPPED_MODELS_DIR / task / "model.onnx").exists()}
    assert "chest-xray" in shipped

    def settled() -> list[dict[str, object]] | None:
        items = service.studies(headers)["items"]
        done = [i for i in items if i["status"] in ("scored", "could_not_score") or (i["status"] == "routed" and i["task"] not in shipped)]
        return items if len(items) == 3 and len(done) == 3 else None

    items = wait_for(settled, 90, "every study scored (or waiting for a model that is not shipped)")
    dx_uid = str(dcmread(dx, stop_before_pixels=True).StudyInstanceUID)
    shadow_studies: list[str] = []
    for item in items:
        detail = service.study(headers, str(item["study_instance_uid"]))
        if item["task"] not in shipped:
            assert detail["results"] == []
            continue
        champion = next(r for r in detail["results"] if r["role"] == "champion")
        assert champion["model_name"] == item["task"] and champion["model_version"] == "1"
        if champion["outcome"] == "scored":
            assert 0 <= champion["score"] <= 1 and champion["call"] in ("positive", "negative")
            uid = str(item["study_instance_uid"])
            if champion["steering"] == "shadow":
                # Mammography and CT ship `shadow`: recorded here, never sent to the PACS as a finding.
                shadow_studies.append(uid)
                assert champion["writeback_state"] == "disabled" and champion["sr_sop_instance_uid"] is None
                continue
            assert wait_for(lambda uid=uid: service.study(headers, uid)["results"][0]["writeback_state"] == "sent", 30, "write-back")
        assert "not a diagnosis" in detail["notice"]
    assert shadow_studies, "the shipped mammography and CT versions are shadow"
    for uid in shadow_studies:
        assert {str(_download(orthanc, str(i["ID"])).Modality) for i in _orthanc_instances(orthanc, uid)} <= {"MG", "CT"}

    # The SR and the heat-map are in Orthanc, in the radiograph's study.
    detail = service.study(headers, dx_uid)
    result = detail["results"][0]
    by_modality = {}
    for instance in _orthanc_instances(orthanc, dx_uid):
        ds = _download(orthanc, str(instance["ID"]))
        by_modality.setdefault(str(ds.Modality), []).append(ds)
    (sr,) = by_modality["SR"]
    report = hd.sr.Comprehensive3DSR.from_dataset(sr)
    assert report.SOPInstanceUID == result["sr_sop_instance_uid"]
    def ours(ds):  # highdicom lists itself as contributing equipment too
        return next(item for item in ds.ContributingEquipmentSequence if item.Manufacturer == "medscreen")

    equipment = ours(sr)
    assert (equipment.ManufacturerModelName, equipment.SoftwareVersions) == ("chest-xray", "1")
    groups = hd.sr.utils.find_content_items(sr, name=hd.sr.CodedConcept("PROB", "99MEDSCREEN", "Probability of finding (AI decision support)"), recursive=True)
    assert abs(float(groups[0].MeasuredValueSequence[0].NumericValue) - result["score"]) < 1e-4
    (overlay,) = by_modality["OT"]
    assert overlay.BurnedInAnnotation == "YES" and "NOT FOR DIAGNOSTIC USE" in overlay.ImageComments
    assert overlay.StudyInstanceUID == dx_uid and overlay.SOPInstanceUID == result["heatmap_sop_instance_uid"]

    # Promote a new version; a re-score sends a new SR that names its predecessor.
    from mlflow.tracking import MlflowClient

    from inference.shipped_models import log_onnx_bundle

    uri = f"sqlite:///{service.home / 'mlflow.db'}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        new = log_onnx_bundle(uri, SHIPPED_MODELS_DIR / "chest-xray")
    MlflowClient(uri, uri).set_registered_model_alias("chest-xray", "champion", new.version)
    admin = headers
    response = httpx.post(f"{service.url}/api/studies/{dx_uid}/rescore", headers=admin, timeout=60)
    assert response.status_code == 202 and response.json()["status"] == "routed"
    wait_for(lambda: len([r for r in service.study(headers, dx_uid)["results"] if r["writeback_state"] == "sent"]) == 2, 60, "re-score written back")
    srs = [ds for ds in (_download(orthanc, str(i["ID"])) for i in _orthanc_instances(orthanc, dx_uid)) if ds.Modality == "SR"]
    newest = next(ds for ds in srs if ours(ds).SoftwareVersions == new.version)
    predecessor = newest.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert predecessor.ReferencedSOPInstanceUID == sr.SOPInstanceUID
    assert ours(newest).DeviceUID != ours(sr).DeviceUID
