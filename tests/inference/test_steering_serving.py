"""The steering right a worker serves and the worklist applies is the registry's now: a right lowered or revoked
binds the next job and the studies already on the list, a `defer` the recorded evidence does not earn is never
served, and a version that is no longer champion steers nothing.

The real pipeline (ingest, completeness, routing, the scoring worker, the shipped ONNX models in a real MLflow
registry) and the real worklist recompute; the registry is the module's copy, so each test puts back what it
changes."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid
from sqlalchemy import select
from sqlalchemy.orm import Session

from inference.shipped_models import SHIPPED_MODELS_DIR, log_onnx_bundle
from inference.tables import ScoreResult, Study
from inference.worker_process import build_worker
from service.db import session_scope
from service.lifecycle import SteeringRight
from service.model_registry import (
    STEERING_EVIDENCE_TAG,
    ServingRights,
    move_champion,
    roll_back_champion,
    serving_rights,
    set_steering,
    steering_of,
    version_of,
)
from service.steering import DeferRules, SteeringEvidence, defer_rules_from_settings
from tests.inference.conftest import INFERENCE_FIXTURES, Pipeline
from worklist.policy import policy_from_settings
from worklist.recompute import recompute_worklist
from worklist.tables import WorklistEntry

DX_CHEST = INFERENCE_FIXTURES / "images" / "dx_chest_highdicom.dcm"
PNEUMONIA = Path("/work/shared/data/chest-xray/kermany/train/PNEUMONIA/person1000_bacteria_2931.jpeg")
# Evidence that earns defer under the default rules (site-confirmed, 400 studies, AUROC lower bound 0.93).
EVIDENCE = SteeringEvidence(kind="site-confirmed", source="St Elsewhere final reads", n_studies=400,
                            auroc_ci_low=0.93, specificity=0.9, specificity_ci_low=0.87, sensitivity=0.96,
                            sensitivity_ci_low=0.93)


def _new_study(tmp_path: Path) -> Path:
    """The fixture film as another study (new Study, Series and SOP UIDs)."""
    ds = dcmread(DX_CHEST)
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
    path = tmp_path / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path)
    return path


def _places(session: Session) -> list[tuple[str, float, str | None]]:
    """Each entry's (tier, minutes its due time lies after its arrival, steering), in study order."""
    entries = session.scalars(select(WorklistEntry).order_by(WorklistEntry.study_id))
    return [(e.tier, (e.due_at - e.arrived_at) / timedelta(minutes=1), e.steering) for e in entries]


def _serving(pipeline: Pipeline) -> ServingRights:
    """The registry's rights now under the site's defer rules, as the recompute loop reads them."""
    return serving_rights(pipeline.settings.resolved_mlflow_tracking_uri, defer_rules_from_settings(pipeline.settings))


@pytest.fixture
def uri(pipeline: Pipeline) -> Iterator[str]:
    """The registry's URI; v1 of chest-xray gets its shipped right back (raise-only, no evidence) afterwards."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    tracking_uri = pipeline.settings.resolved_mlflow_tracking_uri
    yield tracking_uri
    set_steering(tracking_uri, "chest-xray", "1", SteeringRight.raise_only, evidence=None, rules=DeferRules())
    try:
        MlflowClient(tracking_uri, tracking_uri).delete_model_version_tag("chest-xray", "1", STEERING_EVIDENCE_TAG)
    except MlflowException:
        pass  # none was recorded


def test_a_revoked_defer_binds_the_next_job_and_the_studies_on_the_list(pipeline: Pipeline, uri: str, tmp_path: Path) -> None:
    policy = policy_from_settings(pipeline.settings)
    set_steering(uri, "chest-xray", "1", SteeringRight.defer, evidence=EVIDENCE, rules=DeferRules())
    pipeline.receive(DX_CHEST)
    pipeline.complete_route_and_score()  # the worker loads v1 while it may defer
    with session_scope(pipeline.worker.session_factory) as session:
        recompute_worklist(session, policy, serving=_serving(pipeline))
        assert _places(session) == [("negative", 90.0, "defer")]

    # Quality review revokes defer (POST /api/quality/steering {right: raise-only}); the same worker goes on.
    set_steering(uri, "chest-xray", "1", SteeringRight.raise_only, evidence=None, rules=DeferRules())
    pipeline.receive(_new_study(tmp_path))
    pipeline.complete_route_and_score()
    with session_scope(pipeline.worker.session_factory) as session:
        recorded = [r.steering for r in session.scalars(select(ScoreResult).order_by(ScoreResult.id))]
        recompute_worklist(session, policy, serving=_serving(pipeline))
        places = _places(session)
    # The first result keeps the right it was stored with (the record); the list no longer applies it.
    assert recorded == ["defer", "raise-only"]
    assert places == [("unscored", 0.0, "raise-only"), ("unscored", 0.0, "raise-only")]


def test_a_version_lowered_to_shadow_raises_nothing_and_builds_no_sr(pipeline: Pipeline, uri: str, tmp_path: Path) -> None:
    from benchmarks.study_factory import wrap_radiograph

    policy = policy_from_settings(pipeline.settings)
    pipeline.receive(wrap_radiograph(PNEUMONIA, tmp_path / "first.dcm", view_position="PA"))
    pipeline.complete_route_and_score()  # v1 (raise-only) raises a positive and loads once
    with session_scope(pipeline.worker.session_factory) as session:
        recompute_worklist(session, policy, serving=_serving(pipeline))
        assert [place[0] for place in _places(session)] == ["positive"]

    set_steering(uri, "chest-xray", "1", SteeringRight.shadow, evidence=None, rules=DeferRules())
    pipeline.receive(wrap_radiograph(PNEUMONIA, tmp_path / "second.dcm", view_position="PA"))  # another study
    pipeline.complete_route_and_score()
    with session_scope(pipeline.worker.session_factory) as session:
        latest = session.scalars(select(ScoreResult).order_by(ScoreResult.id.desc())).first()
        assert latest is not None and latest.call == "positive"
        assert (latest.steering, latest.sr_sop_instance_uid, latest.heatmap_sop_instance_uid) == ("shadow", None, None)
        recompute_worklist(session, policy, serving=_serving(pipeline))
        assert [(place[0], place[1]) for place in _places(session)] == [("unscored", 0.0), ("unscored", 0.0)]


def test_an_unearned_defer_tag_is_served_as_raise_only(pipeline: Pipeline, uri: str, caplog: pytest.LogCaptureFixture) -> None:
    """`steering=defer` set by hand in MLflow, with no evidence: promotion would refuse it, and serving does too."""
    from mlflow.tracking import MlflowClient

    MlflowClient(uri, uri).set_model_version_tag("chest-xray", "1", "steering", "defer")
    with caplog.at_level(logging.WARNING, logger="inference.champions"):
        pipeline.receive(DX_CHEST)
        pipeline.complete_route_and_score()
    assert any("recorded as defer without the evidence" in r.message and r.levelno == logging.WARNING for r in caplog.records)
    with session_scope(pipeline.worker.session_factory) as session:
        result = session.scalars(select(ScoreResult)).one()
        assert (result.call, result.steering) == ("negative", "raise-only")  # v1's figures earn raise-only
        recompute_worklist(session, policy_from_settings(pipeline.settings), serving=_serving(pipeline))
        assert _places(session) == [("unscored", 0.0, "raise-only")]


def test_a_defer_granted_under_rules_the_site_has_since_raised_is_no_longer_served(
    pipeline: Pipeline, uri: str, tmp_path: Path
) -> None:
    set_steering(uri, "chest-xray", "1", SteeringRight.defer, evidence=EVIDENCE, rules=DeferRules())  # 400 studies
    pipeline.receive(DX_CHEST)
    pipeline.complete_route_and_score()
    with session_scope(pipeline.worker.session_factory) as session:
        recompute_worklist(session, policy_from_settings(pipeline.settings), serving=_serving(pipeline))
        assert _places(session) == [("negative", 90.0, "defer")]

    # The site now asks for 1,000 studies; the evidence recorded with v1 has 400.
    stricter = pipeline.settings.model_copy(update={"steering_defer_min_studies": 1000})
    worker = build_worker(stricter)
    pipeline.receive(_new_study(tmp_path))
    pipeline.monitor.run_once()
    worker.enqueue_routed()
    while worker.process_one():
        pass
    with session_scope(pipeline.worker.session_factory) as session:
        assert [r.steering for r in session.scalars(select(ScoreResult).order_by(ScoreResult.id))] == ["defer", "raise-only"]
        rights = serving_rights(uri, defer_rules_from_settings(stricter))
        recompute_worklist(session, policy_from_settings(stricter), serving=rights)
        assert _places(session) == [("unscored", 0.0, "raise-only"), ("unscored", 0.0, "raise-only")]


def test_a_rollback_lowers_an_unearned_defer_of_the_version_it_brings_back(
    pipeline: Pipeline, uri: str, caplog: pytest.LogCaptureFixture
) -> None:
    from mlflow.tracking import MlflowClient

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        v2 = log_onnx_bundle(uri, SHIPPED_MODELS_DIR / "chest-xray").version
    client = MlflowClient(uri, uri)
    try:
        move_champion(uri, "chest-xray", v2)  # v1 becomes previous-champion
        client.set_model_version_tag("chest-xray", "1", "steering", "defer")  # by hand, no evidence
        with caplog.at_level(logging.WARNING, logger="service.model_registry"):
            assert roll_back_champion(uri, "chest-xray", rules=defer_rules_from_settings(pipeline.settings)) == (v2, "1")
        assert any("rollback of chest-xray to v1" in r.message for r in caplog.records)
        assert steering_of(version_of(uri, "chest-xray", "1")) == SteeringRight.raise_only
    finally:
        client.set_registered_model_alias("chest-xray", "champion", "1")


def test_after_a_rollback_the_replaced_version_steers_nothing(pipeline: Pipeline, uri: str, tmp_path: Path) -> None:
    """v2 (defer, earned) is promoted, scores study 1 and has study 2 queued; `quality rollback` brings v1 back. The
    job queued for v2 is kept as a non-steering record, and both studies wait in arrival order until v1 scores them."""
    from mlflow.tracking import MlflowClient

    from quality.gate import rollback_champion

    policy = policy_from_settings(pipeline.settings)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        v2 = log_onnx_bundle(uri, SHIPPED_MODELS_DIR / "chest-xray").version
    set_steering(uri, "chest-xray", v2, SteeringRight.defer, evidence=EVIDENCE, rules=DeferRules())
    move_champion(uri, "chest-xray", v2)
    try:
        pipeline.receive(DX_CHEST)
        pipeline.complete_route_and_score()  # study 1: scored by v2 before the rollback
        with session_scope(pipeline.worker.session_factory) as session:
            recompute_worklist(session, policy, serving=_serving(pipeline))
            assert _places(session) == [("negative", 90.0, "defer")]
        pipeline.receive(_new_study(tmp_path))
        pipeline.monitor.run_once()
        pipeline.worker.enqueue_routed()  # study 2: queued for v2
        with session_scope(pipeline.worker.session_factory) as session:
            assert rollback_champion(session, uri, "chest-xray", actor="emma") == (v2, "1")
        while pipeline.worker.process_one():
            pass
        with session_scope(pipeline.worker.session_factory) as session:
            late = session.scalars(select(ScoreResult).order_by(ScoreResult.id.desc())).first()
            assert late is not None and late.study_id == 2 and late.model_version == v2
            assert (late.role, late.steering, late.sr_sop_instance_uid) == ("previous-champion", "shadow", None)
            recompute_worklist(session, policy, serving=_serving(pipeline))
            assert [place[:2] for place in _places(session)] == [("unscored", 0.0), ("unscored", 0.0)]
            statuses = [s.status for s in session.scalars(select(Study).order_by(Study.id))]
        assert statuses == ["routed", "routed"]  # both go to v1

        pipeline.complete_route_and_score()
        with session_scope(pipeline.worker.session_factory) as session:
            recompute_worklist(session, policy, serving=_serving(pipeline))
            entries = session.scalars(select(WorklistEntry).order_by(WorklistEntry.study_id)).all()
            assert [(e.model_version, e.call, e.steering, e.tier) for e in entries] == [("1", "negative", "raise-only", "unscored")] * 2
    finally:
        MlflowClient(uri, uri).set_registered_model_alias("chest-xray", "champion", "1")
