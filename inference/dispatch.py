"""The dispatcher: send what ``spool/outgoing`` holds to where its row says, and nothing else (as mercure's).

It never builds or changes a document: a failed send retries the same files (same SOP Instance UIDs) with
exponential backoff, and after ``dispatch_max_attempts`` the row is dead (the result says ``failed``), its
files kept for an operator. A row is claimed under a lease, so two workers never send one result twice
at the same time. A dispatcher claims only the rows of its own spool's node (``inference/spool_node.py``):
another node's files are not on this machine, and claiming its rows would only burn their attempts.
"""

from __future__ import annotations

import logging
import os
import threading
from datetime import datetime, timedelta
from typing import Any

from pydicom.dataset import Dataset
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session, sessionmaker

from inference.errors import WritebackFailed
from inference.jobs import backoff_s
from inference.outgoing import read_documents
from inference.records import ResultSent
from inference.score_job import seconds_between
from inference.spool_node import sends_unnamed_rows, spool_node
from inference.study_record import add_event
from inference.tables import OutgoingResult, ScoreResult
from inference.tls import pacs_tls_args
from inference.writeback import send_c_store, send_stow_rs
from service.db import session_scope, utcnow
from service.lifecycle import JobState, WritebackState
from service.settings import Settings

__all__ = ["Dispatcher"]

log = logging.getLogger(__name__)


class Dispatcher:
    def __init__(self, settings: Settings, session_factory: sessionmaker[Session], node: str | None = None) -> None:
        self.settings = settings
        self.session_factory = session_factory
        self.node = node or spool_node(settings)
        self.owner = f"dispatch:{os.uname().nodename}:{os.getpid()}:{threading.get_ident()}"

    def _claim(self, session: Session, now: datetime) -> OutgoingResult | None:
        ready = or_(
            and_(OutgoingResult.state.in_((JobState.queued, JobState.retry)), OutgoingResult.next_attempt_at <= now),
            and_(OutgoingResult.state == JobState.running, OutgoingResult.lease_until < now),
        )
        ours = OutgoingResult.node == self.node
        if sends_unnamed_rows(self.settings):
            ours = or_(ours, OutgoingResult.node.is_(None))
        query = select(OutgoingResult).where(ready, ours).order_by(OutgoingResult.id).limit(1)
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        row = session.scalars(query).first()
        if row is None:
            return None
        row.state = JobState.running.value
        row.attempts += 1
        row.lease_owner = self.owner
        row.lease_until = now + timedelta(seconds=self.settings.dispatch_lease_s)
        return row

    def dispatch_one(self) -> ResultSent | None:
        """Send the oldest ready stored result; None when nothing is ready."""
        with session_scope(self.session_factory) as session:
            row = self._claim(session, utcnow())
            if row is None:
                return None
            row_id, destination, uids, folder = row.id, dict(row.destination), tuple(row.sop_instance_uids), row.folder
        error = None
        try:
            documents = read_documents(self.settings, row)
            self._send(documents, destination)
        except Exception as exc:  # noqa: BLE001 - recorded as a failed attempt: a row never stays running
            # Whatever stops a send (a stored file that no longer parses, a library error) is a failed attempt
            # with its reason: retried, then dead. Escaping here left the row running and climbing past the
            # attempt limit at each lease expiry, and aborted the worker's scoring pass.
            error = exc.reason if isinstance(exc, WritebackFailed) else f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, WritebackFailed | OSError):
                log.warning("outgoing %d: unexpected send failure", row_id, exc_info=True)
        now = utcnow()
        with session_scope(self.session_factory) as session:
            stored = session.get(OutgoingResult, row_id)
            assert stored is not None
            stored.lease_owner = stored.lease_until = None
            result = session.get(ScoreResult, stored.score_result_id) if stored.score_result_id else None
            if error is None:
                self._mark_sent(session, stored, result, now)
            else:
                self._mark_failed(session, stored, result, error, now)
        return ResultSent(row_id, folder, uids, error is None, error)

    def _send(self, documents: list[Dataset], destination: dict[str, Any]) -> None:
        settings = self.settings
        kind = destination.get("kind")
        if kind == "c-store":
            send_c_store(
                documents, host=str(destination["host"]), port=int(destination["port"]),
                called_ae=str(destination["ae_title"]), calling_ae=settings.dicom_ae_title,
                tls_args=pacs_tls_args(settings),
            )
        elif kind == "stow-rs":
            token = settings.pacs_dicomweb_token
            send_stow_rs(
                documents, base_url=str(destination["url"]), token=token.get_secret_value() if token else None,
                ca_file=str(settings.dicom_tls_ca) if settings.dicom_tls_ca else None,
            )
        else:
            raise WritebackFailed(f"unknown destination kind {kind!r}")

    def _mark_sent(self, session: Session, stored: OutgoingResult, result: ScoreResult | None, now: datetime) -> None:
        stored.state = JobState.done.value
        stored.sent_at = now
        stored.last_error = None
        written: dict[str, float | None] = {"stored_to_written_back_s": seconds_between(stored.created_at, now)}
        if result is not None:
            result.writeback_state = WritebackState.sent.value
            result.timings = {**result.timings, **written}
        add_event(
            session, stored.study_id, result.revision if result is not None else 0, "written-back", now,
            sr=result.sr_sop_instance_uid if result is not None else None,
            heatmap=result.heatmap_sop_instance_uid if result is not None else None,
            sop_instance_uids=list(stored.sop_instance_uids), attempts=stored.attempts, node=self.node, **written,
        )
        log.info("outgoing %d: %d document(s) sent by node %s", stored.id, len(stored.sop_instance_uids), self.node)

    def _mark_failed(
        self, session: Session, stored: OutgoingResult, result: ScoreResult | None, error: str, now: datetime
    ) -> None:
        stored.last_error = error
        revision = result.revision if result is not None else 0
        if stored.attempts >= self.settings.dispatch_max_attempts:
            stored.state = JobState.dead.value
            if result is not None:
                result.writeback_state = WritebackState.failed.value
            add_event(session, stored.study_id, revision, "write-back-dead", now, reason=error, attempts=stored.attempts)
            log.error("outgoing %d dead after %d attempts: %s", stored.id, stored.attempts, error)
            return
        stored.state = JobState.retry.value
        stored.next_attempt_at = now + timedelta(seconds=backoff_s(stored.attempts, self.settings.dispatch_retry_base_s))
        add_event(session, stored.study_id, revision, "write-back-retry", now, reason=error, attempts=stored.attempts)
        log.warning("outgoing %d: send failed (attempt %d), retrying: %s", stored.id, stored.attempts, error)

    def dispatch_ready(self) -> list[ResultSent]:
        sent = []
        while (outcome := self.dispatch_one()) is not None:
            sent.append(outcome)
        return sent
