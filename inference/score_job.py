"""Score one claimed job: run its model version once, build the champion's SR and heat-map once, store all.

The result row, the job's completion, the study's status and (for a champion with a PACS configured)
the outgoing row commit in one transaction, after the documents are durable under ``spool/outgoing``.
Sending is the dispatcher's job: a failed send never re-runs the model or makes new UIDs.
Per-stage timings go in the result and the study timeline: complete -> job start -> inference done ->
result stored (the dispatcher adds stored -> written back).
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import Comprehensive3DSRStorage
from sqlalchemy import Connection, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from inference.assemble import read_study
from inference.champions import LoadedModel, ModelSelector
from inference.errors import CouldNotScore, DocumentsNotBuilt, OutOfScope
from inference.fetch_instances import IngestLogin, drop_cached_study, instance_files
from inference.ingest import HEADER_CORRECTED
from inference.jobs import mark_done
from inference.outgoing import (
    discard_documents,
    pacs_destination,
    queue_outgoing,
    read_document,
    store_documents,
)
from inference.records import ScoreRecorded
from inference.scorers import TaskScore, score_study
from inference.spool_node import spool_node
from inference.study_record import add_event
from inference.tables import Instance, OutgoingResult, ScoreResult, ScoringJob, Study, StudyEvent
from inference.writeback import NotScoredToWrite, ResultToWrite, build_heatmap, build_not_scored_sr, build_sr
from service.db import session_scope, utcnow
from service.lifecycle import JobState, ModelRole, SteeringRight, StudyStatus, WritebackState
from service.settings import Settings
from service.steering import defer_rules_from_settings

__all__ = ["correction_of", "not_scored_documents", "previous_sr", "score_job", "seconds_between"]

log = logging.getLogger(__name__)


def seconds_between(start: datetime | None, end: datetime) -> float | None:
    return None if start is None else round((end - start).total_seconds(), 3)


def _instance_paths(session: Session, study_id: int, revision: int) -> list[tuple[str, Path]]:
    rows = session.execute(
        select(Instance.sop_instance_uid, Instance.path)
        .where(Instance.study_id == study_id, Instance.revision <= revision)
        .order_by(Instance.id)
    )
    return [(str(uid), Path(p)) for uid, p in rows]


def previous_sr(
    connection: Session | Connection, settings: Settings, study_id: int, study_uid: str
) -> tuple[int | None, Dataset | None]:
    """The study's last champion SR (id of its result, the stored document), named as the new SR's predecessor."""
    previous = connection.execute(
        select(ScoreResult.id, ScoreResult.sr_sop_instance_uid, ScoreResult.sr_series_instance_uid)
        .where(
            ScoreResult.study_id == study_id,
            ScoreResult.role == ModelRole.champion,
            ScoreResult.sr_sop_instance_uid.is_not(None),
        )
        .order_by(ScoreResult.id.desc())
        .limit(1)
    ).first()
    if previous is None or previous.sr_sop_instance_uid is None:
        return None, None
    if previous.sr_series_instance_uid:
        # Named from the database: the previous SR may be on another node's spool (a fetching worker's), and
        # a predecessor reference needs only these four UIDs.
        reference = Dataset()
        reference.StudyInstanceUID = study_uid
        reference.SeriesInstanceUID = previous.sr_series_instance_uid
        reference.SOPInstanceUID = previous.sr_sop_instance_uid
        reference.SOPClassUID = Comprehensive3DSRStorage
        return previous.id, reference
    return previous.id, read_document(settings, study_uid, previous.sr_sop_instance_uid)


def correction_of(connection: Session | Connection, study_id: int, revision: int) -> str | None:
    """Why a revision of a study must not be scored from its stored copies: one of them was corrected by a re-send
    (the reason recorded then), or None."""
    marks = connection.execute(
        select(StudyEvent.detail).where(StudyEvent.study_id == study_id, StudyEvent.kind == HEADER_CORRECTED)
        .order_by(StudyEvent.id)
    ).scalars().all()
    for detail in marks:
        uid = (detail or {}).get("sop_instance_uid")
        held = connection.execute(
            select(Instance.revision).where(Instance.sop_instance_uid == uid, Instance.study_id == study_id)
        ).scalar_one_or_none()
        if held is not None and held <= revision:
            return str(detail.get("reason") or "header corrected")
    return None


def not_scored_documents(
    settings: Settings, *, source: Path, previous: Dataset | None, task: str, model_name: str, model_version: str,
    run_id: str | None, outcome: StudyStatus, reason: str,
) -> list[Dataset]:
    """The SR that replaces the study's earlier SR in the PACS when a later revision is not scored (could not score,
    outside the intended use): without it the PACS keeps the earlier call as the study's AI result. [] when no SR
    was written before. ``source``: an instance of the revision, whose header the SR copies."""
    if previous is None:
        return []
    to_write = NotScoredToWrite(
        task, model_name, model_version, run_id, outcome.value, reason or "", dcmread(source, stop_before_pixels=True),
        settings.uid_root, settings.dicom_default_charset,
    )
    try:
        return [build_not_scored_sr(to_write, series_instance_uid=to_write.new_uid(), previous=previous)]
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise DocumentsNotBuilt(f"SR not built: {type(exc).__name__}: {exc}") from exc


def _recorded(session: Session, result: ScoreResult, study_uid: str) -> ScoreRecorded:
    """The record of a result already stored (by another worker that held the same job)."""
    outgoing_id = session.scalar(select(OutgoingResult.id).where(OutgoingResult.score_result_id == result.id))
    uids = tuple(uid for uid in (result.sr_sop_instance_uid, result.heatmap_sop_instance_uid) if uid)
    return ScoreRecorded(
        study_instance_uid=study_uid, revision=result.revision, task=result.task, model_name=result.model_name,
        model_version=result.model_version, role=result.role, outcome=result.outcome, score=result.score,
        call=result.call, reason=result.reason, result_id=int(result.id), document_uids=uids, outgoing_id=outgoing_id,
    )


def _finish_already_scored(session_factory: sessionmaker[Session], job_id: int, study_uid: str) -> ScoreRecorded | None:
    """A job whose result is stored is done, whoever stored it: mark it so (never re-run, never dead-letter).

    This happens when a job's lease ran out while its first worker was still scoring: a second worker took
    it over and one of the two stored the result first. None when the job has no result yet.
    """
    with session_scope(session_factory) as session:
        result = session.scalar(select(ScoreResult).where(ScoreResult.job_id == job_id))
        if result is None:
            return None
        job = session.get(ScoringJob, job_id)
        assert job is not None
        if job.state != JobState.done:
            mark_done(session, job, utcnow())
        log.warning("job %d: already scored (result %d) by another worker; this worker's work is dropped", job_id, result.id)
        return _recorded(session, result, study_uid)


def _documents(
    model: LoadedModel, task: str, scored: TaskScore, call: str, previous: Dataset | None, settings: Settings
) -> list[Dataset]:
    """The SR and heat-map; DocumentsNotBuilt when highdicom or pydicom refuse what the source's header holds."""
    to_write = ResultToWrite(
        task, model.name, model.version, model.run_id, model.threshold, call, scored, settings.uid_root,
        steering=model.steering, default_charset=settings.dicom_default_charset,
    )
    try:
        sr = build_sr(to_write, series_instance_uid=to_write.new_uid(), previous=previous)
        heatmap = build_heatmap(to_write, series_instance_uid=to_write.new_uid())
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        # What the libraries raise for a header value they refuse (an unknown PatientSex, a character set):
        # the same on every attempt, so never a retry that throws the score away.
        raise DocumentsNotBuilt(f"SR and heat-map not built: {type(exc).__name__}: {exc}") from exc
    return [sr] + ([heatmap] if heatmap is not None else [])


def score_job(
    job_id: int, *, settings: Settings, session_factory: sessionmaker[Session], selector: ModelSelector, started: datetime,
    node: str | None = None, login: IngestLogin | None = None,
) -> ScoreRecorded:
    """Run the job's model on its study revision and store the outcome; ModelUnavailable etc. propagate (retry).

    ``node``: the name of this spool's node (``spool_node``), recorded on the outgoing row; read when not given.
    ``login``: a fetching worker's token on the ingest node, reused from job to job.
    """
    with session_factory() as session:
        job = session.get(ScoringJob, job_id)
        assert job is not None
        study = session.get(Study, job.study_id)
        assert study is not None
        paths = _instance_paths(session, study.id, job.revision)
        completed_at, study_uid = study.completed_at, study.study_instance_uid
        task, version, role = job.task, job.model_version, ModelRole(job.role)
        previous_id, previous_doc = (
            previous_sr(session, settings, study.id, study_uid) if role == ModelRole.champion else (None, None)
        )
        corrected = correction_of(session, study.id, job.revision)
    already = _finish_already_scored(session_factory, job_id, study_uid)
    if already is not None:
        return already
    # The site's defer rules now, whatever the selector was built with: a defer they do not earn is not served.
    model = selector.load(task, version, defer_rules=defer_rules_from_settings(settings))
    try:
        # A remote worker without the ingest node's spool fetches the study (InstancesUnavailable: a retry);
        # inside the try, so a fetch cut short leaves no fetched instance behind.
        files = instance_files(settings, job_id, study_uid, paths, login)
        return _score_and_store(
            job_id, settings=settings, session_factory=session_factory, selector=selector, model=model, files=files, role=role,
            task=task, study_uid=study_uid, previous=(previous_id, previous_doc), timings_from=(completed_at, started),
            node=node or spool_node(settings), corrected=corrected,
        )
    finally:
        if settings.ingest_url:
            drop_cached_study(settings, job_id)


def _score_and_store(
    job_id: int, *, settings: Settings, session_factory: sessionmaker[Session], selector: ModelSelector,
    model: LoadedModel, files: list[Path],
    role: ModelRole, task: str, study_uid: str, previous: tuple[int | None, Dataset | None],
    timings_from: tuple[datetime | None, datetime], node: str, corrected: str | None = None,
) -> ScoreRecorded:
    """``corrected``: why the revision is not scored from its stored copies (a corrected re-send); no model runs."""
    previous_id, previous_sr = previous
    completed_at, started = timings_from
    scored: TaskScore | None = None
    reason = corrected
    outcome = StudyStatus.scored if corrected is None else StudyStatus.out_of_scope
    if corrected is None:
        try:
            datasets = read_study(files, max_bytes=settings.max_instance_mb * 1024 * 1024)
            scored = score_study(task, model, datasets, min_ct_slices=settings.ct_min_slices)
        except OutOfScope as exc:
            outcome, reason = StudyStatus.out_of_scope, exc.reason
        except CouldNotScore as exc:
            outcome, reason = StudyStatus.could_not_score, exc.reason
    inferred = utcnow()
    call = None if scored is None else ("positive" if scored.score >= model.threshold else "negative")
    replaced_by = None
    if role == ModelRole.champion:
        # Bound at queue time; a rollback (or promotion) since then replaced the version. Its result is kept for the
        # record but steers nothing and is not written back, and the study is scored again by the champion now.
        champion_now = selector.champion_now(task)
        if champion_now != model.version:
            role, replaced_by = ModelRole.previous_champion, champion_now or "none"
    # A shadow version's results stay in medscreen's records (quality review, the page's monitoring note): its
    # SR and heat-map in the PACS would present as a finding what its card says must not be shown as one.
    shown = model.steering != SteeringRight.shadow or settings.writeback_shadow
    recorded: ScoreRecorded | None = None
    while True:
        documents: list[Dataset] = []
        not_built: str | None = None
        if role == ModelRole.champion and shown:
            # Built once here and kept: the study view shows the heat-map, the dispatcher sends these very files.
            try:
                if scored is not None and call is not None:
                    documents = _documents(model, task, scored, call, previous_sr, settings)
                elif files:
                    documents = not_scored_documents(
                        settings, source=files[0], previous=previous_sr, task=task, model_name=model.name,
                        model_version=model.version, run_id=model.run_id, outcome=outcome, reason=reason or "",
                    )
            except DocumentsNotBuilt as exc:
                # The outcome is kept; only the documents are missing, recorded as a dead write-back.
                not_built = exc.reason
            else:
                store_documents(settings, study_uid, documents)
        destination = pacs_destination(settings) if documents else None
        try:
            recorded = _store_result(
                job_id, session_factory=session_factory, model=model, role=role, task=task, outcome=outcome,
                scored=scored, call=call, reason=reason, documents=documents, destination=destination,
                previous_id=previous_id, timings_from=(completed_at, started, inferred), node=node,
                not_built=(not_built, pacs_destination(settings) is not None), replaced_by=replaced_by,
                corrected=corrected is not None,
            )
        except _CorrectedMeanwhile as exc:
            # A corrected re-send arrived while the model ran: the stored copy's header was the wrong one.
            discard_documents(settings, study_uid, documents)
            corrected, outcome, reason, scored, call = exc.reason, StudyStatus.out_of_scope, exc.reason, None, None
            continue
        break
    if recorded is None:
        # Another worker stored this job's result while this one scored it: its documents are the ones named.
        discard_documents(settings, study_uid, documents)
        recorded = _finish_already_scored(session_factory, job_id, study_uid)
        assert recorded is not None
    elif len(recorded.document_uids) < len(documents):
        # Not stored as the study's result (a newer revision supersedes the job's): its documents are never sent.
        discard_documents(settings, study_uid, documents)
    return recorded


class _CorrectedMeanwhile(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _store_result(
    job_id: int, *, session_factory: sessionmaker[Session], model: LoadedModel, role: ModelRole, task: str,
    outcome: StudyStatus, scored: TaskScore | None, call: str | None, reason: str | None, documents: list[Dataset],
    destination: dict[str, Any] | None, previous_id: int | None,
    timings_from: tuple[datetime | None, datetime, datetime], node: str,
    not_built: tuple[str | None, bool] = (None, False), replaced_by: str | None = None, corrected: bool = False,
) -> ScoreRecorded | None:
    """Commit the result, the outgoing row, the study's status and the job's completion; None when the job
    already has a result (the unique ``score_results.job_id`` decides between two workers on one job).

    ``not_built``: why the SR and heat-map could not be built (None when they were, or were not asked for), and
    whether a PACS is configured (the result's write-back is then ``failed``, as after a dead send).
    ``replaced_by``: the champion now, when the job's version was champion when queued and is no longer (the result
    is stored as ``previous-champion`` and ``shadow``, and the study goes back to ``routed`` to be scored by it).

    Decided under a lock on the study row, so that a withdrawal (``inference/ingest.py``) or a re-queue commits wholly
    before or after: a champion result of a revision older than the study's now (a late image, a corrected re-send
    since the job was queued) is stored as ``previous-champion`` and ``shadow``, without documents, and never becomes
    the study's result; a corrected re-send of one of the revision's instances raises ``_CorrectedMeanwhile``
    unless ``corrected`` (the outcome already says so)."""
    not_built_reason, pacs_configured = not_built
    completed_at, started, inferred = timings_from
    steering = SteeringRight.shadow if replaced_by is not None else model.steering
    with session_scope(session_factory) as session:
        job = session.get(ScoringJob, job_id)
        assert job is not None
        study = session.scalars(select(Study).where(Study.id == job.study_id).with_for_update(key_share=True)).one()
        study_uid = study.study_instance_uid
        if session.scalar(select(ScoreResult.id).where(ScoreResult.job_id == job_id)) is not None:
            return None
        if not corrected and (correction := correction_of(session, study.id, job.revision)) is not None:
            raise _CorrectedMeanwhile(correction)
        if role == ModelRole.champion and study.revision > job.revision:
            log.warning("job %d: revision %d is superseded by revision %d: result kept, not the study's",
                        job.id, job.revision, study.revision)
            role, steering, documents, destination = ModelRole.previous_champion, SteeringRight.shadow, [], None
        stored_at = utcnow()
        result = ScoreResult(
            study_id=study.id,
            job_id=job.id,
            revision=job.revision,
            task=task,
            model_name=model.name,
            model_version=model.version,
            mlflow_run_id=model.run_id,
            role=role.value,
            outcome=outcome.value,
            score=None if scored is None else scored.score,
            threshold=model.threshold,
            call=call,
            localisation={} if scored is None else scored.localisation,
            reason=reason,
            timings={
                "complete_to_job_start_s": seconds_between(completed_at, started),
                "inference_s": seconds_between(started, inferred),
                "job_start_to_stored_s": seconds_between(started, stored_at),
            },
            writeback_state=(
                WritebackState.pending if destination
                else WritebackState.failed if not_built_reason and pacs_configured
                else WritebackState.disabled
            ).value,
            steering=steering.value,
            sr_sop_instance_uid=str(documents[0].SOPInstanceUID) if documents else None,
            sr_series_instance_uid=str(documents[0].SeriesInstanceUID) if documents else None,
            heatmap_sop_instance_uid=str(documents[1].SOPInstanceUID) if len(documents) > 1 else None,
            supersedes_id=previous_id if documents else None,
            created_at=stored_at,
        )
        try:
            with session.begin_nested():
                session.add(result)
        except IntegrityError:
            # The other worker's insert committed between the check above and this one.
            return None
        outgoing_id = None
        if destination is not None:
            outgoing = queue_outgoing(
                session, study_id=study.id, score_result_id=result.id, folder=study_uid,
                sop_instance_uids=[str(ds.SOPInstanceUID) for ds in documents], destination=destination, now=stored_at,
                node=node,
            )
            session.flush()
            outgoing_id = outgoing.id
        if role == ModelRole.champion and study.revision == job.revision:
            study.status = outcome.value
            study.status_reason = reason
        elif replaced_by is not None and study.revision == job.revision:
            study.status, study.status_reason = StudyStatus.routed.value, None
            log.warning("job %d: %s v%s is no longer champion (now %s): result kept, not steering; study re-routed",
                        job.id, model.name, model.version, replaced_by)
        add_event(
            session, study.id, job.revision, outcome.value, stored_at,
            model=f"{model.name}:{model.version}", role=role.value, steering=steering.value, score=result.score,
            call=call, reason=reason,
            **result.timings,
        )
        if replaced_by is not None and study.revision == job.revision:
            add_event(session, study.id, job.revision, "rescore-requested", stored_at,
                      by=f"model registry: {model.name} v{model.version} is no longer champion (now v{replaced_by})")
        if not_built_reason:
            add_event(session, study.id, job.revision, "write-back-dead", stored_at, reason=not_built_reason, attempts=0)
            # The reason is in the timeline only: a refused header value could be the patient's.
            log.error("job %d: %s v%s scored, but its SR and heat-map could not be built", job.id, model.name, model.version)
        mark_done(session, job, utcnow())
        log.info(
            "job %d: %s %s v%s -> %s", job.id, role.value, model.name, model.version,
            f"{scored.score:.3f} ({call})" if scored is not None else f"could not score: {reason}",
        )
        return ScoreRecorded(
            study_instance_uid=study_uid, revision=job.revision, task=task, model_name=model.name,
            model_version=model.version, role=role.value, outcome=outcome.value, score=result.score, call=call,
            reason=reason, result_id=int(result.id), document_uids=tuple(str(ds.SOPInstanceUID) for ds in documents),
            outgoing_id=outgoing_id,
        )
