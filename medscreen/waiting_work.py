"""Work that has waited too long, for ``/healthz``: studies not completed, routed or scored, and outbox messages
not sent, within ``MEDSCREEN_HEALTHZ_MAX_WAIT_S``.

A process that is alive but hung (a scoring worker stopped in a model call, a background loop blocked) is
``running`` to the supervisor, and a RIS that closes the connection without an ACK is retried without limit, every
message behind it waiting (the channel is sent in order): ``/healthz`` had answered ok through both while studies
stayed unscored and results unsent. The age of the oldest
waiting row is what the site sees, whatever the cause, so it is read from the database rather than from the
processes: a few indexed aggregates per probe. The answer names counts and ages only (``/healthz`` has no login).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from inference.tables import OutgoingResult, ScoringJob, Study, StudyEvent
from service.lifecycle import JobState, StudyStatus
from service.outbox import OutboxMessage, OutboxState
from service.settings import Settings

__all__ = ["waiting_problems"]


def _describe(count: int, oldest: datetime | None, now: datetime, what: str, hint: str) -> list[str]:
    if not count or oldest is None:
        return []
    age = (now - oldest).total_seconds()
    return [f"{count} {what} waited more than the MEDSCREEN_HEALTHZ_MAX_WAIT_S limit (the oldest {age:.0f} s): {hint}"]


def _study_problems(session: Session, settings: Settings, now: datetime) -> list[str]:
    limit = now - timedelta(seconds=settings.healthz_max_wait_s)
    quiet_s = max([settings.quiet_period_s, *settings.quiet_period_by_modality.values()])
    problems: list[str] = []

    # Receiving: complete once its quiet period has passed since the last instance (the completeness loop).
    receiving_limit = limit - timedelta(seconds=quiet_s)
    count, last = session.execute(
        select(func.count(), func.min(Study.last_received_at)).where(
            Study.status == StudyStatus.receiving, Study.last_received_at < receiving_limit
        )
    ).one()
    problems += _describe(count, last + timedelta(seconds=quiet_s) if last else None, now,
                          "studies have", "not completed and routed (the completeness loop may be hung)")
    count, oldest = session.execute(
        select(func.count(), func.min(Study.completed_at)).where(
            Study.status == StudyStatus.complete, Study.completed_at < limit
        )
    ).one()
    problems += _describe(count, oldest, now, "complete studies have", "not routed (the completeness loop may be hung)")

    # Routed: a scoring worker queues a job for it. Waiting since its last event (routed, or a re-score asked):
    # routed_at is the first routing only.
    since = (
        select(func.max(StudyEvent.at).label("at"))
        .join(Study, Study.id == StudyEvent.study_id)
        .where(Study.status == StudyStatus.routed)
        .group_by(Study.id)
        .subquery()
    )
    count, oldest = session.execute(select(func.count(), func.min(since.c.at)).where(since.c.at < limit)).one()
    problems += _describe(count, oldest, now, "routed studies have",
                          "no scoring job queued (a scoring worker may be hung, or the task has no champion)")

    # Jobs: due and not taken, or taken (updated_at is the claim; lease renewals leave it) and not finished.
    due = and_(ScoringJob.state.in_((JobState.queued, JobState.retry)), ScoringJob.next_attempt_at < limit)
    taken = and_(ScoringJob.state == JobState.running, ScoringJob.updated_at < limit)
    count = session.scalar(select(func.count()).select_from(ScoringJob).where(or_(due, taken))) or 0
    if count:
        oldest_due = session.scalar(select(func.min(ScoringJob.next_attempt_at)).where(due))
        oldest_taken = session.scalar(select(func.min(ScoringJob.updated_at)).where(taken))
        oldest = min(at for at in (oldest_due, oldest_taken) if at is not None)
        problems += _describe(count, oldest, now, "scoring jobs have",
                              "not been scored (a scoring worker may be hung or too few for the load)")
    return problems


def _outbox_problems(session: Session, settings: Settings, now: datetime) -> list[str]:
    limit = now - timedelta(seconds=settings.healthz_max_wait_s)
    # Only the channels this site sends: messages left from a peer since unconfigured are not waiting on anything.
    peers = {"hl7": ("the RIS", bool(settings.ris_host and settings.ris_port)), "fhir": ("the EMR", bool(settings.fhir_push_url))}
    problems: list[str] = []
    for channel, (peer, configured) in peers.items():
        if not configured:
            continue
        count, oldest = session.execute(
            select(func.count(), func.min(OutboxMessage.created_at)).where(
                OutboxMessage.channel == channel, OutboxMessage.state == OutboxState.pending,
                OutboxMessage.created_at < limit,
            )
        ).one()
        # The peer's address and error stay behind login (GET /api/outbox gives each message's last_error).
        problems += _describe(count, oldest, now, f"messages for {peer} have",
                              f"not been sent ({peer} is down or does not acknowledge the oldest; "
                              f"GET /api/outbox?channel={channel}&state=pending says why)")
    return problems


def _writeback_problems(session: Session, settings: Settings, now: datetime) -> list[str]:
    """The PACS write-back: a result is retried a few times (minutes) and then dead, so its age never passes the
    limit; ``/healthz`` had said ok while every SR and heat-map failed to reach the PACS. Dead write-backs made after
    the last one that reached it say the PACS is refusing or unreachable now; one that succeeds again clears it."""
    limit = now - timedelta(seconds=settings.healthz_max_wait_s)
    problems: list[str] = []
    last_sent = session.scalar(select(func.max(OutgoingResult.id)).where(OutgoingResult.state == JobState.done)) or 0
    count, oldest = session.execute(
        select(func.count(), func.min(OutgoingResult.created_at)).where(
            OutgoingResult.state == JobState.dead, OutgoingResult.id > last_sent,
            # One an ML engineer abandoned (its node gone with the files) is known already: it says nothing of the PACS.
            or_(OutgoingResult.last_error.is_(None), ~OutgoingResult.last_error.startswith("abandoned by ")),
        )
    ).one()
    if count and oldest is not None:
        problems.append(
            f"{count} results could not be written back to the PACS since the last one that was (the oldest made "
            f"{(now - oldest).total_seconds():.0f} s ago): the PACS refuses them or cannot be reached; "
            "GET /api/outgoing?state=dead says why"
        )
    count, oldest = session.execute(
        select(func.count(), func.min(OutgoingResult.next_attempt_at)).where(
            OutgoingResult.state.in_((JobState.queued, JobState.retry)), OutgoingResult.next_attempt_at < limit
        )
    ).one()
    problems += _describe(count, oldest, now, "results for the PACS have",
                          "not been sent (the write-back dispatcher may be hung)")
    return problems


def waiting_problems(session: Session, settings: Settings, now: datetime) -> list[str]:
    """Why studies are not being processed or results not sent, judged by how long the oldest has waited, or by
    write-backs failing since the last that succeeded; [] when none."""
    return (_study_problems(session, settings, now) + _outbox_problems(session, settings, now)
            + _writeback_problems(session, settings, now))
