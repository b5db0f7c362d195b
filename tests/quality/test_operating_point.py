"""The threshold a site's final reads support, measured out of fold (quality/operating_point.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from quality.metrics import PairedCase
from quality.operating_point import site_operating_point

ARRIVED = datetime(2026, 3, 1, tzinfo=UTC)


def cases(positive_scores: np.ndarray, negative_scores: np.ndarray, threshold: float) -> list[PairedCase]:
    return [
        PairedCase(i, f"1.2.{i}", "chest-xray", "chest-xray", "3", "champion", float(score), threshold, bool(score >= threshold), truth,
                   ARRIVED, ARRIVED, ARRIVED, "ACME", "CR1", "0-17", "F")
        for i, (score, truth) in enumerate([(s, True) for s in positive_scores] + [(s, False) for s in negative_scores])
    ]


def test_a_site_where_the_shipped_threshold_flags_most_normals_is_told_what_would_hold_sensitivity() -> None:
    # The new-site picture of issue 12: the scores still rank (positives mostly above 0.4) but the shipped
    # threshold of 0.1 flags nearly every normal study.
    rng = np.random.default_rng(3)
    site = cases(rng.uniform(0.4, 1.0, 200), rng.uniform(0.0, 0.6, 300), threshold=0.1)

    point = site_operating_point(site, min_sensitivity=0.95)

    assert point.shipped_threshold == 0.1 and (point.n, point.n_positive) == (500, 200)
    positives = np.sort([c.score for c in site if c.truth])[::-1]
    assert point.threshold == positives[189]  # the 190th highest positive: 190 / 200 = 0.95
    assert np.mean([c.score >= point.threshold for c in site if c.truth]) >= 0.95
    # Out of fold it holds about the goal and buys specificity the shipped threshold did not have (1/6 there).
    assert point.sensitivity is not None and point.specificity is not None
    assert point.sensitivity.total == 200 and point.sensitivity.value >= 0.90
    assert point.specificity.total == 300 and 0.6 <= point.specificity.value <= 0.8
    assert point.specificity.ci_low < point.specificity.value < point.specificity.ci_high


def test_too_few_confirmed_studies_suggest_nothing() -> None:
    point = site_operating_point(cases(np.linspace(0.5, 1, 29), np.linspace(0, 0.5, 200), threshold=0.3))
    assert point.threshold is None and point.sensitivity is None
    assert "29 with the finding and 200 without; at least 30 of each" in point.reason


@pytest.mark.parametrize("seed", [0, 1])
def test_the_folds_are_stratified_and_seeded(seed: int) -> None:
    rng = np.random.default_rng(9)
    site = cases(rng.uniform(0.3, 1.0, 60), rng.uniform(0.0, 0.7, 90), threshold=0.5)
    first, again = site_operating_point(site, seed=seed), site_operating_point(site, seed=seed)
    assert first == again and first.threshold == site_operating_point(site, seed=seed + 7).threshold
