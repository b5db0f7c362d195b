"""`medscreen serve` feeding a real MLLP listener and a FHIR receiver: results and priority changes reach the
RIS and the EMR; a RIS that is down and a medscreen killed (-9) and restarted in between lose nothing and
repeat nothing acknowledged."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import dcmread

from benchmarks.study_factory import wrap_radiograph
from tests.conftest import FIXTURES, free_port
from tests.fhir_receiver import fhir_receiver
from tests.inference.conftest import requires_dcmtk, storescu
from tests.peers import MedscreenService, wait_for
from tests.worklist.ris_peer import Received, RisListener

pytestmark = [pytest.mark.integration, requires_dcmtk]
KERMANY = FIXTURES / "datasets" / "kermany" / "train"


def _outbox(home: Path) -> list[tuple[str, str, int]]:
    with sqlite3.connect(home / "medscreen.db") as db:
        return db.execute("SELECT key, state, attempts FROM outbox_messages WHERE channel = 'hl7' ORDER BY id").fetchall()


def _oru_for(ris: RisListener, accession: str) -> Received | None:
    for received in ris.accepted():
        if received.structure == "ORU_R01":
            obr = received.message.oru_r01_patient_result.oru_r01_order_observation.obr
            if obr.obr_3.to_er7() == accession:
                return received
    return None


def _observations(received: Received) -> dict[str, str]:
    group = received.message.oru_r01_patient_result.oru_r01_order_observation
    return {o.obx.obx_3.ce_1.value: o.obx.obx_5.to_er7() for o in group.oru_r01_observation}


def test_ris_gets_results_and_priorities_through_an_outage_and_a_restart(
    tmp_path: Path, medscreen_service: Callable[..., MedscreenService]
) -> None:
    ris = RisListener("127.0.0.1", free_port())
    ris.start()
    with fhir_receiver() as emr:
        _run(tmp_path, medscreen_service, ris, emr)


def _run(tmp_path: Path, medscreen_service: Callable[..., MedscreenService], ris: RisListener, emr) -> None:  # type: ignore[no-untyped-def]
    service = medscreen_service(
        fhir_push_url=emr.url, fhir_retry_s=1,
        quiet_period_s=1, worklist_recompute_s=0.5, outbox_poll_s=0.3,
        # The ACK wait is generous: the test RIS validates every message strictly (hl7apy, slow on a loaded CI
        # machine), and an ACK later than the wait is rightly sent again, which this test counts as a repeat.
        ris_host="127.0.0.1", ris_port=ris.port, ris_retry_s=1, ris_timeout_s=30,
        ris_sending_facility="ST ELSEWHERE", ris_receiving_application="TESTRIS",
    )
    headers = service.token_headers()
    first = wrap_radiograph(KERMANY / "PNEUMONIA" / "person1000_virus_1681.jpeg", tmp_path / "a.dcm", patient_id="P1")
    second = wrap_radiograph(KERMANY / "NORMAL" / "IM-0115-0001.jpeg", tmp_path / "b.dcm", patient_id="P2")
    for path in (first, second):
        # Inside the chest-xray model's intended use (children aged 1-5): a study without an age is not scored.
        ds = dcmread(path)
        ds.PatientAge = "003Y"
        ds.save_as(path, enforce_file_format=True)
    accession = {path: str(dcmread(path, stop_before_pixels=True).AccessionNumber) for path in (first, second)}
    uid = {path: str(dcmread(path, stop_before_pixels=True).StudyInstanceUID) for path in (first, second)}

    assert "Success" in storescu(service.dicom_port, first)
    oru = wait_for(lambda: _oru_for(ris, accession[first]), 120, "the first result at the RIS")
    champion = service.study(headers, uid[first])["results"][0]
    values = _observations(oru)
    assert abs(float(values["PROB"]) - champion["score"]) < 1e-6
    assert values["CALL"] == champion["call"] and values["MODELVER"] == champion["model_version"]
    assert values["MODEL"] == champion["model_name"] == "chest-xray"
    assert oru.message.msh.msh_4.to_er7() == "ST ELSEWHERE" and oru.message.msh.msh_5.to_er7() == "TESTRIS"
    wait_for(lambda: any(r.structure == "OMI_O23" for r in ris.accepted()), 30, "a priority change at the RIS")
    report = wait_for(lambda: next((r for key, r in emr.resources.items() if key.startswith("DiagnosticReport/")
                                    and uid[first] in r["imagingStudy"][0]["identifier"]["value"]), None),
                      30, "the first result at the EMR")
    probability = emr.resources[report["result"][0]["reference"]]
    assert probability["valueQuantity"]["value"] == round(champion["score"], 6)
    device = emr.resources[probability["device"]["reference"]]
    assert (device["deviceName"][0]["name"], device["version"][0]["value"]) == ("chest-xray", champion["model_version"])
    assert not emr.invalid

    # The RIS goes down; a second study is scored while it is away; medscreen is killed and restarted.
    ris.stop()
    assert "Success" in storescu(service.dicom_port, second)
    # Killed once the second study's result is in the outbox and has been tried: what was acknowledged to
    # the PACS and stored must reach the RIS after the restart.
    def second_result_waiting() -> bool:
        pending = [(key, attempts) for key, state, attempts in _outbox(service.home) if state == "pending"]
        # Sent in order: the oldest waiting message is the one being tried, the result waits behind it.
        return any(key.startswith("MSR") for key, _ in pending) and pending[0][1] >= 1

    wait_for(second_result_waiting, 180, "the second result to wait in the outbox while the RIS is down")
    service.kill()
    service.start()
    wait_for(lambda: any(state == "pending" and attempts >= 2 for _, state, attempts in _outbox(service.home)), 60,
             "the restarted service to try again")
    ris.start()
    wait_for(lambda: _oru_for(ris, accession[second]), 60, "the second result after the RIS is back")
    wait_for(lambda: all(state == "sent" for _, state, _ in _outbox(service.home)), 30, "every message acknowledged")

    accepted = [r.control_id for r in ris.accepted()]
    assert len(accepted) == len(set(accepted)), "an acknowledged message was sent again"
    assert sorted(accepted) == sorted(key for key, _, _ in _outbox(service.home))
    assert not ris.errors
    second_values = _observations(_oru_for(ris, accession[second]))  # type: ignore[arg-type]
    assert second_values["PROB"] and second_values["CALL"] in ("positive", "negative")
    ris.stop()
