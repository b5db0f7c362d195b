"""The calibrated risk model as served: a plain JSON artefact evaluated with numpy.

Trained with scikit-learn (``screening/train_screener.py``: standardised logistic regression inside
``CalibratedClassifierCV`` with sigmoid calibration); the fitted numbers are exported so that serving
needs neither pickle nor a matching scikit-learn version. The calibrated probability refers to the
training mix of cases and controls and is shifted to the stated population prevalence (1:500 by
default) by Bayes' rule on the odds.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from screening.errors import ScreenerArtefactError
from screening.features import FEATURE_NAMES

__all__ = ["RiskModel", "load_risk_model", "SHIPPED_SCREENER"]

SHIPPED_SCREENER = Path(str(resources.files("screening") / "data" / "screener.json"))


def _logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


@dataclass
class RiskModel:
    version: str
    feature_names: list[str]
    mean: list[float]
    scale: list[float]
    coef: list[float]
    intercept: float
    calibration_a: float
    calibration_b: float
    train_prevalence: float
    prevalence: float
    # (risk threshold, expected flag rate) pairs measured out of fold, to pick a threshold per budget.
    budget_curve: list[tuple[float, float]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    trained_on: dict[str, Any] = field(default_factory=dict)

    def risk(self, features: np.ndarray) -> np.ndarray:
        """Calibrated probability at the population prevalence, for rows of features."""
        x = (np.atleast_2d(features) - np.asarray(self.mean)) / np.asarray(self.scale)
        decision = x @ np.asarray(self.coef) + self.intercept
        calibrated_logit = -(self.calibration_a * decision + self.calibration_b)
        shifted = calibrated_logit - _logit(self.train_prevalence) + _logit(self.prevalence)
        return 1.0 / (1.0 + np.exp(-shifted))

    def threshold_for(self, budget: float) -> float:
        """The lowest risk whose expected flag rate stays within ``budget`` flags per child screened."""
        eligible = [t for t, rate in self.budget_curve if rate <= budget]
        if not eligible:
            return 1.0
        return min(eligible)

    def contributions(self, features: np.ndarray) -> dict[str, float]:
        """Each feature's share of the decision (standardised value x coefficient), for explanations."""
        x = (np.asarray(features) - np.asarray(self.mean)) / np.asarray(self.scale)
        return {n: float(v) for n, v in zip(self.feature_names, x * np.asarray(self.coef), strict=True)}

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
    return model
