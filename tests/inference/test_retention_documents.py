"""Retention removes a result's documents (SR, heat-map) with the study's received files, sent or not."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from inference.retention import RetentionCleaner
from inference.spool import Spool
from inference.tables import OutgoingResult, ScoreResult, Study
from service.db import session_scope, utcnow
from service.lifecycle import JobState
from service.tables import AuditEvent
from tests.inference.conftest import INFERENCE_FIXTURES, Pipeline
from worklist.tables import FinalRead

DX = INFERENCE_FIXTURES / "images" / "dx_chest_highdicom.dcm"


def test_unsent_documents_go_with_the_studys_files_unless_a_send_is_under_way(pipeline: Pipeline) -> None:
    """With write-back disabled (no PACS) a scored study's SR and heat-map were never sent, and only sent documents
    had a clock: a year after the final read the film was gone and the heat-map, a copy of the image with the
    patient's name and ID, was still in spool/outgoing."""
    settings = pipeline.settings
    pipeline.receive(DX)
    pipeline.complete_route_and_score()
    now = utcnow()
    with session_scope(pipeline.worker.session_factory) as session:
        study = session.scalars(select(Study)).one()
        result = session.scalars(select(ScoreResult)).one()
        assert result.writeback_state == "disabled" and result.sr_sop_instance_uid and result.heatmap_sop_instance_uid
        session.add(FinalRead(study_id=study.id, study_instance_uid=study.study_instance_uid, revision=study.revision,
                              reader="rita", read_at=now, note="", waited_s=60.0, tier_at_read="routine"))
        study_uid, sr, heatmap = study.study_instance_uid, result.sr_sop_instance_uid, result.heatmap_sop_instance_uid
    spool = Spool(settings.spool_dir, settings.quarantine_dir)
    folder = spool.outgoing_folder(study_uid)
    assert {p.stem for p in folder.iterdir()} == {sr, heatmap}
    cleaner = RetentionCleaner(settings, pipeline.worker.session_factory, spool)

    assert cleaner.run_once(now + timedelta(days=settings.retention_read_days - 1)).outgoing_files == 0
    assert {p.stem for p in folder.iterdir()} == {sr, heatmap}  # not before the study's own clock

    # A send still under way (a PACS configured since) keeps the document it names.
    with session_scope(pipeline.worker.session_factory) as session:
        session.add(OutgoingResult(study_id=study.id, folder=study_uid, sop_instance_uids=[sr], destination={},
                                   state=JobState.retry, attempts=1, next_attempt_at=now, created_at=now))
    report = cleaner.run_once(now + timedelta(days=settings.retention_read_days + 1))
    assert report.studies == 1 and report.outgoing_files == 1
    assert {p.stem for p in folder.iterdir()} == {sr}
    with session_scope(pipeline.worker.session_factory) as session:
        session.execute(OutgoingResult.__table__.update().values(state=JobState.dead))
        audits = session.scalars(select(AuditEvent).where(AuditEvent.action == "retention.remove")).all()
        assert any((a.detail or {}).get("what") == "result documents" for a in audits)
    assert cleaner.run_once(now + timedelta(days=settings.retention_read_days + 2)).outgoing_files == 1
    assert not folder.exists()
