"""The scoring worker's loop: queue routed studies, score claimed jobs one at a time, dispatch stored results.

Each step lives in its own module: queueing in ``jobs.py``, scoring one job in ``score_job.py``, sending
what ``spool/outgoing`` holds in ``dispatch.py``. This module only drives them and keeps one bad job from
stopping the others.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from inference.champions import ModelSelector
from inference.dispatch import Dispatcher
from inference.errors import ScoringError
from inference.fetch_instances import IngestLogin, clear_instance_cache
from inference.jobs import claim_next, enqueue_routed, extend_lease, mark_failed, worker_owner
from inference.jobs import release_dead_leases as requeue_jobs_of_dead_workers
from inference.records import ResultSent, ScoreRecorded
from inference.score_job import score_job
from inference.spool_node import default_node_id, spool_node
from inference.tables import ScoringJob
from service.db import session_scope, utcnow
from service.lifecycle import JobState
from service.settings import Settings

__all__ = ["ScoringWorker", "running_node"]

log = logging.getLogger(__name__)


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

    def enqueue_routed(self) -> int:
        """Queue the registry's champion (and challenger) for each routed study revision."""
        versions = self.selector.refresh()
        with session_scope(self.session_factory) as session:
            return enqueue_routed(session, versions, utcnow(), lambda: self.selector.refresh(force=True))

    def process_one(self) -> ScoreRecorded | bool:
        """Score the next ready job: its record, True when it failed (and will retry), False when none was ready."""
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
        except ScoringError as exc:
            self._fail(job_id, exc.reason)
        except Exception as exc:  # noqa: BLE001 - one bad job must not stop the worker; it retries then dead-letters
            log.exception("job %d failed unexpectedly", job_id)
            self._fail(job_id, f"{type(exc).__name__}: {exc}")
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
        while not stop.is_set():
            try:
                self.release_dead_leases()
                self.enqueue_routed()
                while not stop.is_set() and self.process_one():
                    self.dispatch_ready()
            except Exception:
                # Database hiccups must not end scoring for every later study.
                log.exception("scoring pass failed; retrying")
                time.sleep(1.0)
            try:
                # Apart from scoring: a registry that cannot be read must not hold back results already built.
                self.dispatch_ready()
            except Exception:
                log.exception("dispatch pass failed; retrying")
            stop.wait(self.settings.scoring_poll_s)
