"""Completeness: decide when a receiving study is complete, then route it.

A study is complete when no instance arrived for its modality's quiet period, or sooner when the PACS
says it holds no more instances than medscreen has received. All state lives in the database (the
time of the last instance, the status, the revision), so after a crash the monitor simply resumes:
pending quiet periods are measured from the stored timeline.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from inference.pacs_count import InstanceCounter
from inference.records import RoutedStudy, StudyComplete
from inference.route import RoutingRules
from inference.study_record import mark_complete, record_route
from inference.tables import NotScoredInstance, OutgoingResult, Series, Study
from service.db import session_scope, utcnow
from service.lifecycle import JobState, StudyStatus
from service.loop_log import LoopFailureLog
from service.settings import Settings

__all__ = ["CompletenessMonitor"]

log = logging.getLogger(__name__)

# Ask the PACS about one study at most this often; a count query per poll would load the PACS.
PACS_QUERY_INTERVAL = timedelta(seconds=2)


def _instances_known(session: Session, study: Study) -> int:
    """The instances of ``study`` the PACS's count takes in that medscreen knows of: those stored, those acknowledged
    and left aside (SR, PR, KO, private objects, its own results coming back) and the documents it sent the PACS.

    NumberOfStudyRelatedInstances counts every object of the study. Compared with the stored images alone, a study
    with one SR or presentation state never completed by the PACS count: it waited for the quiet period and then
    carried a false ``possibly_incomplete`` ("the PACS holds 11 instances of this study; 10 arrived").
    """
    left_aside = set(
        session.scalars(
            select(NotScoredInstance.sop_instance_uid).where(
                NotScoredInstance.study_instance_uid == study.study_instance_uid
            )
        )
    )
    for sent in session.scalars(
        select(OutgoingResult.sop_instance_uids).where(
            OutgoingResult.study_id == study.id, OutgoingResult.state == JobState.done.value
        )
    ):
        left_aside.update(sent)
    return study.instance_count + len(left_aside)


class CompletenessMonitor:
    def __init__(
        self,
        settings: Settings,
        session_factory: sessionmaker[Session],
        rules: RoutingRules,
        counter: InstanceCounter | None = None,
    ) -> None:
        self.settings = settings
        self.session_factory = session_factory
        self.rules = rules
        self.counter = counter

    def _pacs_says_complete(self, session: Session, study: Study, now: datetime) -> int | None:
        if self.counter is None:
            return None
        if study.pacs_checked_at is not None and now - study.pacs_checked_at < PACS_QUERY_INTERVAL:
            return None
        study.pacs_checked_at = now
        expected = self.counter.count(study.study_instance_uid)
        if expected is not None and _instances_known(session, study) >= expected:
            return expected
        return None

    def _incompleteness(self, session: Session, study: Study) -> str | None:
        """Why a study completed by silence may lack instances (a sender that crashed mid-study looks the same)."""
        if self.counter is None:
            return "completed by the quiet period; no PACS count is configured to confirm every instance arrived"
        expected = self.counter.count(study.study_instance_uid)
        known = _instances_known(session, study)
        if expected is not None and known < expected:
            return f"the PACS holds {expected} instances of this study; {known} arrived"
        return None

    def _complete_if_due(self, session: Session, study: Study, now: datetime) -> StudyComplete | None:
        quiet = self.settings.quiet_period_for(study.modality)
        waited = (now - study.last_received_at).total_seconds()
        # A last instance more than a quiet period "after" now: the clock stepped back since (NTP correcting a clock
        # that ran fast, a VM restored from a snapshot). The time since is unknown: counted as elapsed, where waiting
        # for the wall clock to catch up held the study in receiving for the length of the step. A smaller negative
        # wait is an instance that arrived while this pass ran (or a small step): nothing has elapsed yet. Counting
        # it as elapsed completed a study mid-transfer and routed it with part of its instances.
        if waited >= quiet or waited < -quiet:
            doubt = self._incompleteness(session, study)
            extra = {"possibly_incomplete": doubt} if doubt else {}
            return mark_complete(session, study, reason="quiet-period", now=now, quiet_period_s=quiet, **extra)
        expected = self._pacs_says_complete(session, study, now)
        if expected is None:
            return None
        return mark_complete(session, study, reason="pacs-count", now=now, pacs_instance_count=expected)

    def complete_quiet_studies(self, now: datetime | None = None) -> list[StudyComplete]:
        completed: list[StudyComplete] = []
        with session_scope(self.session_factory) as session:
            receiving = session.execute(select(Study).where(Study.status == StudyStatus.receiving)).scalars().all()
            for study in receiving:
                study_id = study.id
                try:
                    # A savepoint per study: one study's failure (a counter, a database error) undoes only its
                    # own changes; it stays receiving and is looked at again in the next pass.
                    with session.begin_nested():
                        # The time is read after the study: an instance that arrived after the pass began is then
                        # not "in the future" of a time taken before it.
                        done = self._complete_if_due(session, study, now or utcnow())
                except Exception:  # noqa: BLE001 - logged; the other studies of the pass must still complete
                    log.exception("study %d: completeness check failed; checked again in the next pass", study_id)
                    continue
                if done is not None:
                    completed.append(done)
        return completed

    def route_complete_studies(self, now: datetime | None = None) -> list[RoutedStudy]:
        """Route every study in ``complete`` (including ones a crash left between complete and routed)."""
        now = now or utcnow()
        routed: list[RoutedStudy] = []
        with session_scope(self.session_factory) as session:
            for study in session.execute(select(Study).where(Study.status == StudyStatus.complete)).scalars().all():
                headers = session.execute(select(Series.headers).where(Series.study_id == study.id)).scalars().all()
                decision = self.rules.route(study.study_instance_uid, study.revision, headers)
                if record_route(session, study.id, decision, now):
                    routed.append(decision)
                    log.info(
                        "study %d revision %d: %s",
                        study.id,
                        study.revision,
                        f"routed to {decision.task}" if decision.task else "not applicable",
                    )
        return routed

    def run_once(self) -> tuple[list[StudyComplete], list[RoutedStudy]]:
        return self.complete_quiet_studies(), self.route_complete_studies()

    def run_until(self, stop: threading.Event) -> None:
        failures = LoopFailureLog(log, "completeness pass")
        while not stop.is_set():
            try:
                self.run_once()
            except Exception as exc:  # noqa: BLE001 - logged (throttled while it lasts); the next pass retries
                # A transient database error must not stop completeness for every later study.
                failures.failed(exc)
            else:
                failures.succeeded()
            stop.wait(self.settings.completeness_poll_s)
