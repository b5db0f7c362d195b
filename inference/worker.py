"""The scoring worker: routed studies -> jobs -> champion (and challenger) results -> write-back to PACS.

Per-stage timings go in the result and the study timeline: complete -> job start -> inference done ->
result stored -> written back. A champion result sets the study's status (`scored` or
`could_not_score`); a challenger result is stored in shadow and never touches the study or the PACS.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from datetime import datetime
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from inference.assemble import read_study
from inference.champions import CHALLENGER, CHAMPION, LoadedModel, ModelSelector
from inference.errors import CouldNotScore, ScoringError
from inference.jobs import claim_next, enqueue, mark_done, mark_failed
from inference.scorers import TaskScore, score_task
from inference.study_record import add_event
from inference.tables import Instance, ScoreResult, ScoringJob, Study
from inference.tls import pacs_tls_args
from inference.writeback import ResultToWrite, build_heatmap, build_sr, send_c_store, send_stow_rs
from service.db import session_scope, utcnow
from service.settings import Settings

__all__ = ["ScoringWorker"]

log = logging.getLogger(__name__)


def _seconds(start: datetime | None, end: datetime) -> float | None:
    return None if start is None else round((end - start).total_seconds(), 3)


class ScoringWorker:
    def __init__(self, settings: Settings, session_factory: sessionmaker[Session], selector: ModelSelector) -> None:
        self.settings = settings
        self.session_factory = session_factory
        self.selector = selector
        self.owner = f"{os.uname().nodename}:{os.getpid()}:{threading.get_ident()}"
        self.outgoing = settings.spool_dir / "outgoing"

    @property
    def writeback_enabled(self) -> bool:
        s = self.settings
        return bool(s.writeback and (s.pacs_stow_url or (s.pacs_ae_title and s.pacs_host and s.pacs_port)))

    # --- queueing -------------------------------------------------------------------------------

    def enqueue_routed(self) -> int:
        """Queue a champion job (and a challenger one) for each routed study revision."""
        self.selector.refresh()
        queued = 0
        now = utcnow()
        with session_scope(self.session_factory) as session:
            for study in session.scalars(select(Study).where(Study.status == "routed", Study.task.is_not(None))):
                task = str(study.task)
                champion = self.selector.version_for(task, CHAMPION)
                if champion is None:
                    continue  # stays routed; picked up once a champion is registered
                if enqueue(session, study, task, task, champion, CHAMPION, now):
                    queued += 1
                challenger = self.selector.version_for(task, CHALLENGER)
                if challenger and challenger != champion:
                    enqueue(session, study, task, task, challenger, CHALLENGER, now)
                study.status = "scoring"
        return queued

    def rescore(self, session: Session, study: Study, now: datetime) -> ScoringJob | None:
        """Queue the current champion for the study's current revision; None if that pair was already scored."""
        self.selector.refresh(force=True)
        if not study.task:
            raise CouldNotScore("the study has no task: it was not routed to a model")
        champion = self.selector.version_for(study.task, CHAMPION)
        if champion is None:
            raise CouldNotScore(f"no champion model for {study.task}")
        job = enqueue(session, study, study.task, study.task, champion, CHAMPION, now)
        if job is not None:
            study.status = "scoring"
        return job

    # --- running --------------------------------------------------------------------------------

    def process_one(self) -> bool:
        now = utcnow()
        with session_scope(self.session_factory) as session:
            job = claim_next(session, self.owner, self.settings.scoring_lease_s, now)
            if job is None:
                return False
            job_id = job.id
        try:
            self._run(job_id, started=now)
        except ScoringError as exc:
            self._fail(job_id, exc.reason)
        except Exception as exc:  # noqa: BLE001 - one bad job must not stop the worker; it retries then dead-letters
            log.exception("job %d failed unexpectedly", job_id)
            self._fail(job_id, f"{type(exc).__name__}: {exc}")
        return True

    def _fail(self, job_id: int, reason: str) -> None:
        with session_scope(self.session_factory) as session:
            job = session.get(ScoringJob, job_id)
            assert job is not None
            mark_failed(
                session, job, reason, utcnow(),
                max_attempts=self.settings.scoring_max_attempts, base_s=self.settings.scoring_retry_base_s,
            )

    def _instance_paths(self, session: Session, study_id: int, revision: int) -> list[Path]:
        rows = session.scalars(
            select(Instance.path).where(Instance.study_id == study_id, Instance.revision <= revision).order_by(Instance.id)
        )
        return [Path(p) for p in rows]

    def _run(self, job_id: int, started: datetime) -> None:
        with self.session_factory() as session:
            job = session.get(ScoringJob, job_id)
            assert job is not None
            study = session.get(Study, job.study_id)
            assert study is not None
            result = session.scalar(select(ScoreResult).where(ScoreResult.job_id == job_id))
            paths = self._instance_paths(session, study.id, job.revision)
            completed_at = study.completed_at
            study_uid = study.study_instance_uid
            task, version, role = job.task, job.model_version, job.role
        scored: tuple[TaskScore, LoadedModel] | None = None
        if result is None:
            result_id, scored = self._score_and_store(job_id, task, version, role, paths, completed_at, started)
        else:
            result_id = result.id  # a retry after a failed write-back: the score stands, only send again
        if role == CHAMPION and self.writeback_enabled:
            self._write_back(result_id, study_uid, scored)
        elif role == CHAMPION and result is None:
            self._keep_documents(result_id, study_uid, scored)
        with session_scope(self.session_factory) as session:
            job = session.get(ScoringJob, job_id)
            assert job is not None
            mark_done(session, job, utcnow())

    def _score_and_store(
        self, job_id: int, task: str, version: str, role: str, paths: list[Path], completed_at: datetime | None,
        started: datetime,
    ) -> tuple[int, tuple[TaskScore, LoadedModel] | None]:
        model = self.selector.load(task, version)
        scored = None
        reason = None
        try:
            datasets = read_study(paths)
            scored = score_task(task, model, datasets, min_ct_slices=self.settings.ct_min_slices)
        except CouldNotScore as exc:
            reason = exc.reason
        inferred = utcnow()
        with session_scope(self.session_factory) as session:
            job = session.get(ScoringJob, job_id)
            assert job is not None
            study = session.get(Study, job.study_id)
            assert study is not None
            call = None if scored is None else ("positive" if scored.score >= model.threshold else "negative")
            stored_at = utcnow()
            result = ScoreResult(
                study_id=study.id,
                job_id=job.id,
                revision=job.revision,
                task=task,
                model_name=model.name,
                model_version=model.version,
                mlflow_run_id=model.run_id,
                role=role,
                outcome="scored" if scored is not None else "could_not_score",
                score=None if scored is None else scored.score,
                threshold=model.threshold,
                call=call,
                localisation={} if scored is None else scored.localisation,
                reason=reason,
                timings={
                    "complete_to_job_start_s": _seconds(completed_at, started),
                    "inference_s": _seconds(started, inferred),
                    "job_start_to_stored_s": _seconds(started, stored_at),
                },
                writeback_state="pending" if (scored is not None and role == CHAMPION and self.writeback_enabled)
                else "disabled",
                created_at=stored_at,
            )
            session.add(result)
            session.flush()
            if role == CHAMPION and study.revision == job.revision:
                study.status = "scored" if scored is not None else "could_not_score"
                study.status_reason = reason
            add_event(
                session, study.id, job.revision, "scored" if scored is not None else "could_not_score", stored_at,
                model=f"{model.name}:{model.version}", role=role, score=result.score, call=call, reason=reason,
                **result.timings,
            )
            log.info(
                "job %d: %s %s v%s -> %s", job.id, role, model.name, model.version,
                f"{scored.score:.3f} ({call})" if scored is not None else f"could not score: {reason}",
            )
            return int(result.id), (scored, model) if scored is not None else None

    def _documents(
        self, result_id: int, study_uid: str, scored_now: tuple[TaskScore, LoadedModel] | None
    ) -> tuple[list[Dataset], int | None, str | None] | None:
        """Build (and keep in spool/outgoing) the SR and heat-map of a scored champion result."""
        with self.session_factory() as session:
            result = session.get(ScoreResult, result_id)
            assert result is not None
            if result.outcome != "scored":
                return None
            previous = session.scalar(
                select(ScoreResult)
                .where(
                    ScoreResult.study_id == result.study_id,
                    ScoreResult.role == CHAMPION,
                    ScoreResult.id < result.id,
                    ScoreResult.sr_sop_instance_uid.is_not(None),
                )
                .order_by(ScoreResult.id.desc())
                .limit(1)
            )
            previous_id = previous.id if previous is not None else None
            previous_sr = previous.sr_sop_instance_uid if previous is not None else None
            paths = self._instance_paths(session, result.study_id, result.revision)
        if scored_now is not None:
            scored, model = scored_now
        else:
            # A retried write-back: the documents are rebuilt from the stored inputs with the same version.
            model = self.selector.load(result.task, result.model_version)
            scored = score_task(result.task, model, read_study(paths), min_ct_slices=self.settings.ct_min_slices)
        to_write = ResultToWrite(
            result.task, model.name, model.version, model.run_id, model.threshold,
            "positive" if scored.score >= model.threshold else "negative", scored,
        )
        folder = self.outgoing / study_uid
        folder.mkdir(parents=True, exist_ok=True)
        previous_ds = None
        if previous_sr and (folder / f"{previous_sr}.dcm").exists():
            previous_ds = dcmread(folder / f"{previous_sr}.dcm")
        sr = build_sr(to_write, series_instance_uid=str(generate_uid()), previous=previous_ds)
        heatmap = build_heatmap(to_write, series_instance_uid=str(generate_uid()))
        documents = [sr] + ([heatmap] if heatmap is not None else [])
        for ds in documents:
            ds.save_as(folder / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
        return documents, previous_id, previous_sr

    def _keep_documents(self, result_id: int, study_uid: str, scored_now: tuple[TaskScore, LoadedModel] | None) -> None:
        """Without write-back, the SR and heat-map are still kept locally for the worklist's study view."""
        built = self._documents(result_id, study_uid, scored_now)
        if built is None:
            return
        documents, previous_id, _ = built
        with session_scope(self.session_factory) as session:
            stored = session.get(ScoreResult, result_id)
            assert stored is not None
            stored.sr_sop_instance_uid = str(documents[0].SOPInstanceUID)
            stored.heatmap_sop_instance_uid = str(documents[1].SOPInstanceUID) if len(documents) > 1 else None
            stored.supersedes_id = previous_id

    def _write_back(self, result_id: int, study_uid: str, scored_now: tuple[TaskScore, LoadedModel] | None) -> None:
        with self.session_factory() as session:
            result = session.get(ScoreResult, result_id)
            assert result is not None
            if result.outcome != "scored" or result.writeback_state == "sent":
                return
            created_at = result.created_at
        built = self._documents(result_id, study_uid, scored_now)
        if built is None:
            return
        documents, previous_id, previous_sr = built
        sr = documents[0]
        heatmap = documents[1] if len(documents) > 1 else None
        try:
            self._send(documents)
        except ScoringError:
            with session_scope(self.session_factory) as session:
                stored = session.get(ScoreResult, result_id)
                assert stored is not None
                stored.writeback_state = "failed"
            raise
        sent_at = utcnow()
        with session_scope(self.session_factory) as session:
            stored = session.get(ScoreResult, result_id)
            assert stored is not None
            stored.writeback_state = "sent"
            stored.sr_sop_instance_uid = str(sr.SOPInstanceUID)
            stored.heatmap_sop_instance_uid = str(heatmap.SOPInstanceUID) if heatmap is not None else None
            stored.supersedes_id = previous_id
            stored.timings = {**stored.timings, "stored_to_written_back_s": _seconds(created_at, sent_at)}
            add_event(
                session, stored.study_id, stored.revision, "written-back", sent_at,
                sr=stored.sr_sop_instance_uid, heatmap=stored.heatmap_sop_instance_uid,
                supersedes_sr=previous_sr, stored_to_written_back_s=stored.timings["stored_to_written_back_s"],
            )

    def _send(self, documents: list[Dataset]) -> None:
        settings = self.settings
        if settings.pacs_stow_url:
            token = settings.pacs_dicomweb_token
            send_stow_rs(
                documents, base_url=settings.pacs_stow_url, token=token.get_secret_value() if token else None,
                ca_file=str(settings.dicom_tls_ca) if settings.dicom_tls_ca else None,
            )
            return
        send_c_store(
            documents,
            host=str(settings.pacs_host),
            port=int(settings.pacs_port or 0),
            called_ae=str(settings.pacs_ae_title),
            calling_ae=settings.dicom_ae_title,
            tls_args=pacs_tls_args(settings),
        )

    def run_until(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.enqueue_routed()
                while not stop.is_set() and self.process_one():
                    pass
            except Exception:
                # Database hiccups must not end scoring for every later study.
                log.exception("scoring pass failed; retrying")
                time.sleep(1.0)
            stop.wait(self.settings.scoring_poll_s)
