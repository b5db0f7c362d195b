"""Statistics of a binary scorer shared by validation (``training``) and quality review: rank AUROC, its
bootstrap interval, the Wilson interval of a proportion (with a design effect when a patient has several studies),
Tango's interval of a paired difference and the reliability table. numpy and scipy only, so the serving app's
quality pages load no scikit-learn.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = [
    "Z95",
    "auroc",
    "bootstrap_auroc",
    "bootstrap_brier",
    "wilson_interval",
    "design_effect",
    "clustered_wilson_interval",
    "paired_difference_interval",
    "reliability",
]

Z95 = 1.959964  # the normal quantile of a two-sided 95% interval
# Bootstrap draws held at once by the Brier interval: 8 MB of indices.
_BRIER_DRAWS_AT_ONCE = 1_000_000


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mann-Whitney AUROC from average ranks (ties count half); 100x faster than sklearn in a bootstrap loop."""
    from scipy.stats import rankdata

    positives = labels == 1
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    ranks = rankdata(scores)
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _resample(groups: np.ndarray | None, n: int, rng: np.random.Generator) -> Callable[[], np.ndarray]:
    """A drawer of bootstrap index sets: items, or whole patients when ``groups`` names each item's patient.

    Two films of one patient are not two independent observations; resampling patients keeps the
    interval honest when patients contribute several images.
    """
    if groups is None:
        return lambda: rng.integers(0, n, n)
    _, codes = np.unique(np.asarray(groups), return_inverse=True)
    order = np.argsort(codes, kind="stable")
    starts = np.searchsorted(codes[order], np.arange(codes.max() + 2))
    members = [order[starts[g] : starts[g + 1]] for g in range(len(starts) - 1)]
    return lambda: np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])


def bootstrap_auroc(
    labels: np.ndarray, scores: np.ndarray, *, n_boot: int = 2000, seed: int = 0, groups: np.ndarray | None = None
) -> tuple[float, float]:
    """Percentile 95% CI of the AUROC over bootstrap resamples (of patients when ``groups`` is given).

    Resamples with one class are skipped.
    """
    rng = np.random.default_rng(seed)
    values = []
    draw = _resample(groups, len(labels), rng)
    for _ in range(n_boot):
        idx = draw()
        if labels[idx].min() == labels[idx].max():
            continue
        values.append(auroc(labels[idx], scores[idx]))
    if not values:
        return float("nan"), float("nan")
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def bootstrap_brier(
    labels: np.ndarray, scores: np.ndarray, *, n_boot: int = 2000, seed: int = 0, groups: np.ndarray | None = None
) -> tuple[float, float]:
    """Percentile 95% CI of the Brier score over bootstrap resamples of the studies, or of patients when ``groups``
    is given (a mean of squared errors has no closed-form interval worth trusting on a few dozen studies with skewed
    errors)."""
    if len(labels) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    errors = (np.asarray(scores, dtype=float) - np.asarray(labels, dtype=float)) ** 2
    if groups is None:
        # A few rounds at a time (about a million draws, the same stream as all at once): the whole (rounds x studies)
        # matrix and its gathered errors had taken 1.6 GB at 100,000 studies, a year of a large site's chest films.
        n = len(errors)
        step = max(1, _BRIER_DRAWS_AT_ONCE // n)
        means = np.concatenate([
            errors[rng.integers(0, n, (min(step, n_boot - done), n))].mean(axis=1) for done in range(0, n_boot, step)
        ])
    else:
        draw = _resample(groups, len(errors), rng)
        means = np.array([errors[draw()].mean() for _ in range(n_boot)])
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def wilson_interval(successes: float, total: float, *, z: float = Z95) -> tuple[float, float]:
    """Wilson interval of a proportion (sensitivity, specificity; 95% at the default ``z``); sane for small counts.
    Within [0, 1], and exactly 0 (1) at no (all) successes, where rounding had given -2.8e-17 ("-0.000" in a report)
    or 0.9999999999999999."""
    if total == 0:
        return float("nan"), float("nan")
    p = successes / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * np.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    low = 0.0 if successes <= 0 else max(0.0, float(centre - half))
    high = 1.0 if successes >= total else min(1.0, float(centre + half))
    return low, high


def design_effect(values: np.ndarray, groups: np.ndarray | None) -> float:
    """How many times larger the variance of the mean of ``values`` is when items cluster in ``groups`` (a
    patient's studies) than if every item were independent: the between-patient (cluster-robust) variance of the
    mean over the independent one. 1 when each group holds one item, so a site with one study per patient gets the
    plain intervals. Kept within [1, sum(n_i^2) / n]: the upper end is the design effect when a patient's studies all
    agree, used too when the values do not vary (no spread to estimate the within-patient correlation from).
    """
    values = np.asarray(values, dtype=float)
    n = len(values)
    if groups is None or n < 2:
        return 1.0
    _, codes, sizes = np.unique(np.asarray(groups), return_inverse=True, return_counts=True)
    if len(sizes) == n:
        return 1.0
    most = float(np.sum(sizes.astype(float) ** 2) / n)
    residual = values - values.mean()
    independent = float(np.sum(residual**2)) / (n * (n - 1))
    if len(sizes) < 2 or independent <= 0:
        return most
    per_group = np.bincount(codes.ravel(), weights=residual, minlength=len(sizes))
    clustered = len(sizes) / (len(sizes) - 1) * float(np.sum(per_group**2)) / n**2
    return min(max(clustered / independent, 1.0), most)


def clustered_wilson_interval(hits: np.ndarray, groups: np.ndarray | None, *, z: float = Z95) -> tuple[float, float]:
    """Wilson interval of the share of ``hits`` with each item's patient in ``groups``: the Wilson interval on the
    effective sample size n / design effect, which is Wilson's with ``z`` widened by the design effect's root.
    Exactly the plain Wilson interval when no patient has two items."""
    hits = np.asarray(hits, dtype=bool)
    deff = design_effect(hits, groups)
    return wilson_interval(int(hits.sum()), len(hits), z=z * float(np.sqrt(deff)))


def paired_difference_interval(first_only: int, second_only: int, n: int, *, z: float = Z95) -> tuple[float, float, float]:
    """The difference of two shares measured on the same ``n`` items (two versions' calls on the same studies):
    ``first_only`` items count for the first only, ``second_only`` for the second only. Tango's score interval
    (Tango 1998; recommended by Fagerland, Lydersen and Laake 2013 for paired proportions: sane with few or no
    discordant pairs, where the Wald interval collapses to a point). Clustered items (a patient's studies) widen
    ``z`` by the root of the difference's :func:`design_effect`. (estimate, low, high); NaN when ``n`` is 0.
    """
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    b, c = first_only, second_only
    estimate = (b - c) / n

    def score(delta: float) -> float:
        # The score statistic at a difference delta, with the second-only cell at its restricted MLE; it falls as
        # delta rises.
        qa, qb, qc = 2 * n, -b - c + (2 * n - b + c) * delta, -c * delta * (1 - delta)
        q21 = (np.sqrt(max(qb * qb - 4 * qa * qc, 0.0)) - qb) / (2 * qa)
        variance = n * (2 * q21 + delta * (1 - delta))
        if variance <= 0:
            return float(np.sign(b - c - n * delta)) * float("inf")
        return float((b - c - n * delta) / np.sqrt(variance))

    def bound(end: float) -> float:
        # Bisect between the estimate (score 0) and an end of [-1, 1] for where the score reaches -z (upper) or z.
        inside, outside = estimate, end
        if abs(score(outside)) <= z:
            return outside
        for _ in range(60):
            middle = (inside + outside) / 2
            if score(middle) * end >= -z:
                inside = middle
            else:
                outside = middle
        return inside

    low = -1.0 if estimate <= -1 else bound(-1.0)
    high = 1.0 if estimate >= 1 else bound(1.0)
    return float(estimate), float(low), float(high)


def reliability(labels: np.ndarray, scores: np.ndarray, bins: int = 10) -> tuple[list[dict[str, float]], float]:
    """Reliability table (mean score vs observed rate per score decile bin) and expected calibration error."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    table = []
    ece = 0.0
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        inside = (scores >= low) & ((scores < high) if high < 1.0 else (scores <= high))
        if not inside.any():
            continue
        mean_score = float(scores[inside].mean())
        observed = float(labels[inside].mean())
        table.append({"bin_low": float(low), "bin_high": float(high), "count": int(inside.sum()), "mean_score": mean_score, "observed": observed})
        ece += inside.mean() * abs(mean_score - observed)
    return table, float(ece)
