"""Validation metrics of a binary scorer: AUROC with a bootstrap CI, operating point, calibration, plots."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from quality.statistics import bootstrap_auroc, reliability, wilson_interval

__all__ = ["BinaryMetrics", "evaluate_binary", "bootstrap_auroc", "choose_threshold", "reliability", "plot_roc", "plot_calibration"]


@dataclass(frozen=True)
class BinaryMetrics:
    n: int
    n_positive: int
    auroc: float
    auroc_ci_low: float
    auroc_ci_high: float
    threshold: float
    sensitivity: float
    specificity: float
    sensitivity_ci: tuple[float, float]
    specificity_ci: tuple[float, float]
    brier: float
    ece: float
    reliability: list[dict[str, float]]

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def choose_threshold(labels: np.ndarray, scores: np.ndarray, *, min_sensitivity: float = 0.9) -> float:
    """Highest threshold that keeps sensitivity >= ``min_sensitivity``: a triage tool must not miss much.

    Cross-validated tasks call it on out-of-fold predictions, so the point is never chosen on the data
    that selected the weights.
    """
    fpr, tpr, thresholds = roc_curve(labels, scores)
    ok = np.flatnonzero(tpr >= min_sensitivity)
    threshold = thresholds[ok[0]] if len(ok) else thresholds[-1]
    return float(min(max(threshold, 0.0), 1.0))


def evaluate_binary(
    labels: np.ndarray,
    scores: np.ndarray,
    *,
    threshold: float | None = None,
    min_sensitivity: float = 0.9,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> BinaryMetrics:
    """AUROC (bootstrap CI over patients when ``groups`` is given), operating point, Wilson CIs, calibration."""
    labels = np.asarray(labels, dtype=int)
    scores = np.asarray(scores, dtype=float)
    auroc = float(roc_auc_score(labels, scores))
    low, high = bootstrap_auroc(labels, scores, seed=seed, groups=groups)
    if threshold is None:
        threshold = choose_threshold(labels, scores, min_sensitivity=min_sensitivity)
    predicted = scores >= threshold
    positives, negatives = labels == 1, labels == 0
    tp, tn = int((predicted & positives).sum()), int((~predicted & negatives).sum())
    table, ece = reliability(labels, scores)
    return BinaryMetrics(
        n=len(labels),
        n_positive=int(positives.sum()),
        auroc=auroc,
        auroc_ci_low=low,
        auroc_ci_high=high,
        threshold=float(threshold),
        sensitivity=tp / max(int(positives.sum()), 1),
        specificity=tn / max(int(negatives.sum()), 1),
        sensitivity_ci=wilson_interval(tp, int(positives.sum())),
        specificity_ci=wilson_interval(tn, int(negatives.sum())),
        brier=float(np.mean((scores - labels) ** 2)),
        ece=ece,
        reliability=table,
    )


def plot_roc(labels: np.ndarray, scores: np.ndarray, metrics: BinaryMetrics, path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fpr, tpr, _ = roc_curve(labels, scores)
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    ax.plot(fpr, tpr, label=f"AUROC {metrics.auroc:.3f} ({metrics.auroc_ci_low:.3f}-{metrics.auroc_ci_high:.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.scatter([1 - metrics.specificity], [metrics.sensitivity], c="red", zorder=3, label=f"threshold {metrics.threshold:.3f}")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity")
    ax.set_title(title, fontsize=8)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_calibration(metrics: BinaryMetrics, path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    xs = [row["mean_score"] for row in metrics.reliability]
    ys = [row["observed"] for row in metrics.reliability]
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.plot(xs, ys, "o-", label=f"Brier {metrics.brier:.3f}, ECE {metrics.ece:.3f}")
    ax.set(xlabel="mean predicted probability", ylabel="observed frequency", xlim=(0, 1), ylim=(0, 1))
    ax.set_title(title, fontsize=8)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
