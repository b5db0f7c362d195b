"""Patient-level k-fold cross-validation: one network per fold, out-of-fold logits, Platt calibration.

The out-of-fold predictions are the figures a new site can expect: every item is scored by the
network that never saw its patient, and the operating point is chosen on them, never on data that
chose a network's weights. The fold networks together are the shipped ensemble (``FoldEnsemble``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["FoldResult", "CrossValidation", "cross_validate", "fit_platt"]

log = logging.getLogger(__name__)


@dataclass
class FoldResult:
    fold: int
    network: Any
    n_train: int
    n_test: int
    wall_seconds: float
    cpu_seconds: float
    history: list[dict[str, float]] = field(default_factory=list)


@dataclass
class CrossValidation:
    folds: np.ndarray  # fold index of every item
    oof_logits: np.ndarray  # [N, C]: each item's logits from the network that did not train on it
    results: list[FoldResult]

    @property
    def networks(self) -> list[Any]:
        return [r.network for r in self.results]

    @property
    def cpu_seconds(self) -> float:
        return sum(r.cpu_seconds for r in self.results)

    @property
    def wall_seconds(self) -> float:
        return sum(r.wall_seconds for r in self.results)


def cross_validate(
    folds: np.ndarray,
    train_fold: Callable[[int, np.ndarray, np.ndarray], tuple[Any, list[dict[str, float]]]],
    predict_logits: Callable[[Any, np.ndarray], np.ndarray],
) -> CrossValidation:
    """``train_fold(fold, train_idx, test_idx)`` -> (network, history); ``predict_logits(network, idx)`` -> [n, C]."""
    k = int(folds.max()) + 1
    oof: np.ndarray | None = None
    results = []
    for fold in range(k):
        test_idx, train_idx = np.flatnonzero(folds == fold), np.flatnonzero(folds != fold)
        wall, cpu = time.monotonic(), time.process_time()
        network, history = train_fold(fold, train_idx, test_idx)
        logits = np.asarray(predict_logits(network, test_idx), dtype=np.float64)
        if oof is None:
            oof = np.full((len(folds), logits.shape[1]), np.nan)
        oof[test_idx] = logits
        results.append(FoldResult(fold, network, len(train_idx), len(test_idx), time.monotonic() - wall, time.process_time() - cpu, history))
        log.info("fold %d/%d: %d train, %d test, %.0f s wall, %.0f s CPU", fold + 1, k, len(train_idx), len(test_idx), results[-1].wall_seconds, results[-1].cpu_seconds)
    assert oof is not None and not np.isnan(oof).any()
    return CrossValidation(folds, oof, results)


def fit_platt(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Slope and intercept of a logistic recalibration of out-of-fold logits (monotone: AUROC unchanged).

    Fold networks trained with class weights or stopped early are over- or under-confident; the
    Platt fit maps their logits to probabilities that match the observed rate.
    """
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=1e4, max_iter=1000).fit(np.asarray(logits, dtype=np.float64).reshape(-1, 1), np.asarray(labels, dtype=int))
    return float(model.coef_[0, 0]), float(model.intercept_[0])
