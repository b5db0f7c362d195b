"""The operating point a site's own final reads support: what threshold would hold the sensitivity here.

A version's threshold was chosen out of fold on its development data; at another site the same threshold can
give much lower specificity (the chest model's 0.97 became 0.57 on another hospital's films) or miss more. The
site's confirmed studies say where the threshold would have to sit to keep sensitivity at the version's goal,
and, measured out of fold (chosen on four fifths of the patients' studies, applied to the fifth), what specificity
that would buy. The folds hold each patient whole: with an inpatient's daily films dealt to different folds, the
threshold was chosen on the same patients it was judged on (sensitivity 0.954 "out of fold", 0.925 held out by
patient, in the review's example). It is advice for the quality team and the ML engineers: the version's threshold changes only with a
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
    n_patients: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _threshold_for(scores: np.ndarray, truth: np.ndarray, min_sensitivity: float) -> float:
    """The highest threshold flagging at least ``min_sensitivity`` of the positives (flag: score >= threshold)."""
    positives = np.sort(scores[truth])[::-1]
    return float(positives[max(math.ceil(min_sensitivity * len(positives)), 1) - 1])


def _stratified_folds(truth: np.ndarray, folds: int, seed: int, groups: np.ndarray | None = None) -> np.ndarray:
    """Each item's fold, whole patients (``groups``) to one fold, patients with and without a positive study dealt
    round the folds separately. With one item per patient, the folds of a plain stratified deal."""
    rng = np.random.default_rng(seed)
    if groups is None:
        groups = np.arange(len(truth))
    _, first, codes = np.unique(groups, return_index=True, return_inverse=True)
    codes = codes.ravel()
    in_order = np.argsort(first, kind="stable")  # patients in the order they first appear
    has_positive = np.zeros(len(first), dtype=bool)
    np.logical_or.at(has_positive, codes, truth)
    fold_of_patient = np.empty(len(first), dtype=int)
    for label in (False, True):
        members = rng.permutation(in_order[has_positive[in_order] == label])
        fold_of_patient[members] = np.arange(len(members)) % folds
    return fold_of_patient[codes]


def site_operating_point(
    cases: Sequence[PairedCase], *, min_sensitivity: float = DEFAULT_MIN_SENSITIVITY, folds: int = 5,
    min_per_class: int = RAISE_ONLY_MIN_PER_CLASS, seed: int = 0,
) -> SiteOperatingPoint:
    """The threshold this site's confirmed studies support, with its out-of-fold sensitivity and specificity."""
    truth = np.array([c.truth for c in cases], dtype=bool)
    scores = np.array([c.score for c in cases], dtype=float)
    patients = np.array([c.patient for c in cases], dtype=str)
    n_positive, n_negative = int(truth.sum()), int((~truth).sum())
    n_patients = len(set(patients.tolist()))
    shipped = Counter(c.threshold for c in cases).most_common(1)[0][0] if cases else None
    if min(n_positive, n_negative) < max(min_per_class, folds):
        return SiteOperatingPoint(min_sensitivity, len(cases), n_positive, shipped, None, None, None, None, folds,
                                  f"too few confirmed studies: {n_positive} with the finding and {n_negative} without; "
                                  f"at least {min_per_class} of each are needed to suggest a threshold", n_patients)
    positive_patients = len(set(patients[truth].tolist()))
    if positive_patients < folds:  # a fold's threshold is chosen on the positives of the other folds' patients
        return SiteOperatingPoint(min_sensitivity, len(cases), n_positive, shipped, None, None, None, None, folds,
                                  f"too few patients: {n_positive} studies with the finding are of {positive_patients} "
                                  f"patients; at least {folds} are needed to hold patients out whole", n_patients)
    fold_of = _stratified_folds(truth, folds, seed, patients)
    flagged = np.zeros(len(cases), dtype=bool)
    for fold in range(folds):
        held_out = fold_of == fold
        threshold = _threshold_for(scores[~held_out], truth[~held_out], min_sensitivity)
        flagged[held_out] = scores[held_out] >= threshold
    threshold = _threshold_for(scores, truth, min_sensitivity)
    above = scores >= threshold
    apparent = (float((above & ~truth).sum() / n_negative), float((above & truth).sum() / n_positive))
    return SiteOperatingPoint(
        min_sensitivity, len(cases), n_positive, shipped, threshold, apparent,
        Proportion.over(flagged[truth], patients[truth]), Proportion.over(~flagged[~truth], patients[~truth]), folds,
        "advice only: the version's threshold changes with a newly registered version, through the promotion gate",
        n_patients,
    )
