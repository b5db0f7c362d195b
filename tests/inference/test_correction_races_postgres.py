"""A corrected re-send racing the scoring queue, or another corrected copy, on PostgreSQL (review round 3, crash D3
and D8). SQLite serialises writers (BEGIN IMMEDIATE); PostgreSQL needs the study row locked. The other side runs in a
thread at the chosen point; the test waits until it has finished or waits on a lock, so either order is seen."""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import select, text

import inference.ingest as ingest
import inference.jobs as jobs
from benchmarks.study_factory import wrap_radiograph
from inference.complete import CompletenessMonitor
from inference.errors import DifferingDuplicate
from inference.receive.process import build_ingestor
from inference.route import load_rules
from inference.shipped_models import SHIPPED_MODELS_DIR, log_onnx_bundle
from inference.tables import QuarantinedItem, ScoreResult, ScoringJob, Study, StudyEvent
from inference.worker_process import build_worker
from medscreen.schema import migrate_all
from service.db import make_engine, make_session_factory, session_scope, utcnow
from service.model_registry import move_champion
from service.settings import Settings
from tests.conftest import FIXTURES
from tests.inference.conftest import Pipeline

PNEUMONIA = FIXTURES / "datasets" / "kermany" / "train" / "PNEUMONIA"


@pytest.fixture
def pg_pipeline(settings: Settings, registry: str, postgres_database_url: str) -> Iterator[Pipeline]:
    settings = settings.model_copy(update={
        "mlflow_tracking_uri": registry, "quiet_period_s": 0.0, "scoring_retry_base_s": 0.0, "model_refresh_s": 0.0,
        "database_url": postgres_database_url})
    settings.home.mkdir(parents=True, exist_ok=True)
    migrate_all(settings.resolved_database_url)
    factory = make_session_factory(make_engine(settings.resolved_database_url))
    yield Pipeline(settings, build_ingestor(settings), CompletenessMonitor(settings, factory, load_rules()),
                   build_worker(settings))


def _corrected(original: Path, folder: Path) -> Path:
    ds = dcmread(original)
    ds.PatientAge, ds.PatientBirthDate = "034Y", "19920101"
    path = folder / f"corrected-{original.name}"
    ds.save_as(path, enforce_file_format=True)
    return path


def _meanwhile(pipeline: Pipeline, action: Callable[[], None]) -> Callable[[], list[BaseException]]:
    """Start ``action`` in another thread and return once it has ended or waits on a lock; the returned function
    joins it and gives what it raised."""
    raised: list[BaseException] = []

    def run() -> None:
        try:
            action()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            raised.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    waiting = text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()")
    deadline = time.monotonic() + 60
    with make_engine(pipeline.settings.resolved_database_url).connect() as probe:
        while thread.is_alive() and not probe.execute(waiting).scalar() and time.monotonic() < deadline:
            time.sleep(0.02)

    def join() -> list[BaseException]:
        thread.join(60)
        assert not thread.is_alive()
        return raised

    return join


def test_a_withdrawal_racing_the_enqueue_never_leaves_the_study_scoring(
    pg_pipeline: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker had read the study (rev 1, routed for the new champion) when the corrected copy's withdrawal
    committed (rev 2, out of scope); it then queued rev 1 and wrote 'scoring' over it: stuck for good, with the
    rev-1 positive re-raising the study."""
    p = pg_pipeline
    original = wrap_radiograph(PNEUMONIA / "person1000_bacteria_2931.jpeg", tmp_path / "film.dcm",
                               view_position="PA", patient_age="005Y")
    p.receive(original)
    p.complete_route_and_score()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        v2 = log_onnx_bundle(p.settings.resolved_mlflow_tracking_uri, SHIPPED_MODELS_DIR / "chest-xray").version
    move_champion(p.settings.resolved_mlflow_tracking_uri, "chest-xray", v2)
    with session_scope(p.worker.session_factory) as session:
        jobs.request_rescore(session, session.scalars(select(Study)).one(), "rita", utcnow())
    corrected = _corrected(original, tmp_path)
    real_enqueue = jobs.enqueue
    joins = []

    def enqueue_while_corrected(*args: object, **kwargs: object) -> object:
        monkeypatch.setattr(jobs, "enqueue", real_enqueue)
        joins.append(_meanwhile(p, lambda: p.receive(corrected)))
        return real_enqueue(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(jobs, "enqueue", enqueue_while_corrected)
    p.worker.enqueue_routed()
    assert [type(exc) for exc in joins[0]()] == [DifferingDuplicate]
    for _ in range(2):
        p.complete_route_and_score()
    with session_scope(p.worker.session_factory) as session:
        study = session.scalars(select(Study)).one()
        results = [(r.revision, r.model_version, r.role, r.outcome) for r in
                   session.scalars(select(ScoreResult).order_by(ScoreResult.id))]
        open_jobs = session.scalars(select(ScoringJob.id).where(ScoringJob.state != "done")).all()
        state = (study.revision, study.status)
    assert state == (2, "out_of_scope") and open_jobs == []
    # The rev-1 job queued for v2 before the withdrawal is done without scoring: its revision is superseded.
    assert results == [(1, "1", "champion", "scored"), (2, "1", "champion", "out_of_scope")]


def test_two_corrected_copies_withdraw_once_and_both_are_kept(
    pg_pipeline: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two corrected films of one study over two associations: both withdrawals inserted the same synthetic job,
    the later failed with an IntegrityError (a processing failure to the PACS) and its file stayed in the
    quarantine with no row."""
    p = pg_pipeline
    a = wrap_radiograph(PNEUMONIA / "person1000_bacteria_2931.jpeg", tmp_path / "a.dcm", view_position="PA",
                        patient_age="005Y")
    b = wrap_radiograph(PNEUMONIA / "person1001_bacteria_2932.jpeg", tmp_path / "b.dcm", view_position="PA",
                        patient_age="005Y", study_uid=dcmread(a).StudyInstanceUID)
    p.receive(a, b)
    p.complete_route_and_score()
    fixed = [_corrected(a, tmp_path), _corrected(b, tmp_path)]
    real_insert = ingest.insert
    joins = []

    def insert_while_the_other_copy_arrives(table: object) -> object:
        if table is ScoringJob:
            monkeypatch.setattr(ingest, "insert", real_insert)
            joins.append(_meanwhile(p, lambda: p.receive(fixed[1])))
        return real_insert(table)  # type: ignore[call-overload]

    monkeypatch.setattr(ingest, "insert", insert_while_the_other_copy_arrives)
    with pytest.raises(DifferingDuplicate):
        p.receive(fixed[0])
    assert [type(exc) for exc in joins[0]()] == [DifferingDuplicate]
    files = sorted(f for f in p.ingestor.spool.quarantine.rglob("*.dcm"))
    with session_scope(p.worker.session_factory) as session:
        rows = sorted(Path(path) for path in session.scalars(select(QuarantinedItem.path)))
        study = session.scalars(select(Study)).one()
        outcomes = [(r.revision, r.outcome) for r in session.scalars(select(ScoreResult).order_by(ScoreResult.id))]
        marks = session.scalars(select(StudyEvent.id).where(StudyEvent.kind == ingest.HEADER_CORRECTED)).all()
        state = (study.revision, study.status)
    assert len(rows) == 2 and files == rows
    assert state == (2, "out_of_scope") and outcomes == [(1, "scored"), (2, "out_of_scope")] and len(marks) == 2
