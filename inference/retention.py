"""The retention cleaner: what the spool and the quarantine keep, and for how long (run by ``medscreen serve``).

- a study's received files: ``MEDSCREEN_RETENTION_READ_DAYS`` after its final read, and only when nothing
  arrived after that read (a study without a final read is never removed: nothing unread goes);
- a study no routing rule matched (never on the reading list; the PACS keeps the originals):
  ``MEDSCREEN_RETENTION_NOT_APPLICABLE_DAYS`` after it completed;
- results built for the PACS (``spool/outgoing``): ``MEDSCREEN_RETENTION_SENT_DAYS`` after they were sent,
  once the study has a final read (the study view shows the heat-map until then); and, sent or not (write-back
  disabled, given up, a shadow version's), with the study's received files: ``MEDSCREEN_RETENTION_READ_DAYS`` after
  the final read that read them, unless a send is still under way;
- refused files: ``MEDSCREEN_RETENTION_QUARANTINE_DAYS`` after they arrived (the row and its reason stay);
- files in ``spool/incoming`` untouched for an hour: partial receives nobody acknowledged.

Every removal is written to the audit log (actor ``system``, action ``retention.remove``) and, for a study,
to its timeline. Database rows are kept: the record of what arrived and what was said about it stays.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Integer, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from inference.spool import Spool
from inference.study_record import add_event
from inference.tables import OutgoingResult, QuarantinedItem, ScoreResult, Study
from service.audit import record_audit
from service.db import UTCDateTime, session_scope, utcnow
from service.lifecycle import JobState, StudyStatus
from service.settings import Settings

__all__ = ["RetentionCleaner", "RetentionReport", "run_retention_loop", "STALE_INCOMING_S"]

log = logging.getLogger(__name__)

STALE_INCOMING_S = 3600.0
ACTOR = "system"
# The worklist's table of final reads, read by name: inference sits below worklist and does not import it.
_FINAL_READS = text("SELECT study_id, MAX(read_at) AS read_at FROM final_reads GROUP BY study_id").columns(
    study_id=Integer(), read_at=UTCDateTime()
)


@dataclass
class RetentionReport:
    studies: int = 0
    study_files: int = 0
    outgoing_files: int = 0
    quarantine_files: int = 0
    incoming_files: int = 0
    bytes: int = 0
    removed_studies: list[str] = field(default_factory=list)


class RetentionCleaner:
    """``node``: a fetching worker's node (``MEDSCREEN_INGEST_URL``), whose spool holds only the result documents
    it built. Its cleaner removes those alone: the received instances, quarantine and incoming files live on the
    ingest node, whose own cleaner owns them (a worker clearing a quarantined item's path would leave the file
    there for good)."""

    def __init__(
        self, settings: Settings, session_factory: sessionmaker[Session], spool: Spool, node: str | None = None
    ) -> None:
        self.settings = settings
        self.session_factory = session_factory
        self.spool = spool
        self.node = node

    def run_once(self, now: datetime | None = None) -> RetentionReport:
        now = now or utcnow()
        report = RetentionReport()
        with session_scope(self.session_factory) as session:
            final_reads = {row.study_id: row.read_at for row in session.execute(_FINAL_READS)}
            if self.node is None:
                self._studies(session, final_reads, now, report)
            self._outgoing(session, final_reads, now, report)
            self._documents_on_study_clock(session, final_reads, now, report)
            if self.node is None:
                self._quarantine(session, now, report)
        if self.node is None:
            self._incoming(now, report)
        if report.bytes or report.incoming_files:
            log.info(
                "retention removed %d studies' files (%d), %d results, %d quarantined and %d stale incoming files: %.1f MB",
                report.studies, report.study_files, report.outgoing_files, report.quarantine_files,
                report.incoming_files, report.bytes / 1e6,
            )
        return report

    def _remove_study_files(self, session: Session, study: Study, reason: str, now: datetime, report: RetentionReport) -> None:
        files, size = self.spool.remove_tree(self.spool.study_folder(study.study_instance_uid))
        if not files:
            return
        add_event(session, study.id, study.revision, "files-removed", now, files=files, bytes=size, reason=reason)
        record_audit(
            session, ACTOR, "retention.remove", "study", study.study_instance_uid,
            {"what": "received instances", "files": files, "bytes": size, "reason": reason},
        )
        report.studies += 1
        report.study_files += files
        report.bytes += size
        report.removed_studies.append(study.study_instance_uid)

    def _studies(self, session: Session, final_reads: dict[int, datetime], now: datetime, report: RetentionReport) -> None:
        read_cutoff = now - timedelta(days=self.settings.retention_read_days)
        for study_id, read_at in final_reads.items():
            if read_at > read_cutoff:
                continue
            study = session.get(Study, study_id)
            # A study that received instances after its final read has an unread part: it stays.
            if study is None or study.last_received_at > read_at or study.status == StudyStatus.receiving:
                continue
            self._remove_study_files(session, study, f"final read at {read_at.isoformat()}", now, report)
        unmatched_cutoff = now - timedelta(days=self.settings.retention_not_applicable_days)
        unmatched = session.scalars(
            select(Study).where(
                Study.status == StudyStatus.not_applicable,
                Study.completed_at.is_not(None),
                Study.completed_at < unmatched_cutoff,
                Study.last_received_at < unmatched_cutoff,
            )
        )
        for study in unmatched:
            if study.id not in final_reads:
                self._remove_study_files(session, study, "no routing rule matched; not on the reading list", now, report)

    def _outgoing(self, session: Session, final_reads: dict[int, datetime], now: datetime, report: RetentionReport) -> None:
        cutoff = now - timedelta(days=self.settings.retention_sent_days)
        query = select(OutgoingResult).where(
            OutgoingResult.state == JobState.done, OutgoingResult.sent_at.is_not(None), OutgoingResult.sent_at < cutoff
        )
        if self.node is not None:
            query = query.where(OutgoingResult.node == self.node)
        sent = session.scalars(query)
        for row in sent:
            read_at = final_reads.get(row.study_id)
            # Only a read after the result was made read it: a re-opened study's new result stays until then.
            if read_at is None or read_at <= row.created_at:
                continue
            folder = self.spool.outgoing / row.folder
            files = size = 0
            for uid in row.sop_instance_uids:
                path = folder / f"{uid}.dcm"
                if path.is_file():
                    size += path.stat().st_size
                    path.unlink()
                    files += 1
            if not files:
                continue
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
            study = session.get(Study, row.study_id)
            subject = study.study_instance_uid if study is not None else str(row.study_id)
            record_audit(
                session, ACTOR, "retention.remove", "study", subject,
                {"what": "results sent to the PACS", "files": files, "bytes": size, "outgoing_id": row.id},
            )
            report.outgoing_files += files
            report.bytes += size

    def _documents_on_study_clock(
        self, session: Session, final_reads: dict[int, datetime], now: datetime, report: RetentionReport
    ) -> None:
        """A result's documents (SR, heat-map) go when the study's received files do, whether they were sent or not.

        Scoring builds them for every champion result, PACS or not; only a sent row's had a clock, so with write-back
        disabled, or a send given up, the heat-map (a copy of the image, the patient's name and ID in its header)
        outlived the film for ever. A result made after the read stays (a re-opened study's, until its read), and so
        do documents a send still under way names. On a fetching worker's node only its own spool is looked at."""
        read_cutoff = now - timedelta(days=self.settings.retention_read_days)
        in_flight = (JobState.queued, JobState.retry, JobState.running)
        for study_id, read_at in final_reads.items():
            if read_at > read_cutoff:
                continue
            study = session.get(Study, study_id)
            if study is None:
                continue
            folder = self.spool.outgoing_folder(study.study_instance_uid)
            if not folder.is_dir():
                continue
            results = session.scalars(
                select(ScoreResult).where(ScoreResult.study_id == study_id, ScoreResult.created_at < read_at)
            )
            uids = {uid for r in results for uid in (r.sr_sop_instance_uid, r.heatmap_sop_instance_uid) if uid}
            for row in session.scalars(
                select(OutgoingResult).where(OutgoingResult.study_id == study_id, OutgoingResult.state.in_(in_flight))
            ):
                uids.difference_update(row.sop_instance_uids)
            files = size = 0
            for uid in sorted(uids):
                path = folder / f"{uid}.dcm"
                if path.is_file():
                    size += path.stat().st_size
                    path.unlink()
                    files += 1
            if not files:
                continue
            if not any(folder.iterdir()):
                folder.rmdir()
            record_audit(
                session, ACTOR, "retention.remove", "study", study.study_instance_uid,
                {"what": "result documents", "files": files, "bytes": size,
                 "reason": f"final read at {read_at.isoformat()}"},
            )
            report.outgoing_files += files
            report.bytes += size

    def _quarantine(self, session: Session, now: datetime, report: RetentionReport) -> None:
        cutoff = now - timedelta(days=self.settings.retention_quarantine_days)
        expired = session.scalars(
            select(QuarantinedItem).where(QuarantinedItem.path.is_not(None), QuarantinedItem.at < cutoff)
        ).all()
        by_day: dict[str, list[QuarantinedItem]] = {}
        for item in expired:
            by_day.setdefault(item.at.strftime("%Y%m%d"), []).append(item)
        for day, items in sorted(by_day.items()):
            size = sum(self.spool.remove_quarantined(Path(item.path)) for item in items if item.path)
            session.execute(
                update(QuarantinedItem).where(QuarantinedItem.id.in_([i.id for i in items])).values(path=None)
            )
            record_audit(
                session, ACTOR, "retention.remove", "quarantine", day,
                {"what": "refused files", "files": len(items), "bytes": size, "ids": [i.id for i in items][:1000]},
            )
            day_dir = self.spool.quarantine / day
            if day_dir.is_dir() and not any(day_dir.iterdir()):
                day_dir.rmdir()
            report.quarantine_files += len(items)
            report.bytes += size

    def _incoming(self, now: datetime, report: RetentionReport) -> None:
        # Never acknowledged (a live receive touches its file at least every idle timeout): not audited.
        limit = time.time() - STALE_INCOMING_S
        for path in self.spool.incoming.iterdir():
            try:
                if path.is_file() and path.stat().st_mtime < limit:
                    path.unlink()
                    report.incoming_files += 1
            except FileNotFoundError:
                continue


def run_retention_loop(
    settings: Settings, session_factory: sessionmaker[Session], stop: threading.Event, node: str | None = None
) -> None:
    """``medscreen serve``'s retention thread (and a fetching worker's, for its ``node``'s result documents only):
    once at start, then every ``MEDSCREEN_RETENTION_INTERVAL_S``."""
    cleaner = RetentionCleaner(settings, session_factory, Spool(settings.spool_dir, settings.quarantine_dir), node)
    log.info("retention cleaner every %.0f s%s", settings.retention_interval_s,
             f" (result documents of node {node} only)" if node else "")
    while True:
        try:
            cleaner.run_once()
        except Exception:
            # A failed round (a locked database, a file in use) is retried at the next interval, not fatal.
            log.exception("retention round failed")
        if stop.wait(settings.retention_interval_s):
            return
