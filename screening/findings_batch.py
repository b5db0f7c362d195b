"""The findings of a batch of children at once (population runs): the same :class:`ChildFindings` as
:func:`screening.findings.extract_findings` child by child, with the measurements of the whole batch
(some 19 a child: growth and labs) read as arrays instead of one at a time.

The coded facts (a few a child) are read child by child (:func:`screening.findings.coded_findings`);
the measurements of every child still screened after them go through numpy together: their ages,
what each LOINC code means (once per distinct code), the lab thresholds, the units, and the growth
z-scores and their persistence rules (:func:`screening.growth.growth_findings_batch`). Python is
left with building the few findings the arrays point at.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from itertools import chain

import numpy as np

from datasets.emr_records import ChildRecord, Measurement
from screening.findings import (
    LYING_LENGTH,
    MAX_AGE_DAYS,
    STANDING_HEIGHT,
    ChildFindings,
    CodeMaps,
    Finding,
    LabRule,
    birth_slack,
    coded_findings,
    extract_findings,
    growth_finding,
    implausible_unread,
    lab_factor,
    lab_source,
    lab_unread,
    unit_factor,
)
from screening.gestation import CORRECTED_UNTIL_DAYS, GESTATION_LOINC, correction_days, gestation_days
from screening.growth import INDICATORS, growth_findings_batch

__all__ = ["extract_findings_batch"]

_NO_DATE = -(1 << 40)  # an ordinal no date has: a measurement without a date is not read
# What a LOINC code is for screening, one small integer per distinct code in a batch.
_OTHER, _SUSPICIOUS, _LAB, _GESTATION = -1, -2, -3, -4  # growth codes: the indicator's index in INDICATORS (>= 0)


def extract_findings_batch(
    records: Sequence[ChildRecord], maps: CodeMaps, as_of: date, max_age_days: int = MAX_AGE_DAYS
) -> list[ChildFindings]:
    """:func:`screening.findings.extract_findings` of each record, as of ``as_of``."""
    children: list[ChildFindings] = []
    measured: list[int] = []  # the children whose measurements are read
    for i, record in enumerate(records):
        child, final = coded_findings(record, maps, as_of, max_age_days)
        children.append(child)
        if not final and record.measurements:
            measured.append(i)
    if measured:
        odd = _measurement_findings([records[i] for i in measured], [children[i] for i in measured], maps)
        for k in odd:
            # A growth value that is NaN (or in a unit that cannot be read): growth_findings sorts such a
            # series its own way, and the unread list keeps the record's order, so this child goes through
            # it as a whole.
            children[measured[k]] = extract_findings(records[measured[k]], maps, as_of, max_age_days)
    return children


def _first_coding(
    rows: np.ndarray, owner: np.ndarray, kind: np.ndarray, day: np.ndarray, value: np.ndarray, unit: np.ndarray,
    code: np.ndarray,
) -> np.ndarray:
    """Which of the growth ``rows`` to read: not one whose child, indicator, day, value and unit an earlier row has
    under another LOINC code (one value coded twice, ``screening.findings`` RECODED_GROWTH), as
    :func:`screening.findings.extract_findings` reads them."""
    if len(rows) < 2:
        return np.ones(len(rows), dtype=bool)
    order = np.lexsort((rows, unit[rows], value[rows], day[rows], kind[rows], owner[rows]))
    sorted_rows = rows[order]
    fields = (owner, kind, day, value, unit)
    opens = np.concatenate([[True], np.any([f[sorted_rows[1:]] != f[sorted_rows[:-1]] for f in fields], axis=0)])
    first_code = code[sorted_rows[np.flatnonzero(opens)]][np.cumsum(opens) - 1]
    keep = np.empty(len(rows), dtype=bool)
    keep[order] = code[sorted_rows] == first_code
    return keep


def _measurement_findings(records: list[ChildRecord], children: list[ChildFindings], maps: CodeMaps) -> list[int]:
    """Adds the findings and lowest z's of the measurements to ``children``; returns the children left to
    be read one by one."""
    counts = [len(r.measurements) for r in records]
    flat: list[Measurement] = list(chain.from_iterable(r.measurements for r in records))
    # One sequence per field, the named tuples transposed at once.
    loincs, values, units, dates = zip(*flat, strict=True)
    owner = np.repeat(np.arange(len(records)), counts)

    ordinals = {d: _NO_DATE if d is None else d.toordinal() for d in set(dates)}
    day = np.fromiter(map(ordinals.__getitem__, dates), np.int64, len(flat))
    births = np.array([r.birth_date.toordinal() for r in records], dtype=np.int64)
    ages = np.array([c.age_days for c in children], dtype=np.int64)
    when = day - births[owner]
    slack = np.array([birth_slack(r) for r in records], dtype=np.int64)[owner]  # measured_at, for all at once
    when = np.where((when < 0) & (when >= -slack), 0, when)
    read = (day != _NO_DATE) & (when <= ages[owner]) & (when >= 0)

    codes = list(dict.fromkeys(loincs))
    code_of = {loinc: k for k, loinc in enumerate(codes)}
    code = np.fromiter(map(code_of.__getitem__, loincs), np.int64, len(flat))
    rules: list[LabRule | None] = []
    kinds: list[int] = []
    for loinc in codes:
        suspicious, rule = maps.lab_meaning(loinc)
        rules.append(rule)
        if loinc in GESTATION_LOINC:
            kinds.append(_GESTATION)
        elif suspicious:
            kinds.append(_SUSPICIOUS)
        elif rule is None:
            kinds.append(_OTHER)
        elif rule.kind.startswith("growth:"):
            indicator = rule.kind.split(":", 1)[1]
            kinds.append(INDICATORS.index(indicator) if indicator in INDICATORS else _OTHER)
        else:
            kinds.append(_LAB)
    kind = np.array(kinds, dtype=np.int64)[code]
    # A growth or lab value dated before birth is listed (extract_findings): such a child is read one by one
    ruled = np.array([r is not None and loinc not in GESTATION_LOINC for loinc, r in zip(codes, rules, strict=True)])
    before_birth = np.unique(owner[(day != _NO_DATE) & (when < 0) & ruled[code]])

    # A genetic test's LOINC code: in genetics care, unless the facts already said why.
    for i in np.unique(owner[read & (kind == _SUSPICIOUS)]).tolist():
        if children[i].status == "screened":
            children[i].status, children[i].reason = "in_genetics_care", "genetic test"

    value = np.array(values, dtype=np.float64)
    _lab_findings(np.flatnonzero(read & (kind == _LAB)), code, value, rules, owner, when, loincs, values, units, children)

    # The first gestational age each child's record gives (screening/gestation.py); one that cannot be read sends
    # the child through extract_findings, which lists it
    correction = np.zeros(len(records), dtype=np.int64)
    unread_gestation: list[int] = []
    rows = np.flatnonzero(read & (kind == _GESTATION))
    firsts = np.unique(owner[rows], return_index=True)[1]
    from_measurement = {int(owner[r]): gestation_days(flat[r]) for r in rows[firsts].tolist()}
    for i, child in enumerate(children):
        days, unread = from_measurement.get(i, (None, None))
        if unread is not None:
            unread_gestation.append(i)
        elif days is not None:
            child.gestation_days = days
        correction[i] = correction_days(child.gestation_days)

    growth = np.flatnonzero(read & (kind >= 0))
    # the factor of each (indicator, unit) pair present, looked up once; an unknown unit makes the value NaN:
    # such a child is read one by one, which lists it as unread
    unit_names = list(dict.fromkeys(units))
    unit_of = {u: j for j, u in enumerate(unit_names)}
    unit = np.fromiter(map(unit_of.__getitem__, units), np.int64, len(units))
    growth = growth[_first_coding(growth, owner, kind, day, value, unit, code)]
    pair = kind[growth] * len(unit_names) + unit[growth]
    pairs, inverse = np.unique(pair, return_inverse=True)
    known = [unit_factor(INDICATORS[p // len(unit_names)], unit_names[p % len(unit_names)]) for p in pairs.tolist()]
    grown = value[growth] * np.array([np.nan if f is None else f for f in known], dtype=np.float64)[inverse]
    at, who = when[growth], owner[growth]
    lying, standing = code_of.get(LYING_LENGTH, -1), code_of.get(STANDING_HEIGHT, -1)
    grown = np.where((code[growth] == lying) & (at >= 731), grown - 0.7, grown)
    grown = np.where((code[growth] == standing) & (at < 731), grown + 0.7, grown)
    # read at corrected age before the second birthday; not before the term-equivalent age (the charts start there)
    at = np.where(at < CORRECTED_UNTIL_DAYS, at - correction[who], at)
    charted = at >= 0
    growth, grown, at, who = growth[charted], grown[charted], at[charted], who[charted]
    odd = np.union1d(np.union1d(np.unique(who[np.isnan(grown)]), np.array(unread_gestation, dtype=np.int64)), before_birth)
    if len(odd):
        keep = ~np.isin(who, odd)
        growth, grown, at, who = growth[keep], grown[keep], at[keep], who[keep]
    results = growth_findings_batch(maps.growth, [c.sex for c in children], who, kind[growth], at, grown)
    for i, (child, (found, lowest, implausible)) in enumerate(zip(children, results, strict=True)):
        child.growth_z = lowest
        child.findings.extend(growth_finding(g, int(correction[i])) for g in found)
        child.unread.extend(implausible_unread(x, int(correction[i])) for x in implausible)
    return [int(i) for i in odd.tolist()]


def _lab_findings(
    rows: np.ndarray,
    code: np.ndarray,
    value: np.ndarray,
    rules: list[LabRule | None],
    owner: np.ndarray,
    when: np.ndarray,
    loincs: Sequence[str],
    values: Sequence[float],
    units: Sequence[str],
    children: list[ChildFindings],
) -> None:
    """A lab value, in its rule's unit, below its low line (else above its high line) is a finding, in
    measurement order, by the lines of its age (``LabRule.lines``: before ``from_day`` only the early line); a value in
    a unit that cannot be converted is listed as unread."""
    if not len(rows):
        return
    # NaN where a rule has no such line (and for codes without a rule): NaN compares False.
    later = [(np.nan, np.nan) if r is None else r.lines(r.from_day) for r in rules]
    early = [(np.nan, np.nan) if r is None else r.lines(r.from_day - 1) for r in rules]
    low_later, high_later = (np.array([np.nan if x is None else x for x in side]) for side in zip(*later, strict=True))
    low_early, high_early = (np.array([np.nan if x is None else x for x in side]) for side in zip(*early, strict=True))
    known: dict[tuple[int, str], float | None] = {}
    factors = np.empty(len(rows), dtype=np.float64)
    for j, k in enumerate(rows.tolist()):
        key = (int(code[k]), units[k])
        if key not in known:
            known[key] = lab_factor(rules[key[0]], units[k])  # type: ignore[arg-type]
        factor = known[key]
        factors[j] = np.nan if factor is None else factor
    unreadable = np.isnan(factors)
    c, v = code[rows], value[rows] * factors
    from_day = np.array([0 if r is None else r.from_day for r in rules], dtype=np.int64)
    is_early = when[rows] < from_day[c]
    low = v < np.where(is_early, low_early[c], low_later[c])  # NaN (no line, no unit) compares False
    high = ~low & (v > np.where(is_early, high_early[c], high_later[c]))
    hit = low | high
    for k in rows[unreadable].tolist():
        children[int(owner[k])].unread.append(lab_unread(rules[int(code[k])], units[k]))  # type: ignore[arg-type]
    for k, is_low, factor in zip(rows[hit].tolist(), low[hit].tolist(), factors[hit].tolist(), strict=True):
        rule = rules[int(code[k])]
        hpo = rule.low_hpo if is_low else rule.high_hpo  # type: ignore[union-attr]
        children[int(owner[k])].findings.append(Finding(str(hpo), int(when[k]), lab_source(loincs[k], values[k], units[k], factor)))
