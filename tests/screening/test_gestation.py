"""A preterm child's growth is read at corrected age until the second birthday (screening/gestation.py): ordinary
prematurity is no short stature, microcephaly or decreased weight."""

from __future__ import annotations

import json
from datetime import date, timedelta

import numpy as np

from datasets.emr_records import ChildRecord, CodedFact, Measurement
from screening.findings import CodeMaps, extract_findings
from screening.findings_batch import extract_findings_batch
from screening.growth import DECREASED_WEIGHT, MICROCEPHALY, SHORT_STATURE

BIRTH, AS_OF = date(2023, 1, 10), date(2024, 6, 1)
GROWTH = {SHORT_STATURE, MICROCEPHALY, DECREASED_WEIGHT}
LOINC = {"lhfa": ("8306-3", "cm"), "hcfa": ("9843-4", "cm"), "wfa": ("29463-7", "kg")}


def _centile(maps: CodeMaps, indicator: str, sex: str, age_days: int, z: float) -> float:
    ages, ls, ms, ss = maps.growth.curves[(indicator, sex)]
    l_, m_, s_ = (float(np.interp(age_days, ages, col)) for col in (ls, ms, ss))
    return m_ * (1 + l_ * s_ * z) ** (1 / l_)


def _born_at(maps: CodeMaps, weeks: int, z: float = 0.0, visits: tuple[int, ...] = (60, 120, 180, 270, 365)) -> ChildRecord:
    """A girl born at ``weeks`` who grows on the ``z`` centile for her corrected age."""
    early = (40 - weeks) * 7
    record = ChildRecord(f"born-{weeks}", BIRTH, "F")
    for day in visits:
        for indicator, (loinc, unit) in LOINC.items():
            # before the term-equivalent age: smaller than a term newborn (the term charts do not read it)
            value = _centile(maps, indicator, "F", day - early, z) if day >= early else 0.8 * _centile(maps, indicator, "F", 0, z)
            record.measurements.append(Measurement(loinc, round(value, 2), unit, BIRTH + timedelta(days=day)))
    return record


def _growth(record: ChildRecord, maps: CodeMaps) -> set[str]:
    return {f.hpo for f in extract_findings(record, maps, AS_OF).findings} & GROWTH


def test_a_preterm_child_on_her_centile_has_no_growth_finding_at_corrected_age(maps: CodeMaps) -> None:
    record = _born_at(maps, 28)
    assert SHORT_STATURE in _growth(record, maps)  # by chronological age: 12 weeks of growth short
    for written in (Measurement("76516-4", 28.0, "wk", BIRTH), Measurement("49052-4", 196.0, "d", BIRTH),
                    Measurement("11884-4", 28.0, "weeks", BIRTH)):
        told = _born_at(maps, 28)
        told.measurements.append(written)
        child = extract_findings(told, maps, AS_OF)
        assert child.gestation_days == 196 and _growth(told, maps) == set() and child.unread == [], written
        assert all(abs(z) < 0.5 for z in child.growth_z.values())
    coded = _born_at(maps, 28)
    coded.facts.append(CodedFact("condition", "icd10", "P07.31", BIRTH))  # ICD-10-CM: preterm newborn, 28 weeks
    assert extract_findings(coded, maps, AS_OF).gestation_days == 196 and _growth(coded, maps) == set()
    who = _born_at(maps, 28)
    who.facts.append(CodedFact("condition", "icd10", "P07.3", BIRTH))  # WHO ICD-10: 28-36 weeks, no week named
    assert extract_findings(who, maps, AS_OF).gestation_days is None and _growth(who, maps) == _growth(record, maps)


def test_corrected_age_keeps_real_findings_dates_them_by_age_and_stops_at_two(maps: CodeMaps) -> None:
    small = _born_at(maps, 30, z=-2.6)  # below the line even for her corrected age
    small.measurements.append(Measurement("76516-4", 30.0, "wk", BIRTH))
    child = extract_findings(small, maps, AS_OF)
    found = [f for f in child.findings if f.hpo in GROWTH]
    assert {f.hpo for f in found} == GROWTH
    assert {f.age_days for f in found} == {120}  # the first measurement after the term-equivalent age (70 days)
    assert all(f.source.endswith("at corrected age (born 10 weeks early)") for f in found)
    # after the second birthday the chronological age is read again
    older = _born_at(maps, 30, visits=(800, 900))
    older.measurements.append(Measurement("76516-4", 30.0, "wk", BIRTH))
    assert extract_findings(older, maps, date(2025, 9, 1)).growth_z["lhfa"] < -0.3


def test_a_gestational_age_that_cannot_be_read_is_listed(maps: CodeMaps) -> None:
    for bad, reason in ((Measurement("76516-4", 2.1, "kg", BIRTH), "gestational age in 'kg': not weeks (wk) or days (d)"),
                        (Measurement("76516-4", 60.0, "wk", BIRTH), "gestational age 60 wk: not 22-45 weeks")):
        record = _born_at(maps, 28)
        record.measurements.insert(0, bad)
        record.facts.append(CodedFact("condition", "icd10", "P07.31", BIRTH))
        child = extract_findings(record, maps, AS_OF)
        assert [d.reason for d in child.unread] == [reason]
        assert child.gestation_days == 196 and _growth(record, maps) == set()  # the code still names the weeks


def test_the_batch_reads_gestation_as_child_by_child(maps: CodeMaps) -> None:
    records = []
    for weeks in (24, 28, 32, 36, 39):
        for how in ("loinc", "code", "bad", "none"):
            record = _born_at(maps, weeks, z=-1.5, visits=(20, 60, 120, 365, 700, 731, 800))
            record.patient_id = f"{weeks}-{how}"
            if how == "loinc":
                record.measurements.insert(3, Measurement("76516-4", float(weeks), "wk", BIRTH))
            elif how == "code" and weeks < 37:
                record.facts.append(CodedFact("condition", "icd10", f"P07.3{weeks - 27}" if weeks >= 28 else "P07.24", BIRTH))
            elif how == "bad":
                record.measurements.append(Measurement("76516-4", float(weeks), "months", BIRTH))
            records.append(record)
    for as_of in (AS_OF, date(2025, 6, 1)):
        assert extract_findings_batch(records, maps, as_of) == [extract_findings(r, maps, as_of) for r in records]
    corrected = [c for c in extract_findings_batch(records, maps, date(2025, 6, 1)) if c.gestation_days is not None]
    assert len(corrected) == 5 + 4
    listed = [[d.reason for d in c.unread] for c in extract_findings_batch(records, maps, AS_OF)]
    assert sum(any(r.startswith("gestational age in 'months'") for r in reasons) for reasons in listed) == 5
    # by chronological age, a 24-weeker's length and head before her term-equivalent age lie beyond WHO's 6 SD:
    # listed as implausible (they had been dropped without a word); at corrected age they are not charted at all
    by_id = dict(zip((r.patient_id for r in records), listed, strict=True))
    assert any("beyond the 6 SD of a plausible value" in r for r in by_id["24-none"])
    assert not any("beyond the 6 SD" in r for r in by_id["24-loinc"] + by_id["24-code"])


def test_a_csv_extract_gives_the_weeks_at_birth_in_its_patients_file(maps: CodeMaps, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from datasets.emr_csv import read_csv_extract

    (tmp_path / "patients.csv").write_text(
        "patient_id,birth_date,sex,gestational_age\np1,2023-01-10,F,28+3\np2,2023-01-10,F,\"30,5\"\np3,2023-01-10,F,39\n"
        "p4,2023-01-10,F,about 28\np5,2023-01-10,F,28 3/7\np6,2023-01-10,F,28 weeks 3 days\np7,2023-01-10,F,28 SSW + 3 d\n")
    (tmp_path / "diagnoses.csv").write_text("patient_id,date,system,code\n")
    (tmp_path / "observations.csv").write_text("patient_id,date,loinc,value,unit\n")
    records = list(read_csv_extract(tmp_path))
    assert [extract_findings(r, maps, AS_OF).gestation_days for r in records] == [  # type: ignore[arg-type]
        199, 214, 273, None, 199, 199, 199]
    assert [d.reason for d in records[3].dropped] == [  # type: ignore[union-attr]
        "gestational_age 'about 28' is not completed weeks at birth (28, 28.5, 28+3 or 28 3/7)"]


def test_a_fhir_record_gives_the_weeks_at_birth_as_text(maps: CodeMaps, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Czech and other European profiles write the gestational age as text ("28+3"); it had been no measurement, and
    the child's growth was read by chronological age without a word. Every reader reads it now, or lists it."""
    from datasets.fhir_emr import read_fhir, record_to_bundle
    from datasets.fhir_fast import read_fhir_fast

    def observation(code: str, text: str) -> dict:  # type: ignore[type-arg]
        return {"resourceType": "Observation", "id": f"ga-{len(text)}", "status": "final",
                "subject": {"reference": "Patient/born-28"}, "effectiveDateTime": BIRTH.isoformat(),
                "code": {"coding": [{"system": "http://loinc.org", "code": code}]}, "valueString": text}

    for code, text, days, listed in (("76516-4", "28+3", 199, ""), ("11884-4", "28 3/7", 199, ""),
                                     ("49052-4", "199", 199, ""), ("76516-4", "early", None,
                                     "valueString 'early': a gestational age that is not weeks (28, 28.5, 28+3 or 28 3/7)")):
        bundle = record_to_bundle(_born_at(maps, 28))
        bundle["entry"].append({"resource": observation(code, text)})
        for layout, lines in (("bundle", [bundle]), ("bulk export", [e["resource"] for e in bundle["entry"]])):
            path = tmp_path / "extract.ndjson"
            path.write_text("".join(json.dumps(line) + "\n" for line in lines))
            for reader in (read_fhir, read_fhir_fast):
                (record,) = list(reader(path))
                assert isinstance(record, ChildRecord), (text, layout, reader.__name__)
                child = extract_findings(record, maps, AS_OF)
                assert child.gestation_days == days, (text, layout, reader.__name__)
                # read by chronological age when the weeks cannot be read: 12 weeks of growth short
                assert (SHORT_STATURE in _growth(record, maps)) == (days is None), (text, layout, reader.__name__)
                assert [d.reason.split(": ", 1)[-1] for d in record.dropped] == ([listed] if listed else []), (
                    text, layout, reader.__name__)
