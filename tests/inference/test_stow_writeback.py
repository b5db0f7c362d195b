"""STOW-RS write-back to a PACS that only speaks DICOMweb: the SR and heat-map of a real scored radiograph,
stored once in spool/outgoing, sent by the dispatcher into its study in Orthanc through the DICOMweb plugin;
an unreachable or refusing endpoint fails the send and the dispatcher retries the same files."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid
from sqlalchemy import select

from benchmarks.study_factory import wrap_radiograph
from inference.dispatch import Dispatcher
from inference.errors import WritebackFailed
from inference.ingest import InstanceIngestor
from inference.outgoing import pacs_destination, queue_outgoing, store_documents
from inference.scorers import score_task
from inference.tables import OutgoingResult, Study
from inference.writeback import ResultToWrite, build_heatmap, build_sr, send_stow_rs
from service.db import make_session_factory, session_scope, utcnow
from service.settings import Settings
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


def _modalities_in(orthanc: Orthanc, study_uid: str) -> dict[str, str]:
    found = orthanc.client.post("/tools/lookup", content=study_uid).json()
    study_id = next(item["ID"] for item in found if item["Type"] == "Study")
    stored = {}
    for instance in orthanc.client.get(f"/studies/{study_id}/instances").json():
        ds = dcmread(io.BytesIO(orthanc.client.get(f"/instances/{instance['ID']}/file").content))
        stored[str(ds.SOPInstanceUID)] = str(ds.Modality)
    return stored


def test_stored_results_are_dispatched_by_stow_rs_into_the_study(
    tmp_path: Path, orthanc: Orthanc, sqlite_settings: Settings, ingestor: InstanceIngestor, incoming_copy
) -> None:  # type: ignore[no-untyped-def]
    dx = wrap_radiograph(KERMANY / "PNEUMONIA" / "person1000_virus_1681.jpeg", tmp_path / "dx.dcm")
    orthanc.upload([dx])
    ingestor.accept_file(incoming_copy(dx), source="dimse", calling_ae="ORTHANC")
    model = _shipped("chest-xray")
    scored = score_task("chest-xray", model, [dcmread(dx)], min_ct_slices=3)
    call = "positive" if scored.score >= model.threshold else "negative"
    result = ResultToWrite("chest-xray", model.name, model.version, model.run_id, model.threshold, call, scored)
    heatmap = build_heatmap(result, series_instance_uid=str(generate_uid()))
    assert heatmap is not None
    documents = [build_sr(result, series_instance_uid=str(generate_uid())), heatmap]
    study_uid = str(dcmread(dx, stop_before_pixels=True).StudyInstanceUID)

    # First to an endpoint that is not there: the send fails and is retried with the same stored files.
    down = sqlite_settings.model_copy(update={
        "pacs_stow_url": f"http://127.0.0.1:{free_port()}/dicom-web", "dispatch_retry_base_s": 0.0,
    })
    up = down.model_copy(update={"pacs_stow_url": orthanc.dicomweb_url})
    factory = make_session_factory(ingestor.engine)
    with session_scope(factory) as session:
        study_id = session.scalar(select(Study.id).where(Study.study_instance_uid == study_uid))
        uids = store_documents(down, study_uid, documents)
        destination = pacs_destination(down)
        assert destination == {"kind": "stow-rs", "url": down.pacs_stow_url}
        queue_outgoing(session, study_id=study_id, score_result_id=None, folder=study_uid, sop_instance_uids=uids,
                       destination=destination, now=utcnow())
    failed = Dispatcher(down, factory).dispatch_one()
    assert failed is not None and not failed.sent and "STOW-RS" in (failed.error or "")
    with session_scope(factory) as session:
        session.execute(OutgoingResult.__table__.update().values(destination={"kind": "stow-rs", "url": up.pacs_stow_url}))
    sent = Dispatcher(up, factory).dispatch_one()
    assert sent is not None and sent.sent, sent

    stored = _modalities_in(orthanc, study_uid)
    assert set(uids) <= set(stored)
    assert sorted(stored.values()) == ["DX", "OT", "SR"]  # the radiograph, the heat-map SC, the SR

    with pytest.raises(WritebackFailed, match="STOW-RS"):
        send_stow_rs(documents, base_url=f"{orthanc.dicomweb_url}/no-such-root", timeout_s=5)
