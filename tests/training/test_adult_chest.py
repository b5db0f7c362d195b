"""The adult chest feasibility study: real NIH thumbnails, patient folds, MLflow runs, and the right the rule gives."""

from __future__ import annotations

import json

from mlflow.tracking import MlflowClient

from service.steering import development_right
from tests.conftest import FIXTURES
from training.adult_chest import main, measure


def test_each_variant_is_cross_validated_logged_and_given_only_the_right_its_evidence_earns(tmp_path) -> None:
    data = tmp_path / "data"
    (data / "chest-xray").mkdir(parents=True)
    for name in ("kermany", "nih1000"):
        (data / "chest-xray" / name).symlink_to(FIXTURES / "datasets" / name)
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"

    results = measure(data, tracking_uri, size=64, epochs=1, pretrain_epochs=1, folds=2, cache_dir=tmp_path / "cache")

    assert [r.variant for r in results] == ["scratch", "kermany-init"]
    client = MlflowClient(tracking_uri, tracking_uri)
    for result in results:
        # Eight thumbnails: far below 30 of each class, so the run is shadow whatever its AUROC.
        assert result.metrics.n == 8 and result.metrics.n_positive == 4
        assert result.right == development_right(result.metrics.auroc_ci_low, 8, 4, validated_on="8 NIH adult thumbnails, 2-fold cross-validated by patient")
        assert result.right["right"] == "shadow"
        run = client.get_run(result.run_id)
        assert run.info.status == "FINISHED" and run.data.params["variant"] == result.variant
        assert run.data.metrics["val_auroc"] == result.metrics.auroc and run.data.tags["steering"] == "shadow"
        assert "fold0.train_loss" in run.data.metrics and "fold1.train_loss" in run.data.metrics
        assert 0.0 <= result.metrics.auroc_ci_low <= result.metrics.auroc <= result.metrics.auroc_ci_high <= 1.0
    assert client.get_run(results[1].run_id).data.params["pretrain_epochs"] == "1"


def test_the_command_prints_the_figures_as_json(tmp_path, monkeypatch, capsys) -> None:
    data = tmp_path / "data"
    (data / "chest-xray").mkdir(parents=True)
    (data / "chest-xray" / "nih1000").symlink_to(FIXTURES / "datasets" / "nih1000")
    monkeypatch.setenv("MEDSCREEN_HOME", str(tmp_path / "var"))
    monkeypatch.setenv("MEDSCREEN_MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")

    assert main(["--data", str(data), "--size", "64", "--epochs", "1", "--folds", "2", "--variant", "scratch", "--json"]) == 0

    report = json.loads(capsys.readouterr().out)
    assert report["floor"] == 0.80
    (variant,) = report["variants"]
    assert variant["variant"] == "scratch" and variant["n"] == 8 and variant["right"]["right"] == "shadow"
