"""Accept one received instance: check resources, validate, spool durably, record. Shared by DIMSE and STOW-RS.

The order is the durability contract: the sender is told "success" only after the file and its
directory entry are fsynced and the database transaction that records it has committed. A SOP Instance
UID is stored once, by its first writer: a re-sent copy of the same data set (in any transfer syntax) is
acknowledged and dropped, a differing one is refused (0x0111) and kept aside in the quarantine, reported on the
study's timeline. A differing copy
that corrects what the intended-use gate reads (age, birth date, sex, body part, view) withdraws the model's
effect on the study: it is put out of scope ("header corrected after scoring") and returns to arrival order.
"""

from __future__ import annotations

import errno
import logging
import shutil
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filereader import read_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian
from sqlalchemy import Connection, Engine, Row, insert, select, update
from sqlalchemy.exc import DBAPIError

from inference.errors import (
    DifferingDuplicate,
    DocumentsNotBuilt,
    IngestError,
    InstanceTooLarge,
    OutOfResources,
    PatientMismatch,
    StudyMismatch,
)
from inference.instance_content import same_data_set
from inference.instance_headers import is_valid_uid, read_instance_headers, uid_defect
from inference.instance_limits import read_deflated_header
from inference.intake import SCORED_MODALITIES, not_scored
from inference.intended_use import attributes_differing
from inference.outgoing import discard_documents, pacs_destination, store_documents
from inference.records import InstanceHeaders, InstanceStored
from inference.spool import Spool, file_digest
from inference.spool_node import spool_node
from inference.study_record import (
    add_event,
    count_repeat,
    find_instance,
    find_repeat,
    lock_instance,
    quarantine_bytes,
    record_differing_duplicate,
    record_instance,
    record_not_scored,
    record_quarantine,
    remembered_output,
    study_status,
)
from inference.tables import Instance, OutgoingResult, ScoreResult, ScoringJob, Study
from service.audit import subject_digest
from service.db import utcnow
from service.lifecycle import JobState, ModelRole, SteeringRight, StudyStatus, WritebackState
from service.settings import Settings

__all__ = ["HEADER_CORRECTED", "InstanceIngestor", "name_refused"]

log = logging.getLogger(__name__)

# The timeline event a corrected re-send leaves on its study: the stored copy's header is the wrong one, so no
# revision holding that instance is scored from it (``inference/score_job.py``).
HEADER_CORRECTED = "header-corrected"


class InstanceIngestor:
    def __init__(self, settings: Settings, engine: Engine, spool: Spool) -> None:
        self.settings = settings
        self.engine = engine
        self.spool = spool
        self.min_free_bytes = settings.min_free_disk_mb * 1024 * 1024
        self.max_instance_bytes = settings.max_instance_mb * 1024 * 1024
        self.max_stow_request_bytes = settings.max_stow_request_mb * 1024 * 1024
        self.quarantine_max_bytes = settings.quarantine_max_mb * 1024 * 1024

    def has_free_disk(self) -> bool:
        return shutil.disk_usage(self.spool.studies).free >= self.min_free_bytes

    def check_resources(self) -> None:
        if not self.has_free_disk():
            raise OutOfResources(
                f"free disk under {self.settings.home} is below the {self.settings.min_free_disk_mb} MB watermark"
            )

    def accept_file(
        self, received: Path, *, source: str, calling_ae: str = "", expected_study_uid: str | None = None
    ) -> InstanceStored:
        """Take ownership of ``received`` (a Part 10 file in the spool's incoming folder).

        Raises an :class:`IngestError` after quarantining the file when it is refused. Whatever happens,
        ``received`` does not stay in ``incoming``: it is stored, quarantined or deleted.
        """
        headers: InstanceHeaders | None = None
        try:
            try:
                self.check_resources()
                size = received.stat().st_size
                if size > self.max_instance_bytes:
                    raise InstanceTooLarge(
                        f"instance of {size / 1e6:.0f} MB exceeds the {self.settings.max_instance_mb} MB limit"
                    )
                headers = read_instance_headers(
                    received, self.max_instance_bytes, default_charset=self.settings.dicom_default_charset
                )
                if expected_study_uid is not None and headers.study_instance_uid != expected_study_uid:
                    # A malformed one is described, not quoted: it can be whatever the sender put in its URL.
                    named = expected_study_uid
                    if (defect := uid_defect(expected_study_uid)) is not None:
                        named = f"the study UID ({len(expected_study_uid)} characters, not valid: {defect})"
                    raise StudyMismatch(
                        f"instance belongs to study {headers.study_instance_uid}, not {named} named in the URL"
                    )
                left_aside = self._left_aside(received, headers, size, source=source, calling_ae=calling_ae)
                stored = left_aside or self._store(received, headers, size, source=source, calling_ae=calling_ae)
            except OSError as exc:
                if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
                # A truly full disk (watermark 0, or another writer filled it): refuse, keep nothing partial.
                raise OutOfResources(f"no space left under {self.settings.home}") from exc
            except DBAPIError as exc:
                if not _database_full(exc):
                    raise
                # The database's own disk is full (SQLite "database or disk is full", PostgreSQL disk_full): the
                # sender is told to retry later (0xA700, 503), as for the spool's disk.
                raise OutOfResources(f"the database cannot grow: {_first_line(exc.orig)}") from exc
        except OutOfResources as exc:
            name_refused(exc, received, headers)
            received.unlink(missing_ok=True)
            log.warning("refused an instance from %s: %s", calling_ae or source, exc.reason)
            raise
        except IngestError as exc:
            name_refused(exc, received, headers)
            self._quarantine(received, exc, headers, source=source, calling_ae=calling_ae)
            raise
        finally:
            if received.parent == self.spool.incoming:
                received.unlink(missing_ok=True)
        return stored

    def record_refusal(self, exc: IngestError, *, source: str, calling_ae: str = "") -> None:
        """Record an instance refused while it streamed in (a receiver's or STOW-RS's byte count, the watermark):
        its partial file is already gone, so the quarantine keeps the row and reason without bytes."""
        if isinstance(exc, OutOfResources):
            log.warning("refused an instance from %s: disk under watermark (%s)", calling_ae or source, exc.reason)
            return
        self._quarantine(None, exc, None, source=source, calling_ae=calling_ae)

    def _store(
        self, received: Path, headers: InstanceHeaders, size: int, *, source: str, calling_ae: str
    ) -> InstanceStored:
        """First writer wins: a stored instance is compared with a re-sent copy, never written over."""
        self.spool.make_durable(received)
        now = utcnow()
        final = self.spool.path_for(headers)
        linked = False
        try:
            with self.engine.begin() as connection:
                lock_instance(connection, headers.sop_instance_uid)
                existing = find_instance(connection, headers.sop_instance_uid)
                if existing is None:
                    _check_same_patient(connection, headers)
                    linked = True  # from here ``final`` may hold this attempt's file
                    self.spool.store_first(received, final)
                    recorded = record_instance(
                        connection, headers, path=str(final), size=size, source=source, calling_ae=calling_ae, now=now
                    )
        except BaseException:
            if linked:
                self._remove_unrecorded(final, headers.sop_instance_uid)
            raise
        if existing is not None:
            kept = Path(existing.path)
            # The same data set in another transfer syntax (a PACS re-sending what it compressed) is the same instance.
            if kept.is_file() and not (self.spool.same_content(received, kept) or same_data_set(received, kept)):
                raise DifferingDuplicate(
                    f"SOP Instance UID {headers.sop_instance_uid} is already stored with other content "
                    f"(sha256 {file_digest(kept)[:16]} stored, {file_digest(received)[:16]} received); "
                    "the first copy is kept, this one is set aside"
                )
            # The same instance again (or a copy the retention cleaner has already removed): acknowledged, stored once.
            received.unlink(missing_ok=True)
            log.debug("duplicate SOP instance acknowledged again (revision %d)", existing.revision)
            return InstanceStored(
                headers=headers,
                path=kept,
                size=size,
                revision=existing.revision,
                duplicate=True,
                source=source,
                calling_ae=calling_ae,
            )
        return InstanceStored(
            headers=headers,
            path=final,
            size=size,
            revision=recorded.revision,
            duplicate=recorded.duplicate,
            source=source,
            calling_ae=calling_ae,
        )

    def _remove_unrecorded(self, final: Path, sop_instance_uid: str) -> None:
        """The transaction that linked ``final`` did not commit (the database full, its connection lost): remove the
        file, so that no image stays in the spool that no row names (never listed, never removed by retention).

        A commit reported as failed may still have been applied (PostgreSQL's connection lost during COMMIT): the
        file is kept when a row names it, and when the database cannot be asked (a re-send replaces it then).
        """
        try:
            with self.engine.connect() as connection:
                recorded = find_instance(connection, sop_instance_uid)
        except Exception:
            log.warning("kept %s after a failed transaction: the database cannot say whether a row names it", final)
            return
        if recorded is None or recorded.path != str(final):
            final.unlink(missing_ok=True)

    def _left_aside(
        self, received: Path, headers: InstanceHeaders, size: int, *, source: str, calling_ae: str
    ) -> InstanceStored | None:
        """Acknowledge and record an instance medscreen does not take into a study (see ``inference/intake.py``)."""
        now = utcnow()
        # Decided on two indexed lookups; only an instance left aside is written (most are images taken in).
        with self.engine.connect() as connection:
            remembered = remembered_output(connection, headers.sop_instance_uid)
            status = study_status(connection, headers.study_instance_uid)
        # ImageType is read again only for an image that would re-open a received study (a late image is rare).
        reopens = status not in (None, StudyStatus.receiving) and headers.modality in SCORED_MODALITIES
        decision = not_scored(
            headers, uid_root=self.settings.uid_root, remembered=remembered, study_status=status,
            image_type=_image_type(_header(received, self.max_instance_bytes)) if reopens else (),
        )
        if decision is None:
            return None
        with self.engine.begin() as connection:
            record_not_scored(
                connection, headers, kind=decision.kind, reason=decision.reason, source=source, calling_ae=calling_ae,
                now=now,
            )
        received.unlink(missing_ok=True)
        log.info("acknowledged an instance from %s, not scored: %s (%s)", calling_ae or source, decision.kind, decision.reason)
        return InstanceStored(
            headers=headers, path=received, size=size, revision=0, duplicate=False, source=source,
            calling_ae=calling_ae, not_scored=decision.kind, not_scored_reason=decision.reason,
        )

    def _quarantine(
        self, received: Path | None, exc: IngestError, headers: InstanceHeaders | None, *, source: str, calling_ae: str
    ) -> None:
        """Keep the refusal (always, as a row) and the refused bytes (within the quota, once per content a day)."""
        now = utcnow()
        corrected = (
            self._corrected_attributes(received, headers)
            if isinstance(exc, DifferingDuplicate) and received is not None and headers is not None
            else []
        )
        size = received.stat().st_size if received is not None and received.exists() else None
        digest = file_digest(received) if received is not None and size is not None else None
        day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        reason = exc.reason
        moved: list[Path] = []
        written: list[Dataset] = []
        try:
            with self.engine.begin() as connection:
                if corrected and headers is not None:
                    # The study row first: two corrected copies (two associations, two nodes) withdraw one at a time.
                    _lock_study(connection, headers.study_instance_uid)
                repeat = None
                if digest is not None:
                    repeat = find_repeat(
                        connection, kind=exc.kind, source=source, calling_ae=calling_ae, digest=digest, since=day_start
                    )
                if repeat is not None:
                    count_repeat(connection, repeat, now)
                    if received is not None:
                        received.unlink(missing_ok=True)
                else:
                    keep = bool(size)
                    if keep and size is not None and quarantine_bytes(connection) + size > self.quarantine_max_bytes:
                        keep = False
                        reason += f" (file not kept: quarantine is at its {self.settings.quarantine_max_mb} MB quota)"
                    kept = self.spool.quarantine_file(
                        received, exc.kind, reason, {"source": source, "calling_ae": calling_ae}, now, keep=keep
                    )
                    moved.extend([kept] if kept is not None else [])
                    record_quarantine(
                        connection,
                        kind=exc.kind,
                        reason=reason,
                        source=source,
                        calling_ae=calling_ae,
                        path=str(kept) if kept is not None else None,
                        sop_instance_uid=headers.sop_instance_uid if headers else None,
                        study_instance_uid=headers.study_instance_uid if headers else None,
                        now=now,
                        size=size,
                        digest=digest,
                    )
                    if isinstance(exc, DifferingDuplicate) and headers is not None:
                        record_differing_duplicate(connection, headers, source=source, calling_ae=calling_ae, now=now)
                if corrected and headers is not None:
                    self._withdraw_after_correction(connection, headers, corrected, now, written)
        except BaseException:
            # Rolled back: no row names the file moved aside or the SR stored, so they go too (the sender is told of
            # a failure and sends again); a copy of a patient's image that no row names is never left behind.
            for path in moved:
                self.spool.remove_quarantined(path)
            if written and headers is not None:
                discard_documents(self.settings, headers.study_instance_uid, written)
            raise
        log.warning(
            "quarantined an instance from %s: %s (%s)%s",
            calling_ae or source,
            exc.kind,
            exc.reason,
            " [repeat]" if repeat is not None else "",
        )


    def _corrected_attributes(self, received: Path, headers: InstanceHeaders) -> list[str]:
        """The attributes the intended-use gate reads that a differing copy changes (a corrected age, sex, view)."""
        with self.engine.connect() as connection:
            stored = find_instance(connection, headers.sop_instance_uid)
        if stored is None or not Path(stored.path).is_file() or not received.is_file():
            return []
        return attributes_differing(
            _header(Path(stored.path), self.max_instance_bytes), _header(received, self.max_instance_bytes)
        )

    def _withdraw_after_correction(
        self, connection: Connection, headers: InstanceHeaders, attributes: list[str], now: datetime,
        written: list[Dataset],
    ) -> None:
        """Withdraw the model's effect on a study whose header was corrected by a re-send (the study row is locked).

        The PACS re-sends a corrected study (an adult registered as a child, another body part) with the same SOP
        Instance UIDs; the first copy is kept, so the model would judge (or had judged) the study from the wrong
        header. The correction is recorded on the study's timeline (``header-corrected``), whatever stage the study
        is at: no revision that holds the instance is scored from it (``inference/score_job.py`` stores such a
        revision as out of scope with the reason). A study already scored has its latest champion verdict replaced
        by an "out of scope" one on a new revision: the worklist returns it to arrival order, the RIS and EMR hear
        it, and the PACS gets an SR that replaces the earlier one. A job queued for an older revision stays out of
        the study's result when it finishes. Written SR documents are added to ``written``.
        """
        study = connection.execute(
            select(Study.id, Study.revision, Study.status).where(Study.study_instance_uid == headers.study_instance_uid)
        ).first()
        if study is None:
            return
        latest = connection.execute(
            select(ScoreResult)
            .where(ScoreResult.study_id == study.id, ScoreResult.role == ModelRole.champion)
            .order_by(ScoreResult.revision.desc(), ScoreResult.id.desc())
            .limit(1)
        ).first()
        # A study still receiving is left to finish: its new revision is scored out of scope by the mark below.
        withdraw = latest is not None and latest.outcome == StudyStatus.scored and study.status != StudyStatus.receiving
        listed = ", ".join(attributes)
        scored_before = latest is not None and latest.outcome == StudyStatus.scored
        reason = f"header corrected {'after' if scored_before else 'before'} scoring: {listed}"
        add_event(
            connection, study.id, study.revision, HEADER_CORRECTED, now, reason=reason, attributes=attributes,
            sop_instance_uid=headers.sop_instance_uid,
        )
        if not withdraw or latest is None:
            log.warning("study %s: header corrected (%s); no revision holding it is scored from the stored copy",
                        subject_digest(headers.study_instance_uid), listed)
            return
        revision = study.revision + 1
        # A result belongs to a job; this one is done as it is made (no model runs: the stored copy is the wrong one).
        job_id = connection.execute(
            insert(ScoringJob).returning(ScoringJob.id).values(
                study_id=study.id, revision=revision, task=latest.task, model_name=latest.model_name,
                model_version=latest.model_version, role=ModelRole.champion.value, state=JobState.done.value,
                attempts=0, next_attempt_at=now, last_error=reason, created_at=now, updated_at=now,
            )
        ).scalar_one()
        result_id = connection.execute(
            insert(ScoreResult).returning(ScoreResult.id).values(
                study_id=study.id, job_id=job_id, revision=revision, task=latest.task, model_name=latest.model_name,
                model_version=latest.model_version, mlflow_run_id=latest.mlflow_run_id, role=ModelRole.champion.value,
                outcome=StudyStatus.out_of_scope.value, score=None, threshold=latest.threshold, call=None,
                localisation={}, reason=reason, timings={}, writeback_state=WritebackState.disabled.value,
                steering=latest.steering, created_at=now,
            )
        ).scalar_one()
        connection.execute(
            update(Study)
            .where(Study.id == study.id)
            .values(revision=revision, status=StudyStatus.out_of_scope.value, status_reason=reason)
        )
        # Jobs still waiting for an older revision would score the wrong header for a superseded revision: done now.
        # One already running stores its result as not the study's (``inference/score_job.py``).
        connection.execute(
            update(ScoringJob)
            .where(ScoringJob.study_id == study.id, ScoringJob.revision < revision,
                   ScoringJob.state.in_((JobState.queued.value, JobState.retry.value)))
            .values(state=JobState.done.value, last_error=f"superseded by revision {revision}: {reason}", updated_at=now)
        )
        add_event(
            connection, study.id, revision, StudyStatus.out_of_scope.value, now, reason=reason,
            sop_instance_uid=headers.sop_instance_uid, withdrawn_result_id=latest.id,
        )
        self._replace_sr(connection, headers.study_instance_uid, study.id, revision, latest, result_id, reason, now, written)
        log.warning("study %s: header corrected after scoring (%s); the model's verdict is withdrawn",
                    subject_digest(headers.study_instance_uid), listed)

    def _replace_sr(
        self, connection: Connection, study_uid: str, study_id: int, revision: int, latest: Row[Any], result_id: int,
        reason: str, now: datetime, written: list[Dataset],
    ) -> None:
        """An SR that says "not scored" in place of the withdrawn verdict's SR in the PACS, queued for the dispatcher.
        None without a PACS, without an earlier SR, or for a shadow version's result the site does not write back."""
        destination = pacs_destination(self.settings)
        if destination is None or (latest.steering == SteeringRight.shadow and not self.settings.writeback_shadow):
            return
        # Imported here: the scoring module loads the model runtime, which the receiver needs only for this.
        from inference.score_job import not_scored_documents, previous_sr

        previous_id, previous = previous_sr(connection, self.settings, study_id, study_uid)
        source = connection.execute(
            select(Instance.path).where(Instance.study_id == study_id, Instance.revision <= revision)
            .order_by(Instance.id).limit(1)
        ).scalar_one_or_none()
        if previous is None or source is None or not Path(source).is_file():
            return
        try:
            documents = not_scored_documents(
                self.settings, source=Path(source), previous=previous, task=latest.task, model_name=latest.model_name,
                model_version=latest.model_version, run_id=latest.mlflow_run_id, outcome=StudyStatus.out_of_scope,
                reason=reason,
            )
        except DocumentsNotBuilt as exc:
            connection.execute(update(ScoreResult).where(ScoreResult.id == result_id)
                               .values(writeback_state=WritebackState.failed.value))
            add_event(connection, study_id, revision, "write-back-dead", now, reason=exc.reason, attempts=0)
            return
        store_documents(self.settings, study_uid, documents)
        written.extend(documents)
        sr = documents[0]
        connection.execute(
            update(ScoreResult).where(ScoreResult.id == result_id).values(
                writeback_state=WritebackState.pending.value, sr_sop_instance_uid=str(sr.SOPInstanceUID),
                sr_series_instance_uid=str(sr.SeriesInstanceUID), supersedes_id=previous_id,
            )
        )
        connection.execute(
            insert(OutgoingResult).values(
                study_id=study_id, score_result_id=result_id, folder=study_uid, node=spool_node(self.settings),
                sop_instance_uids=[str(sr.SOPInstanceUID)], destination=destination, state=JobState.queued.value,
                attempts=0, next_attempt_at=now, created_at=now,
            )
        )


def _header(path: Path, max_bytes: int) -> Dataset:
    """An instance's header without its pixels; a deflated one inflated in bounded chunks, as on receipt."""
    if str(read_file_meta_info(path).get("TransferSyntaxUID", "")) == DeflatedExplicitVRLittleEndian:
        return read_deflated_header(path, max_bytes, 4096)
    return dcmread(path, stop_before_pixels=True)


def _image_type(ds: Dataset) -> tuple[str, ...]:
    value = ds.get("ImageType") or ()
    return tuple(str(v) for v in (value.split("\\") if isinstance(value, str) else value))


def _lock_study(connection: Connection, study_instance_uid: str) -> None:
    """Hold the study row until the transaction ends (PostgreSQL; SQLite's BEGIN IMMEDIATE holds the database).
    FOR NO KEY UPDATE: the events and results inserted for it take a key-share lock, which it must not wait on."""
    connection.execute(
        select(Study.id).where(Study.study_instance_uid == study_instance_uid).with_for_update(key_share=True)
    )


def _database_full(exc: DBAPIError) -> bool:
    """Whether a database error says its disk is full: SQLite's SQLITE_FULL, PostgreSQL's SQLSTATE 53100."""
    orig = exc.orig
    if isinstance(orig, sqlite3.Error):
        return getattr(orig, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "database or disk is full" in str(orig)
    return getattr(orig, "sqlstate", None) == "53100" or getattr(orig, "pgcode", None) == "53100"


def _first_line(error: BaseException | None) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _check_same_patient(connection: Connection, headers: InstanceHeaders) -> None:
    """Refuse a new instance whose PatientID differs from its study's: another patient's image (a forged file, an
    anonymiser or UID collision) would otherwise join the study, re-open it and be scored as this patient's."""
    stored = connection.execute(
        select(Study.patient_id).where(Study.study_instance_uid == headers.study_instance_uid)
    ).scalar_one_or_none()
    received = headers.patient_id[:64]
    if stored is None or stored == received:
        return
    # Digests only: the reason is logged, listed by /api/quarantine and sent back to the sender.
    raise PatientMismatch(
        f"patient identity differs from the study's (PatientID {_identity_digest(received)} received, "
        f"{_identity_digest(stored)} stored); the study is left as it was"
    )


def _identity_digest(patient_id: str) -> str:
    return f"sha256:{subject_digest(patient_id)}" if patient_id else "empty"


def name_refused(exc: IngestError, received: Path, headers: InstanceHeaders | None) -> None:
    """Name the refused instance on ``exc``: from its header when it was read, else from its file meta if that
    parses (a refused pixel element or an unreadable data set still has one)."""
    if headers is not None:
        exc.sop_class_uid, exc.sop_instance_uid = headers.sop_class_uid, headers.sop_instance_uid
        return
    try:
        meta = read_file_meta_info(received)
    except Exception:  # noqa: BLE001 - untrusted bytes: without a readable file meta the instance stays unnamed
        return
    sop_class = str(meta.get("MediaStorageSOPClassUID", "")).strip().strip("\x00")
    sop_instance = str(meta.get("MediaStorageSOPInstanceUID", "")).strip().strip("\x00")
    # Only well-formed UIDs go back to the sender (they are echoed in a JSON response).
    exc.sop_class_uid = sop_class if is_valid_uid(sop_class) else None
    exc.sop_instance_uid = sop_instance if is_valid_uid(sop_instance) else None
