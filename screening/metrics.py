"""Screening metrics at a stated prevalence: cases and controls are re-weighted so that the controls
stand for a population where one child in ``1/prevalence`` has the disease."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

__all__ = ["ScreeningMetrics", "screening_metrics", "flag_rate_threshold", "resampled_sensitivity_at_rate", "expected_rank"]


@dataclass
class ScreeningMetrics:
    sensitivity_at_budget: float
    auprc: float
    ppv: float
    roc_auc: float
    flag_rate: float
    top1: float | None = None
    top10: float | None = None

    def as_dict(self) -> dict[str, float | None]:
        return {k: (None if v is None else round(float(v), 4)) for k, v in asdict(self).items()}


def _control_weight(n_cases: int, n_controls: int, prevalence: float) -> float:
    return n_cases * (1 - prevalence) / (prevalence * n_controls)


def flag_rate_threshold(
    case_scores: np.ndarray, control_scores: np.ndarray, prevalence: float, budget: float
) -> tuple[float, float, float]:
    """The threshold whose expected flag rate in the population is at most ``budget``.

    Returns ``(threshold, tie_fraction, flag_rate)``: children above the threshold are flagged, and
    ``tie_fraction`` of those exactly at it (needed to be fair to baselines with integer scores).
    """
    scores = np.concatenate([case_scores, control_scores])
    weights = np.concatenate(
        [np.full(len(case_scores), prevalence / max(len(case_scores), 1)),
         np.full(len(control_scores), (1 - prevalence) / max(len(control_scores), 1))]
    )
    order = np.argsort(-scores, kind="stable")
    s, w = scores[order], weights[order]
    uniq, first = np.unique(-s, return_index=True)
    cum = np.concatenate([[0.0], np.cumsum(w)])
    best_t, best_frac, best_rate = np.inf, 0.0, 0.0
    for k, value in enumerate(-uniq):
        above = cum[first[k]]
        end = first[k + 1] if k + 1 < len(first) else len(s)
        at = cum[end] - above
        if above + at <= budget:
            best_t, best_frac, best_rate = value, 1.0, above + at
            continue
        frac = (budget - above) / at if at > 0 else 0.0
        return float(value), float(max(frac, 0.0)), float(above + max(frac, 0.0) * at)
    return float(best_t), best_frac, float(best_rate)


def resampled_sensitivity_at_rate(
    case_scores: np.ndarray,
    control_scores: np.ndarray,
    case_counts: np.ndarray,
    control_counts: np.ndarray,
    prevalence: float,
    rate: float,
) -> np.ndarray:
    """Sensitivity at exactly ``rate`` expected flags in each of several resamples, the threshold recomputed in
    each by :func:`flag_rate_threshold`'s rule (ties split).

    A resample is given by how many times it draws each case and each control (rows of ``case_counts`` and
    ``control_counts``), so the scores are sorted once and every resample is a row of weights: a few
    milliseconds for hundreds of resamples of thousands of children."""
    scores = np.concatenate([np.asarray(case_scores, dtype=np.float64), np.asarray(control_scores, dtype=np.float64)])
    order = np.argsort(-scores, kind="stable")
    ordered = scores[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    cases = np.asarray(case_counts, dtype=np.float64)
    controls = np.asarray(control_counts, dtype=np.float64)
    cases = cases / np.maximum(cases.sum(axis=1, keepdims=True), 1)
    controls = controls / np.maximum(controls.sum(axis=1, keepdims=True), 1)
    share = np.add.reduceat(np.hstack([cases, np.zeros_like(controls)])[:, order], starts, axis=1)
    flags = np.add.reduceat(np.hstack([prevalence * cases, (1 - prevalence) * controls])[:, order], starts, axis=1)
    cum = np.cumsum(flags, axis=1)
    over = cum > rate  # the first score whose children, all flagged, would exceed the rate is the threshold
    rows = np.arange(len(cum))
    k = np.argmax(over, axis=1)
    above = cum[rows, k] - flags[rows, k]
    at = flags[rows, k]
    frac = np.clip((rate - above) / np.where(at > 0, at, 1.0), 0.0, None)
    found = np.cumsum(share, axis=1)[rows, k] - share[rows, k] + frac * share[rows, k]
    return np.where(over.any(axis=1), found, 1.0)


def expected_rank(scores: np.ndarray, index: int) -> float:
    """Rank of one entry among all (1 = best), ties broken at random in expectation."""
    value = scores[index]
    greater = int(np.sum(scores > value))
    ties = int(np.sum(scores == value)) - 1
    return 1.0 + greater + ties / 2.0


def screening_metrics(
    case_scores: np.ndarray,
    control_scores: np.ndarray,
    prevalence: float,
    budget: float,
    ranks: list[float | None] | None = None,
) -> ScreeningMetrics:
    case_scores = np.asarray(case_scores, dtype=np.float64)
    control_scores = np.asarray(control_scores, dtype=np.float64)
    y = np.concatenate([np.ones(len(case_scores)), np.zeros(len(control_scores))])
    s = np.concatenate([case_scores, control_scores])
    w = np.concatenate(
        [np.ones(len(case_scores)), np.full(len(control_scores), _control_weight(len(case_scores), len(control_scores), prevalence))]
    )
    auprc = float(average_precision_score(y, s, sample_weight=w))
    auc = float(roc_auc_score(y, s))
    t, frac, rate = flag_rate_threshold(case_scores, control_scores, prevalence, budget)
    tpr = float(np.mean(case_scores > t) + frac * np.mean(case_scores == t))
    ppv = prevalence * tpr / rate if rate > 0 else 0.0
    top1 = top10 = None
    if ranks is not None:
        ranked = [r if r is not None else np.inf for r in ranks]
        top1 = float(np.mean([r <= 1 for r in ranked])) if ranked else 0.0
        top10 = float(np.mean([r <= 10 for r in ranked])) if ranked else 0.0
    return ScreeningMetrics(tpr, auprc, ppv, auc, rate, top1, top10)
