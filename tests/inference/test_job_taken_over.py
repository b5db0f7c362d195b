"""A job whose lease ran out while its first worker still scored it: the second worker's result stands, the
first's work is dropped, and the job is done (never re-run, never dead-lettered, the study never failed)."""

from __future__ import annotations

from sqlalchemy import select

from inference.champions import LoadedModel, ModelSelector
from inference.jobs import claim_next
from inference.outgoing import outgoing_dir
from inference.score_job import score_job
from inference.tables import ScoreResult, ScoringJob, Study
from inference.worker import ScoringWorker
from inference.worker_process import build_worker
from service.db import session_scope, utcnow
from service.steering import DeferRules
from tests.inference.conftest import INFERENCE_FIXTURES, Pipeline

DX_CHEST = INFERENCE_FIXTURES / "images" / "dx_chest_highdicom.dcm"


def _claim_with_an_expired_lease(pipeline: Pipeline) -> int:
    """The first worker ("A") claims the study's job; its lease is already over when the second looks."""
    pipeline.receive(DX_CHEST)
    pipeline.monitor.run_once()
    assert pipeline.worker.enqueue_routed() == 1
    with session_scope(pipeline.worker.session_factory) as session:
        job = claim_next(session, "host-a:1:1", 0.0, utcnow())
        assert job is not None
        return int(job.id)


def _assert_scored_once(pipeline: Pipeline, job_id: int) -> None:
    with pipeline.session() as session:
        job = session.get(ScoringJob, job_id)
        results = session.scalars(select(ScoreResult)).all()
        study = session.scalars(select(Study)).one()
        assert job is not None and job.state == "done" and job.last_error is None
        assert len(results) == 1 and study.status == "scored"
        assert "dead-letter" not in [e.kind for e in study.events] and "retry" not in [e.kind for e in study.events]
        named = {results[0].sr_sop_instance_uid, results[0].heatmap_sop_instance_uid} - {None}
    on_disk = {p.stem for p in (outgoing_dir(pipeline.settings) / study.study_instance_uid).glob("*.dcm")}
    assert on_disk == named  # the losing worker's documents are gone


def test_first_worker_finding_the_job_scored_marks_it_done_without_running_the_model(pipeline: Pipeline) -> None:
    job_id = _claim_with_an_expired_lease(pipeline)
    second = build_worker(pipeline.settings)
    scored = second.process_one()  # takes the job over and scores it
    assert not isinstance(scored, bool)
    first = score_job(  # the first worker gets to its job only now
        job_id, settings=pipeline.settings, session_factory=pipeline.worker.session_factory,
        selector=pipeline.worker.selector, started=utcnow(),
    )
    assert first.result_id == scored.result_id and first.document_uids == scored.document_uids
    _assert_scored_once(pipeline, job_id)


class _SecondWorkerWinsWhileModelLoads(ModelSelector):
    """The first worker's model load, during which the second worker takes the job over and stores its result."""

    def __init__(self, base: ModelSelector, second: ScoringWorker) -> None:
        self.__dict__.update(base.__dict__)
        self.second = second

    def load(self, task: str, version: str, *, defer_rules: DeferRules | None = None) -> LoadedModel:
        assert not isinstance(self.second.process_one(), bool)
        return super().load(task, version, defer_rules=defer_rules)


def test_first_worker_losing_the_insert_drops_its_documents_and_marks_the_job_done(pipeline: Pipeline) -> None:
    job_id = _claim_with_an_expired_lease(pipeline)
    selector = _SecondWorkerWinsWhileModelLoads(pipeline.worker.selector, build_worker(pipeline.settings))
    first = score_job(
        job_id, settings=pipeline.settings, session_factory=pipeline.worker.session_factory, selector=selector,
        started=utcnow(),
    )
    with pipeline.session() as session:
        assert first.result_id == session.scalars(select(ScoreResult.id)).one()
    _assert_scored_once(pipeline, job_id)
