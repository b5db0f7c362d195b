"""The retention cleaner (issue 10 item 6): files past their time go, each removal audited; nothing unread goes."""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import select, update

from inference.errors import MissingAttribute
from inference.ingest import InstanceIngestor
from inference.retention import RetentionCleaner
from inference.spool import Spool
from inference.tables import OutgoingResult, QuarantinedItem, Study, StudyEvent
from service.db import make_session_factory, session_scope, utcnow
from service.lifecycle import JobState, StudyStatus
from service.tables import AuditEvent
from tests.inference.conftest import INFERENCE_FIXTURES
from worklist.tables import FinalRead

CT = INFERENCE_FIXTURES / "ct" / "lidc-0002-0.dcm"
DX = INFERENCE_FIXTURES / "images" / "dx_chest_highdicom.dcm"


def _copy(ingestor: InstanceIngestor, source: Path) -> Path:
    target = ingestor.spool.new_incoming_path()
    target.write_bytes(source.read_bytes())
    return target


def test_files_past_their_time_go_audited_and_nothing_unread_goes(ingestor: InstanceIngestor, tmp_path: Path) -> None:
    factory = make_session_factory(ingestor.engine)
    read = ingestor.accept_file(_copy(ingestor, CT), source="dimse")
    unread = ingestor.accept_file(_copy(ingestor, DX), source="dimse")
    late = dcmread(CT)
    late.StudyInstanceUID, late.SeriesInstanceUID, late.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.5", "1.2.826.0.1.3680043.8.498.6", "1.2.826.0.1.3680043.8.498.7"
    late_path = tmp_path / "late.dcm"
    late.save_as(late_path, enforce_file_format=True)
    read_then_more = ingestor.accept_file(_copy(ingestor, late_path), source="dimse")
    refused = _copy(ingestor, INFERENCE_FIXTURES / "bad" / "missing_uids.dcm")
    with pytest.raises(MissingAttribute):  # refused on purpose: kept in the quarantine
        ingestor.accept_file(refused, source="dimse")

    now = utcnow()
    long_ago = now - timedelta(days=40)
    with session_scope(factory) as session:
        studies = {s.study_instance_uid: s for s in session.scalars(select(Study))}
        for study in studies.values():
            study.status = StudyStatus.scored
            study.first_received_at = study.last_received_at = long_ago
        read_study = studies[read.headers.study_instance_uid]
        again = studies[read_then_more.headers.study_instance_uid]
        # A read 20 days ago; the other was read too, but an instance arrived after its read (unread part).
        for study, read_at in ((read_study, now - timedelta(days=20)), (again, now - timedelta(days=30))):
            session.add(FinalRead(study_id=study.id, study_instance_uid=study.study_instance_uid, revision=1, reader="rita",
                                  read_at=read_at, note="", waited_s=60.0, tier_at_read="routine"))
        again.last_received_at = now - timedelta(days=25)
        outgoing_dir = ingestor.spool.outgoing_folder(read_study.study_instance_uid)
        outgoing_dir.mkdir(parents=True)
        (outgoing_dir / "1.2.3.dcm").write_bytes(b"sr")
        session.add(OutgoingResult(study_id=read_study.id, folder=read_study.study_instance_uid, sop_instance_uids=["1.2.3"],
                                   destination={}, state=JobState.done, attempts=1, next_attempt_at=long_ago,
                                   created_at=long_ago, sent_at=now - timedelta(days=19)))
        session.execute(update(QuarantinedItem).values(at=long_ago))
        quarantined = session.scalars(select(QuarantinedItem.path)).one()
    assert quarantined is not None and Path(quarantined).is_file()
    stale = ingestor.spool.new_incoming_path()
    stale.write_bytes(b"partial")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))

    report = RetentionCleaner(ingestor.settings, factory, ingestor.spool).run_once(now)

    assert report.removed_studies == [read.headers.study_instance_uid]
    assert not read.path.exists() and not outgoing_dir.exists()
    assert unread.path.is_file(), "a study without a final read must stay"
    assert read_then_more.path.is_file(), "a study with instances after its final read must stay"
    assert not Path(quarantined).exists() and not stale.exists()
    with session_scope(factory) as session:
        audit = session.execute(
            select(AuditEvent.actor, AuditEvent.subject_type, AuditEvent.subject_id, AuditEvent.detail)
            .where(AuditEvent.action == "retention.remove")
        ).all()
        assert session.scalars(select(QuarantinedItem.path)).one() is None
        events = session.scalars(select(StudyEvent.kind).where(StudyEvent.study_id == read_study.id)).all()
    assert "files-removed" in events
    whats = sorted((subject_type, detail["what"]) for _, subject_type, _, detail in audit)
    assert whats == [("quarantine", "refused files"), ("study", "received instances"), ("study", "results sent to the PACS")]
    assert all(actor == "system" for actor, *_ in audit)

    # A second round finds nothing more to do.
    assert RetentionCleaner(ingestor.settings, factory, ingestor.spool).run_once(now).bytes == 0


def test_a_fetching_workers_cleaner_removes_only_its_own_result_documents(ingestor: InstanceIngestor) -> None:
    """A worker without the shared spool (MEDSCREEN_INGEST_URL) holds only the SR and heat-maps it built: its
    cleaner removes those once sent and read, and nothing of the ingest node's (instances, quarantine, incoming)."""
    factory = make_session_factory(ingestor.engine)
    read = ingestor.accept_file(_copy(ingestor, CT), source="dimse")
    refused = _copy(ingestor, INFERENCE_FIXTURES / "bad" / "missing_uids.dcm")
    with pytest.raises(MissingAttribute):  # refused on purpose: kept in the quarantine
        ingestor.accept_file(refused, source="dimse")
    stale = ingestor.spool.new_incoming_path()
    stale.write_bytes(b"partial")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    now = utcnow()
    long_ago = now - timedelta(days=40)
    folders = {}
    with session_scope(factory) as session:
        study = session.scalars(select(Study)).one()
        study.status = StudyStatus.scored
        study.first_received_at = study.last_received_at = long_ago
        session.add(FinalRead(study_id=study.id, study_instance_uid=study.study_instance_uid, revision=1, reader="rita",
                              read_at=now - timedelta(days=20), note="", waited_s=60.0, tier_at_read="routine"))
        for node, uid in (("worker-a:/homes/a", "1.2.3.1"), ("worker-b:/homes/b", "1.2.3.2")):
            folder = f"{study.study_instance_uid}-{node[-1]}"
            (ingestor.spool.outgoing / folder).mkdir(parents=True)
            (ingestor.spool.outgoing / folder / f"{uid}.dcm").write_bytes(b"sr")
            folders[node] = ingestor.spool.outgoing / folder
            session.add(OutgoingResult(study_id=study.id, folder=folder, sop_instance_uids=[uid], destination={},
                                       state=JobState.done, attempts=1, next_attempt_at=long_ago, created_at=long_ago,
                                       sent_at=now - timedelta(days=19), node=node))
        session.execute(update(QuarantinedItem).values(at=long_ago))
        quarantined = session.scalars(select(QuarantinedItem.path)).one()

    report = RetentionCleaner(ingestor.settings, factory, ingestor.spool, node="worker-a:/homes/a").run_once(now)

    assert report.outgoing_files == 1 and not folders["worker-a:/homes/a"].exists()
    assert folders["worker-b:/homes/b"].is_dir(), "another node's result documents are that node's to remove"
    assert read.path.is_file() and stale.exists() and quarantined is not None and Path(quarantined).is_file()
    assert report.removed_studies == [] and report.quarantine_files == 0 and report.incoming_files == 0
    with session_scope(factory) as session:
        assert session.scalars(select(QuarantinedItem.path)).one() == quarantined


def test_an_instance_after_retention_removed_its_study_folder_is_stored(ingestor: InstanceIngestor, tmp_path: Path) -> None:
    """The receiver's Spool caches the folders it created; the cleaner (its own Spool, another process in
    service) removes them. A late image of that series must be stored, not refused (0x0110) until a restart."""
    factory = make_session_factory(ingestor.engine)
    first = ingestor.accept_file(_copy(ingestor, CT), source="dimse")
    now = utcnow()
    with session_scope(factory) as session:
        study = session.scalars(select(Study)).one()
        study.status = StudyStatus.scored
        study.first_received_at = study.last_received_at = now - timedelta(days=40)
        session.add(FinalRead(study_id=study.id, study_instance_uid=study.study_instance_uid, revision=1, reader="rita",
                              read_at=now - timedelta(days=20), note="", waited_s=60.0, tier_at_read="routine"))
    cleaner_spool = Spool(ingestor.settings.spool_dir, ingestor.settings.quarantine_dir)
    report = RetentionCleaner(ingestor.settings, factory, cleaner_spool).run_once(now)
    assert report.removed_studies == [first.headers.study_instance_uid] and not first.path.parent.exists()

    late = dcmread(CT)
    late.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.4242"
    late_path = tmp_path / "late.dcm"
    late.save_as(late_path, enforce_file_format=True)
    stored = ingestor.accept_file(_copy(ingestor, late_path), source="dimse")

    assert not stored.duplicate and stored.path.is_file()
    assert stored.path.parent == first.path.parent


def test_a_reopened_studys_new_result_stays_until_a_read_after_it(ingestor: InstanceIngestor) -> None:
    """Read 30 days ago (revision 1), re-opened, the revision-2 result made 16 days ago and sent 15 days ago:
    its SR and heat-map are still on the reading list, so the older read must not remove them."""
    factory = make_session_factory(ingestor.engine)
    ingestor.accept_file(_copy(ingestor, CT), source="dimse")
    now = utcnow()
    with session_scope(factory) as session:
        study = session.scalars(select(Study)).one()
        study.status = StudyStatus.scored
        study.first_received_at = now - timedelta(days=40)
        study.last_received_at = now - timedelta(days=16)
        session.add(FinalRead(study_id=study.id, study_instance_uid=study.study_instance_uid, revision=1, reader="rita",
                              read_at=now - timedelta(days=30), note="", waited_s=60.0, tier_at_read="routine"))
        outgoing_dir = ingestor.spool.outgoing_folder(study.study_instance_uid)
        outgoing_dir.mkdir(parents=True)
        for uid in ("1.2.3.1", "1.2.3.2"):
            (outgoing_dir / f"{uid}.dcm").write_bytes(b"result")
        session.add(OutgoingResult(study_id=study.id, folder=study.study_instance_uid, sop_instance_uids=["1.2.3.1", "1.2.3.2"],
                                   destination={}, state=JobState.done, attempts=1, next_attempt_at=now - timedelta(days=16),
                                   created_at=now - timedelta(days=16), sent_at=now - timedelta(days=15)))
        study_id, study_uid = study.id, study.study_instance_uid

    assert RetentionCleaner(ingestor.settings, factory, ingestor.spool).run_once(now).outgoing_files == 0
    assert sorted(p.name for p in outgoing_dir.iterdir()) == ["1.2.3.1.dcm", "1.2.3.2.dcm"]

    with session_scope(factory) as session:  # revision 2 read too: now its result documents go
        session.add(FinalRead(study_id=study_id, study_instance_uid=study_uid, revision=2, reader="rita",
                              read_at=now - timedelta(days=14), note="", waited_s=60.0, tier_at_read="routine"))
    assert RetentionCleaner(ingestor.settings, factory, ingestor.spool).run_once(now).outgoing_files == 2
