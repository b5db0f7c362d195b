"""Two `medscreen worker` nodes with their own homes and spools on one real PostgreSQL, fetching over WADO-RS
from a real `medscreen serve` and writing back to a real Orthanc: each node's dispatcher sends only the results
whose files its spool holds, a stopped node's results wait for it (listed with their node and age) instead of
being claimed by the other, and a killed node's job is scored once by the other node and written back by it."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from inference.tables import OutgoingResult, ScoreResult, ScoringJob, Study
from service.db import make_session_factory
from tests.inference.test_worker_fetch import (
    FetchingWorker,
    event_kinds,
    orthanc_instances,
    outgoing_row,
    pacs_settings,
    requires_postgres,
    start_ingest_node,
    stow_new_study,
    worker_logins,
)
from tests.peers import MedscreenService, Orthanc, start_orthanc, stop_orthanc, wait_for

WAIT_S = 240
# Long while both work (a model load on a busy machine must not look like a death), short for the node
# that is killed, so that the other takes its job over soon.
LONG_LEASE_S, SHORT_LEASE_S = "300", "4"


def _scoring_pids(worker: FetchingWorker) -> set[int]:
    if worker.process.poll() is not None:
        return set()
    return {p.pid for p in psutil.Process(worker.process.pid).children(recursive=True)}


def _signal(pids: set[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _all_done(engine: Engine, count: int) -> bool:
    with make_session_factory(engine)() as session:
        jobs = session.scalars(select(ScoringJob)).all()
        rows = session.scalars(select(OutgoingResult)).all()
    return len(jobs) == count and all(j.state == "done" for j in jobs) and len(rows) == count and all(
        r.state == "done" for r in rows
    )


def _job_of(engine: Engine, study_uid: str) -> ScoringJob | None:
    with make_session_factory(engine)() as session:
        return session.scalar(
            select(ScoringJob).join(Study, Study.id == ScoringJob.study_id).where(Study.study_instance_uid == study_uid)
        )


@pytest.mark.integration
@requires_postgres
def test_each_node_sends_only_its_own_results_and_takes_over_a_killed_nodes_job(
    medscreen_service: Callable[..., MedscreenService], postgres_database_url: str, tmp_path: Path
) -> None:
    ingest, engine = start_ingest_node(medscreen_service, postgres_database_url, tmp_path)
    pacs: Orthanc | None = start_orthanc(tmp_path / "orthanc")
    assert pacs is not None
    http_port, dicom_port = pacs.http_port, pacs.dicom_port
    common = pacs_settings(dicom_port, dispatch_retry_base_s="0.5", dispatch_max_attempts="100")

    def node(name: str, lease_s: str = LONG_LEASE_S) -> FetchingWorker:
        return FetchingWorker(tmp_path / name, ingest, postgres_database_url, scoring_lease_s=lease_s, **common)

    first, second = node("machine-1"), node("machine-2")
    try:
        # Both nodes at work: disjoint jobs, each result written back once by the node that built it.
        studies = [stow_new_study(ingest, tmp_path) for _ in range(8)]
        wait_for(lambda: _all_done(engine, 8), WAIT_S, "8 studies scored and written back")
        rows = {uid: outgoing_row(engine, uid) for uid in studies}
        by_node = {first.node: first, second.node: second}
        assert first.node != second.node and {r.node for r in rows.values() if r} == set(by_node), rows
        for uid, row in rows.items():
            assert row is not None and row.attempts == 1  # never claimed by a node that lacks its files
            owner, other = by_node[str(row.node)], next(w for w in by_node.values() if w.node != row.node)
            assert sorted(p.name for p in owner.outgoing(uid).iterdir()) == sorted(f"{u}.dcm" for u in row.sop_instance_uids)
            assert not other.outgoing(uid).exists()
            assert "write-back-retry" not in event_kinds(engine, uid)
            assert len(orthanc_instances(pacs, uid)) == 2

        # The PACS goes down; the first node builds a result and fails to send it, then stops. The second
        # keeps working (it scores and, the PACS back, sends a new study) but never claims the first's row.
        stop_orthanc(pacs)
        pacs = None
        paused = _scoring_pids(second)
        _signal(paused, signal.SIGSTOP)
        waiting_uid = stow_new_study(ingest, tmp_path)

        def failed_once() -> bool:
            first.check_alive()
            row = outgoing_row(engine, waiting_uid)
            return row is not None and row.state == "retry"

        wait_for(failed_once, WAIT_S, "the first node to build a result and fail to send it")
        first.stop()
        attempts = outgoing_row(engine, waiting_uid).attempts  # type: ignore[union-attr]
        _signal(paused, signal.SIGCONT)
        pacs = start_orthanc(tmp_path / "orthanc", extra_config={"HttpPort": http_port, "DicomPort": dicom_port})
        later_uid = stow_new_study(ingest, tmp_path)
        wait_for(lambda: (r := outgoing_row(engine, later_uid)) is not None and r.state == "done", WAIT_S,
                 "the second node to score and send a new study")
        row = outgoing_row(engine, later_uid)
        assert row is not None and row.node == second.node
        waiting = outgoing_row(engine, waiting_uid)
        assert waiting is not None and (waiting.node, waiting.state, waiting.attempts) == (first.node, "retry", attempts)
        assert orthanc_instances(pacs, waiting_uid) == {}
        listing = httpx.get(f"{ingest.url}/api/outgoing", params={"node": first.node, "state": "retry"},
                            headers=ingest.token_headers(), timeout=30).json()
        assert [item["study_instance_uid"] for item in listing["items"]] == [waiting_uid]
        mine = next(n for n in listing["nodes"] if n["node"] == first.node)
        assert mine["waiting"] == 1 and mine["oldest_waiting_age_s"] > 0

        # The first node comes back (same home, same spool): it sends what it had built, the same files.
        built = {p.name: p.read_bytes() for p in first.outgoing(waiting_uid).iterdir()}
        first = node("machine-1", SHORT_LEASE_S)
        wait_for(lambda: (r := outgoing_row(engine, waiting_uid)) is not None and r.state == "done", WAIT_S,
                 "the restarted first node to send its waiting result")
        assert sorted(orthanc_instances(pacs, waiting_uid)) == sorted(name[:-4] for name in built)
        assert {p.name: p.read_bytes() for p in first.outgoing(waiting_uid).iterdir()} == built

        # The first node is killed while it holds a new study's job: the second scores it once and sends it.
        paused = _scoring_pids(second)
        _signal(paused, signal.SIGSTOP)
        killed_uid = stow_new_study(ingest, tmp_path)

        def held_by_first() -> bool:
            first.check_alive()
            job = _job_of(engine, killed_uid)
            owner_pid = int(job.lease_owner.split(":")[1]) if job and job.state == "running" and job.lease_owner else -1
            return owner_pid in _scoring_pids(first)

        # Polled often: the kill must come while it fetches the study and loads the model, before it stores a result.
        wait_for(held_by_first, WAIT_S, "the first node to claim the new study's job", interval=0.02)
        victims = _scoring_pids(first)
        first.process.kill()
        _signal(victims, signal.SIGKILL)
        first.process.wait(timeout=30)
        _signal(paused, signal.SIGCONT)
        wait_for(lambda: (r := outgoing_row(engine, killed_uid)) is not None and r.state == "done", WAIT_S,
                 "the second node to score the killed node's job and send it")
        row = outgoing_row(engine, killed_uid)
        assert row is not None and row.node == second.node and row.attempts == 1
        with make_session_factory(engine)() as session:
            job = _job_of(engine, killed_uid)
            assert job is not None and job.state == "done"
            results = session.scalar(select(func.count()).select_from(ScoreResult).where(ScoreResult.job_id == job.id))
        assert results == 1
        assert len(orthanc_instances(pacs, killed_uid)) == 2
        # One login per scoring process started (three), not one per study (eleven).
        assert worker_logins(engine) <= 3
    finally:
        _signal(_scoring_pids(second), signal.SIGCONT)
        for worker in (first, second):
            worker.stop()
        if pacs is not None:
            stop_orthanc(pacs)
        engine.dispose()
