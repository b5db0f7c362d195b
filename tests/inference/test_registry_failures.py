"""The model registry and model versions under failure, met by a real worker on real images: a registry that
cannot be read, a version gone from it, a version whose ONNX file or metadata is bad. A study is never marked
scored without a valid score, and the reason is in the job and the timeline."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import select

import inference.score_job
from inference.tables import ScoreResult, ScoringJob, Study, StudyEvent
from tests.inference.conftest import INFERENCE_FIXTURES, Pipeline

DX_CHEST = INFERENCE_FIXTURES / "images" / "dx_chest_highdicom.dcm"


def _registry_path(pipeline: Pipeline) -> Path:
    return Path(pipeline.settings.resolved_mlflow_tracking_uri.split("sqlite:///", 1)[1])


def _score_all(pipeline: Pipeline) -> None:
    pipeline.worker.enqueue_routed()
    while pipeline.worker.process_one():
        pass


def test_a_registry_unreadable_when_the_result_is_stored_is_a_retry_not_a_shadow_result(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The registry cannot be read just as the champion's result is stored (a store locked past MLflow's 20 s busy
    timeout by a backup or a long write, a tracking server restarting; here its alias table is out of reach, which
    fails at once). The champion alias was taken for "no champion now": the result was stored as previous-champion
    and shadow (no SR, steering nothing), the study re-routed and then marked scored by that result."""
    scored = inference.score_job.score_study
    store = sqlite3.connect(_registry_path(pipeline))

    def score_then_lose_the_registry(*args, **kwargs):
        result = scored(*args, **kwargs)
        store.execute("ALTER TABLE registered_model_aliases RENAME TO aliases_out_of_reach")
        store.commit()
        return result

    monkeypatch.setattr(inference.score_job, "score_study", score_then_lose_the_registry)
    pipeline.receive(DX_CHEST)
    pipeline.monitor.run_once()
    pipeline.worker.enqueue_routed()
    try:
        assert pipeline.worker.process_one() is True  # the attempt failed, to be retried
    finally:
        store.execute("ALTER TABLE aliases_out_of_reach RENAME TO registered_model_aliases")
        store.commit()
        store.close()
    monkeypatch.setattr(inference.score_job, "score_study", scored)
    with pipeline.session() as session:
        job = session.scalars(select(ScoringJob)).one()
        assert job.state == "retry" and "cannot read the chest-xray champion" in (job.last_error or "")
        assert session.scalars(select(ScoreResult)).all() == []
        assert session.scalars(select(Study)).one().status == "scoring"
    _score_all(pipeline)
    with pipeline.session() as session:
        study = session.scalars(select(Study)).one()
        results = session.scalars(select(ScoreResult)).all()
        kinds = [e.kind for e in session.scalars(select(StudyEvent).order_by(StudyEvent.id))]
    assert study.status == "scored" and "rescore-requested" not in kinds
    assert [(r.role, r.outcome, r.model_version) for r in results] == [("champion", "scored", "1")]
