"""With a real Orthanc (issue 11): an auto-routing rule that forwards every stable study to medscreen, and so
forwards medscreen's own results back, never makes a loop; a mixed batch never aborts."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from benchmarks.study_factory import wrap_mammogram, wrap_radiograph
from tests.conftest import FIXTURES
from tests.inference.conftest import requires_dcmtk
from tests.inference.test_intake import KO_STORAGE, PR_STORAGE, SR_STORAGE, _non_image
from tests.peers import MedscreenService, start_orthanc, stop_orthanc, wait_for

pytestmark = [pytest.mark.integration, requires_dcmtk]
KERMANY = FIXTURES / "datasets" / "kermany" / "train"
MIAS = FIXTURES / "datasets" / "mias"
CT = sorted((FIXTURES / "inference" / "ct").glob("*.dcm"))

# Orthanc's ordinary auto-routing: every study that is stable (no new instance for StableAge) goes to the AI node,
# whole (Lua's SendToModality takes one instance, so the study goes through the REST store call).
AUTO_ROUTE = """
function OnStableStudy(studyId, tags, metadata)
  RestApiPost('/modalities/medscreen/store', studyId)
end
"""


def patiently(condition: Callable[[], object]) -> Callable[[], object]:
    """A poll that counts a slow answer (a loaded CI machine) as "not yet" instead of failing the test."""

    def poll() -> object:
        try:
            return condition()
        except httpx.TimeoutException:
            return False

    return poll


def _modalities_in_orthanc(orthanc, study_uid: str) -> list[str]:
    found = orthanc.client.post("/tools/lookup", content=study_uid).json()
    study_id = next(item["ID"] for item in found if item["Type"] == "Study")
    return sorted(
        str(dcmread(io.BytesIO(orthanc.client.get(f"/instances/{i['ID']}/file").content), stop_before_pixels=True).Modality)
        for i in orthanc.client.get(f"/studies/{study_id}/instances").json()
    )


def test_auto_routing_orthanc_gets_one_sr_and_one_heatmap_per_study(
    tmp_path: Path, medscreen_service: Callable[..., MedscreenService]
) -> None:
    # Long enough for Orthanc's one store call per study even on a loaded machine (at 4 s, with a load average of 14,
    # the MG study completed between its two images and re-opened); each quiet period is waited three times below.
    quiet = 6
    rules = tmp_path / "auto-route.lua"
    rules.write_text(AUTO_ROUTE)
    orthanc = start_orthanc(tmp_path / "orthanc", extra_config={"LuaScripts": [str(rules)]})
    try:
        # The shipped mammography version is `shadow`: its results are sent here so that Orthanc has an MG study's
        # SR and heat-map to forward back (the loop under test).
        service = medscreen_service(
            quiet_period_s=quiet, pacs_ae_title="ORTHANC", pacs_host="127.0.0.1", pacs_port=orthanc.dicom_port,
            writeback_shadow=True,
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
        orthanc.upload([dx, *mg])  # nothing else: Orthanc's Lua rule does the sending
        headers = service.token_headers()
        uids = [str(dcmread(dx, stop_before_pixels=True).StudyInstanceUID), mg_study]

        def written_back() -> bool:
            details = [service.study(headers, uid) for uid in uids if any(
                s["study_instance_uid"] == uid for s in service.studies(headers)["items"])]
            return len(details) == 2 and all(
                any(r["writeback_state"] == "sent" for r in d["results"]) for d in details
            )

        wait_for(patiently(written_back), 300, "both studies scored and written back to Orthanc")
        # Three more quiet periods: Orthanc forwards each changed study again, medscreen's results with it.
        wait_for(
            patiently(lambda: all(len(service.study(headers, uid)["not_scored"]) == 2 for uid in uids)),
            180, "Orthanc forwarding medscreen's own results (SR, heat-map) back",
        )
        time.sleep(3 * (quiet + 2))
        for uid in uids:
            detail = service.study(headers, uid)
            champion = [r for r in detail["results"] if r["role"] == "champion"]
            assert (detail["revision"], len(champion)) == (1, 1), detail["timeline"]
            assert "reopened" not in [e["kind"] for e in detail["timeline"]]
            assert {item["kind"] for item in detail["not_scored"]} == {"derived"}
            in_pacs = _modalities_in_orthanc(orthanc, uid)
            assert in_pacs.count("SR") == 1 and in_pacs.count("OT") == 1, in_pacs
    finally:
        stop_orthanc(orthanc)


def test_results_of_a_study_received_by_stow_rs_go_into_its_own_study_in_the_pacs(
    tmp_path: Path, medscreen_service: Callable[..., MedscreenService]
) -> None:
    orthanc = start_orthanc(tmp_path / "orthanc", dicomweb_servers={})
    try:
        service = medscreen_service(
            quiet_period_s=2, pacs_ae_title="ORTHANC", pacs_host="127.0.0.1", pacs_port=orthanc.dicom_port,
        )
        headers = service.token_headers()
        token = headers["Authorization"].split(" ", 1)[1]
        orthanc.client.put(
            "/dicom-web/servers/medscreen",
            json={"Url": f"{service.url}/dicomweb/", "HttpHeaders": {"Authorization": f"Bearer {token}"}},
        ).raise_for_status()
        dx = wrap_radiograph(KERMANY / "PNEUMONIA" / "person1000_virus_1681.jpeg", tmp_path / "dx.dcm", patient_id="P9")
        (study_id,) = orthanc.upload([dx])
        orthanc.stow_to("medscreen", [study_id])
        uid = str(dcmread(dx, stop_before_pixels=True).StudyInstanceUID)
        wait_for(
            patiently(lambda: any(r["writeback_state"] == "sent" for r in service.study(headers, uid)["results"])
                      if any(s["study_instance_uid"] == uid for s in service.studies(headers)["items"]) else False),
            300, "the STOW-RS study scored and written back",
        )
        # One study in the PACS, holding the image, the SR and the heat-map (not an orphan study of results).
        assert [s for s in orthanc.client.get("/studies").json()] == [study_id]
        assert _modalities_in_orthanc(orthanc, uid) == ["DX", "OT", "SR"]
    finally:
        stop_orthanc(orthanc)


def test_orthanc_mixed_batch_never_aborts_and_every_study_arrives(
    tmp_path: Path, medscreen_service: Callable[..., MedscreenService]
) -> None:
    orthanc = start_orthanc(tmp_path / "orthanc")
    try:
        service = medscreen_service(quiet_period_s=2)
        orthanc.client.put(
            "/modalities/medscreen", json={"AET": "MEDSCREEN", "Host": "127.0.0.1", "Port": service.dicom_port}
        ).raise_for_status()
        others = []
        for sop_class, modality in ((SR_STORAGE, "SR"), (PR_STORAGE, "PR"), (KO_STORAGE, "KO")):
            path = tmp_path / f"{modality}.dcm"
            _non_image(CT[0], sop_class, modality).save_as(path)
            others.append(path)
        no_pixels = FIXTURES / "inference" / "bad" / "no_pixel_data_dx.dcm"
        dx = wrap_radiograph(KERMANY / "NORMAL" / sorted(p.name for p in (KERMANY / "NORMAL").glob("*.jpeg"))[0],
                             tmp_path / "dx.dcm", patient_id="P3")
        # Orthanc sends in its own order; before issue 11 the first refused object stopped the whole job.
        resources = orthanc.upload([*others, CT[0], no_pixels, CT[1], dx, CT[2]])
        job = orthanc.store_to("medscreen", resources)
        assert job.get("FailedInstancesCount", 0) == 0, job
        headers = service.token_headers()
        expected = {str(dcmread(CT[0], stop_before_pixels=True).StudyInstanceUID): 3,
                    str(dcmread(dx, stop_before_pixels=True).StudyInstanceUID): 1}

        def arrived() -> dict[str, int] | None:
            counts = {s["study_instance_uid"]: s["instance_count"] for s in service.studies(headers)["items"]}
            return counts if counts == expected else None

        wait_for(patiently(arrived), 180, "every image study to arrive (and nothing else to become a study)")
        ct = service.study(headers, next(iter(expected)))
        assert sorted((item["kind"], item["modality"]) for item in ct["not_scored"]) == [
            ("ignored", "KO"), ("ignored", "PR"), ("ignored", "SR")
        ]
        assert "reopened" not in [e["kind"] for e in ct["timeline"]]
    finally:
        stop_orthanc(orthanc)
