"""The RIS feed: priority changes and champion results become HL7 messages in the outbox, sent over MLLP.

``take_in_ris_messages`` builds each message once (``OMI^O23`` per change of tier, ``ORU^R01`` per champion
result) and stores it; ``RisSender`` sends one and reads the ACK; ``run_ris_feed`` is the loop ``medscreen
serve`` runs when ``MEDSCREEN_RIS_HOST`` is set. The message control id (MSH-10) is the outbox key, so the
RIS can drop the one message a crash between its ACK and our commit could repeat.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from functools import partial

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from inference.fhir_feed import champion_results_to_read, result_topic
from inference.tables import ScoreResult, Study
from service.db import utcnow
from service.errors import DeliveryFailed
from service.outbox import (
    Candidate,
    OutboxMessage,
    Outgoing,
    RetryPolicy,
    existing_keys,
    read_from,
    run_feed,
    start_cursor,
    take_in,
    unseen_behind,
)
from service.settings import Settings
from worklist.hl7_messages import (
    Hl7Endpoint,
    StudyOrder,
    champion_result,
    parse_ack,
    priority_update,
    result_report,
)
from worklist.mllp import send_mllp
from worklist.ris import PriorityChanged, shows_change
from worklist.tables import PriorityChange

__all__ = ["CHANNEL", "take_in_ris_messages", "RisSender", "run_ris_feed", "endpoint_from_settings"]

log = logging.getLogger(__name__)

CHANNEL = "hl7"
CONTENT_TYPE = "application/hl7-v2"
_CHANGES_CURSOR = "hl7:priority_changes"
_RESULTS_CURSOR = "hl7:score_results"
# Results are re-read this many ids behind the cursor: with several scoring workers on PostgreSQL a lower id
# can commit after a higher one, and the outbox key keeps the re-read from adding anything twice.
_RESULTS_LOOKBACK = 500
# Priority changes likewise: every serve node runs recompute, and one node's change can commit after a later id
# of another's (it had never reached the RIS). Recompute is serialised on PostgreSQL now; this is the safety net.
_CHANGES_LOOKBACK = 500


def endpoint_from_settings(settings: Settings) -> Hl7Endpoint:
    return Hl7Endpoint(
        settings.ris_sending_application,
        settings.ris_sending_facility,
        settings.ris_receiving_application,
        settings.ris_receiving_facility,
    )


def _order(study: Study) -> StudyOrder:
    return StudyOrder(
        study_instance_uid=study.study_instance_uid,
        accession_number=study.accession_number,
        patient_id=study.patient_id,
        patient_name=study.patient_name,
        modality=study.modality,
        study_description=study.study_description,
        study_date=study.study_date,
    )


def _priority_topic(study_id: int) -> str:
    return f"OMI:study:{study_id}"


def _newest_queued_changes(session: Session, topics: set[str]) -> dict[str, int]:
    """The id of the newest priority change already in the outbox, per study topic."""
    if not topics:
        return {}
    newest: dict[str, int] = {}
    for topic, key in session.execute(
        select(OutboxMessage.topic, OutboxMessage.key)
        .where(OutboxMessage.channel == CHANNEL, OutboxMessage.topic.in_(topics), OutboxMessage.key.like("MSPC%"))
    ).tuples():
        if topic is not None:
            newest[topic] = max(newest.get(topic, 0), int(key.removeprefix("MSPC")))
    return newest


def take_in_ris_messages(
    session_factory: sessionmaker[Session], endpoint: Hl7Endpoint, now: datetime | None = None, *, batch: int = 200,
    include_shadow: bool = False,
) -> int:
    """Build and store the HL7 messages for priority changes and champion results not yet taken in."""
    at = now or utcnow()

    def read(session: Session) -> list[Candidate]:
        found: list[Candidate] = []
        cursor, _ = start_cursor(session, _CHANGES_CURSOR, PriorityChange.id, _CHANGES_LOOKBACK)
        rows = session.execute(
            select(PriorityChange, Study)
            .join(Study, Study.id == PriorityChange.study_id)
            .where(or_(PriorityChange.id > read_from(cursor, _CHANGES_LOOKBACK),
                       PriorityChange.id.in_(unseen_behind(cursor, _CHANGES_LOOKBACK))))
            .order_by(PriorityChange.id)
            .limit(batch + 2 * _CHANGES_LOOKBACK)
        ).all()
        known = existing_keys(session, CHANNEL, [f"MSPC{change.id}" for change, _ in rows])
        newest = _newest_queued_changes(session, {_priority_topic(study.id) for _, study in rows})
        for change, study in rows:
            topic = _priority_topic(study.id)
            if f"MSPC{change.id}" in known or change.id < newest.get(topic, 0):
                # Taken in already, or read late behind a newer change of its study already queued: the RIS shows
                # the newest state, and an older one sent after it would set the study back.
                found.append(Candidate(_CHANGES_CURSOR, change.id))
                continue
            if not shows_change(change, study.first_received_at):
                # A change the RIS cannot see is recorded on the worklist, not sent; the cursor moves past it (as
                # deliver_priority_changes does). Settling within a tier is seen: routine -> asap.
                found.append(Candidate(_CHANGES_CURSOR, change.id))
                continue
            key = f"MSPC{change.id}"
            facts = PriorityChanged(
                change_id=change.id,
                study_instance_uid=change.study_instance_uid,
                accession_number=study.accession_number,
                at=change.at,
                from_tier=change.from_tier,
                to_tier=change.to_tier,
                due_at=change.to_due_at,
                reason=change.reason,
                arrived_at=study.first_received_at,
            )
            found.append(Candidate(
                _CHANGES_CURSOR, change.id, key, f"OMI^O23 {key}",
                partial(priority_update, endpoint, _order(study), facts, control_id=key, at=at),
                topic=topic,
            ))
        results_cursor, created = start_cursor(session, _RESULTS_CURSOR, ScoreResult.id, _RESULTS_LOOKBACK)
        if created:
            return found
        results = champion_results_to_read(session, results_cursor, _RESULTS_LOOKBACK, batch, include_shadow=include_shadow)
        known = existing_keys(session, CHANNEL, [f"MSR{result.id}" for result, _ in results])
        for result, study in results:
            key = f"MSR{result.id}"
            if key in known:
                found.append(Candidate(_RESULTS_CURSOR, result.id))
                continue
            champion = champion_result(result)
            found.append(Candidate(
                _RESULTS_CURSOR, result.id, key, f"ORU^R01 {key}",
                partial(result_report, endpoint, _order(study), champion, control_id=key, at=at),
                topic=result_topic(study.id),
            ))
        return found

    return take_in(session_factory, CHANNEL, CONTENT_TYPE, read, at)


class RisSender:
    """Sends one outbox message over MLLP and turns the ACK into success, retry or set-aside."""

    def __init__(self, host: str, port: int, timeout_s: float) -> None:
        self.host, self.port, self.timeout_s = host, port, timeout_s

    def __call__(self, message: Outgoing) -> str:
        answer = send_mllp(self.host, self.port, message.payload, timeout=self.timeout_s)
        try:
            ack = parse_ack(answer)
        except Exception as exc:  # noqa: BLE001 - hl7apy raises several unrelated types for malformed text
            raise DeliveryFailed(f"the RIS answered something that is not an HL7 ACK ({type(exc).__name__})") from exc
        if ack.control_id != message.key:
            raise DeliveryFailed(f"the RIS acknowledged {ack.control_id!r}, not {message.key!r}")
        if ack.code in ("AA", "CA"):
            return answer
        if ack.code in ("AR", "CR"):
            raise DeliveryFailed(f"the RIS rejected it ({ack.code}): {ack.text}", permanent=True)
        raise DeliveryFailed(f"the RIS answered {ack.code}: {ack.text}")


def run_ris_feed(settings: Settings, session_factory: sessionmaker[Session], stop_event: threading.Event) -> None:
    """Take in and send every ``settings.outbox_poll_s`` until ``stop_event`` is set."""
    assert settings.ris_host and settings.ris_port
    endpoint = endpoint_from_settings(settings)
    log.info("RIS feed: HL7 v2.5.1 over MLLP to %s:%d", settings.ris_host, settings.ris_port)
    run_feed(
        "RIS", CHANNEL, [partial(take_in_ris_messages, endpoint=endpoint, include_shadow=settings.writeback_shadow)],
        RisSender(settings.ris_host, settings.ris_port, settings.ris_timeout_s),
        RetryPolicy(retry_s=settings.ris_retry_s, max_attempts=settings.ris_max_attempts),
        session_factory, stop_event, settings.outbox_poll_s,
    )
