"""The outbox: documents for a peer (HL7 to the RIS, FHIR to the EMR) built once, stored, and sent in order.

Producers follow an append-only table by id with their own cursor and add one message per row, in the
same transaction that moves the cursor, so nothing is skipped and nothing is built twice. The dispatcher
sends a channel's messages oldest first and commits each acknowledgement at once: a peer that is down
delays messages and loses none, and an acknowledged message is never offered again. (Between a peer's
acknowledgement and that commit a crash could resend one message; it carries the same control id or
resource id, which is what peers de-duplicate on.) Several nodes on one database each run a dispatcher; a
channel's lease (``outbox_leases``) lets one of them send it at a time, so each message goes out once and in
order.
"""

from __future__ import annotations

import enum
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import BigInteger, Index, Integer, String, Text, UniqueConstraint, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import InstrumentedAttribute, Mapped, Session, mapped_column, sessionmaker

from service.db import Base, UTCDateTime, session_scope, utcnow
from service.errors import DeliveryFailed, PeerUnreachable
from service.loop_log import LoopFailureLog
from service.peer_answers import scrub_peer_answer

__all__ = [
    "OutboxState",
    "OutboxMessage",
    "OutboxCursor",
    "OutboxLease",
    "Outgoing",
    "RetryPolicy",
    "add_message",
    "advance_cursor",
    "dispatch",
    "channel_counts",
    "existing_keys",
    "newer_of_topic",
    "read_from",
    "unseen_behind",
    "start_cursor",
    "run_feed",
    "Candidate",
    "take_in",
]

log = logging.getLogger(__name__)

# The reason of a message that could not be built: it has no payload, and replaying it would send nothing.
UNBUILT = "could not be built"

_BigId = BigInteger().with_variant(Integer, "sqlite")


class OutboxState(enum.StrEnum):
    pending = "pending"
    sent = "sent"
    rejected = "rejected"  # refused by the peer for itself, or out of attempts: kept with the reason


class OutboxMessage(Base):
    __tablename__ = "outbox_messages"

    id: Mapped[int] = mapped_column(_BigId, primary_key=True)
    channel: Mapped[str] = mapped_column(String(16))
    # What the message is about, unique per channel (e.g. `ORU:42`), so a producer run twice adds nothing.
    key: Mapped[str] = mapped_column(String(128))
    # Non-identifying label for logs and the API (never a patient name or ID).
    label: Mapped[str] = mapped_column(String(128))
    # Messages of one topic replace each other at the peer (a study's priority in the RIS): the newest state
    # wins, so an older one must never be offered again after a newer one (None: each message stands alone).
    topic: Mapped[str | None] = mapped_column(String(128), nullable=True)
    content_type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    response: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (
        UniqueConstraint("channel", "key", name="uq_outbox_channel_key"),
        Index("ix_outbox_channel_state", "channel", "state", "id"),
    )


class OutboxCursor(Base):
    """How far a producer has followed its source table, by id."""

    __tablename__ = "outbox_cursors"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_id: Mapped[int] = mapped_column(BigInteger, default=0)
    # Where the cursor started: a peer configured today is not sent the site's history, and the look-back that
    # catches ids committed out of order (``read_from``) stops here; it had reached 500 rows into that history.
    floor: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # Ids within the look-back below the floor that were not committed when the cursor started (space-separated):
    # on PostgreSQL a row written by a transaction still in flight then commits later with a lower id. It is no
    # history, and is read like a row above the floor (``unseen_behind``); the floor alone had dropped it for good.
    unseen: Mapped[str] = mapped_column(Text, default="", server_default="")


class OutboxLease(Base):
    """Which dispatcher sends a channel now. Every node runs a dispatcher; two sending one channel both sent its
    oldest message (the RIS got it twice) and could overtake each other."""

    __tablename__ = "outbox_leases"

    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())


# How long a dispatcher holds its channel without renewing: renewed every third of it while a message is sent,
# so only a dispatcher that died (or lost the database) lets the channel wait, and for this long at most.
LEASE_S = 30.0
# What a released lease expires at: before any clock's now, so that after a backward step of the clock (NTP correcting
# a fast clock) a lease released at the old time did not hold the channel, every pass's new holder refused, for the
# length of the step.
RELEASED = datetime.fromtimestamp(0, UTC)


@dataclass(frozen=True)
class Outgoing:
    """A message as a sender gets it."""

    id: int
    key: str
    label: str
    content_type: str
    payload: str


@dataclass(frozen=True)
class RetryPolicy:
    retry_s: float
    max_attempts: int


def advance_cursor(session: Session, name: str, last_id: int | None = None) -> OutboxCursor:
    """The producer's cursor (created at 0); moved to ``last_id`` when given."""
    cursor = session.get(OutboxCursor, name)
    if cursor is None:
        cursor = OutboxCursor(name=name, last_id=0)
        session.add(cursor)
    if last_id is not None:
        cursor.last_id = last_id
    return cursor


def start_cursor(
    session: Session, name: str, source_id: InstrumentedAttribute[int], lookback: int
) -> tuple[OutboxCursor, bool]:
    """The producer's cursor over the table of ``source_id``; a new one starts at that table's highest id (a peer
    configured today is not sent the site's history) and notes the ids within ``lookback`` below it that are not
    committed yet (see :attr:`OutboxCursor.unseen`). Returns the cursor and whether it was just created."""
    cursor = session.get(OutboxCursor, name)
    if cursor is not None:
        return cursor, False
    current_max = session.scalar(select(func.max(source_id))) or 0
    committed = set(session.scalars(select(source_id).where(source_id > current_max - lookback)))
    unseen = [i for i in range(max(current_max - lookback, 0) + 1, current_max) if i not in committed]
    cursor = OutboxCursor(name=name, last_id=current_max, floor=current_max, unseen=" ".join(map(str, unseen)))
    session.add(cursor)
    return cursor, True


def read_from(cursor: OutboxCursor, lookback: int) -> int:
    """The id after which a producer re-reads its source: ``lookback`` rows behind the cursor (with several
    writers on PostgreSQL a lower id can commit after a higher one; the outbox key keeps a re-read from adding
    anything twice), never below where the cursor started (rows committed below it then: ``unseen_behind``)."""
    return max(cursor.last_id - lookback, cursor.floor)


def unseen_behind(cursor: OutboxCursor, lookback: int) -> list[int]:
    """The ids below the cursor's floor, still within ``lookback`` of it, that were not committed when it
    started: a producer reads them as well as the rows after :func:`read_from` (ascending)."""
    return [i for i in map(int, cursor.unseen.split()) if i > cursor.last_id - lookback]


def existing_keys(session: Session, channel: str, keys: list[str]) -> set[str]:
    if not keys:
        return set()
    return set(
        session.scalars(select(OutboxMessage.key).where(OutboxMessage.channel == channel, OutboxMessage.key.in_(keys)))
    )


def newer_of_topic(session: Session, message: OutboxMessage) -> OutboxMessage | None:
    """The newest message of ``message``'s channel and topic stored after it, if any: offering ``message`` again
    would set the peer back to an older state (a study's old priority in the RIS after its newer one)."""
    if not message.topic:
        return None
    return session.scalars(
        select(OutboxMessage)
        .where(OutboxMessage.channel == message.channel, OutboxMessage.topic == message.topic,
               OutboxMessage.id > message.id)
        .order_by(OutboxMessage.id.desc())
        .limit(1)
    ).first()


def add_message(
    session: Session, channel: str, key: str, label: str, payload: str, content_type: str, now: datetime,
    unbuilt: str | None = None, topic: str | None = None,
) -> bool:
    """Store one message to send; False when this channel already holds one under ``key``. ``unbuilt``: why it
    could not be built (it is stored set aside, as ``rejected`` with that reason, so that an operator sees it).
    ``topic``: what the message states the latest of (see :attr:`OutboxMessage.topic`)."""
    message = OutboxMessage(
        channel=channel, key=key, label=label, topic=topic or None, payload=payload, content_type=content_type,
        state=OutboxState.pending if unbuilt is None else OutboxState.rejected, attempts=0, next_attempt_at=now,
        created_at=now, last_error=unbuilt,
    )
    try:
        with session.begin_nested():
            session.add(message)
    except IntegrityError:
        return False
    return True


@dataclass(frozen=True)
class Candidate:
    """A source row a producer found: the message it becomes (``build`` is None when the row makes none, e.g. a
    challenger's result) and the cursor the row moves."""

    cursor: str
    source_id: int
    key: str = ""
    label: str = ""
    build: Callable[[], str] | None = None
    topic: str = ""


def take_in(
    session_factory: sessionmaker[Session],
    channel: str,
    content_type: str,
    read: Callable[[Session], list[Candidate]],
    now: datetime | None = None,
) -> int:
    """Read what is new, build it outside any transaction, then store it and move the cursors in one short one.

    Building an HL7 message or a FHIR Bundle takes tens of milliseconds; on SQLite a transaction that writes
    holds the database's one write lock, and ingest must never wait behind a batch of builds for it.
    """
    with session_scope(session_factory) as session:
        candidates = read(session)
    built: list[tuple[Candidate, str, str | None]] = []
    for candidate in candidates:
        if candidate.build is None:
            continue
        try:
            built.append((candidate, candidate.build(), None))
        except Exception as exc:  # noqa: BLE001 - one message that cannot be built must not hold back the rest
            # Raised here, the same batch was read and failed again on every pass, and nothing after it was sent.
            log.exception("%s message %s could not be built; set aside as rejected", channel, candidate.label or candidate.key)
            built.append((candidate, "", f"{UNBUILT}: {type(exc).__name__}: {exc}"[:500]))
    now = now or utcnow()
    added = 0
    with session_scope(session_factory) as session:
        for candidate, payload, unbuilt in built:
            added += add_message(session, channel, candidate.key, candidate.label, payload, content_type, now, unbuilt,
                                 candidate.topic)
        moves: dict[str, int] = {}
        for candidate in candidates:
            moves[candidate.cursor] = max(moves.get(candidate.cursor, 0), candidate.source_id)
        for name, last_id in moves.items():
            cursor = advance_cursor(session, name)
            cursor.last_id = max(cursor.last_id, last_id)
    return added


def _take_lease(session_factory: sessionmaker[Session], channel: str, holder: str, until: datetime,
                now: datetime) -> bool:
    """Take or renew the channel's lease in one UPDATE (its WHERE is checked again against a concurrent taker's
    committed row on PostgreSQL, and SQLite runs one writer at a time); False while another holds it."""
    with session_scope(session_factory) as session:
        taken = session.execute(
            update(OutboxLease)
            .where(OutboxLease.channel == channel,
                   or_(OutboxLease.holder == holder, OutboxLease.expires_at <= now))
            .values(holder=holder, expires_at=until)
        )
        if getattr(taken, "rowcount", 0) == 1:
            return True
        if session.get(OutboxLease, channel) is not None:
            return False
    try:
        with session_scope(session_factory) as session:
            session.add(OutboxLease(channel=channel, holder=holder, expires_at=until))
    except IntegrityError:
        return False  # another dispatcher made the channel's row first, and holds it
    return True


def _release_lease(session_factory: sessionmaker[Session], channel: str, holder: str) -> None:
    with session_scope(session_factory) as session:
        session.execute(
            update(OutboxLease).where(OutboxLease.channel == channel, OutboxLease.holder == holder)
            .values(expires_at=RELEASED)
        )


@contextmanager
def _lease_kept(renew: Callable[[], bool], every_s: float) -> Iterator[None]:
    """Renew the lease while a send waits on the peer: a slow peer must not let another node send the same
    message."""
    done = threading.Event()

    def beat() -> None:
        while not done.wait(every_s):
            try:
                renew()
            except Exception:  # noqa: BLE001 - a missed beat only shortens the lease; the next one retries
                log.warning("outbox lease renewal failed", exc_info=True)

    beating = threading.Thread(target=beat, name="outbox-lease", daemon=True)
    beating.start()
    try:
        yield
    finally:
        done.set()
        beating.join(timeout=5)


def _head(session_factory: sessionmaker[Session], channel: str) -> tuple[Outgoing, datetime] | None:
    """The channel's oldest pending message, or when it is due if not yet (None: nothing pending)."""
    with session_scope(session_factory) as session:
        head = session.scalar(
            select(OutboxMessage)
            .where(OutboxMessage.channel == channel, OutboxMessage.state == OutboxState.pending)
            .order_by(OutboxMessage.id)
            .limit(1)
        )
        if head is None:
            return None
        return Outgoing(head.id, head.key, head.label, head.content_type, head.payload), head.next_attempt_at


def dispatch(
    session_factory: sessionmaker[Session],
    channel: str,
    send: Callable[[Outgoing], str],
    policy: RetryPolicy,
    *,
    now: Callable[[], datetime] = utcnow,
    limit: int = 500,
    holder: str | None = None,
    lease_s: float = LEASE_S,
) -> int:
    """Send the channel's pending messages oldest first; returns how many the peer acknowledged.

    ``send`` returns the peer's answer (kept with the message) or raises :class:`DeliveryFailed`. A
    transient failure stops the pass so that later messages never overtake an earlier one. The pass holds
    the channel's lease (``holder``: this pass's name, by default this host and process and a random part), so
    another node's dispatcher sends nothing of this channel meanwhile; returns 0 at once while another holds it.
    """
    holder = (holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}")[-128:]

    def head_due() -> Outgoing | None:
        found = _head(session_factory, channel)
        if found is None:
            return None
        current = now()
        # Due further ahead than any wait this policy sets: the clock stepped back since it was set; due now.
        if current < found[1] <= current + timedelta(seconds=policy.retry_s):
            return None
        return found[0]

    def renew() -> bool:
        current = now()
        return _take_lease(session_factory, channel, holder, current + timedelta(seconds=lease_s), current)

    # Idle passes (most of them) only read: the lease is written when there is something to send.
    if head_due() is None or not renew():
        return 0
    sent = 0
    try:
        for _ in range(limit):
            # Renewed before each message and read after: a pass whose lease ran out (the database was away
            # longer than the lease) stops, as another node may have taken the channel over.
            if not renew():
                return sent
            outgoing = head_due()
            if outgoing is None:
                return sent
            try:
                with _lease_kept(renew, lease_s / 3):
                    answer = send(outgoing)
            except DeliveryFailed as exc:
                # The peer's answer may quote whom it could not find (Patient/<id>, a UID): kept and logged with
                # those as digests (service.peer_answers), as every other line of the log stream.
                reason = scrub_peer_answer(exc.reason)
                with session_scope(session_factory) as session:
                    message = session.get(OutboxMessage, outgoing.id)
                    assert message is not None
                    message.attempts += 1
                    message.last_error = reason
                    # An unreachable peer is waited for without limit (a RIS down for the night loses nothing);
                    # only a peer that answers with an error uses up the attempts.
                    exhausted = not isinstance(exc, PeerUnreachable) and message.attempts >= policy.max_attempts
                    if exc.permanent or exhausted:
                        message.state = OutboxState.rejected
                        log.error("%s %s set aside after %d attempt(s): %s", channel, outgoing.label,
                                  message.attempts, reason)
                        continue
                    message.next_attempt_at = now() + timedelta(seconds=policy.retry_s)
                    log.warning("%s %s not delivered (attempt %d), again in %.0f s: %s", channel, outgoing.label,
                                message.attempts, policy.retry_s, reason)
                return sent
            with session_scope(session_factory) as session:
                message = session.get(OutboxMessage, outgoing.id)
                assert message is not None
                message.attempts += 1
                message.state = OutboxState.sent
                message.sent_at = now()
                message.response = scrub_peer_answer(answer[:4000])
                message.last_error = None
            sent += 1
            log.info("%s %s delivered", channel, outgoing.label)
        return sent
    finally:
        # The next pass may be another node's: it need not wait for the lease to run out.
        _release_lease(session_factory, channel, holder)


def channel_counts(session: Session, channel: str) -> dict[str, int]:
    rows = session.execute(
        select(OutboxMessage.state, func.count()).where(OutboxMessage.channel == channel).group_by(OutboxMessage.state)
    ).all()
    return {str(state): int(count) for state, count in rows}


def run_feed(
    name: str,
    channel: str,
    producers: Sequence[Callable[[sessionmaker[Session]], int]],
    send: Callable[[Outgoing], str],
    policy: RetryPolicy,
    session_factory: sessionmaker[Session],
    stop_event: threading.Event,
    poll_s: float,
) -> None:
    """Each ``poll_s``: every producer takes in what is new (see :func:`take_in`), then the channel is sent."""
    log.info("%s feed started", name)
    failures = LoopFailureLog(log, f"{name} feed pass")
    while True:
        try:
            for produce in producers:
                produce(session_factory)
            dispatch(session_factory, channel, send, policy)
        except Exception as exc:  # noqa: BLE001 - logged (throttled while it lasts); the next pass retries
            # A database hiccup must not end the feed; the outbox keeps every message for the next pass.
            failures.failed(exc, poll_s)
        else:
            failures.succeeded()
        if stop_event.wait(poll_s):
            return
