"""Validation metrics: AUROC with its bootstrap interval, the operating point, calibration."""

from __future__ import annotations

import numpy as np

from training.metrics import choose_threshold, evaluate_binary, plot_calibration, plot_roc


def _scores(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    scores = np.clip(labels * 0.3 + rng.random(n) * 0.7, 0, 1)
    return labels, scores


def test_auroc_ci_brackets_the_estimate_and_is_seeded() -> None:
    labels, scores = _scores()
    metrics = evaluate_binary(labels, scores, seed=3)
    assert metrics.auroc_ci_low < metrics.auroc < metrics.auroc_ci_high
    assert evaluate_binary(labels, scores, seed=3) == metrics


def test_operating_point_meets_the_sensitivity_target() -> None:
    labels, scores = _scores()
    threshold = choose_threshold(labels, scores, min_sensitivity=0.95)
    predicted = scores >= threshold
    assert predicted[labels == 1].mean() >= 0.95
    metrics = evaluate_binary(labels, scores, threshold=threshold)
    assert metrics.sensitivity >= 0.95 and metrics.threshold == threshold


def test_perfect_and_calibrated_scores() -> None:
    labels = np.array([0, 0, 1, 1] * 25)
    metrics = evaluate_binary(labels, labels.astype(float))
    assert metrics.auroc == 1.0 and metrics.brier == 0.0 and metrics.ece == 0.0
    assert metrics.sensitivity == 1.0 and metrics.specificity == 1.0


def test_plots_are_written(tmp_path) -> None:
    labels, scores = _scores()
    metrics = evaluate_binary(labels, scores)
    assert plot_roc(labels, scores, metrics, tmp_path / "roc.png", "t").stat().st_size > 1000
    assert plot_calibration(metrics, tmp_path / "cal.png", "t").stat().st_size > 1000


def test_rank_auroc_matches_sklearn() -> None:
    from sklearn.metrics import roc_auc_score

    from quality.statistics import auroc

    labels, scores = _scores(300, seed=5)
    scores = np.round(scores, 1)  # ties
    assert abs(auroc(labels, scores) - roc_auc_score(labels, scores)) < 1e-12
