"""The scoring worker's loop: queue routed studies, score claimed jobs one at a time, dispatch stored results.

Each step lives in its own module: queueing in ``jobs.py``, scoring one job in ``score_job.py``, sending
what ``spool/outgoing`` holds in ``dispatch.py``. This module only drives them and keeps one bad job from
stopping the others.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from inference.champions import ModelSelector
from inference.dispatch import Dispatcher
from inference.errors import ModelUnavailable, ScoringError
from inference.fetch_instances import IngestLogin, clear_instance_cache
from inference.jobs import claim_next, enqueue_routed, extend_lease, mark_failed, retire, worker_owner
from inference.jobs import release_dead_leases as requeue_jobs_of_dead_workers
from inference.records import ResultSent, ScoreRecorded
from inference.score_job import score_job
from inference.spool_node import default_node_id, spool_node
from inference.study_record import add_event
from inference.tables import ScoringJob
from service.db import session_scope, utcnow
from service.lifecycle import JobState, ModelRole
from service.loop_log import LoopFailureLog
from service.settings import Settings

__all__ = ["ScoringWorker", "running_node"]

log = logging.getLogger(__name__)

# A write that found the disk (or the user's quota) full: retried once space returns, never counted as an attempt.
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
# How long a worker that hit a full disk waits before it claims a job again.
DISK_FULL_WAIT_S = 30.0


def running_node(settings: Settings) -> str:
    """The node this process runs as (``MEDSCREEN_NODE_ID``, by default ``<hostname>:<MEDSCREEN_HOME>``), named
    in its workers' leases so that a node's start releases its own previous run's jobs only. Not the spool's
    node: a worker with another node's spool mounted is still a node of its own."""
    return settings.node_id or default_node_id(settings)


class ScoringWorker:
    def __init__(self, settings: Settings, session_factory: sessionmaker[Session], selector: ModelSelector) -> None:
        self.settings = settings
        self.session_factory = session_factory
        self.selector = selector
        self.owner = worker_owner(running_node(settings))
        # The node whose spool holds what this worker builds: named on its outgoing rows, and the rows its
        # dispatcher sends (a fetching worker's own, the ingest node's where its spool is read).
        self.node = spool_node(settings)
        self.dispatcher = Dispatcher(settings, session_factory, self.node)
        self.ingest_login = IngestLogin(settings) if settings.ingest_url else None
        # Monotonic: a clock step must neither cut the wait short nor stretch it.
        self._disk_wait_until = 0.0

    def enqueue_routed(self) -> int:
        """Queue the registry's champion (and challenger) for each routed study revision."""
        versions = self.selector.refresh()
        with session_scope(self.session_factory) as session:
            return enqueue_routed(session, versions, utcnow(), lambda: self.selector.refresh(force=True))

    def process_one(self) -> ScoreRecorded | bool:
        """Score the next ready job: its record, True when it failed (and will retry), False when none was ready
        (or the disk was full a moment ago: no job is claimed until ``DISK_FULL_WAIT_S`` has passed)."""
        if time.monotonic() < self._disk_wait_until:
            return False
        now = utcnow()
        with session_scope(self.session_factory) as session:
            job = claim_next(
                session, self.owner, self.settings.scoring_lease_s, now,
                max_attempts=self.settings.scoring_max_attempts, base_s=self.settings.scoring_retry_base_s,
            )
            if job is None:
                return False
            job_id = job.id
        beating = threading.Event()
        heartbeat = threading.Thread(target=self._heartbeat, args=(job_id, beating), name=f"lease-{job_id}", daemon=True)
        heartbeat.start()
        try:
            return score_job(
                job_id, settings=self.settings, session_factory=self.session_factory, selector=self.selector, started=now,
                node=self.node, login=self.ingest_login,
            )
        except ModelUnavailable as exc:
            self._model_unavailable(job_id, exc.reason)
        except ScoringError as exc:
            self._fail(job_id, exc.reason)
        except OSError as exc:
            if exc.errno in DISK_FULL:
                self._wait_for_disk(job_id, exc)
            else:
                self._fail_unexpectedly(job_id, exc)
        except Exception as exc:  # noqa: BLE001 - one bad job must not stop the worker; it retries then dead-letters
            self._fail_unexpectedly(job_id, exc)
        finally:
            beating.set()
            heartbeat.join(timeout=5)
        return True

    def _heartbeat(self, job_id: int, done: threading.Event) -> None:
        """Renew the job's lease every third of it while the job runs: a short lease, yet no long job is retaken."""
        interval = self.settings.scoring_lease_s / 3
        while not done.wait(interval):
            try:
                with session_scope(self.session_factory) as session:
                    extend_lease(session, job_id, self.owner, self.settings.scoring_lease_s, utcnow())
            except Exception:  # noqa: BLE001 - a missed beat only shortens the lease; the next one retries
                log.warning("job %d: lease heartbeat failed", job_id, exc_info=True)

    def release_dead_leases(self) -> int:
        """Requeue the jobs of this host's dead workers."""
        with session_scope(self.session_factory) as session:
            return requeue_jobs_of_dead_workers(
                session, os.uname().nodename, utcnow(),
                max_attempts=self.settings.scoring_max_attempts, base_s=self.settings.scoring_retry_base_s,
            )

    def _fail_unexpectedly(self, job_id: int, exc: Exception) -> None:
        log.exception("job %d failed unexpectedly", job_id)
        self._fail(job_id, f"{type(exc).__name__}: {exc}")

    def _wait_for_disk(self, job_id: int, exc: OSError) -> None:
        """A full disk is the site's to fix, not the study's fault: the job goes back to the queue without using an
        attempt (a dead letter after five full-disk attempts left the study ``failed`` once space returned), and
        this worker claims nothing for ``DISK_FULL_WAIT_S`` (each try runs the model again)."""
        now = utcnow()
        reason = f"waiting for disk space: {type(exc).__name__}: {exc}"
        with session_scope(self.session_factory) as session:
            job = session.get(ScoringJob, job_id)
            assert job is not None
            if job.state == JobState.running and job.lease_owner == self.owner:
                if job.last_error != reason:  # once per outage in the timeline, not every wait
                    add_event(session, job.study_id, job.revision, "retry", now, job_id=job.id, reason=reason,
                              attempts=job.attempts - 1)
                job.attempts = max(job.attempts - 1, 0)
                job.state = JobState.retry.value
                job.last_error = reason
                job.lease_owner = job.lease_until = None
                job.next_attempt_at = now + timedelta(seconds=DISK_FULL_WAIT_S)
                job.updated_at = now
        self._disk_wait_until = time.monotonic() + DISK_FULL_WAIT_S
        log.warning("job %d: %s; retried in %.0f s without using an attempt", job_id, reason, DISK_FULL_WAIT_S)

    def _model_unavailable(self, job_id: int, reason: str) -> None:
        """A version that cannot be loaded is retried while it holds the job's role; one no longer holding it (deleted,
        or replaced by a promotion or rollback) is not waited for: the job is retired and a champion's study queued
        for the champion now (``jobs.retire``)."""
        with self.session_factory() as session:
            job = session.get(ScoringJob, job_id)
            assert job is not None
            task, version, role = job.task, job.model_version, ModelRole(job.role)
        try:
            now_version = self.selector.version_now(task, role)
        except ModelUnavailable:
            now_version = version  # the registry cannot say: retried, as any unavailable model
        if now_version == version:
            self._fail(job_id, reason)
            return
        held = f"now version {now_version}" if now_version else "none now"
        with session_scope(self.session_factory) as session:
            job = session.get(ScoringJob, job_id)
            assert job is not None
            if job.state == JobState.running and job.lease_owner == self.owner:
                retire(session, job, f"{reason}; {task} version {version} is no longer {role.value} ({held})", utcnow())

    def _fail(self, job_id: int, reason: str) -> None:
        with session_scope(self.session_factory) as session:
            job = session.get(ScoringJob, job_id)
            assert job is not None
            mark_failed(
                session, job, reason, utcnow(),
                max_attempts=self.settings.scoring_max_attempts, base_s=self.settings.scoring_retry_base_s,
            )

    def dispatch_ready(self) -> list[ResultSent]:
        return self.dispatcher.dispatch_ready()

    def run_once(self) -> None:
        self.enqueue_routed()
        while self.process_one():
            self.dispatch_ready()  # results go out as they are made, not after the whole queue
        self.dispatch_ready()

    def clear_stale_instance_cache(self) -> int:
        """A fetching worker's start: remove fetched studies that no job of this machine's workers runs now."""
        if not self.settings.ingest_url:
            return 0

        def running_here() -> list[int]:
            with session_scope(self.session_factory) as session:
                return list(session.scalars(select(ScoringJob.id).where(
                    ScoringJob.state == JobState.running, ScoringJob.lease_owner.startswith(f"{os.uname().nodename}:")
                )))

        return clear_instance_cache(self.settings, running_here)

    def run_until(self, stop: threading.Event) -> None:
        try:
            self.clear_stale_instance_cache()
        except Exception:
            log.exception("stale instance-cache folders not cleared; the next start tries again")
        scoring_failures, dispatch_failures = LoopFailureLog(log, "scoring pass"), LoopFailureLog(log, "dispatch pass")
        while not stop.is_set():
            try:
                self.release_dead_leases()
                self.enqueue_routed()
                while not stop.is_set() and self.process_one():
                    self.dispatch_ready()
            except Exception as exc:  # noqa: BLE001 - logged (throttled while it lasts); the next pass retries
                # Database hiccups must not end scoring for every later study.
                scoring_failures.failed(exc)
                time.sleep(1.0)
            else:
                scoring_failures.succeeded()
            try:
                # Apart from scoring: a registry that cannot be read must not hold back results already built.
                self.dispatch_ready()
            except Exception as exc:  # noqa: BLE001 - as above
                dispatch_failures.failed(exc)
            else:
                dispatch_failures.succeeded()
            stop.wait(self.settings.scoring_poll_s)
