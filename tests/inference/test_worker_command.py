"""``medscreen worker`` on one real PostgreSQL: two worker processes with separate homes take disjoint
jobs, and the job of a worker killed while scoring it is taken over by the other."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid
from sqlalchemy import func, select

from inference.complete import CompletenessMonitor
from inference.receive.process import build_ingestor
from inference.route import load_rules
from inference.tables import ScoreResult, ScoringJob
from medscreen.schema import migrate_all
from service.db import make_engine, make_session_factory
from service.settings import Settings
from tests.inference.conftest import INFERENCE_FIXTURES

DX_CHEST = INFERENCE_FIXTURES / "images" / "dx_chest_highdicom.dcm"
# The lease a worker takes on a job: long while both work (a model load on a busy machine must not look
# like a death), short for the worker that is killed, so that the other takes its job over soon.
LONG_LEASE_S, SHORT_LEASE_S = 300, 4


@pytest.fixture
def ingest_node(
    settings: Settings, postgres_database_url: str, tmp_path: Path, registered_store: Path
) -> Iterator[Callable[[int], None]]:
    """The ingest node's side: schema, the shipped models registered (a copy of the session's store), and `add(n)`
    routing n new studies."""
    shutil.copyfile(registered_store, tmp_path / "mlflow.db")
    registry = f"sqlite:///{tmp_path / 'mlflow.db'}"
    settings = settings.model_copy(
        update={"database_url": postgres_database_url, "mlflow_tracking_uri": registry, "quiet_period_s": 0.0}
    )
    settings.home.mkdir(parents=True, exist_ok=True)
    migrate_all(postgres_database_url)
    ingestor = build_ingestor(settings)
    engine = make_engine(postgres_database_url)
    monitor = CompletenessMonitor(settings, make_session_factory(engine), load_rules())

    def add(n: int) -> None:
        for _ in range(n):
            ds = dcmread(DX_CHEST)
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
            target = ingestor.spool.new_incoming_path()
            ds.save_as(target)
            ingestor.accept_file(target, source="dimse")
        monitor.run_once()

    add.settings = settings  # type: ignore[attr-defined]
    add.engine = engine  # type: ignore[attr-defined]
    yield add
    ingestor.engine.dispose()
    engine.dispose()


class Worker:
    """A `medscreen worker` process with its own home, logging to a file."""

    def __init__(self, settings: Settings, home: Path, lease_s: int = LONG_LEASE_S) -> None:
        home.mkdir(parents=True, exist_ok=True)
        self.log = home / "worker.log"
        LOGS.append(self.log)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MEDSCREEN_")}
        env.update(
            MEDSCREEN_HOME=str(home),
            MEDSCREEN_DATABASE_URL=str(settings.database_url),
            MEDSCREEN_SPOOL_PATH=str(settings.spool_dir.resolve()),  # the ingest node's spool, "mounted" here
            MEDSCREEN_MLFLOW_TRACKING_URI=str(settings.mlflow_tracking_uri),
            MEDSCREEN_SCORING_LEASE_S=str(lease_s),
            MEDSCREEN_SCORING_POLL_S="0.2",
            MEDSCREEN_SCORING_RETRY_BASE_S="0",
            MEDSCREEN_LOG_LEVEL="INFO",
            MEDSCREEN_ORT_THREADS="1",
        )
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "medscreen", "worker", "--processes", "1"], env=env, stdout=log, stderr=log
            )

    def scoring_pids(self) -> set[int]:
        return {p.pid for p in psutil.Process(self.process.pid).children(recursive=True)}

    def jobs_scored(self) -> set[int]:
        return {int(m) for m in re.findall(r"job (\d+): champion", self.log.read_text(errors="replace"))}

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


LOGS: list[Path] = []


def _wait(condition: Callable[[], bool], what: str, timeout_s: float = 240.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p}:\n{p.read_text(errors='replace')[-3000:]}" for p in LOGS if p.exists())
            raise AssertionError(f"timed out waiting for {what}\n{tails}")
        time.sleep(0.05)


def _jobs(engine) -> list[ScoringJob]:  # type: ignore[no-untyped-def]
    with make_session_factory(engine)() as session:
        return list(session.scalars(select(ScoringJob).order_by(ScoringJob.id)))


def _results_per_job(engine) -> dict[int, int]:  # type: ignore[no-untyped-def]
    with make_session_factory(engine)() as session:
        rows = session.execute(select(ScoreResult.job_id, func.count()).group_by(ScoreResult.job_id))
        return {int(job): int(n) for job, n in rows}


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("initdb") is None and not Path("/usr/lib/postgresql").is_dir(), reason="no PostgreSQL")
def test_two_workers_take_disjoint_jobs_and_a_killed_ones_job_is_taken_over(
    ingest_node: Callable[[int], None], tmp_path: Path
) -> None:
    settings: Settings = ingest_node.settings  # type: ignore[attr-defined]
    engine = ingest_node.engine  # type: ignore[attr-defined]
    first, second = Worker(settings, tmp_path / "machine-1"), Worker(settings, tmp_path / "machine-2")
    try:
        ingest_node(10)
        _wait(lambda: len(_jobs(engine)) == 10 and all(j.state == "done" for j in _jobs(engine)), "10 jobs done")
        assert set(_results_per_job(engine).values()) == {1} and len(_results_per_job(engine)) == 10
        by_first, by_second = first.jobs_scored(), second.jobs_scored()
        assert by_first and by_second, (by_first, by_second)  # both machines took work
        assert not by_first & by_second and by_first | by_second == {j.id for j in _jobs(engine)}
        # The result documents are in the shared spool, where the ingest node's study view finds them.
        assert len(list((settings.spool_dir / "outgoing").glob("*/*.dcm"))) >= 10

        # Now the first machine is killed while it holds a job's lease (restarted cold, it loads the model
        # first: seconds with the lease held). The second is paused meanwhile so that the first takes it.
        first.stop()
        paused = second.scoring_pids()
        for pid in paused:
            os.kill(pid, signal.SIGSTOP)
        first = Worker(settings, tmp_path / "machine-1", lease_s=SHORT_LEASE_S)
        ingest_node(1)
        _wait(lambda: len(_jobs(engine)) == 11, "the 11th job queued")
        job_id = _jobs(engine)[-1].id

        def held_by_first() -> bool:
            job = next(j for j in _jobs(engine) if j.id == job_id)
            owner_pid = int(job.lease_owner.split(":")[1]) if job.state == "running" and job.lease_owner else -1
            return owner_pid in first.scoring_pids()

        _wait(held_by_first, "the first machine to claim the new job")
        victims = first.scoring_pids()
        first.process.kill()
        for pid in victims:  # the scoring process dies with its parent; make sure of it
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in paused:
            os.kill(pid, signal.SIGCONT)
        _wait(lambda: next(j for j in _jobs(engine) if j.id == job_id).state == "done", "the killed machine's job done")
        assert _results_per_job(engine).get(job_id) == 1 and set(_results_per_job(engine).values()) == {1}
        assert job_id in second.jobs_scored()
        # Taken over either when its lease ran out or, both "machines" being this host, when the second's next
        # pass saw the first's scoring process gone (which comes first depends on where SIGSTOP caught it).
        taken_over = second.log.read_text(errors="replace")
        assert f"job {job_id}: lease of" in taken_over or f"job {job_id}: worker " in taken_over
    finally:
        for worker in (first, second):
            for pid in worker.scoring_pids() if worker.process.poll() is None else set():
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
            worker.stop()


def test_a_worker_refuses_a_database_the_ingest_node_has_not_set_up(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from medscreen.worker_command import run_workers

    empty = settings.model_copy(update={"database_url": f"sqlite:///{tmp_path / 'empty.db'}"})
    assert run_workers(empty, 1) == 2
    assert "no schema yet" in capsys.readouterr().err


def test_a_worker_refuses_a_schema_older_than_itself(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Its outgoing rows would name no node there, and any node's dispatcher would claim them.
    from alembic import command

    from medscreen.schema import alembic_config_all
    from medscreen.worker_command import run_workers

    url = f"sqlite:///{tmp_path / 'old.db'}"
    migrate_all(url)
    command.downgrade(alembic_config_all(url), "0004_inference_triage_safety")
    assert run_workers(settings.model_copy(update={"database_url": url}), 1) == 2
    assert "schema is older than this worker" in capsys.readouterr().err
