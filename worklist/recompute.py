"""Keeps the worklist in step with the study record: takes in new studies and champion results, settles
studies whose aging cap ran out, records every priority change with its reason, and feeds live updates.

``run_worklist_recompute`` is the loop ``medscreen serve`` runs in a thread; ``recompute_worklist`` is one
pass (tests and the benchmark call it directly).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from inference.jobs import request_rescore
from inference.tables import ScoreResult, ScoringJob, Series, Study
from service.db import session_scope, utcnow
from service.lifecycle import ModelRole, SteeringRight, StudyStatus, WorklistEventKind, WorklistState
from service.loop_log import LoopFailureLog
from service.model_registry import ServingRights, lesser_right, serving_rights
from service.settings import Settings
from service.steering import defer_rules_from_settings
from worklist.policy import ChampionCall, PriorityPolicy, StudyFacts, policy_from_settings, prioritise
from worklist.ris import PriorityChangeConsumer, deliver_priority_changes
from worklist.tables import PriorityChange, WorklistCursor, WorklistEntry, WorklistEvent

__all__ = [
    "add_event",
    "entry_facts",
    "recompute_worklist",
    "run_worklist_recompute",
    "state_for_status",
    "take_in_study",
]

logger = logging.getLogger(__name__)

# Statuses of a study that is complete and so belongs on the worklist, and the scoring state each shows
# while no champion result is on the entry.
_STATE_BY_STATUS: dict[str, str] = {
    StudyStatus.complete: WorklistState.awaiting_score,
    StudyStatus.routed: WorklistState.awaiting_score,
    StudyStatus.scoring: WorklistState.awaiting_score,
    StudyStatus.scored: WorklistState.awaiting_score,
    StudyStatus.not_applicable: WorklistState.not_applicable,
    StudyStatus.could_not_score: WorklistState.could_not_score,
    StudyStatus.out_of_scope: WorklistState.out_of_scope,
    StudyStatus.failed: WorklistState.failed,
}
# Statuses in which no scoring of the study's revision is pending: a re-score may be asked.
_SETTLED_STATUSES = (StudyStatus.scored, StudyStatus.could_not_score, StudyStatus.out_of_scope, StudyStatus.failed)
# Statuses in which a study's revision ends without a champion result.
_NO_RESULT_STATUSES = (StudyStatus.failed, StudyStatus.not_applicable)
RESULTS_CURSOR = "score_results"
# Every serve node runs recompute. On PostgreSQL two passes at once recorded the same change twice (two OMIs with
# different control ids) and committed their changes out of id order; one pass at a time, in the two-key space (the
# migrations' lock is a one-key lock: PostgreSQL keeps the two apart). SQLite runs one writer at a time already.
_RECOMPUTE_LOCK = text("SELECT pg_advisory_xact_lock(1296385091, 1)")  # 'MEDC', recompute
# The live-update feed only needs to cover a page's reconnect; older rows go.
EVENT_RETENTION = timedelta(hours=6)


def state_for_status(status: str) -> str:
    return _STATE_BY_STATUS.get(status, WorklistState.awaiting_score)


def add_event(session: Session, kind: str, study_uid: str, now: datetime, **detail: Any) -> None:
    session.add(WorklistEvent(at=now, kind=kind, study_instance_uid=study_uid, detail=detail))


def entry_facts(entry: WorklistEntry) -> StudyFacts:
    champion = None
    if entry.state == WorklistState.scored and entry.call in ("positive", "negative") and entry.score is not None:
        champion = ChampionCall(
            call=entry.call,  # type: ignore[arg-type]
            score=entry.score,
            threshold=entry.threshold if entry.threshold is not None else 0.5,
            model_name=entry.model_name or "",
            model_version=entry.model_version or "",
            steering=entry.steering or SteeringRight.raise_only.value,
        )
    return StudyFacts(
        arrived_at=entry.arrived_at,
        modality=entry.modality,
        order_priority=entry.order_priority,
        state=entry.state,
        champion=champion,
    )


def _reprioritise(
    session: Session, entry: WorklistEntry, policy: PriorityPolicy, now: datetime, *, added: bool = False
) -> PriorityChange | None:
    priority = prioritise(entry_facts(entry), policy, now)
    entry.priority_reason = priority.reason
    entry.tie_break = priority.tie_break
    entry.updated_at = now
    if not added and priority.tier == entry.tier and priority.due_at == entry.due_at:
        return None
    change = PriorityChange(
        study_id=entry.study_id,
        study_instance_uid=entry.study_instance_uid,
        at=now,
        from_tier=None if added else entry.tier,
        to_tier=priority.tier,
        from_due_at=None if added else entry.due_at,
        to_due_at=priority.due_at,
        reason=priority.reason,
        score_result_id=entry.score_result_id,
    )
    session.add(change)
    entry.tier, entry.due_at = priority.tier, priority.due_at
    add_event(session, WorklistEventKind.added if added else WorklistEventKind.priority, entry.study_instance_uid, now, tier=priority.tier)
    return change


def _site_of(session: Session, study: Study) -> str:
    if study.institution_name:
        return study.institution_name
    # Modalities that leave InstitutionName empty usually still send their StationName.
    headers = session.scalar(select(Series.headers).where(Series.study_id == study.id).order_by(Series.id).limit(1))
    return str((headers or {}).get("StationName") or "")


def take_in_study(
    session: Session, study: Study, policy: PriorityPolicy, now: datetime, serving: ServingRights | None = None
) -> tuple[WorklistEntry, PriorityChange | None]:
    """Put a complete study on the worklist at its policy place, with its champion result if it has one."""
    entry = WorklistEntry(
        study_id=study.id,
        study_instance_uid=study.study_instance_uid,
        accession_number=study.accession_number,
        study_description=study.study_description,
        modality=study.modality,
        site=_site_of(session, study),
        task=study.task,
        order_priority=study.order_priority,
        arrived_at=study.first_received_at,
        state=state_for_status(study.status),
        study_status=study.status,
        tier="unscored",
        due_at=study.first_received_at,
        is_open=True,
        updated_at=now,
    )
    champion = _latest_champion(session, study.id)
    if champion is not None:
        _take_result(entry, champion, serving)
    session.add(entry)
    session.flush()
    return entry, _reprioritise(session, entry, policy, now, added=True)


def _steering_now(result: ScoreResult, serving: ServingRights | None) -> str | None:
    """The right a result steers with: the one recorded with it, lowered to its version's right now (``serving``)."""
    if serving is None or result.steering is None:
        return result.steering
    try:
        recorded = SteeringRight(result.steering)
    except ValueError:
        return result.steering
    return lesser_right(recorded, serving.right_of(result.model_name, result.model_version)).value


def _take_result(
    entry: WorklistEntry, result: ScoreResult, serving: ServingRights | None = None, *, force: bool = False
) -> bool:
    """Copy a champion result onto the entry; False when it is a challenger's or (unless ``force``) older than the
    one there. With ``serving``, a result of a version that is no longer champion is taken as awaiting a score."""
    if result.role != ModelRole.champion:
        # Challengers are shadow models: whatever they say must never move a study.
        return False
    if not force and entry.result_revision is not None and (result.revision, result.id) < (
        entry.result_revision,
        entry.score_result_id or 0,
    ):
        return False
    entry.score_result_id = result.id
    entry.result_revision = result.revision
    entry.model_name, entry.model_version = result.model_name, result.model_version
    if serving is not None and not serving.is_champion(result.model_name, result.model_version):
        # Rolled back or replaced: its call no longer moves the study, which waits in arrival order for the
        # champion's score (``_follow_registry`` asks for it).
        entry.steering, entry.state = None, WorklistState.awaiting_score
        entry.score, entry.threshold, entry.call, entry.score_reason = None, None, None, None
        return True
    entry.steering = _steering_now(result, serving)
    if result.outcome == StudyStatus.scored and result.score is not None and result.call in ("positive", "negative"):
        entry.state = WorklistState.scored
        entry.score, entry.threshold, entry.call, entry.score_reason = result.score, result.threshold, result.call, None
    else:
        entry.state = (
            WorklistState.out_of_scope if result.outcome == StudyStatus.out_of_scope else WorklistState.could_not_score
        )
        entry.score, entry.threshold, entry.call, entry.score_reason = None, None, None, result.reason
    return True


def _apply_result(
    session: Session, entry: WorklistEntry, result: ScoreResult, policy: PriorityPolicy, now: datetime,
    serving: ServingRights | None = None,
) -> PriorityChange | None:
    if not _take_result(entry, result, serving) or not entry.is_open:
        return None
    return _reprioritise(session, entry, policy, now)


def _follow_registry(
    session: Session, serving: ServingRights, policy: PriorityPolicy, now: datetime, batch: int
) -> list[PriorityChange | None]:
    """Open entries whose version's right, or champion alias, changed since their result was taken.

    A champion's result steers with the lesser of its recorded right and its version's right now. A result of a
    version that is no longer champion (a rollback, a promotion) steers nothing: the entry takes the champion's
    result for the same revision where there is one, else waits in arrival order while the study is scored again."""
    changes: list[PriorityChange | None] = []
    rows = session.execute(
        select(WorklistEntry, ScoreResult, Study)
        .join(ScoreResult, ScoreResult.id == WorklistEntry.score_result_id)
        .join(Study, Study.id == WorklistEntry.study_id)
        .where(WorklistEntry.is_open.is_(True))
        .order_by(WorklistEntry.id)
    ).all()
    for entry, result, study in rows:
        if len(changes) >= batch:
            break
        if serving.is_champion(result.model_name, result.model_version):
            steering = _steering_now(result, serving)
            if entry.state != WorklistState.scored or steering == entry.steering:
                continue
            logger.info("worklist: study %d steered by %s v%s with %s, was %s", entry.study_id, result.model_name,
                        result.model_version, steering, entry.steering)
            entry.steering = steering
            changes.append(_reprioritise(session, entry, policy, now))
            continue
        current = _champion_result(session, result, serving)
        if current is not None:
            _take_result(entry, current, serving, force=True)
            changes.append(_reprioritise(session, entry, policy, now))
            continue
        if entry.state == WorklistState.scored:
            logger.info("worklist: study %d: %s v%s is no longer champion; arrival order until scored again",
                        entry.study_id, result.model_name, result.model_version)
            _take_result(entry, result, serving, force=True)
            changes.append(_reprioritise(session, entry, policy, now))
        _rescore_with_champion(session, study, result, serving, now)
    return changes


def _champion_result(session: Session, result: ScoreResult, serving: ServingRights) -> ScoreResult | None:
    """The latest result of the champion now for the revision ``result`` scored (one it made before it was replaced
    and then brought back by a rollback)."""
    champion = serving.champions.get(result.model_name)
    if champion is None:
        return None
    return session.scalar(
        select(ScoreResult)
        .where(ScoreResult.study_id == result.study_id, ScoreResult.revision == result.revision,
               ScoreResult.role == ModelRole.champion, ScoreResult.model_name == result.model_name,
               ScoreResult.model_version == champion)
        .order_by(ScoreResult.id.desc())
        .limit(1)
    )


def _rescore_with_champion(session: Session, study: Study, result: ScoreResult, serving: ServingRights, now: datetime) -> None:
    """Send the study back to ``routed`` for the champion now, once: not while it is being scored, not for a revision
    the champion was already queued for (its outcome stands), nor when a newer revision supersedes the result."""
    champion = serving.champions.get(result.model_name)
    if champion is None or study.revision != result.revision or study.status not in _SETTLED_STATUSES:
        return
    queued = session.scalar(
        select(ScoringJob.id).where(ScoringJob.study_id == study.id, ScoringJob.revision == study.revision,
                                    ScoringJob.model_name == result.model_name, ScoringJob.model_version == champion)
        .limit(1)
    )
    if queued is None:
        request_rescore(session, study, f"model registry: {result.model_name} v{result.model_version} is no longer "
                        f"champion (now v{champion})", now)


def _latest_champion(session: Session, study_id: int) -> ScoreResult | None:
    return session.scalar(
        select(ScoreResult)
        .where(ScoreResult.study_id == study_id, ScoreResult.role == ModelRole.champion)
        .order_by(ScoreResult.revision.desc(), ScoreResult.id.desc())
        .limit(1)
    )


def _cap_ran_out(session: Session, policy: PriorityPolicy, now: datetime, batch: int) -> list[WorklistEntry]:
    """Open entries still at or after their arrival (not raised, not aged back, no order lead) that have waited
    their modality's cap: one query per configured modality and one for the rest, so an entry whose cap has
    not run out is never fetched again and again."""
    modality = func.upper(WorklistEntry.modality)
    not_yet_back = [WorklistEntry.is_open.is_(True), WorklistEntry.due_at >= WorklistEntry.arrived_at]
    groups = [(modality == name, cap) for name, cap in policy.aging_cap_by_modality.items()]
    groups.append((modality.not_in(list(policy.aging_cap_by_modality)), policy.aging_cap))
    entries: list[WorklistEntry] = []
    for in_group, cap in groups:
        query = select(WorklistEntry).where(*not_yet_back, in_group, WorklistEntry.arrived_at <= now - cap)
        entries.extend(session.scalars(query.order_by(WorklistEntry.arrived_at).limit(batch)).all())
    return entries


def recompute_worklist(
    session: Session, policy: PriorityPolicy, now: datetime | None = None, *, batch: int = 2000,
    serving: ServingRights | None = None,
) -> list[PriorityChange]:
    """One pass: new studies in, new champion results applied, status changes followed, studies whose cap ran out settled.

    ``serving``: the registry's rights now (``service.model_registry.serving_rights``); with it, open entries steer
    with no more than their version's current right. Without it, each result steers with the right it recorded."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(_RECOMPUTE_LOCK)  # before anything is read, so the pass sees the one before it committed
    now = now or utcnow()
    changes: list[PriorityChange | None] = []

    # 1. Complete studies not yet on the list.
    new_studies = session.scalars(
        select(Study)
        .outerjoin(WorklistEntry, WorklistEntry.study_id == Study.id)
        .where(WorklistEntry.id.is_(None), Study.status != StudyStatus.receiving)
        .order_by(Study.id)
        .limit(batch)
    ).all()
    for study in new_studies:
        changes.append(take_in_study(session, study, policy, now, serving)[1])
    session.flush()

    # 2. Champion results stored since the last pass, in id order.
    cursor = session.get(WorklistCursor, RESULTS_CURSOR)
    if cursor is None:
        cursor = WorklistCursor(name=RESULTS_CURSOR, last_id=0)
        session.add(cursor)
    results = session.scalars(
        select(ScoreResult).where(ScoreResult.id > cursor.last_id).order_by(ScoreResult.id).limit(batch)
    ).all()
    for result in results:
        cursor.last_id = result.id
        entry = session.scalar(select(WorklistEntry).where(WorklistEntry.study_id == result.study_id))
        if entry is not None:
            changes.append(_apply_result(session, entry, result, policy, now, serving))

    # 3. Studies whose status or revision moved without a result we saw (a result committed out of id order,
    #    scoring failed, a new revision arrived): follow the study record.
    moved = session.execute(
        select(WorklistEntry, Study)
        .join(Study, Study.id == WorklistEntry.study_id)
        .where(WorklistEntry.is_open.is_(True), WorklistEntry.study_status != Study.status)
        .limit(batch)
    ).all()
    for entry, study in moved:
        entry.study_status = study.status
        champion = _latest_champion(session, study.id)
        if champion is not None and champion.id != entry.score_result_id:
            changes.append(_apply_result(session, entry, champion, policy, now, serving))
        elif champion is None or (champion.revision < study.revision and study.status in _NO_RESULT_STATUSES):
            # No result, or one about an older revision while the study's revision ended without one (its job
            # dead-lettered): the older call, about fewer images, must not keep deferring or raising the study.
            entry.state = state_for_status(study.status)
            changes.append(_reprioritise(session, entry, policy, now))

    # 4. Rights lowered or revoked, and champions rolled back or replaced, since the results were stored.
    if serving is not None:
        changes.extend(_follow_registry(session, serving, policy, now, batch))

    # 5. Studies whose aging cap has run out: back in their arrival place, ahead of later positives.
    for entry in _cap_ran_out(session, policy, now, batch):
        changes.append(_reprioritise(session, entry, policy, now))

    session.execute(delete(WorklistEvent).where(WorklistEvent.at < now - EVENT_RETENTION))
    session.flush()
    return [change for change in changes if change is not None]


def _read_serving(settings: Settings, last: ServingRights | None) -> ServingRights | None:
    """The registry's rights now; the last ones read while it cannot be read (the list then keeps what it had)."""
    try:
        return serving_rights(settings.resolved_mlflow_tracking_uri, defer_rules_from_settings(settings))
    except Exception as exc:  # noqa: BLE001 - the registry's outage must not stop the list; the next pass reads again
        logger.warning("worklist: model registry unreadable (%s: %s); steering rights as last read", type(exc).__name__, exc)
        return last


def run_worklist_recompute(
    settings: Settings,
    session_factory: sessionmaker[Session],
    stop_event: threading.Event,
    consumers: Sequence[PriorityChangeConsumer] = (),
) -> None:
    """Run recompute passes every ``settings.worklist_recompute_s`` until ``stop_event`` is set.

    ``consumers`` receive every priority change (the RIS push hook, see ``worklist/ris.py``).
    """
    policy = policy_from_settings(settings)
    logger.info("worklist recompute every %.1f s", settings.worklist_recompute_s)
    serving: ServingRights | None = None
    serving_read_at = float("-inf")
    failures = LoopFailureLog(logger, "worklist recompute pass")
    while True:
        try:
            if time.monotonic() - serving_read_at >= settings.model_refresh_s:
                # As often as the workers re-read the aliases: a revoked right reaches the list as soon as the workers.
                serving, serving_read_at = _read_serving(settings, serving), time.monotonic()
            with session_scope(session_factory) as session:
                changes = recompute_worklist(session, policy, serving=serving)
            if changes:
                logger.info("worklist: %d priority change(s)", len(changes))
            for consumer in consumers:
                with session_scope(session_factory) as session:
                    deliver_priority_changes(session, consumer)
        except Exception as exc:  # noqa: BLE001 - logged (throttled while it lasts); the next pass retries
            # A database hiccup must not end the loop: the next pass picks up where this one stopped.
            failures.failed(exc, settings.worklist_recompute_s)
        else:
            failures.succeeded()
        if stop_event.wait(settings.worklist_recompute_s):
            return
