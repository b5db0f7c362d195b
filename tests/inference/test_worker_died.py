"""A job whose worker dies on every attempt (an OOM kill, a decoder crash) is dead-lettered at the maximum.

Only a failure the worker lives to report went through the dead letter: a job whose worker died was put back
as ``retry`` forever, killing a worker each time (review defect 2).
"""

from __future__ import annotations

import os

from sqlalchemy import select

from inference.jobs import claim_next, release_dead_leases
from inference.tables import ScoringJob, Study
from inference.worker import ScoringWorker, running_node
from inference.worker_process import build_worker
from service.db import session_scope, utcnow
from tests.inference.conftest import INFERENCE_FIXTURES, Pipeline

DX_CHEST = INFERENCE_FIXTURES / "images" / "dx_chest_highdicom.dcm"
HOST = os.uname().nodename
DEAD_WORKER = f"{HOST}:999999999:1"  # no such process: a worker that claimed the job, then was killed


def _routed(pipeline: Pipeline, max_attempts: int) -> ScoringWorker:
    pipeline.receive(DX_CHEST)
    pipeline.monitor.run_once()
    worker = build_worker(pipeline.settings.model_copy(update={"scoring_max_attempts": max_attempts}))
    assert worker.enqueue_routed() == 1
    return worker


def _dies_while_scoring(worker: ScoringWorker, *, lease_s: float = 600.0, owner: str = DEAD_WORKER) -> None:
    settings = worker.settings
    with session_scope(worker.session_factory) as session:
        job = claim_next(
            session, owner, lease_s, utcnow(),
            max_attempts=settings.scoring_max_attempts, base_s=settings.scoring_retry_base_s,
        )
        assert job is not None


def _job_and_study(worker: ScoringWorker) -> tuple[ScoringJob, Study]:
    with worker.session_factory() as session:
        job = session.scalars(select(ScoringJob)).one()
        study = session.scalars(select(Study)).one()
        session.expunge_all()
        return job, study


def _assert_dead_lettered(worker: ScoringWorker, attempts: int) -> None:
    with worker.session_factory() as session:
        job = session.scalars(select(ScoringJob)).one()
        study = session.scalars(select(Study)).one()
        kinds = [event.kind for event in study.events]
        assert (job.state, job.attempts) == ("dead", attempts)
        assert job.last_error is not None and "worker scoring it died" in job.last_error
        assert (study.status, study.status_reason) == ("failed", job.last_error)
        assert kinds.count("dead-letter") == 1


def test_the_workers_release_dead_letters_a_job_whose_worker_died_on_its_last_attempt(pipeline: Pipeline) -> None:
    worker = _routed(pipeline, max_attempts=2)
    _dies_while_scoring(worker)
    assert worker.release_dead_leases() == 1
    assert _job_and_study(worker)[0].state == "retry"  # one attempt left
    _dies_while_scoring(worker)
    assert worker.release_dead_leases() == 1
    _assert_dead_lettered(worker, attempts=2)
    assert worker.process_one() is False  # nothing left to claim: no third worker is killed


def test_an_expired_lease_with_no_attempt_left_is_dead_lettered_not_taken_over(pipeline: Pipeline) -> None:
    # A worker on another machine is judged by its lease alone: here it ran out on the last attempt.
    worker = _routed(pipeline, max_attempts=1)
    with session_scope(worker.session_factory) as session:
        assert claim_next(session, "other-host:1:1", 0.0, utcnow(), max_attempts=1) is not None
    assert worker.process_one() is False
    _assert_dead_lettered(worker, attempts=1)


def test_a_job_released_at_a_service_start_with_no_attempt_left_is_dead_lettered_at_the_next_claim(
    pipeline: Pipeline,
) -> None:
    worker = _routed(pipeline, max_attempts=1)
    _dies_while_scoring(worker, owner=worker.owner)  # a worker of this node's previous run
    with session_scope(worker.session_factory) as session:
        # `medscreen serve` releases every running job of its node at its start, without the attempt limit.
        assert release_dead_leases(session, HOST, utcnow(), starting_node=running_node(worker.settings)) == 1
    assert worker.process_one() is False
    _assert_dead_lettered(worker, attempts=1)
