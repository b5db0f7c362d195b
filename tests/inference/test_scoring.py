"""The scoring worker on real images with real MLflow-registered ONNX models: results, bad input, dead letter, hot swap."""

from __future__ import annotations

import errno
import warnings
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydicom import dcmread
from pydicom.uid import generate_uid
from sqlalchemy import select

import inference.outgoing
import inference.worker
from inference.assemble import ct_series, frontal_radiographs, mammography_views, read_study
from inference.errors import CouldNotScore
from inference.jobs import request_rescore
from inference.shipped_models import SHIPPED_MODELS_DIR, log_onnx_bundle
from inference.tables import ScoreResult, ScoringJob, Study, StudyEvent
from inference.worker_process import build_worker
from medscreen.app import create_app
from service.db import session_scope, utcnow
from service.users import create_user
from tests.inference.conftest import INFERENCE_FIXTURES, Pipeline
from tests.service.conftest import login

CT = sorted((INFERENCE_FIXTURES / "ct").glob("*.dcm"))
DX_CHEST = INFERENCE_FIXTURES / "images" / "dx_chest_highdicom.dcm"


def _derived(source: Path, tmp_path: Path, **attributes: object) -> Path:
    """A copy of a real file as a new study, with some attributes changed."""
    ds = dcmread(source)
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
    for keyword, value in attributes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    path = tmp_path / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path)
    return path


def test_chest_radiograph_is_scored_by_the_champion_with_its_version_and_timings(pipeline: Pipeline) -> None:
    pipeline.receive(DX_CHEST)
    pipeline.complete_route_and_score()
    with pipeline.session() as session:
        study = session.scalars(select(Study)).one()
        result = session.scalars(select(ScoreResult)).one()
    assert (study.status, study.task) == ("scored", "chest-xray")
    assert (result.outcome, result.role, result.model_name, result.model_version) == ("scored", "champion", "chest-xray", "1")
    assert result.mlflow_run_id and 0.0 <= result.score <= 1.0
    assert result.call == ("positive" if result.score >= result.threshold else "negative")
    assert result.localisation["kind"] == "heatmap" and len(result.localisation["point"]) == 2
    assert result.timings["inference_s"] > 0 and result.timings["complete_to_job_start_s"] is not None
    # The job key is (revision, model version): a re-score request for the same version queues nothing.
    with session_scope(pipeline.worker.session_factory) as session:
        study = session.scalars(select(Study)).one()
        request_rescore(session, study, "test", utcnow())
        assert study.status == "routed"
    assert pipeline.worker.enqueue_routed() == 0
    with pipeline.session() as session:
        study = session.scalars(select(Study)).one()
        assert study.status == "scored" and study.events[-1].kind == "rescore-skipped"
        assert len(session.scalars(select(ScoringJob)).all()) == 1


def test_lateral_only_radiograph_is_not_scored_with_the_reason(pipeline: Pipeline, tmp_path: Path) -> None:
    pipeline.receive(_derived(DX_CHEST, tmp_path, ViewPosition="LL"))
    pipeline.complete_route_and_score()
    with pipeline.session() as session:
        study = session.scalars(select(Study)).one()
        result = session.scalars(select(ScoreResult)).one()
    # Outside the chest model's validated views (its bundle's intended use), before the assembler looks.
    assert (study.status, result.outcome, result.score, result.call) == ("out_of_scope", "out_of_scope", None, None)
    assert "no PA/AP view" in result.reason and study.status_reason == result.reason


def test_the_ct_series_scored_does_not_depend_on_the_order_instances_arrived_in() -> None:
    """Two reconstructions with as many slices (lung and soft-tissue kernel, two contrast phases): the first series
    to arrive had been scored. Now the thinnest, then the lowest series number, whatever the order."""

    def series(number: int, thickness: float | None) -> list:
        uid = generate_uid()
        slices = read_study(CT)
        for ds in slices:
            ds.SeriesInstanceUID, ds.SeriesNumber, ds.SOPInstanceUID = uid, number, generate_uid()
            if thickness is None:
                del ds.SliceThickness
            else:
                ds.SliceThickness = thickness
        return slices

    for chosen, other in ((series(5, 1.0), series(3, 2.5)), (series(3, 1.25), series(4, 1.25)), (series(7, 1.0), series(2, None))):
        for order in (chosen + other, other + chosen, other[:1] + chosen + other[1:]):
            volume = ct_series(order, min_slices=3)
            assert set(volume.sop_instance_uids) == {str(ds.SOPInstanceUID) for ds in chosen}
    # the same for two PA films of one study (a repeated exposure): in instance-number order
    films = [dcmread(DX_CHEST), dcmread(DX_CHEST)]
    for number, ds in zip((2, 1), films, strict=True):
        ds.SOPInstanceUID, ds.InstanceNumber, ds.ViewPosition = generate_uid(), number, "PA"
    assert frontal_radiographs(films) == [films[1], films[0]] and frontal_radiographs(films[::-1]) == [films[1], films[0]]


def test_bad_inputs_are_refused_by_assembly(tmp_path: Path) -> None:
    with pytest.raises(CouldNotScore, match="3 slices; at least 10"):
        ct_series(read_study(CT), min_slices=10)
    slices = read_study(CT)
    slices[1].ImagePositionPatient = [slices[1].ImagePositionPatient[0], slices[1].ImagePositionPatient[1],
                                      float(slices[1].ImagePositionPatient[2]) + 0.9 * abs(
                                          float(slices[2].ImagePositionPatient[2]) - float(slices[1].ImagePositionPatient[2]))]
    with pytest.raises(CouldNotScore, match="inconsistent slice spacing|duplicate slice positions"):
        ct_series(slices, min_slices=3)
    volume = ct_series(read_study(CT), min_slices=3)
    assert volume.hu.shape[0] == 3 and np.all(np.diff(volume.z_positions) != 0)
    mg = read_study([_derived(INFERENCE_FIXTURES / "images" / "mg_ge_senographe.dcm", tmp_path, ImageLaterality=None)])
    for ds in mg:
        if "Laterality" in ds:
            del ds.Laterality
    with pytest.raises(CouldNotScore, match="has no laterality"):
        mammography_views(mg)
    views = mammography_views(read_study([INFERENCE_FIXTURES / "images" / "mg_ge_senographe.dcm"]))
    assert views[0].laterality in ("L", "R")
    with pytest.raises(CouldNotScore, match="no CR/DX image"):
        frontal_radiographs(read_study(CT))


def test_unavailable_model_retries_then_dead_letters_and_is_replayed(pipeline: Pipeline, tmp_path: Path) -> None:
    """The champion cannot be loaded (here: its operating point tag is not a probability). A version that is no
    longer champion is not retried (tests/inference/test_registry_failures.py)."""
    from mlflow.tracking import MlflowClient

    settings = pipeline.settings.model_copy(update={"scoring_max_attempts": 2})
    worker = build_worker(settings)
    uri = pipeline.settings.resolved_mlflow_tracking_uri
    client = MlflowClient(uri, uri)
    first = client.get_model_version("chest-xray", "1")  # version 1's model, with a threshold that is not a probability
    broken = str(client.create_model_version(
        "chest-xray", first.source, run_id=first.run_id, tags=first.tags | {"threshold": "67"}).version)
    client.set_registered_model_alias("chest-xray", "champion", broken)
    try:
        pipeline.receive(DX_CHEST)
        pipeline.monitor.run_once()
        worker.enqueue_routed()
        assert worker.process_one() and worker.process_one() and not worker.process_one()
    finally:
        client.set_registered_model_alias("chest-xray", "champion", "1")
    with worker.session_factory() as session:
        job = session.scalars(select(ScoringJob)).one()
        study = session.scalars(select(Study)).one()
    assert (job.state, job.attempts, study.status) == ("dead", 2, "failed")
    assert f"cannot load chest-xray version {broken}" in job.last_error

    app = create_app(settings)
    with TestClient(app) as client:
        with session_scope(app.state.session_factory) as session:
            create_user(session, "mle", "mle-password-long", ["ml-engineer"], actor="test")
        headers = login(client, "mle", "mle-password-long")
        dead = client.get("/api/jobs", params={"state": "dead"}, headers=headers).json()
        assert dead["total"] == 1 and f"version {broken}" in dead["items"][0]["last_error"]
        replayed = client.post(f"/api/jobs/{job.id}/replay", headers=headers)
        assert replayed.status_code == 200 and replayed.json()["state"] == "queued"
        assert client.post(f"/api/jobs/{job.id}/replay", headers=headers).status_code == 409
        detail = client.get(f"/api/studies/{study.study_instance_uid}", headers=headers).json()
        assert [e["kind"] for e in detail["timeline"]][-3:] == ["retry", "dead-letter", "replayed"]


def test_a_full_disk_while_the_documents_are_written_waits_without_using_an_attempt(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review 4 (infra D3): ENOSPC on the SR counted as an attempt, so a full disk dead-lettered the study for good,
    and each attempt left its partial documents in spool/outgoing."""
    worker = build_worker(pipeline.settings.model_copy(update={"scoring_max_attempts": 1}))
    pipeline.receive(DX_CHEST)
    pipeline.monitor.run_once()
    worker.enqueue_routed()
    stored = inference.outgoing.fsync_file

    def disk_full(path: Path) -> None:  # the SR is written, its flush finds no space
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(inference.outgoing, "fsync_file", disk_full)
    monkeypatch.setattr(inference.worker, "DISK_FULL_WAIT_S", 0.0)
    for _ in range(3):
        assert worker.process_one() is True
    monkeypatch.setattr(inference.worker, "DISK_FULL_WAIT_S", 30.0)
    assert worker.process_one() is True
    assert worker.process_one() is False  # neither the job nor the worker is ready again for 30 s
    outgoing = pipeline.settings.spool_dir / "outgoing"
    with worker.session_factory() as session:
        job = session.scalars(select(ScoringJob)).one()
        study = session.scalars(select(Study)).one()
        kinds = [e.kind for e in session.scalars(select(StudyEvent).order_by(StudyEvent.id))]
        assert (job.state, job.attempts, study.status) == ("retry", 0, "scoring")
        assert "No space left on device" in (job.last_error or "")
        assert kinds.count("retry") == 1  # once in the timeline, not on every wait
    assert not list(outgoing.rglob("*.dcm"))  # the partial documents were removed

    monkeypatch.setattr(inference.outgoing, "fsync_file", stored)  # space returns; 31 s later a worker retries
    monkeypatch.setattr(inference.worker, "utcnow", lambda: utcnow() + timedelta(seconds=31))
    assert build_worker(pipeline.settings).process_one()
    with worker.session_factory() as session:
        job = session.scalars(select(ScoringJob)).one()
        result = session.scalars(select(ScoreResult)).one()
        assert (job.state, job.attempts, session.scalars(select(Study)).one().status) == ("done", 1, "scored")
    named = {result.sr_sop_instance_uid, result.heatmap_sop_instance_uid}
    assert {p.stem for p in outgoing.rglob("*.dcm")} == named


def test_a_promoted_champion_is_picked_up_without_restart(pipeline: Pipeline, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    pipeline.receive(DX_CHEST)
    pipeline.complete_route_and_score()
    uri = pipeline.settings.resolved_mlflow_tracking_uri
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        new = log_onnx_bundle(uri, SHIPPED_MODELS_DIR / "chest-xray")
    client = MlflowClient(uri, uri)
    try:
        client.set_registered_model_alias("chest-xray", "champion", new.version)
        pipeline.receive(_derived(DX_CHEST, tmp_path))
        pipeline.complete_route_and_score()
        with session_scope(pipeline.worker.session_factory) as session:
            first = session.scalars(select(Study).order_by(Study.id)).first()
            assert first is not None
            request_rescore(session, first, "test", utcnow())
        assert pipeline.worker.enqueue_routed() == 1
        while pipeline.worker.process_one():
            pass
        with pipeline.session() as session:
            versions = [(r.study_id, r.model_version) for r in session.scalars(select(ScoreResult).order_by(ScoreResult.id))]
    finally:
        client.set_registered_model_alias("chest-xray", "champion", "1")
    assert versions == [(1, "1"), (2, new.version), (1, new.version)]


def test_a_challenger_is_scored_in_shadow_and_never_drives_the_study(pipeline: Pipeline) -> None:
    from mlflow.tracking import MlflowClient

    uri = pipeline.settings.resolved_mlflow_tracking_uri
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        challenger = log_onnx_bundle(uri, SHIPPED_MODELS_DIR / "chest-xray")
    client = MlflowClient(uri, uri)
    client.set_registered_model_alias("chest-xray", "challenger", challenger.version)
    try:
        pipeline.receive(DX_CHEST)
        pipeline.complete_route_and_score()
    finally:
        client.delete_registered_model_alias("chest-xray", "challenger")
    with pipeline.session() as session:
        results = {r.role: r for r in session.scalars(select(ScoreResult))}
        study = session.scalars(select(Study)).one()
    assert set(results) == {"champion", "challenger"}
    assert results["champion"].model_version == "1" and results["challenger"].model_version == challenger.version
    assert results["challenger"].writeback_state == "disabled"
    assert study.status == "scored"


def test_without_write_back_the_heat_map_is_kept_for_the_study_view(pipeline: Pipeline) -> None:
    from inference.heatmap import heatmap_png

    pipeline.receive(DX_CHEST)
    pipeline.complete_route_and_score()
    with pipeline.session() as session:
        result = session.scalars(select(ScoreResult)).one()
        assert result.writeback_state == "disabled" and result.heatmap_sop_instance_uid
        png = heatmap_png(session, pipeline.settings, result.id)
    assert png is not None and png[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_shadow_champion_is_recorded_but_never_built_into_a_finding(pipeline: Pipeline, tmp_path: Path) -> None:
    """A `shadow` version's result is kept (quality review reads it) but no SR or heat-map is made for the PACS,
    unless the site asks for it (MEDSCREEN_WRITEBACK_SHADOW)."""
    from service.lifecycle import SteeringRight
    from service.model_registry import set_steering
    from service.steering import DeferRules

    set_steering(pipeline.settings.resolved_mlflow_tracking_uri, "chest-xray", "1", SteeringRight.shadow, evidence=None,
                 rules=DeferRules())
    pipeline.receive(DX_CHEST)
    pipeline.complete_route_and_score()
    with pipeline.session() as session:
        result = session.scalars(select(ScoreResult)).one()
    assert (result.outcome, result.steering, result.writeback_state) == ("scored", "shadow", "disabled")
    assert result.score is not None and result.sr_sop_instance_uid is None and result.heatmap_sop_instance_uid is None

    opted_in = build_worker(pipeline.settings.model_copy(update={"writeback_shadow": True}))
    pipeline.receive(_derived(DX_CHEST, tmp_path))
    pipeline.monitor.run_once()
    opted_in.enqueue_routed()
    while opted_in.process_one():
        pass
    with pipeline.session() as session:
        second = session.scalars(select(ScoreResult).where(ScoreResult.id != result.id)).one()
    assert second.steering == "shadow" and second.sr_sop_instance_uid and second.heatmap_sop_instance_uid
