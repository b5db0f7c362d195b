"""The batched paths of population runs give the child-by-child values exactly: z-scores of many
measurements, growth findings of many children, findings of a batch of records, closures of a batch."""

from __future__ import annotations

import math
from datetime import date, timedelta

import numpy as np
import pytest

from datasets.emr_records import ChildRecord, CodedFact, DroppedEntry, Measurement
from datasets.fhir_entry_rules import MONTH_ONLY_BIRTH
from screening.batch_screen import closures_of
from screening.findings import CodeMaps, extract_findings
from screening.findings_batch import extract_findings_batch
from screening.growth import INDICATORS, GrowthStandards, growth_findings, growth_findings_batch, load_growth_standards
from screening.knowledge import KnowledgeBase
from screening.simulate import simulate_controls
from tests.screening.conftest import ordinary_child, syndromic_child

AS_OF = date(2024, 3, 1)


@pytest.fixture(scope="module")
def standards() -> GrowthStandards:
    return load_growth_standards()


def _same(a: float | None, b: float) -> bool:
    return math.isnan(b) if a is None else a == b  # bit for bit, not approximately


def test_z_many_equals_z_on_edge_ages_sexes_and_values(standards: GrowthStandards) -> None:
    rng = np.random.default_rng(16)
    cases = []
    for indicator in INDICATORS:
        for sex in ("M", "F", "U", ""):
            # every age the tables hold, the days around their ends, and ages no table holds
            ages = [-1, 0, 1, 730, 731, 1825, 1826, 1827, 1856, 1857, 2556, 2557, 2558, 2570, 2600, 5000]
            ages += rng.integers(0, 2600, 300).tolist()
            for age in ages:
                median = {"lhfa": 60.0 + age * 0.03, "hcfa": 35.0 + age * 0.006, "wfa": 3.3 + age * 0.008}[indicator]
                # around the median, beyond +-3 SD (WHO's restricted rule), beyond 6 SD, zero, negative, NaN, inf
                for value in (median, median * 0.7, median * 1.4, median * 0.3, median * 3.0, 0.0, -1.0, math.nan, math.inf):
                    cases.append((indicator, sex, age, value))
                cases.append((indicator, sex, age, float(median * rng.uniform(0.5, 1.6))))
    curve = np.array([standards.curve(i, s) for i, s, _, _ in cases], dtype=np.int64)
    day = np.array([a for _, _, a, _ in cases], dtype=np.int64)
    value = np.array([v for _, _, _, v in cases], dtype=np.float64)
    z = standards.z_many(curve, day, value)
    expected = [standards.z(i, s, a, v) for i, s, a, v in cases]
    assert all(_same(e, got) for e, got in zip(expected, z.tolist(), strict=True))
    assert sum(e is None for e in expected) > 1000 and sum(e is not None and abs(e) > 3 for e in expected) > 100


def _random_series(rng: np.random.Generator, n_children: int) -> tuple[list[str], list[list[tuple[str, int, float]]]]:
    sexes, series = [], []
    for _ in range(n_children):
        sexes.append(str(rng.choice(["M", "F", "F", "M", "U"])))
        measurements: list[tuple[str, int, float]] = []
        for _ in range(int(rng.integers(0, 12))):
            indicator = str(rng.choice(INDICATORS))
            age = int(rng.choice([0, 30, 59, 60, 61, 120, 365, 366, 700, 731, 1500, 1826, 2500, 2600]))
            age = age if rng.random() < 0.5 else int(rng.integers(0, 2600))
            median = {"lhfa": 50.0 + age * 0.035, "hcfa": 35.0 + age * 0.006, "wfa": 3.3 + age * 0.007}[indicator]
            value = float(median * rng.choice([1.0, rng.normal(1.0, 0.12), 0.6, 1.6, 5.0]))
            measurements.append((indicator, age, value))
            if rng.random() < 0.2:  # the same day twice, or the same measurement again
                measurements.append((indicator, age, value if rng.random() < 0.5 else value * 0.9))
        series.append(measurements)
    return sexes, series


def _median(standards: GrowthStandards, indicator: str, age: int) -> float:
    ages, _, medians, _ = standards.curves[(indicator, "M")]
    return float(np.interp(float(age), ages, medians))


def test_growth_findings_batch_equals_growth_findings(standards: GrowthStandards) -> None:
    rng = np.random.default_rng(7)
    sexes, series = _random_series(rng, 3000)
    series[0] = [("wfa", 60, 5.1), ("wfa", 300, 6.4)]  # failure to thrive (test_growth_findings)
    series[1] = [("hcfa", 300, 39.5), ("hcfa", 365, 40.0), ("hcfa", 540, 47.5)]  # persists at two
    sexes[0], sexes[1] = "F", "M"
    # z's of exactly 0 (a value on the median; -0.0 where L < 0) and tied z's: the lowest z of a series
    # is the second of Python's stable sort
    medians = {i: [_median(standards, i, a) for a in (100, 400, 900)] for i in INDICATORS}
    series[2] = [(i, a, m) for i in INDICATORS for a, m in zip((100, 400, 900), medians[i], strict=True)]
    series[3] = [("wfa", 400, medians["wfa"][1]), ("wfa", 100, medians["wfa"][0]), ("lhfa", 50, 40.0), ("lhfa", 60, 40.0)]
    sexes[2] = sexes[3] = "M"
    rows = [(c, INDICATORS.index(i), a, v) for c, m in enumerate(series) for i, a, v in m]
    child, indicator, age = (np.array([r[k] for r in rows], dtype=np.int64) for k in range(3))
    batch = growth_findings_batch(standards, sexes, child, indicator, age, np.array([r[3] for r in rows]))
    one_by_one = [growth_findings(standards, sex, m) for sex, m in zip(sexes, series, strict=True)]
    assert batch == one_by_one
    assert list(batch[1][1]) == ["hcfa"] and batch[0][0][0].hpo == "HP:0001508"
    assert [math.copysign(1.0, v) for v in batch[2][1].values()] == [math.copysign(1.0, v) for v in one_by_one[2][1].values()]
    assert batch[2][1] == {"lhfa": 0.0, "hcfa": 0.0, "wfa": 0.0}
    assert sum(len(bad) for _, _, bad in batch) > 100  # values 5x the median: listed, not read (the same either way)
    found = [g.hpo for f, _, _ in batch for g in f]
    assert found.count("HP:0001508") > 20 and len(set(found)) == 7  # all six threshold terms and failure to thrive
    empty = growth_findings_batch(standards, ["M"], *(np.zeros(0, dtype=np.int64) for _ in range(3)), np.zeros(0))
    assert empty == [([], {}, [])]


def _odd_records(maps: CodeMaps) -> list[ChildRecord]:
    """Records with every branch of the measurement rules."""
    out = []
    birth = date(2020, 6, 1)
    labs = ordinary_child("labs")
    labs.measurements += [
        Measurement("2345-7", 35.0, "mg/dL", date(2020, 5, 2)),  # day 1: transitional, no finding
        Measurement("3016-3", 20.0, "mIU/L", date(2020, 5, 3)),  # day 2: the TSH surge after birth, no finding
        Measurement("2157-6", 900.0, "U/L", date(2020, 5, 3)),  # day 2: the creatine kinase of birth, no finding
        Measurement("2157-6", 900.0, "U/L", date(2020, 5, 6)),  # day 5: raised creatine kinase
        # beyond what the first days make ordinary: findings then too
        Measurement("3016-3", 120.0, "mIU/L", date(2020, 5, 3)),  # day 2: a congenital hypothyroidism recall
        Measurement("2157-6", 9000.0, "U/L", date(2020, 5, 2)),  # day 1: a muscular dystrophy's CK
        Measurement("15074-8", 1.1, "mmol/L", date(2020, 5, 1)),  # day 0: treated even in the first hours
        Measurement("17861-6", 5.5, "mg/dL", date(2020, 5, 2)),  # day 1: below the preterm definition
        Measurement("17861-6", 6.5, "mg/dL", date(2020, 5, 2)),  # day 1: early neonatal hypocalcaemia, no finding
        Measurement("2345-7", 35.0, "mg/dL", date(2020, 5, 5)),  # day 4: hypoglycaemia
        Measurement("718-7", 8.0, "g/dL", date(2022, 1, 1)),  # haemoglobin below its line: a finding
        Measurement("718-7", 12.0, "g/dL", date(2022, 2, 1)),
        Measurement("1742-6", 250.0, "U/L", date(2022, 3, 1)),  # ALT above its line
        Measurement("1742-6", 250.0, "U/L", date(2025, 3, 1)),  # after the screening date
        Measurement("2345-7", 30.0, "mg/dL", date(2021, 3, 1)),
        Measurement("99999-9", 1.0, "", date(2021, 3, 1)),  # a code no rule names
    ]
    out.append(labs)
    units = ChildRecord("units", birth, "F")
    for k, (loinc, value, unit) in enumerate(
        [("8302-2", 0.7, "m"), ("8306-3", 800.0, "mm"), ("8308-9", 33.0, "[in_i]"), ("29463-7", 9000.0, "g"),
         ("3141-9", 22.0, "[lb_av]"), ("29463-7", 11.0, ""), ("9843-4", 44.0, " CM "), ("8287-5", 45.0, "cm"),
         ("8306-3", 95.0, "cm"), ("8308-9", 70.0, "cm")]
    ):
        units.measurements.append(Measurement(loinc, value, unit, birth + timedelta(days=100 + 150 * k)))
    out.append(units)
    tested = syndromic_child("tested")
    tested.measurements.append(Measurement("51969-4", 1.0, "", date(2022, 5, 1)))  # a genetic test
    out.append(tested)
    late_test = syndromic_child("tested-later")
    late_test.measurements.append(Measurement("51969-4", 1.0, "", date(2025, 5, 1)))  # after the screening date
    out.append(late_test)
    drug_and_test = syndromic_child("drug")
    drug_and_test.facts.append(CodedFact("medication", "atc", "A16AB02", date(2022, 1, 1)))
    out.append(drug_and_test)
    unknown_sex = syndromic_child("unknown-sex")
    unknown_sex.sex = "U"
    out.append(unknown_sex)
    nan = syndromic_child("nan-growth")
    nan.measurements.insert(1, Measurement("8302-2", math.nan, "cm", date(2022, 1, 1)))
    out.append(nan)
    before_birth = syndromic_child("before-birth")
    before_birth.measurements.append(Measurement("8302-2", 45.0, "cm", date(2021, 1, 1)))
    out.append(before_birth)
    month_only = syndromic_child("month-only")  # born in March 2021, read as the 15th: the 2nd's length is at birth
    month_only.birth_date = date(2021, 3, 15)
    month_only.dropped.append(DroppedEntry("Patient/month-only", MONTH_ONLY_BIRTH))
    out.append(month_only)
    out.append(ChildRecord("nothing", birth, "M"))
    old = syndromic_child("old")
    old.birth_date = date(2010, 1, 1)
    out.append(old)
    return out


def test_findings_of_a_batch_equal_child_by_child(maps: CodeMaps) -> None:
    records = [record for record, _ in simulate_controls(maps, 1500, seed=16)] + _odd_records(maps)
    records.insert(700, syndromic_child("in-the-middle"))
    for as_of in (AS_OF, date(2025, 6, 1)):
        batch = extract_findings_batch(records, maps, as_of)
        assert batch == [extract_findings(r, maps, as_of) for r in records]
    by_id = {c.patient_id: c for c in extract_findings_batch(records, maps, AS_OF)}
    assert {f.source.split("=")[0] for f in by_id["labs"].findings} >= {"loinc:718-7", "loinc:1742-6"}
    # the first days of life by their own rule (loinc_findings.tsv from_day): transitional glucose, the TSH surge
    # and the creatine kinase of birth; a value beyond what those days make ordinary is a finding then too
    early = ("loinc:2345-7", "loinc:15074-8", "loinc:3016-3", "loinc:2157-6", "loinc:17861-6")
    assert [(f.source, f.hpo, f.age_days) for f in by_id["labs"].findings if f.source.startswith(early)] == [
        ("loinc:2157-6=900", "HP:0003236", 5), ("loinc:3016-3=120", "HP:0002925", 2), ("loinc:2157-6=9000", "HP:0003236", 1),
        ("loinc:15074-8=1.1", "HP:0001943", 0), ("loinc:17861-6=5.5", "HP:0002901", 1), ("loinc:2345-7=35", "HP:0001943", 4),
        ("loinc:2345-7=30", "HP:0001943", 304)]
    assert by_id["tested"].status == "in_genetics_care" and by_id["tested-later"].status == "screened"
    assert by_id["drug"].status == "already_diagnosed" and by_id["old"].status == "out_of_age"
    # a child of unknown sex has growth, read on both charts (screening/growth.py); it had none
    assert set(by_id["unknown-sex"].growth_z) == set(by_id["in-the-middle"].growth_z) != set()
    assert set(by_id["units"].growth_z) == set(INDICATORS)
    # a length dated before birth (a wrong birth date, or a wrong date) is listed, not skipped without a word
    assert [d.reason for d in by_id["before-birth"].unread] == ["dated 2021-01-01, before the birth date 2021-03-01: not read"]
    assert by_id["month-only"].unread == [] and set(by_id["month-only"].growth_z) == set(by_id["in-the-middle"].growth_z)
    assert extract_findings_batch([], maps, AS_OF) == []


def test_closures_of_a_batch_equal_closure_of(kb: KnowledgeBase, maps: CodeMaps) -> None:
    info = kb.information
    assert info is not None
    records = [record for record, _ in simulate_controls(maps, 300, seed=3)] + [syndromic_child()]
    observed = [kb.indices(extract_findings(r, maps, AS_OF).present) for r in records] + [[]]
    batch = closures_of(info, observed)
    for got, terms in zip(batch, observed, strict=True):
        expected = info.closure_of(terms)
        assert got.dtype == expected.dtype and np.array_equal(got, expected)
    assert sum(len(c) == 0 for c in batch) >= 1 and max(len(c) for c in batch) > 20
