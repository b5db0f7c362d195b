"""Whatever stops a write-back is a failed attempt with its reason (retried, then dead), never a row left running.

A PACS that accepted the association but no context for Comprehensive 3D SR made pynetdicom raise ValueError;
it escaped the dispatcher, the row stayed ``running`` forever, attempts climbing past the maximum, nothing on
the timeline (review defect 6). Real pynetdicom Storage SCPs, the real pipeline.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pynetdicom import AE, StoragePresentationContexts
from pynetdicom.transport import ThreadedAssociationServer
from sqlalchemy import select

from inference.outgoing import outgoing_dir
from inference.tables import OutgoingResult, ScoreResult, Study
from inference.worker import ScoringWorker
from inference.worker_process import build_worker
from tests.inference.conftest import INFERENCE_FIXTURES, Pipeline
from tests.ports import free_port

DX_CHEST = INFERENCE_FIXTURES / "images" / "dx_chest_highdicom.dcm"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def _pacs(port: int, *, secondary_capture_only: bool) -> ThreadedAssociationServer:
    ae = AE(ae_title="PACS")
    contexts = StoragePresentationContexts
    if secondary_capture_only:
        contexts = [cx for cx in contexts if cx.abstract_syntax == SECONDARY_CAPTURE]
    ae.supported_contexts = contexts
    return ae.start_server(("127.0.0.1", port), block=False)


@pytest.fixture
def pacs_port() -> Iterator[int]:
    yield free_port()


def _scored_worker(pipeline: Pipeline, port: int) -> ScoringWorker:
    settings = pipeline.settings.model_copy(
        update={"pacs_ae_title": "PACS", "pacs_host": "127.0.0.1", "pacs_port": port, "dispatch_retry_base_s": 0.0,
                "dispatch_max_attempts": 2}
    )
    worker = build_worker(settings)
    pipeline.receive(DX_CHEST)
    pipeline.monitor.run_once()
    worker.enqueue_routed()
    scored = worker.process_one()
    assert not isinstance(scored, bool) and len(scored.document_uids) == 2
    return worker


def _assert_dead_with(worker: ScoringWorker, words: str) -> None:
    with worker.session_factory() as session:
        outgoing = session.scalars(select(OutgoingResult)).one()
        result = session.scalars(select(ScoreResult)).one()
        study = session.scalars(select(Study)).one()
        kinds = [event.kind for event in study.events]
        assert (outgoing.state, outgoing.attempts, result.writeback_state) == ("dead", 2, "failed")
        assert words in (outgoing.last_error or ""), outgoing.last_error
        assert kinds[-2:] == ["write-back-retry", "write-back-dead"]


def test_a_pacs_refusing_the_sr_class_fails_the_attempt_and_names_the_class(pipeline: Pipeline, pacs_port: int) -> None:
    server = _pacs(pacs_port, secondary_capture_only=True)
    try:
        worker = _scored_worker(pipeline, pacs_port)
        first = worker.dispatcher.dispatch_one()
        assert first is not None and not first.sent
        assert "accepts no presentation context for Comprehensive 3D SR Storage" in (first.error or "")
        assert worker.dispatch_ready() != []  # the second (last) attempt, due at once
        assert worker.dispatch_ready() == []  # dead: never claimed again
    finally:
        server.shutdown()
    _assert_dead_with(worker, "Comprehensive 3D SR Storage")


def test_a_stored_document_that_no_longer_parses_is_a_failed_attempt(pipeline: Pipeline, pacs_port: int) -> None:
    server = _pacs(pacs_port, secondary_capture_only=False)
    try:
        worker = _scored_worker(pipeline, pacs_port)
        with worker.session_factory() as session:
            outgoing = session.scalars(select(OutgoingResult)).one()
            sr = outgoing_dir(worker.settings) / outgoing.folder / f"{outgoing.sop_instance_uids[0]}.dcm"
        sr.write_bytes(b"not DICOM any more")
        worker.dispatch_ready()
        worker.dispatch_ready()
    finally:
        server.shutdown()
    _assert_dead_with(worker, "InvalidDicomError")
