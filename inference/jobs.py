"""The durable scoring queue: jobs keyed by (study revision, model version), with leases, retries and a dead letter.

A job is claimed with a lease; a worker that dies leaves the lease to expire and another takes the job.
Failures retry with exponential backoff; after ``max_attempts`` the job is dead, visible in the API with
its reason, and can be replayed.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from inference.study_record import add_event
from inference.tables import ScoringJob, Study

__all__ = ["enqueue", "claim_next", "mark_done", "mark_failed", "replay", "backoff_s"]

log = logging.getLogger(__name__)


def backoff_s(attempts: int, base_s: float) -> float:
    return min(base_s * 2 ** max(attempts - 1, 0), 3600.0)


def enqueue(
    session: Session, study: Study, task: str, model_name: str, model_version: str, role: str, now: datetime
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
        role=role,
        state="queued",
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
    add_event(session, study.id, study.revision, "queued", now, model=f"{model_name}:{model_version}", role=role)
    return job


def claim_next(session: Session, owner: str, lease_s: float, now: datetime) -> ScoringJob | None:
    """Take the oldest ready job (queued, due for retry, or with an expired lease) under a lease."""
    ready = or_(
        and_(ScoringJob.state.in_(("queued", "retry")), ScoringJob.next_attempt_at <= now),
        and_(ScoringJob.state == "running", ScoringJob.lease_until < now),
    )
    query = select(ScoringJob).where(ready).order_by(ScoringJob.role, ScoringJob.id).limit(1)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    job = session.scalars(query).first()
    if job is None:
        return None
    if job.state == "running":
        log.warning("job %d: lease of %s expired; taking it over", job.id, job.lease_owner)
    job.state = "running"
    job.attempts += 1
    job.lease_owner = owner
    job.lease_until = now + timedelta(seconds=lease_s)
    job.updated_at = now
    return job


def mark_done(session: Session, job: ScoringJob, now: datetime) -> None:
    job.state = "done"
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
        job.state = "dead"
        study = session.get(Study, job.study_id)
        if study is not None and job.role == "champion" and study.revision == job.revision:
            if study.status in ("scoring", "routed"):
                study.status = "failed"
                study.status_reason = reason
        add_event(session, job.study_id, job.revision, "dead-letter", now, job_id=job.id, reason=reason,
                  attempts=job.attempts)
        log.error("job %d dead after %d attempts: %s", job.id, job.attempts, reason)
        return
    job.state = "retry"
    job.next_attempt_at = now + timedelta(seconds=backoff_s(job.attempts, base_s))
    add_event(session, job.study_id, job.revision, "retry", now, job_id=job.id, reason=reason, attempts=job.attempts)


def replay(session: Session, job: ScoringJob, actor: str, now: datetime) -> None:
    """Put a dead job back in the queue (an operator's action, audited by the caller)."""
    job.state = "queued"
    job.attempts = 0
    job.next_attempt_at = now
    job.updated_at = now
    study = session.get(Study, job.study_id)
    if study is not None and study.status == "failed" and study.revision == job.revision:
        study.status = "scoring"
        study.status_reason = None
    add_event(session, job.study_id, job.revision, "replayed", now, job_id=job.id, by=actor)
