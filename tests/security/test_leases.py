"""A killed scoring worker's job goes back to the queue at once; a live worker's lease is kept alive by heartbeats."""

from __future__ import annotations

import os
import subprocess
from datetime import timedelta

from sqlalchemy import select

from inference.ingest import InstanceIngestor
from inference.jobs import claim_next, extend_lease, release_dead_leases, worker_owner
from inference.tables import ScoringJob, Study
from service.db import make_session_factory, session_scope, utcnow
from service.lifecycle import JobState
from tests.inference.conftest import INFERENCE_FIXTURES

HOST = os.uname().nodename


def _running_job(ingestor: InstanceIngestor, owner: str) -> int:
    copy = ingestor.spool.new_incoming_path()
    copy.write_bytes((INFERENCE_FIXTURES / "ct" / "lidc-0002-0.dcm").read_bytes())
    ingestor.accept_file(copy, source="dimse")
    now = utcnow()
    with session_scope(make_session_factory(ingestor.engine)) as session:
        study = session.scalars(select(Study)).one()
        job = ScoringJob(study_id=study.id, revision=1, task="ct-chest", model_name="ct-chest", model_version="1",
                         role="champion", state=JobState.running, attempts=1, next_attempt_at=now, lease_owner=owner,
                         lease_until=now + timedelta(seconds=600), created_at=now, updated_at=now)
        session.add(job)
        session.flush()
        return job.id


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_the_job_of_a_killed_worker_is_requeued_without_waiting_for_its_lease(ingestor: InstanceIngestor) -> None:
    job_id = _running_job(ingestor, f"{HOST}:{_dead_pid()}:1")
    factory = make_session_factory(ingestor.engine)
    with session_scope(factory) as session:
        assert claim_next(session, "other", 30, utcnow()) is None, "before: held by a dead worker's 600 s lease"
    with session_scope(factory) as session:
        assert release_dead_leases(session, HOST, utcnow()) == 1
    with session_scope(factory) as session:
        job = claim_next(session, "new-worker", 30, utcnow())
        assert job is not None and job.id == job_id and job.attempts == 2


def test_a_live_workers_job_stays_and_its_heartbeat_extends_the_lease(ingestor: InstanceIngestor) -> None:
    owner = f"{HOST}:{os.getpid()}:1"
    job_id = _running_job(ingestor, owner)
    factory = make_session_factory(ingestor.engine)
    with session_scope(factory) as session:
        assert release_dead_leases(session, HOST, utcnow()) == 0
    later = utcnow() + timedelta(seconds=590)
    with session_scope(factory) as session:
        assert extend_lease(session, job_id, owner, 30, later)
        assert not extend_lease(session, job_id, "someone-else", 30, later)
    with session_scope(factory) as session:
        assert session.get(ScoringJob, job_id).lease_until > later  # type: ignore[union-attr]


NODE = f"{HOST}:/srv/medscreen/home1"
OTHER_NODE = f"{HOST}:/srv/medscreen/home2"  # another home on this machine: another node


def test_a_service_start_requeues_every_running_job_of_its_node(ingestor: InstanceIngestor) -> None:
    # The owner's process runs (here: this test), yet it belonged to the node's previous run.
    _running_job(ingestor, worker_owner(NODE))
    with session_scope(make_session_factory(ingestor.engine)) as session:
        assert release_dead_leases(session, HOST, utcnow(), starting_node=NODE) == 1


def test_a_start_leaves_another_live_node_on_this_machine_its_jobs(ingestor: InstanceIngestor) -> None:
    # Review pg D3: a node's start released another home's running jobs ("worker vm:19613:... is gone") by hostname.
    job_id = _running_job(ingestor, worker_owner(OTHER_NODE))
    factory = make_session_factory(ingestor.engine)
    with session_scope(factory) as session:
        assert release_dead_leases(session, HOST, utcnow(), starting_node=NODE) == 0
    with session_scope(factory) as session:
        job = session.get(ScoringJob, job_id)
        assert job is not None and job.state == JobState.running and job.lease_owner == worker_owner(OTHER_NODE)
        assert "lease-released" not in [event.kind for event in session.scalars(select(Study)).one().events]


def test_a_start_releases_a_dead_worker_of_another_node_on_this_machine(ingestor: InstanceIngestor) -> None:
    _running_job(ingestor, f"{HOST}:{_dead_pid()}:1:{worker_owner(OTHER_NODE).rsplit(':', 1)[1]}")
    with session_scope(make_session_factory(ingestor.engine)) as session:
        assert release_dead_leases(session, HOST, utcnow(), starting_node=NODE) == 1


def test_a_start_leaves_other_machines_jobs_to_their_leases(ingestor: InstanceIngestor) -> None:
    _running_job(ingestor, "another-host:1234:1")
    with session_scope(make_session_factory(ingestor.engine)) as session:
        assert release_dead_leases(session, HOST, utcnow(), starting_node=NODE) == 0
