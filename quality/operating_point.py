"""The operating point a site's own final reads support: what threshold would hold the sensitivity here.

A version's threshold was chosen out of fold on its development data; at another site the same threshold can
give much lower specificity (the chest model's 0.97 became 0.57 on another hospital's films) or miss more. The
site's confirmed studies say where the threshold would have to sit to keep sensitivity at the version's goal,
and, measured out of fold (chosen on four fifths of the studies, applied to the fifth), what specificity that
would buy. It is advice for the quality team and the ML engineers: the version's threshold changes only with a
newly registered version, through the promotion gate; nothing here changes what the service does.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from quality.metrics import PairedCase, Proportion
from service.steering import RAISE_ONLY_MIN_PER_CLASS

__all__ = ["SiteOperatingPoint", "site_operating_point", "DEFAULT_MIN_SENSITIVITY"]

# The chest model's goal (issue 12) and its card's rule; a task's own goal can be passed instead.
DEFAULT_MIN_SENSITIVITY = 0.95


@dataclass(frozen=True)
class SiteOperatingPoint:
    min_sensitivity: float
    n: int
    n_positive: int
    shipped_threshold: float | None
    # The highest threshold that keeps this site's sensitivity >= min_sensitivity on all its confirmed studies,
    # and where it sits on the site's ROC curve (chosen on the same studies: optimistic, drawn, not quoted).
    threshold: float | None
    apparent: tuple[float, float] | None  # (1 - specificity, sensitivity)
    # Out of fold: each fold's studies judged at the threshold chosen on the other folds.
    sensitivity: Proportion | None
    specificity: Proportion | None
    folds: int
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _threshold_for(scores: np.ndarray, truth: np.ndarray, min_sensitivity: float) -> float:
    """The highest threshold flagging at least ``min_sensitivity`` of the positives (flag: score >= threshold)."""
    positives = np.sort(scores[truth])[::-1]
    return float(positives[max(math.ceil(min_sensitivity * len(positives)), 1) - 1])


def _stratified_folds(truth: np.ndarray, folds: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(truth), dtype=int)
    for label in (False, True):
        members = rng.permutation(np.flatnonzero(truth == label))
        fold_of[members] = np.arange(len(members)) % folds
    return fold_of


def site_operating_point(
    cases: Sequence[PairedCase], *, min_sensitivity: float = DEFAULT_MIN_SENSITIVITY, folds: int = 5,
    min_per_class: int = RAISE_ONLY_MIN_PER_CLASS, seed: int = 0,
) -> SiteOperatingPoint:
    """The threshold this site's confirmed studies support, with its out-of-fold sensitivity and specificity."""
    truth = np.array([c.truth for c in cases], dtype=bool)
    scores = np.array([c.score for c in cases], dtype=float)
    n_positive, n_negative = int(truth.sum()), int((~truth).sum())
    shipped = Counter(c.threshold for c in cases).most_common(1)[0][0] if cases else None
    if min(n_positive, n_negative) < max(min_per_class, folds):
        return SiteOperatingPoint(min_sensitivity, len(cases), n_positive, shipped, None, None, None, None, folds,
                                  f"too few confirmed studies: {n_positive} with the finding and {n_negative} without; "
                                  f"at least {min_per_class} of each are needed to suggest a threshold")
    fold_of = _stratified_folds(truth, folds, seed)
    flagged = np.zeros(len(cases), dtype=bool)
    for fold in range(folds):
        held_out = fold_of == fold
        threshold = _threshold_for(scores[~held_out], truth[~held_out], min_sensitivity)
        flagged[held_out] = scores[held_out] >= threshold
    tp, tn = int((flagged & truth).sum()), int((~flagged & ~truth).sum())
    threshold = _threshold_for(scores, truth, min_sensitivity)
    above = scores >= threshold
    apparent = (float((above & ~truth).sum() / n_negative), float((above & truth).sum() / n_positive))
    return SiteOperatingPoint(
        min_sensitivity, len(cases), n_positive, shipped, threshold, apparent,
        Proportion.of(tp, n_positive), Proportion.of(tn, n_negative), folds,
        "advice only: the version's threshold changes with a newly registered version, through the promotion gate",
    )
