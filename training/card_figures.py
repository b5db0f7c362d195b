"""A card's figures computed from the shipped ONNX file on the development data, and nothing else.

Training writes ``metrics.json`` through :func:`figures_from_file` after exporting, and the card
reproduction test calls the same function on the committed file, so a card can only state what the
shipped model does. Cross-validated figures come from the ``fold_scores`` output of the shipped
ensemble: an item's out-of-fold score is the fold network that did not train on its patient, with
the folds recomputed from patient ids and the seed (``datasets.splits.patient_folds``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from datasets.splits import patient_folds
from training.metrics import BinaryMetrics, evaluate_binary

__all__ = ["DevelopmentSet", "CardFigures", "headline_of", "run_ensemble", "figures_from_scores", "figures_from_file"]


@dataclass
class DevelopmentSet:
    """Model inputs of the whole development data with labels, patients and separately reported batches."""

    x: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    # name -> (title, boolean mask): a second source or acquisition batch, reported on its own
    subsets: dict[str, tuple[str, np.ndarray]] = field(default_factory=dict)


@dataclass
class CardFigures:
    folds: np.ndarray
    oof_scores: np.ndarray
    ensemble_scores: np.ndarray
    cross_validated: BinaryMetrics
    apparent: BinaryMetrics
    subsets: dict[str, tuple[str, BinaryMetrics]]


def headline_of(figures: CardFigures) -> dict[str, float]:
    """``metrics.json`` ``headline``: cross-validated figures (what promotion compares) and the apparent ones."""
    cv, apparent = figures.cross_validated, figures.apparent
    return {
        "val_auroc": cv.auroc,
        "val_auroc_ci_low": cv.auroc_ci_low,
        "val_auroc_ci_high": cv.auroc_ci_high,
        "sensitivity": cv.sensitivity,
        "specificity": cv.specificity,
        "threshold": cv.threshold,
        "brier": cv.brier,
        "ece": cv.ece,
        "n_val": cv.n,
        "n_val_positive": cv.n_positive,
        "apparent_auroc": apparent.auroc,
        "apparent_sensitivity": apparent.sensitivity,
        "apparent_specificity": apparent.specificity,
    }


def run_ensemble(onnx_path: Path, x: np.ndarray, *, input_name: str, score_index: int = 0, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(ensemble score [N], fold scores [N, k]) of the ``score_index`` output channel, on ONNX Runtime."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    scores, folds = [], []
    for start in range(0, len(x), batch_size):
        batch = np.ascontiguousarray(x[start : start + batch_size], dtype=np.float32)
        score, _, fold_scores = session.run(["score", "heatmap", "fold_scores"], {input_name: batch})
        scores.append(score[:, score_index])
        folds.append(fold_scores[:, score_index, :])
    return np.concatenate(scores).astype(np.float64), np.concatenate(folds).astype(np.float64)


def figures_from_scores(
    dev: DevelopmentSet, ensemble: np.ndarray, fold_scores: np.ndarray, *, k: int, seed: int, min_sensitivity: float
) -> CardFigures:
    folds = patient_folds(list(dev.groups), list(dev.labels), k, seed)
    if fold_scores.shape[1] != k:
        raise ValueError(f"the model has {fold_scores.shape[1]} fold outputs, the card says {k} folds")
    oof = fold_scores[np.arange(len(folds)), folds]
    cv = evaluate_binary(dev.labels, oof, min_sensitivity=min_sensitivity, seed=seed, groups=dev.groups)
    apparent = evaluate_binary(dev.labels, ensemble, threshold=cv.threshold, seed=seed, groups=dev.groups)
    subsets = {
        name: (title, evaluate_binary(dev.labels[mask], oof[mask], threshold=cv.threshold, seed=seed, groups=dev.groups[mask]))
        for name, (title, mask) in dev.subsets.items()
    }
    return CardFigures(folds, oof, ensemble, cv, apparent, subsets)


def figures_from_file(model_dir: Path, dev: DevelopmentSet) -> CardFigures:
    """The figures of ``model_dir/model.onnx`` on ``dev``, with the fold plan from ``metrics.json``."""
    model_dir = Path(model_dir)
    bundle = json.loads((model_dir / "bundle.json").read_text())
    plan: dict[str, Any] = json.loads((model_dir / "metrics.json").read_text())["cross_validation"]
    ensemble, fold_scores = run_ensemble(model_dir / "model.onnx", dev.x, input_name=bundle["input"]["name"], score_index=int(bundle.get("score_index", 0)), batch_size=int(plan.get("batch_size", 64)))
    return figures_from_scores(dev, ensemble, fold_scores, k=int(plan["k"]), seed=int(plan["seed"]), min_sensitivity=float(plan["min_sensitivity"]))
