"""A tiny real training run: 2-fold cross-validation, one epoch, on a few real films, logged and registered."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
from mlflow.tracking import MlflowClient

from datasets.preprocess import PreprocessSpec, prepare_image, read_image_file
from medscreen.cli import main
from tests.conftest import FIXTURES


def test_tiny_chest_xray_run_logs_exports_and_registers(tmp_path, monkeypatch, capsys) -> None:
    data = tmp_path / "data"
    (data / "chest-xray").mkdir(parents=True)
    (data / "chest-xray" / "kermany").symlink_to(FIXTURES / "datasets" / "kermany")
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MEDSCREEN_HOME", str(tmp_path / "var"))
    monkeypatch.setenv("MEDSCREEN_MLFLOW_TRACKING_URI", tracking_uri)
    out = tmp_path / "bundle"

    assert main(["--create-home", "train", "chest-xray", "--data", str(data), "--epochs", "1", "--folds", "2", "--threads", "1", "--seed", "0",
                 "--limit", "3", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    # Review 7 (ML engineer), defect 2: on a registry with no chest-xray version this run had become champion v1 (a
    # 1-epoch run on a few films), and start-up, seeing a version, never registered the shipped bundle.
    assert "the shipped bundle is registered as version 1, champion" in said
    assert "registered chest-xray version 2" in said and "holds no alias and scores nothing" in said

    bundle = json.loads((out / "bundle.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"val_auroc", "val_auroc_ci_low", "val_auroc_ci_high", "sensitivity", "specificity", "brier", "apparent_auroc"} <= set(metrics["headline"])
    assert metrics["cross_validation"]["k"] == 2 and len(metrics["cross_validation"]["fold_cpu_seconds"]) == 2
    card = (out / "card.md").read_text()
    assert "MLflow run id" in card
    # Review 7 (ML engineer), defect 4: a --limit run's card had described the whole set ("5,216 JPEGs", "over all 6
    # development films") and given a reproduce line without --limit, which trains another model.
    assert "**This version was trained on a subset** (`--limit 3`" in card and "over the 6 development films" in card
    assert "--seed 0 --limit 3 --out models/chest-xray" in card
    assert metrics["params"]["limit"] == 3
    client = MlflowClient(tracking_uri, tracking_uri)
    run = client.get_run(metrics["mlflow_run_id"])
    assert run.data.params["data"] == str(data.resolve())  # which copy of the data trained it: it had not been recorded
    assert run.data.params["epochs"] == "1" and "val_auroc" in run.data.metrics and "fold0.train_loss" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)} | {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {"card.md", "metrics.json", "plots/roc_cross_validated.png", "plots/calibration_cross_validated.png",
            "plots/heatmaps_lung_fields.png"} <= artifacts
    champion = client.get_model_version_by_alias("chest-xray", "champion")
    assert str(champion.version) == "1" and champion.tags["source"] == "shipped"
    version = client.get_model_version("chest-xray", "2")
    assert version.run_id == metrics["mlflow_run_id"] and version.tags["task"] == "chest-xray" and not version.aliases
    assert float(version.tags["threshold"]) == bundle["threshold"]
    # A one-epoch run on a few films is near chance: it is recorded as shadow, so it cannot move studies.
    assert metrics["headline"]["val_auroc_ci_low"] < 0.80
    assert bundle["steering"]["right"] == "shadow" and version.tags["steering"] == "shadow"
    assert "**`shadow`**" in (out / "card.md").read_text()

    # The shipped contract: the serving side feeds datasets.preprocess output to the ONNX input by name.
    spec = PreprocessSpec.from_dict(bundle["preprocess"])
    image = prepare_image(read_image_file(FIXTURES / "datasets/kermany/train/NORMAL/IM-0115-0001.jpeg"), spec)
    session = ort.InferenceSession(str(out / "model.onnx"))
    score, heatmap, fold_scores = session.run([o["name"] for o in bundle["outputs"]], {bundle["input"]["name"]: image})
    assert score.shape == (1, 1) and 0.0 <= float(score[0, 0]) <= 1.0
    assert fold_scores.shape == (1, 1, 2)
    assert heatmap.shape == tuple([1, *bundle["outputs"][1]["shape"][1:]])
    assert np.isfinite(heatmap).all()


def test_training_is_deterministic_with_a_seed(tmp_path) -> None:
    import torch

    from models.networks import build_network
    from training.augment import build_augmentation
    from training.engine import ArraySet, fit, predict, seed_everything

    rng = np.random.default_rng(0)
    x = rng.random((24, 3, 32, 32), dtype=np.float32)
    y = (x.mean(axis=(1, 2, 3)) > 0.5).astype(np.float32)

    def run() -> np.ndarray:
        seed_everything(7)
        model = build_network("ct-chest")
        fit(model, [ArraySet(x, y, batch_size=8)], epochs=1, lr=1e-3, seed=7, transform=build_augmentation("ct-chest", 7),
            validate=lambda m: {"val_auroc": 0.5})
        return predict(model, x)

    torch.set_num_threads(1)
    assert np.array_equal(run(), run())
