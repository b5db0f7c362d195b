"""The calibrated risk model as served: a plain JSON artefact evaluated with numpy.

A logistic model over bounded features (``screening/features.py``, each in [0, 1]). Each feature enters
through a monotone piecewise-linear shape: it is split at ``knots`` into pieces (the part of the value
in [0, 0.25], in [0.25, 0.5], ...), each piece with its own weight, and every weight is constrained to
be non-negative (fitted in ``screening/train_screener.py``). So the risk never falls when evidence is
added, a feature may matter more at first than later (the first findings count most), and the risk
stays bounded however many findings a child has. The fit balances cases and controls; the intercept
is then shifted by Bayes' rule on the odds to the stated population prevalence (1:500 by default), so
the risk is a probability in that population. An artefact with a negative weight is refused.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from screening.errors import ScreenerArtefactError
from screening.features import FEATURE_NAMES

__all__ = ["RiskModel", "load_risk_model", "SHIPPED_SCREENER", "KNOTS", "expand"]

SHIPPED_SCREENER = Path(str(resources.files("screening") / "data" / "screener.json"))


KNOTS = (0.25, 0.5, 0.75)


def expand(features: np.ndarray, knots: tuple[float, ...] | list[float] = KNOTS) -> np.ndarray:
    """Rows of features in [0, 1] -> the pieces of each feature between consecutive knots, each in [0, 1]
    (feature-major: all pieces of the first feature, then of the second, ...)."""
    x = np.atleast_2d(np.asarray(features, dtype=np.float64))
    edges = np.array([0.0, *knots, 1.0])
    lows, widths = edges[:-1], np.diff(edges)
    pieces = np.clip((x[:, :, None] - lows) / widths, 0.0, 1.0)
    return pieces.reshape(x.shape[0], -1)


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


@dataclass
class RiskModel:
    version: str
    feature_names: list[str]
    coef: list[float]  # per piece of each feature (feature-major), >= 0: monotone in the evidence
    intercept: float
    train_prevalence: float  # the prevalence the intercept was fitted at (0.5: balanced)
    prevalence: float  # the population prevalence the risk is stated at
    # (risk threshold, expected flag rate) pairs measured out of fold, to pick a threshold per budget.
    budget_curve: list[tuple[float, float]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    trained_on: dict[str, Any] = field(default_factory=dict)
    knots: list[float] = field(default_factory=lambda: list(KNOTS))

    def decision(self, features: np.ndarray) -> np.ndarray:
        """Log-odds at the population prevalence."""
        x = expand(features, self.knots)
        return x @ np.asarray(self.coef) + self.intercept - _logit(self.train_prevalence) + _logit(self.prevalence)

    def risk(self, features: np.ndarray) -> np.ndarray:
        """Calibrated probability at the population prevalence, for rows of features."""
        return 1.0 / (1.0 + np.exp(-self.decision(features)))

    def risk_each(self, features: np.ndarray) -> np.ndarray:
        """:meth:`risk` of each row as it is for that row alone (``risk(row)[0]``), bit for bit. For many
        rows, ``x @ coef`` is one matrix-vector product (BLAS gemv), which adds each row's pieces in
        another order than the dot product of a single row (BLAS dot): a third of the rows differ in the
        last bit. So one dot product per row (~1 us), the rest as arrays (elementwise, the same values)."""
        if len(features) == 0:
            return np.zeros(0)
        x = expand(features, self.knots)
        coef = np.asarray(self.coef)
        dots = np.fromiter((np.dot(row, coef) for row in x), np.float64, len(x))
        decision = dots + self.intercept - _logit(self.train_prevalence) + _logit(self.prevalence)
        return 1.0 / (1.0 + np.exp(-decision))

    def threshold_for(self, budget: float) -> float:
        """The lowest risk whose expected flag rate stays within ``budget`` flags per child screened."""
        eligible = [t for t, rate in self.budget_curve if rate <= budget]
        if not eligible:
            return 1.0
        return min(eligible)

    def contributions(self, features: np.ndarray) -> dict[str, float]:
        """Each feature's share of the log-odds (value x weight, never negative), for explanations."""
        per_piece = expand(features, self.knots)[0] * np.asarray(self.coef)
        pieces = len(self.knots) + 1
        return {n: float(per_piece[i * pieces : (i + 1) * pieces].sum()) for i, n in enumerate(self.feature_names)}

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1) + "\n", encoding="utf-8")


def load_risk_model(path: Path | None = None) -> RiskModel:
    target = path or SHIPPED_SCREENER
    try:
        data = json.loads(target.read_text(encoding="utf-8"))
        data["budget_curve"] = [tuple(pair) for pair in data.get("budget_curve", [])]
        model = RiskModel(**data)
    except (OSError, json.JSONDecodeError, TypeError) as exc:
        raise ScreenerArtefactError(f"cannot read the screener artefact {target}: {exc}") from exc
    if list(model.feature_names) != list(FEATURE_NAMES):
        raise ScreenerArtefactError(
            f"{target} was trained on features {model.feature_names}, this code computes {list(FEATURE_NAMES)}"
        )
    if len(model.coef) != len(FEATURE_NAMES) * (len(model.knots) + 1):
        raise ScreenerArtefactError(f"{target} has {len(model.coef)} weights for {len(FEATURE_NAMES)} features")
    if any(c < 0 for c in model.coef):
        raise ScreenerArtefactError(f"{target} has a negative weight: the risk would fall as evidence grows")
    return model
