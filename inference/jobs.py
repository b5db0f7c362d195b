"""The durable scoring queue: jobs keyed by (study revision, model version), with leases, retries and a dead letter.

Routed studies are queued for the versions the registry names (champion, and challenger in shadow); a
re-score request only puts the study back in ``routed``, so the HTTP process needs neither the registry nor
a model. A job is claimed with a lease; a worker that dies leaves the lease to expire and another takes the
job. Failures retry with exponential backoff; after ``max_attempts`` the job is dead, visible in the API
with its reason, and can be replayed; so is a job whose workers died on all its attempts.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from inference.errors import CouldNotScore
from inference.study_record import add_event
from inference.tables import ScoreResult, ScoringJob, Study
from service.lifecycle import JobState, ModelRole, StudyStatus, Task

__all__ = [
    "enqueue",
    "enqueue_routed",
    "request_rescore",
    "claim_next",
    "extend_lease",
    "worker_owner",
    "release_dead_leases",
    "mark_done",
    "mark_failed",
    "replay",
    "retire",
    "backoff_s",
]

log = logging.getLogger(__name__)


def backoff_s(attempts: int, base_s: float) -> float:
    return min(base_s * 2 ** max(attempts - 1, 0), 3600.0)


def enqueue(
    session: Session, study: Study, task: str, model_name: str, model_version: str, role: ModelRole, now: datetime
) -> ScoringJob | None:
    """Queue one job; None when this revision was already queued for this model version (never scored twice)."""
    exists = session.scalar(
        select(ScoringJob.id).where(
            ScoringJob.study_id == study.id,
            ScoringJob.revision == study.revision,
            ScoringJob.model_name == model_name,
            ScoringJob.model_version == model_version,
        )
    )
    if exists is not None:
        return None
    job = ScoringJob(
        study_id=study.id,
        revision=study.revision,
        task=task,
        model_name=model_name,
        model_version=model_version,
        role=ModelRole(role).value,
        state=JobState.queued.value,
        attempts=0,
        next_attempt_at=now,
        created_at=now,
        updated_at=now,
    )
    try:
        with session.begin_nested():
            session.add(job)
    except IntegrityError:
        return None
    add_event(session, study.id, study.revision, "queued", now, model=f"{model_name}:{model_version}", role=job.role)
    return job


def _status_after_scoring(session: Session, study: Study, version: str) -> tuple[StudyStatus, str | None]:
    """The status a study returns to when its revision was already queued for ``version``."""
    job = session.scalar(
        select(ScoringJob).where(
            ScoringJob.study_id == study.id, ScoringJob.revision == study.revision, ScoringJob.model_version == version
        )
    )
    if job is None or job.state != JobState.done:
        return (StudyStatus.failed, job.last_error) if job is not None and job.state == JobState.dead else (StudyStatus.scoring, None)
    result = session.scalar(select(ScoreResult).where(ScoreResult.job_id == job.id))
    if result is None:
        return StudyStatus.could_not_score, None
    return StudyStatus(result.outcome), result.reason


def enqueue_routed(
    session: Session,
    versions: Mapping[tuple[Task, ModelRole], str],
    now: datetime,
    fresh_versions: Callable[[], Mapping[tuple[Task, ModelRole], str]] | None = None,
) -> int:
    """Queue a champion job (and a challenger one) for each routed study revision; returns how many champions.

    ``versions`` is the registry's {(task, role): version}, possibly cached; ``fresh_versions`` re-reads the
    registry. A study whose task has no champion stays routed and is picked up once one is registered.
    """
    queued = 0
    # Each study row is locked until the caller commits, so a withdrawal by a corrected re-send (inference/ingest.py)
    # commits wholly before (the study is no longer routed) or after (its job is then of an older revision); a row
    # another transaction holds is left for the next pass. SQLite serialises writers anyway (BEGIN IMMEDIATE).
    routed = select(Study).where(Study.status == StudyStatus.routed, Study.task.is_not(None))
    for study in session.scalars(routed.with_for_update(key_share=True, skip_locked=True)):
        task = Task(str(study.task))
        champion = versions.get((task, ModelRole.champion))
        if champion is None:
            continue
        if fresh_versions is not None and _already_queued(session, study, champion):
            # A re-score asked right after a promotion: the cached champion may be the one that already
            # scored this revision, so read the registry again before calling the request a no-op.
            versions, fresh_versions = fresh_versions(), None
            champion = versions.get((task, ModelRole.champion)) or champion
        if enqueue(session, study, task.value, task.value, champion, ModelRole.champion, now) is not None:
            queued += 1
            study.status = StudyStatus.scoring.value
        else:
            # A re-score request for a revision this champion already scored: nothing new to do.
            status, reason = _status_after_scoring(session, study, champion)
            study.status, study.status_reason = status.value, reason
            add_event(session, study.id, study.revision, "rescore-skipped", now,
                      reason=f"revision {study.revision} was already queued for {task.value} version {champion}")
        challenger = versions.get((task, ModelRole.challenger))
        if challenger and challenger != champion:
            enqueue(session, study, task.value, task.value, challenger, ModelRole.challenger, now)
    return queued


def request_rescore(session: Session, study: Study, actor: str, now: datetime) -> None:
    """Ask the worker to score the study's current revision with the current champion.

    Only the study's status changes (back to ``routed``); the worker binds the job to whichever version is
    champion when it queues it, and skips a revision that version already scored.
    """
    if not study.task:
        raise CouldNotScore("the study has no task: it was not routed to a model")
    if study.status in (StudyStatus.receiving, StudyStatus.complete):
        raise CouldNotScore(f"the study is still {study.status}; it is scored once complete and routed")
    if study.status in (StudyStatus.routed, StudyStatus.scoring):
        raise CouldNotScore(f"the study is already {study.status}")
    study.status = StudyStatus.routed.value
    study.status_reason = None
    add_event(session, study.id, study.revision, "rescore-requested", now, by=actor)


def _lost_attempt(job: ScoringJob, max_attempts: int) -> str:
    return (
        f"attempt {job.attempts} of {max_attempts} ended without a result: the worker scoring it died "
        "(or stopped renewing its lease)"
    )


def claim_next(
    session: Session, owner: str, lease_s: float, now: datetime, *, max_attempts: int | None = None, base_s: float = 0.0
) -> ScoringJob | None:
    """Take the oldest ready job (queued, due for retry, or with an expired lease) under a lease.

    With ``max_attempts`` (the worker's setting), a ready job that has used them all is dead-lettered instead
    of claimed: its worker died on every attempt (an input that gets the decoder killed would otherwise kill a
    worker forever). None only for callers that move leases and never score.
    """
    ready = or_(
        and_(ScoringJob.state.in_((JobState.queued, JobState.retry)), ScoringJob.next_attempt_at <= now),
        and_(ScoringJob.state == JobState.running, ScoringJob.lease_until < now),
    )
    query = select(ScoringJob).where(ready).order_by(ScoringJob.role, ScoringJob.id).limit(1)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    while True:
        job = session.scalars(query).first()
        if job is None:
            return None
        # mark_failed dead-letters a job that failed its last attempt; one still ready with none left lost
        # them to dead workers (its lease expired, or a service start released it).
        if max_attempts is None or job.state == JobState.queued or job.attempts < max_attempts:
            break
        mark_failed(session, job, _lost_attempt(job, max_attempts), now, max_attempts=max_attempts, base_s=base_s)
    if job.state == JobState.running:
        log.warning("job %d: lease of %s expired; taking it over", job.id, job.lease_owner)
    job.state = JobState.running.value
    job.attempts += 1
    job.lease_owner = owner
    job.lease_until = now + timedelta(seconds=lease_s)
    job.updated_at = now
    return job


def extend_lease(session: Session, job_id: int, owner: str, lease_s: float, now: datetime) -> bool:
    """The running worker's heartbeat: push its lease forward; False when the job is no longer its own."""
    result = session.execute(
        update(ScoringJob)
        .where(ScoringJob.id == job_id, ScoringJob.state == JobState.running, ScoringJob.lease_owner == owner)
        .values(lease_until=now + timedelta(seconds=lease_s))
    )
    return getattr(result, "rowcount", 0) == 1


def _node_tag(node: str) -> str:
    """A short digest of a node's name (which holds its home's path): lease owners are 64 characters at most."""
    return hashlib.sha256(node.encode("utf-8")).hexdigest()[:8]


def worker_owner(node: str) -> str:
    """The lease owner of this thread's scoring worker on ``node``: ``host:pid:thread:node-tag``."""
    return f"{os.uname().nodename}:{os.getpid()}:{threading.get_native_id()}:{_node_tag(node)}"


def _owner_alive(owner: str, host: str) -> bool:
    """Whether the worker named ``host:pid:...`` still runs (only decidable for this host's workers)."""
    parts = owner.split(":")
    if len(parts) < 2 or parts[0] != host or not parts[1].isdigit():
        return True
    return os.path.exists(f"/proc/{parts[1]}")


def _owned_by(owner: str, node: str) -> bool:
    parts = owner.split(":")
    return len(parts) == 4 and parts[3] == _node_tag(node)


def release_dead_leases(
    session: Session, host: str, now: datetime, *, starting_node: str | None = None, max_attempts: int | None = None,
    base_s: float = 0.0,
) -> int:
    """Put back in the queue the running jobs of this host's dead workers; at the start of ``starting_node``, all
    of that node's workers' jobs too (they belonged to its previous run).

    Another node on this host (another home) keeps the jobs its live workers run: a start had released them by
    hostname, and the jobs were scored twice (or dead-lettered while still being scored).

    A killed worker's lease would otherwise hold its study until the lease ran out; the attempt it used counts,
    and with ``max_attempts`` a job that has used them all is dead-lettered (through :func:`mark_failed`, so the
    study fails with the reason) instead of killing one more worker. Without it, :func:`claim_next` does so.
    """
    released = 0
    for job in session.scalars(select(ScoringJob).where(ScoringJob.state == JobState.running)):
        owner = job.lease_owner or ""
        # Workers on other machines (MEDSCREEN_SPOOL_PATH) are judged by their lease alone, even at a start.
        if not owner.startswith(f"{host}:"):
            continue
        previous_run = starting_node is not None and _owned_by(owner, starting_node)
        if not previous_run and _owner_alive(owner, host):
            continue
        log.warning("job %d: worker %s is gone; the job goes back to the queue", job.id, job.lease_owner)
        add_event(session, job.study_id, job.revision, "lease-released", now, job_id=job.id)
        released += 1
        if max_attempts is not None and job.attempts >= max_attempts:
            mark_failed(session, job, _lost_attempt(job, max_attempts), now, max_attempts=max_attempts, base_s=base_s)
            continue
        job.state = JobState.retry.value
        job.next_attempt_at = now
        job.lease_owner = None
        job.lease_until = None
        job.updated_at = now
    return released


def mark_done(session: Session, job: ScoringJob, now: datetime) -> None:
    job.state = JobState.done.value
    job.lease_owner = None
    job.lease_until = None
    job.last_error = None
    job.updated_at = now


def mark_failed(session: Session, job: ScoringJob, reason: str, now: datetime, *, max_attempts: int, base_s: float) -> None:
    job.last_error = reason
    job.lease_owner = None
    job.lease_until = None
    job.updated_at = now
    if job.attempts >= max_attempts:
        job.state = JobState.dead.value
        study = session.get(Study, job.study_id)
        if study is not None and job.role == ModelRole.champion and study.revision == job.revision:
            if study.status in (StudyStatus.scoring, StudyStatus.routed):
                study.status = StudyStatus.failed.value
                study.status_reason = reason
        add_event(session, job.study_id, job.revision, "dead-letter", now, job_id=job.id, reason=reason,
                  attempts=job.attempts)
        log.error("job %d dead after %d attempts: %s", job.id, job.attempts, reason)
        return
    job.state = JobState.retry.value
    job.next_attempt_at = now + timedelta(seconds=backoff_s(job.attempts, base_s))
    add_event(session, job.study_id, job.revision, "retry", now, job_id=job.id, reason=reason, attempts=job.attempts)


def retire(session: Session, job: ScoringJob, reason: str, now: datetime) -> None:
    """Dead-letter a job whose version cannot be loaded and no longer holds the job's role (deleted from the registry,
    or withdrawn by a rollback), at once: its study, if the job was its champion's, goes back to ``routed`` and is
    queued for the champion now. Retried, the job had used its attempts on a version nobody serves and left the
    study ``failed``."""
    job.state = JobState.dead.value
    job.last_error = reason
    job.lease_owner = None
    job.lease_until = None
    job.updated_at = now
    add_event(session, job.study_id, job.revision, "dead-letter", now, job_id=job.id, reason=reason, attempts=job.attempts)
    study = session.get(Study, job.study_id)
    if (
        study is not None and job.role == ModelRole.champion and study.revision == job.revision
        and study.status in (StudyStatus.scoring, StudyStatus.failed)
    ):
        study.status, study.status_reason = StudyStatus.routed.value, None
        add_event(session, study.id, study.revision, "rescore-requested", now, by=f"model registry: {reason}")
    log.warning("job %d retired: %s", job.id, reason)


def replay(session: Session, job: ScoringJob, actor: str, now: datetime) -> None:
    """Put a dead job back in the queue (an operator's action, audited by the caller)."""
    job.state = JobState.queued.value
    job.attempts = 0
    job.next_attempt_at = now
    job.updated_at = now
    study = session.get(Study, job.study_id)
    if study is not None and study.status == StudyStatus.failed and study.revision == job.revision:
        study.status = StudyStatus.scoring.value
        study.status_reason = None
    add_event(session, job.study_id, job.revision, "replayed", now, job_id=job.id, by=actor)


def _already_queued(session: Session, study: Study, version: str) -> bool:
    return session.scalar(
        select(ScoringJob.id).where(
            ScoringJob.study_id == study.id,
            ScoringJob.revision == study.revision,
            ScoringJob.model_name == study.task,
            ScoringJob.model_version == version,
        ).limit(1)
    ) is not None
