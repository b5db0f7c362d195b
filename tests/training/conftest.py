"""Fixtures of the training tests: a temporary MLflow store and tiny real ONNX bundles."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from models.networks import HeatmapClassifier, ScoreAndHeatmap
from training.export import export_onnx


@pytest.fixture
def tracking_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"


def tiny_network(seed: int = 0) -> ScoreAndHeatmap:
    torch.manual_seed(seed)
    return ScoreAndHeatmap(HeatmapClassifier(1, 1, channels=(4, 8), strides=(2, 2))).eval()


@pytest.fixture
def make_bundle(tmp_path: Path) -> Callable[..., Path]:
    """A bundle folder (model.onnx, bundle.json, metrics.json, card.md) for ``task`` with a given validation AUROC."""

    def make(task: str = "chest-xray", val_auroc: float = 0.9, threshold: float = 0.5, name: str | None = None) -> Path:
        folder = tmp_path / (name or f"{task}-{val_auroc}")
        folder.mkdir(parents=True)
        export_onnx(tiny_network(), torch.zeros(1, 1, 32, 32), folder / "model.onnx", input_name="image", output_names=["score", "heatmap"])
        bundle = {
            "format_version": 1, "task": task, "model_name": task, "threshold": threshold,
            "input": {"name": "image", "shape": [-1, 1, 32, 32], "dtype": "float32"},
            "outputs": [{"name": "score", "shape": [-1, 1]}, {"name": "heatmap", "shape": [-1, 1, 8, 8]}],
            "preprocess": {"size": [32, 32], "window": None},
        }
        (folder / "bundle.json").write_text(json.dumps(bundle))
        (folder / "metrics.json").write_text(json.dumps({"task": task, "headline": {"val_auroc": val_auroc, "threshold": threshold}}))
        (folder / "card.md").write_text(f"# {task}\n")
        return folder

    return make


@pytest.fixture
def parity_inputs() -> np.ndarray:
    return np.random.default_rng(0).random((4, 1, 32, 32), dtype=np.float32)
