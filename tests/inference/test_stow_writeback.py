"""STOW-RS write-back to a PACS that only speaks DICOMweb: the SR and heat-map of a real scored radiograph
stored in its study in Orthanc through the DICOMweb plugin; a refused or unreachable endpoint fails the send."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from inference.errors import WritebackFailed
from inference.scorers import score_task
from inference.writeback import ResultToWrite, build_heatmap, build_sr, send_stow_rs
from tests.conftest import free_port
from tests.inference.test_viewer_conformance import KERMANY, _shipped
from tests.peers import DICOMWEB_PLUGIN, Orthanc, start_orthanc, stop_orthanc

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not DICOMWEB_PLUGIN.exists(), reason="orthanc-dicomweb is not installed (make test installs it)"),
]


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    pacs = start_orthanc(tmp_path / "orthanc", dicomweb_servers={})
    yield pacs
    stop_orthanc(pacs)


def test_results_are_stored_by_stow_rs_into_the_study(tmp_path: Path, orthanc: Orthanc) -> None:
    from benchmarks.study_factory import wrap_radiograph

    dx = wrap_radiograph(KERMANY / "PNEUMONIA" / "person1000_virus_1681.jpeg", tmp_path / "dx.dcm")
    orthanc.upload([dx])
    model = _shipped("chest-xray")
    scored = score_task("chest-xray", model, [dcmread(dx)], min_ct_slices=3)
    call = "positive" if scored.score >= model.threshold else "negative"
    result = ResultToWrite("chest-xray", model.name, model.version, model.run_id, model.threshold, call, scored)
    documents = [build_sr(result, series_instance_uid=str(generate_uid())),
                 build_heatmap(result, series_instance_uid=str(generate_uid()))]
    send_stow_rs(documents, base_url=orthanc.dicomweb_url)  # type: ignore[arg-type]

    study_uid = str(dcmread(dx, stop_before_pixels=True).StudyInstanceUID)
    found = orthanc.client.post("/tools/lookup", content=study_uid).json()
    study_id = next(item["ID"] for item in found if item["Type"] == "Study")
    stored = {}
    for instance in orthanc.client.get(f"/studies/{study_id}/instances").json():
        ds = dcmread(io.BytesIO(orthanc.client.get(f"/instances/{instance['ID']}/file").content))
        stored[str(ds.SOPInstanceUID)] = str(ds.Modality)
    assert {str(d.SOPInstanceUID) for d in documents} <= set(stored)  # type: ignore[union-attr]
    assert sorted(stored.values()) == ["DX", "OT", "SR"]  # the radiograph, the heat-map SC, the SR

    with pytest.raises(WritebackFailed, match="STOW-RS"):
        send_stow_rs(documents, base_url=f"http://127.0.0.1:{free_port()}/dicom-web", timeout_s=5)  # type: ignore[arg-type]
    with pytest.raises(WritebackFailed, match="STOW-RS"):
        send_stow_rs(documents, base_url=f"{orthanc.dicomweb_url}/no-such-root", timeout_s=5)  # type: ignore[arg-type]
