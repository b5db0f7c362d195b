"""Build once, send many: a result's SR and heat-map are stored at scoring time and a failed send retries the
same files (same SOP Instance UIDs), against a real pynetdicom Storage SCP that is down at first."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.transport import ThreadedAssociationServer
from sqlalchemy import select

from inference.outgoing import outgoing_dir
from inference.tables import OutgoingResult, ScoreResult, ScoringJob, Study
from tests.inference.conftest import Pipeline
from tests.inference.test_scoring import DX_CHEST
from tests.ports import free_port


class StorageScp:
    """A real C-STORE SCP recording the SOP Instance UIDs it accepts."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.received: list[str] = []
        self._lock = threading.Lock()
        self.server: ThreadedAssociationServer | None = None

    def _on_store(self, event: evt.Event) -> int:
        with self._lock:
            self.received.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    def start(self) -> None:
        ae = AE(ae_title="PACS")
        ae.supported_contexts = AllStoragePresentationContexts
        self.server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._on_store)])

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()


@pytest.fixture
def pacs() -> Iterator[StorageScp]:
    scp = StorageScp(free_port())
    yield scp
    scp.stop()


def test_a_failed_send_is_retried_with_the_same_stored_documents_and_never_rescored(
    pipeline: Pipeline, pacs: StorageScp
) -> None:
    settings = pipeline.settings.model_copy(
        update={"pacs_ae_title": "PACS", "pacs_host": "127.0.0.1", "pacs_port": pacs.port, "dispatch_retry_base_s": 0.0}
    )
    from inference.worker_process import build_worker

    worker = build_worker(settings)
    pipeline.receive(DX_CHEST)
    pipeline.monitor.run_once()
    worker.enqueue_routed()
    scored = worker.process_one()
    assert not isinstance(scored, bool) and scored.outcome == "scored" and len(scored.document_uids) == 2

    # Stored before any send: the files are under spool/outgoing and the row says where they go.
    folder = outgoing_dir(settings) / scored.study_instance_uid
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{uid}.dcm" for uid in scored.document_uids)
    stored_bytes = {p.name: p.read_bytes() for p in folder.iterdir()}

    # The PACS is down: the send fails, the result stays pending, nothing is re-scored.
    first = worker.dispatcher.dispatch_one()
    assert first is not None and not first.sent and "association" in (first.error or "")
    with worker.session_factory() as session:
        outgoing = session.scalars(select(OutgoingResult)).one()
        result = session.scalars(select(ScoreResult)).one()
        assert (outgoing.state, outgoing.attempts, result.writeback_state) == ("retry", 1, "pending")
        assert outgoing.destination == {"kind": "c-store", "ae_title": "PACS", "host": "127.0.0.1", "port": pacs.port}

    pacs.start()
    second = worker.dispatcher.dispatch_one()
    assert second is not None and second.sent
    assert sorted(pacs.received) == sorted(scored.document_uids)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == stored_bytes  # nothing rebuilt
    with worker.session_factory() as session:
        result = session.scalars(select(ScoreResult)).one()
        job = session.scalars(select(ScoringJob)).one()
        study = session.scalars(select(Study)).one()
        assert result.writeback_state == "sent" and (result.sr_sop_instance_uid, result.heatmap_sop_instance_uid) == scored.document_uids
        assert (job.state, job.attempts) == ("done", 1)  # the model ran once
        kinds = [e.kind for e in study.events]
        assert kinds.count("scored") == 1 and kinds[-2:] == ["write-back-retry", "written-back"]
    assert worker.dispatcher.dispatch_one() is None  # sent once, never again


def test_a_send_that_keeps_failing_is_marked_failed_and_keeps_its_files(pipeline: Pipeline, tmp_path: Path) -> None:
    settings = pipeline.settings.model_copy(
        update={"pacs_ae_title": "PACS", "pacs_host": "127.0.0.1", "pacs_port": free_port(),
                "dispatch_retry_base_s": 0.0, "dispatch_max_attempts": 2}
    )
    from inference.worker_process import build_worker

    worker = build_worker(settings)
    pipeline.receive(DX_CHEST)
    pipeline.monitor.run_once()
    worker.run_once()
    with worker.session_factory() as session:
        outgoing = session.scalars(select(OutgoingResult)).one()
        result = session.scalars(select(ScoreResult)).one()
        study = session.scalars(select(Study)).one()
    assert (outgoing.state, outgoing.attempts, result.writeback_state) == ("dead", 2, "failed")
    assert study.status == "scored"  # the score stands; only its delivery failed
    assert all((outgoing_dir(settings) / outgoing.folder / f"{uid}.dcm").is_file() for uid in outgoing.sop_instance_uids)
