"""The model registry and model versions under failure, met by a real worker on real images: a registry that
cannot be read, a version gone from it, a version whose ONNX file or metadata is bad. A study is never marked
scored without a valid score, and the reason is in the job and the timeline."""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

import inference.score_job
from inference.champions import ChampionWatch, ModelSelector
from inference.errors import ModelUnavailable
from inference.shipped_models import SHIPPED_MODELS_DIR
from inference.tables import ScoreResult, ScoringJob, Study, StudyEvent
from medscreen.cli import main
from service.model_registry import ensure_experiment, registry_client
from service.settings import Settings
from tests.inference.conftest import INFERENCE_FIXTURES, Pipeline

DX_CHEST = INFERENCE_FIXTURES / "images" / "dx_chest_highdicom.dcm"


def _registry_path(pipeline: Pipeline) -> Path:
    return Path(pipeline.settings.resolved_mlflow_tracking_uri.split("sqlite:///", 1)[1])


def _another_version(client: Any) -> str:
    """A new version of chest-xray with version 1's model and tags (no new artifacts: quick)."""
    first = client.get_model_version("chest-xray", "1")
    version = str(client.create_model_version("chest-xray", first.source, run_id=first.run_id, tags=first.tags).version)
    return version


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


def _bundle_copy(tmp_path: Path, task: str = "chest-xray") -> Path:
    folder = tmp_path / "models" / task
    shutil.copytree(SHIPPED_MODELS_DIR / task, folder)
    return folder


@pytest.mark.parametrize(
    ("spoil", "reason"),
    [
        # A copy cut short: protobuf's "Wire format was corrupt" traceback.
        (lambda f: (f / "model.onnx").write_bytes((f / "model.onnx").read_bytes()[:100_000]), "cannot be opened by ONNX Runtime"),
        # Another task's network beside this bundle.json: registered, then every study failed in ONNX Runtime.
        (lambda f: shutil.copyfile(SHIPPED_MODELS_DIR / "mammography" / "model.onnx", f / "model.onnx"),
         "has shape ['batch', 1, 512, 512]; bundle.json declares [-1, 1, 224, 224]"),
        (lambda f: (f / "bundle.json").write_text('{"task": "chest-xray",'), "JSONDecodeError"),
        (lambda f: (f / "bundle.json").write_text(
            json.dumps(json.loads((f / "bundle.json").read_text()) | {"threshold": 67})), "the operating point 67 is not"),
        # Review 7 (ML engineer), defect 3: a heat-map declared 8x8 where the graph gives 14x14 (a retrained chest
        # version's bundle) became the registered version's MLflow signature and its card's description.
        (lambda f: (f / "bundle.json").write_text(json.dumps(
            (b := json.loads((f / "bundle.json").read_text())) | {"outputs": [
                {**o, "shape": [-1, 1, 8, 8]} if o["name"] == "heatmap" else o for o in b["outputs"]]})),
         "model.onnx output 'heatmap' has shape ['batch', 1, 14, 14]; bundle.json declares [-1, 1, 8, 8]"),
    ],
    ids=["truncated-onnx", "wrong-input-shape", "malformed-bundle-json", "threshold-as-percent", "wrong-output-shape"],
)
def test_register_shipped_refuses_a_bad_bundle_in_one_line(
    registry: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    spoil: Callable[[Path], object], reason: str,
) -> None:
    spoil(_bundle_copy(tmp_path))
    monkeypatch.setenv("MEDSCREEN_MLFLOW_TRACKING_URI", registry)
    monkeypatch.setenv("MEDSCREEN_HOME", str(tmp_path))
    before = len(registry_client(registry).search_model_versions("name = 'chest-xray'"))
    assert main(["models", "register-shipped", "--update", "--models-dir", str(tmp_path / "models")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("medscreen models register-shipped: refused: model bundle ") and reason in err[-1]
    assert "Traceback" not in "\n".join(err)
    assert len(registry_client(registry).search_model_versions("name = 'chest-xray'")) == before


def test_an_operating_point_outside_0_1_is_not_served(pipeline: Pipeline) -> None:
    """A threshold tag typed into MLflow as a percentage (67) had been served: every study called negative under a
    raise-only champion. The version is now unavailable with the reason, on /healthz and in the job."""
    uri = pipeline.settings.resolved_mlflow_tracking_uri
    client = registry_client(uri)
    threshold = client.get_model_version("chest-xray", "1").tags["threshold"]
    client.set_model_version_tag("chest-xray", "1", "threshold", "67")
    try:
        problems = ChampionWatch(pipeline.worker.selector).check_once()
        assert "the operating point '67' is not a probability in [0, 1]" in problems["chest-xray"]
        pipeline.receive(DX_CHEST)
        pipeline.monitor.run_once()
        pipeline.worker.enqueue_routed()
        assert pipeline.worker.process_one() is True
        with pipeline.session() as session:
            job = session.scalars(select(ScoringJob)).one()
            assert job.state == "retry" and "the operating point '67'" in (job.last_error or "")
            assert session.scalars(select(ScoreResult)).all() == []
    finally:
        client.set_model_version_tag("chest-xray", "1", "threshold", threshold)
    pipeline.worker.selector.refresh(force=True)
    while pipeline.worker.process_one():
        pass
    with pipeline.session() as session:
        result = session.scalars(select(ScoreResult)).one()
    assert (result.outcome, result.threshold) == ("scored", float(threshold))


def test_a_version_registered_without_its_bundle_is_named_not_run(pipeline: Pipeline, tmp_path: Path) -> None:
    """A version logged with MLflow's own client (no bundle metadata): each job had failed with "KeyError:
    'preprocess'" and /healthz said nothing."""
    import mlflow
    import onnx

    uri = pipeline.settings.resolved_mlflow_tracking_uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    with mlflow.start_run(experiment_id=ensure_experiment(uri, "handmade")):  # artifacts beside the store
        info = mlflow.onnx.log_model(onnx.load(str(SHIPPED_MODELS_DIR / "chest-xray" / "model.onnx")), name="model")
    version = registry_client(uri).create_model_version("chest-xray", info.model_uri, run_id=info.run_id).version
    selector = ModelSelector(uri, tmp_path / "cache", intra_op_threads=1, refresh_s=0)
    with pytest.raises(ModelUnavailable, match="carries no bundle.json"):
        selector.load("chest-xray", str(version))



def test_a_queued_version_deleted_from_the_registry_hands_the_study_to_the_champion(pipeline: Pipeline) -> None:
    """Version 2 was champion when the study was queued, then deleted (and version 1 made champion again): the job,
    bound to version 2, retried until dead-lettered and the study was `failed`, though a champion could score it; a
    replay ran version 2 again."""
    uri = pipeline.settings.resolved_mlflow_tracking_uri
    client = registry_client(uri)
    doomed = _another_version(client)
    client.set_registered_model_alias("chest-xray", "champion", doomed)
    try:
        pipeline.receive(DX_CHEST)
        pipeline.monitor.run_once()
        pipeline.worker.enqueue_routed()
    finally:
        client.delete_model_version("chest-xray", doomed)
        client.set_registered_model_alias("chest-xray", "champion", "1")
    _score_all(pipeline)  # version 2's job is retired and the study re-routed
    _score_all(pipeline)  # the worker's next pass queues it for version 1
    with pipeline.session() as session:
        study = session.scalars(select(Study)).one()
        jobs = {j.model_version: j for j in session.scalars(select(ScoringJob))}
        results = session.scalars(select(ScoreResult)).all()
        kinds = [e.kind for e in session.scalars(select(StudyEvent).order_by(StudyEvent.id))]
    assert study.status == "scored"
    assert [(r.role, r.model_version) for r in results] == [("champion", "1")]
    assert jobs[doomed].state == "dead" and jobs[doomed].attempts == 1
    assert f"version {doomed}" in (jobs[doomed].last_error or "") and "now version 1" in (jobs[doomed].last_error or "")
    assert kinds.count("queued") == 2 and "rescore-requested" in kinds


@pytest.mark.parametrize(
    "argv",
    [["models", "list"], ["models", "promote", "chest-xray", "1", "--alias", "challenger"], ["models", "register-shipped"],
     ["score", str(DX_CHEST)]],
    ids=["list", "promote", "register-shipped", "score"],
)
def test_the_models_commands_say_in_one_line_that_the_registry_cannot_be_read(
    registered_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    argv: list[str],
) -> None:
    """A store MLflow cannot read (here: its registered_models table out of reach, as in a store a failed upgrade
    left half-migrated) had been an MLflow or SQLAlchemy traceback."""
    shutil.copyfile(registered_store, tmp_path / "mlflow.db")
    with sqlite3.connect(tmp_path / "mlflow.db") as store:
        store.execute("ALTER TABLE registered_models RENAME TO registered_models_out_of_reach")
    monkeypatch.setenv("MEDSCREEN_MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("MEDSCREEN_HOME", str(tmp_path))
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    command = " ".join(argv[:2]) if argv[0] == "models" else argv[0]
    assert err[-1].startswith(f"medscreen {command}: the model registry cannot be used: ")
    assert "Traceback" not in "\n".join(err)


def test_an_api_route_that_reads_the_registry_answers_503_while_it_cannot_be_read(
    registered_store: Path, settings: Settings, tmp_path: Path
) -> None:
    """Quality review's routes ask the registry whether a version is registered: an unreadable store had answered
    404 "chest-xray version 7 is not registered" (read as absent), and, once such errors were raised, a bare 500."""
    from fastapi.testclient import TestClient

    from medscreen.app import create_app
    from service.db import session_scope
    from service.users import create_user
    from tests.service.conftest import login

    shutil.copyfile(registered_store, tmp_path / "mlflow.db")
    with sqlite3.connect(tmp_path / "mlflow.db") as store:
        store.execute("ALTER TABLE model_versions RENAME TO model_versions_out_of_reach")
    settings = settings.model_copy(update={"mlflow_tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"})
    app = create_app(settings)
    with TestClient(app) as client:
        with session_scope(app.state.session_factory) as session:
            create_user(session, "mle", "mle-password-long", ["ml-engineer"], actor="test")
        headers = login(client, "mle", "mle-password-long")
        answer = client.get("/api/quality/metrics", params={"task": "chest-xray", "version": "7"}, headers=headers)
    assert answer.status_code == 503, answer.text
    assert answer.json()["detail"].startswith("the model registry cannot be read: ")
    assert answer.headers["Retry-After"] == "60"


def test_a_new_empty_registry_beside_a_site_with_results_is_not_filled_with_the_shipped_models(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    """The site's MLflow store is not where MEDSCREEN_MLFLOW_TRACKING_URI points any more (a changed URI, a volume not
    mounted): MLflow creates an empty store there, and start-up registered the shipped bundles into it as version 1
    champions, unannounced, though the site's champion was another network, and its results were then filed
    beside the old store's versions of the same numbers."""
    from inference.errors import RegistryLost
    from medscreen.serve import _register_shipped_models

    pipeline.receive(DX_CHEST)
    pipeline.complete_route_and_score()
    moved = pipeline.settings.model_copy(update={"mlflow_tracking_uri": f"sqlite:///{tmp_path / 'elsewhere' / 'mlflow.db'}"})
    with pytest.raises(RegistryLost, match="holds no chest-xray model, but this site's database holds results of chest-xray v1"):
        _register_shipped_models(moved)
    assert registry_client(moved.resolved_mlflow_tracking_uri).search_model_versions() == []  # none of the three



def test_a_training_run_into_a_new_empty_registry_beside_a_site_with_results_registers_nothing(
    pipeline: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """As start-up: `medscreen train` on a registry that is not the site's (a changed tracking URI, a volume not
    mounted) had registered the shipped bundle as version 1 champion and its own version into it. It stops, before
    any training, in one line."""
    from tests.conftest import FIXTURES

    pipeline.receive(DX_CHEST)
    pipeline.complete_route_and_score()
    elsewhere = f"sqlite:///{tmp_path / 'elsewhere' / 'mlflow.db'}"
    monkeypatch.setenv("MEDSCREEN_HOME", str(pipeline.settings.home))
    monkeypatch.setenv("MEDSCREEN_DATABASE_URL", pipeline.settings.resolved_database_url)
    monkeypatch.setenv("MEDSCREEN_MLFLOW_TRACKING_URI", elsewhere)
    data = tmp_path / "data"
    (data / "chest-xray").mkdir(parents=True)
    (data / "chest-xray" / "kermany").symlink_to(FIXTURES / "datasets" / "kermany")
    code = main(["train", "chest-xray", "--data", str(data), "--epochs", "1", "--folds", "2", "--threads", "1",
                 "--limit", "3", "--out", str(tmp_path / "bundle")])
    said = capsys.readouterr()
    assert code == 1, said
    assert "nothing was trained or registered" in said.err
    assert "holds no chest-xray model, but this site's database holds results of chest-xray v1" in said.err
    assert not (tmp_path / "bundle").exists()
    assert registry_client(elsewhere).search_model_versions() == []
