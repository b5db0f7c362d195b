"""A site's own alert threshold, set from its own children's risks.

The shipped threshold is the lowest risk that flags no more than the alert budget of the simulated ordinary
children the screener was trained beside. A site's children differ from them (coding habits, everyday illness
coded in SNOMED CT, a specialist clinic's case mix), and ``screen-emr`` warns when a population flags more than
twice the budget. ``medscreen screening calibrate`` reads a ``screen-emr --all`` output (every child's risk) and
gives the threshold that would have flagged the budget of that site's screened children, with what it costs:
how many of the children flagged now stay flagged, the interval of the threshold over resamples of the children,
and the flag rate the threshold gives on the simulated children (lower than the budget: the cases the screener
finds at that rate are what the evaluation reports for that rate). Setting it
(``MEDSCREEN_SCREENING_RISK_THRESHOLD``) is the site team's decision: a higher threshold flags fewer children
and finds fewer cases.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from screening.errors import CalibrationError
from screening.risk_model import RiskModel

__all__ = ["SiteThreshold", "site_threshold", "risks_of_output", "MIN_FLAGS"]

# Enough children that the budget's worth of them (the flags the threshold is read from) is at least this many:
# a threshold read from the top five children of 500 moves with each of them.
MIN_FLAGS = 10
_SCORED = ("screened", "incomplete")


@dataclass(frozen=True)
class SiteThreshold:
    children: int  # scored (screened or incomplete) children the threshold is read from
    budget: float
    threshold: float  # the lowest risk that flags at most the budget of these children
    flag_rate: float  # of these children, at the threshold
    interval: tuple[float, float]  # 95% of the threshold over bootstrap resamples of the children
    current_threshold: float
    current_flag_rate: float
    flagged_now: int
    still_flagged: int  # of those flagged now, flagged at the site threshold
    simulated_flag_rate: float | None  # the model's expected flag rate at the threshold on its simulated children
    model_version: str

    def as_dict(self) -> dict[str, object]:
        return {
            "children": self.children,
            "budget": self.budget,
            "site_threshold": self.threshold,  # exact: rounded, it could flag one child more or fewer
            "site_threshold_95_interval": [round(v, 6) for v in self.interval],
            "flag_rate_at_site_threshold": round(self.flag_rate, 5),
            "current_threshold": round(self.current_threshold, 6),
            "current_flag_rate": round(self.current_flag_rate, 5),
            "flagged_now": self.flagged_now,
            "still_flagged_at_site_threshold": self.still_flagged,
            "simulated_children_flag_rate_at_site_threshold": (
                None if self.simulated_flag_rate is None else round(self.simulated_flag_rate, 5)
            ),
            "model_version": self.model_version,
        }


def risks_of_output(path: Path) -> tuple[np.ndarray, float, str]:
    """The risks of the scored children of a ``screen-emr`` output, its threshold and model version; a
    CalibrationError when it holds only flagged children (written without ``--all``) or mixes models."""
    risks: list[float] = []
    thresholds, versions = set(), set()
    unflagged = 0
    try:
        with path.open("rb") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    row = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    raise CalibrationError(f"{path}:{number}: not a screen-emr output line ({exc})") from None
                if row.get("status") not in _SCORED or row.get("risk") is None:
                    continue
                risks.append(float(row["risk"]))
                thresholds.add(float(row["threshold"]))
                versions.add(str(row["model_version"]))
                unflagged += not row.get("flagged")
    except OSError as exc:
        raise CalibrationError(f"cannot read {path}: {exc}") from None
    if risks and not unflagged:
        raise CalibrationError(f"{path} holds flagged children only: write it with `medscreen screen-emr --all`")
    if len(versions) > 1 or len(thresholds) > 1:
        raise CalibrationError(f"{path} mixes screener versions {sorted(versions)}: calibrate one model's output")
    return np.asarray(risks, dtype=float), (thresholds.pop() if thresholds else 1.0), (versions.pop() if versions else "")


def _distinct(risks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct risks, highest first, and how many children have each."""
    values, copies = np.unique(risks, return_counts=True)
    return values[::-1], copies[::-1]


def _threshold_of_counts(values: np.ndarray, counts: np.ndarray, budget: float) -> float:
    """The lowest risk t with share(risk >= t) <= budget among children with ``counts[i]`` of risk ``values[i]``
    (highest first; ties kept together: all flagged or none)."""
    present = np.flatnonzero(counts)
    allowed = math.floor(budget * int(counts.sum()) + 1e-9)
    if allowed <= 0:
        return float(np.nextafter(values[present[0]], np.inf))
    cumulative = np.cumsum(counts)
    if allowed >= cumulative[-1]:
        return float(values[present[-1]])
    k = int(np.searchsorted(cumulative, allowed))  # the distinct risk holding the allowed-th highest child
    # More children of that risk than allowed: they tie across the budget, so the threshold lies just above.
    return float(values[k]) if cumulative[k] == allowed else float(np.nextafter(values[k], np.inf))


def _threshold(risks: np.ndarray, budget: float) -> float:
    """The lowest risk t with share(risk >= t) <= budget (ties kept together: all flagged or none)."""
    return _threshold_of_counts(*_distinct(risks), budget)


def _resampled_thresholds(risks: np.ndarray, budget: float, resamples: int, seed: int) -> np.ndarray:
    """:func:`_threshold` of ``resamples`` bootstrap resamples of ``risks``, drawn as how often each distinct risk
    is drawn (a multinomial over the distinct values): one sort in all instead of one per resample (1,000,000
    children: 28 s -> about 3 s)."""
    values, copies = _distinct(risks)
    rng = np.random.default_rng(seed)
    return np.array([_threshold_of_counts(values, rng.multinomial(len(risks), copies / len(risks)), budget)
                     for _ in range(resamples)])


def site_threshold(
    risks: Iterable[float], budget: float, current_threshold: float, model: RiskModel | None = None,
    model_version: str = "", resamples: int = 400, seed: int = 5,
) -> SiteThreshold:
    values = np.asarray(list(risks), dtype=float)
    needed = math.ceil(MIN_FLAGS / budget)
    if len(values) < needed:
        raise CalibrationError(
            f"{len(values)} scored children: a threshold for a budget of {budget:.2%} needs at least {needed} "
            f"({MIN_FLAGS} flags' worth)"
        )
    threshold = _threshold(values, budget)
    boot = _resampled_thresholds(values, budget, resamples, seed)
    flagged_now = values >= current_threshold
    simulated = None
    if model is not None and model.budget_curve:
        # The model's curve: (threshold, expected flag rate on its simulated children), rate falling as t rises.
        below = [rate for t, rate in model.budget_curve if t <= threshold]
        simulated = float(min(below)) if below else None
    return SiteThreshold(
        children=len(values),
        budget=budget,
        threshold=threshold,
        flag_rate=float(np.mean(values >= threshold)),
        interval=(float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))),
        current_threshold=current_threshold,
        current_flag_rate=float(np.mean(flagged_now)),
        flagged_now=int(flagged_now.sum()),
        still_flagged=int((values >= max(threshold, current_threshold)).sum()),
        simulated_flag_rate=simulated,
        model_version=model_version,
    )
