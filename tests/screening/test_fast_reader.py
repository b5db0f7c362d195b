"""The fast FHIR reader (orjson, only the elements screening uses) reads the same records and reports the
same bad records as the reader that validates every resource with ``fhir.resources``."""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Iterable
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from datasets.emr_records import ChildRecord, DroppedEntry, RecordError
from datasets.fhir_emr import read_fhir, record_to_bundle, records_from_bundle
from datasets.fhir_entry_rules import MONTH_ONLY_BIRTH
from datasets.fhir_fast import read_fhir_fast, records_from_bundle_fast
from screening.findings import CodeMaps
from screening.simulate import simulate_controls
from tests.screening.conftest import ordinary_child, syndromic_child

Item = ChildRecord | RecordError


def _comparable(record: ChildRecord) -> ChildRecord:
    """The record with each dropped entry's reason cut to the element it names (the wording differs)."""
    cut = [DroppedEntry(d.entry, ":".join(d.reason.split(":")[:2])) for d in record.dropped]
    return replace(record, dropped=cut)


def _same(full: Iterable[Item], fast: Iterable[Item]) -> tuple[list[ChildRecord], list[RecordError]]:
    """Assert the two readers agree: equal records (dropped entries naming the same element), the same
    bad records named in the same order."""
    full, fast = list(full), list(fast)
    assert [_comparable(r) for r in fast if isinstance(r, ChildRecord)] == [
        _comparable(r) for r in full if isinstance(r, ChildRecord)
    ]
    fast_errors = [e for e in fast if isinstance(e, RecordError)]
    assert [e.record for e in fast_errors] == [e.record for e in full if isinstance(e, RecordError)]
    return [r for r in fast if isinstance(r, ChildRecord)], fast_errors


def _condition(rid: str, **fields: Any) -> dict[str, Any]:
    resource = {
        "resourceType": "Condition",
        "id": rid,
        "subject": {"reference": "Patient/child-ordinary"},
        "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "Q21.0"}]},
    }
    resource.update(fields)
    return {"resource": resource}


def _observation(rid: str, **fields: Any) -> dict[str, Any]:
    resource = {
        "resourceType": "Observation",
        "id": rid,
        "status": "final",
        "subject": {"reference": "Patient/child-ordinary"},
        "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]},
        "effectiveDateTime": "2022-02-01",
        "valueQuantity": {"value": 90.5, "unit": "cm"},
    }
    resource.update(fields)
    return {"resource": resource}


# Each entry: a resource screening reads with one element either valid in an unusual way or broken.
ODD_ENTRIES = [
    _condition("ok-tz", onsetDateTime="2021-05-03T23:30:00+03:00"),
    _condition("ok-utc", onsetDateTime="2021-05-03T10:00:00.123Z"),
    _condition("ok-partial", onsetDateTime="2021-05"),
    _condition("ok-recorded", recordedDate="2021-06-01"),
    _condition("ok-refuted", verificationStatus={"coding": [{"code": "refuted"}]}),
    _condition("bad-text-only", code={"text": "free text only"}),
    _condition("bad-local-code", code={"coding": [{"system": "http://example.org/local", "code": "L17"}]}),
    _condition("ok-local-and-icd", code={"coding": [{"system": "http://example.org/local", "code": "L17"},
                                                    {"system": "http://hl7.org/fhir/sid/icd-10", "code": "Q21.0"}]}),
    _condition("ok-code-space", code={"coding": [{"system": "http://snomed.info/sct", "code": "Q 21"}]}),
    _condition("bad-date", onsetDateTime="2021-13-45"),
    _condition("bad-feb30", onsetDateTime="2021-02-30"),
    _condition("bad-no-tz", onsetDateTime="2021-05-03T10:00:00"),
    _condition("bad-hour", onsetDateTime="2021-05-03T25:00:00Z"),
    _condition("bad-space", onsetDateTime=" 2021-05-03"),
    _condition("bad_id"),
    _condition("bad-code", code={"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": " Q21"}]}),
    _condition("bad-code-type", code={"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": 21}]}),
    _condition("bad-code-empty", code={"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": ""}]}),
    _condition("bad-coding", code={"coding": {"code": "Q21.0"}}),
    _condition("bad-ref", subject={"reference": ""}),
    _condition("no-subject", subject=None),
    _observation("ok-obs"),
    _observation("ok-obs-string", valueQuantity={"value": "12.5", "code": "kg"}),
    _observation("ok-obs-issued", effectiveDateTime=None, issued="2022-02-01T10:00:00Z"),
    _observation("ok-obs-no-value", valueQuantity={"unit": "cm"}),
    _observation("bad-obs-issued", effectiveDateTime=None, issued="2022-02-01"),
    _observation("bad-obs-bool", valueQuantity={"value": True}),
    _observation("bad-obs-text", valueQuantity={"value": "abc"}),
    _observation("bad-obs-status", status=None),
    _observation("bad-obs-code", code=None),
    _observation("ok-obs-withdrawn", status="entered-in-error"),
    _observation("obs-instant", effectiveDateTime=None, effectiveInstant="2022-02-01T10:00:00Z"),
    _observation("obs-period", effectiveDateTime=None, effectivePeriod={"start": "2022-02-01"}),
    _observation("bad-obs-undated", effectiveDateTime=None),
    # a vital-signs panel: height and weight as components (and a component without a quantity)
    _observation("obs-panel", code={"coding": [{"system": "http://loinc.org", "code": "85353-1"}]}, valueQuantity=None,
                 component=[{"code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]},
                             "valueQuantity": {"value": 91.0, "unit": "cm"}},
                            {"code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
                             "valueQuantity": {"value": 13.1, "unit": "kg"}},
                            {"code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]}}]),
    _observation("bad-obs-component", code={"coding": [{"system": "http://loinc.org", "code": "85353-1"}]}, valueQuantity=None,
                 component=[{"code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]},
                             "valueQuantity": {"value": "tall"}}]),
    _observation("bad-obs-month-only", effectiveDateTime="2022-02"),
    _condition("ok-withdrawn", verificationStatus={"coding": [{"code": "entered-in-error"}]}),
    # phenotypic features as Observations (datasets/fhir_entry_rules.py): read, or dropped when unreadable
    *[
        _observation(rid, code={"coding": [{"system": system, "code": code}]}, valueQuantity=None, **value)
        for rid, system, code, value in [
            ("hpo-present", "http://human-phenotype-ontology.org", "HP:0001250",
             {"valueCodeableConcept": {"coding": [{"system": "http://loinc.org", "code": "LA9633-4"}]}}),
            ("hpo-absent", "http://purl.obolibrary.org/obo/hp.owl", "HP:0001250",
             {"valueCodeableConcept": {"coding": [{"system": "http://loinc.org", "code": "LA9634-2"}]}}),
            ("hpo-boolean", "https://hpo.jax.org/", "HP_0001250", {"valueBoolean": False}),
            ("hpo-no-value", "http://human-phenotype-ontology.org", "HP:0001250", {}),
            ("hpo-interpretation", "http://human-phenotype-ontology.org", "HP:0001250",
             {"interpretation": [{"coding": [{"code": "NEG"}]}]}),
            ("hpo-text", "http://human-phenotype-ontology.org", "HP:0001250", {"valueCodeableConcept": {"text": "Absent"}}),
            ("hpo-withdrawn", "http://human-phenotype-ontology.org", "HP:0001250", {"status": "cancelled"}),
            ("hpo-in-value", "http://loinc.org", "81259-4",
             {"valueCodeableConcept": {"coding": [{"system": "http://human-phenotype-ontology.org", "code": "HP:0001263"}]}}),
            ("bad-hpo-maybe", "http://human-phenotype-ontology.org", "HP:0001250", {"valueString": "maybe"}),
            ("bad-hpo-integer", "http://human-phenotype-ontology.org", "HP:0001250", {"valueInteger": 3}),
            ("bad-hpo-concept", "http://human-phenotype-ontology.org", "HP:0001250",
             {"valueCodeableConcept": {"coding": [{"system": "http://snomed.info/sct", "code": "255604002"}]}}),
        ]
    ],
    _observation("bad-hpo-quantity", code={"coding": [{"system": "http://human-phenotype-ontology.org", "code": "HP:0004322"}]}),
    {
        "resource": {
            "resourceType": "Procedure",
            "id": "ok-proc",
            "status": "completed",
            "subject": {"reference": "Patient/child-ordinary"},
            "performedPeriod": {"start": "2021-07-01"},
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "80146002"}]},
        }
    },
    {"resource": {"resourceType": "Procedure", "id": "bad-proc", "subject": {"reference": "Patient/child-ordinary"}}},
    {
        "resource": {
            "resourceType": "Encounter",
            "id": "ok-enc",
            "status": "finished",
            "class": {"code": "AMB"},
            "subject": {"reference": "Patient/child-ordinary"},
            "period": {"start": "2021-07-01"},
            "type": [{"coding": [{"system": "http://snomed.info/sct", "code": "185349003"}]}],
        }
    },
    {
        "resource": {
            "resourceType": "Encounter",
            "id": "bad-enc",
            "status": "finished",
            "subject": {"reference": "Patient/child-ordinary"},
        }
    },
    {
        "resource": {
            "resourceType": "MedicationRequest",
            "id": "ok-med",
            "status": "active",
            "intent": "order",
            "subject": {"reference": "Patient/child-ordinary"},
            "authoredOn": "2022-01-01",
            "medicationCodeableConcept": {"coding": [{"system": "http://www.whocc.no/atc", "code": "A16AB02"}]},
        }
    },
    {
        "resource": {
            "resourceType": "MedicationRequest",
            "id": "bad-med",
            "status": "active",
            "subject": {"reference": "Patient/child-ordinary"},
            "medicationCodeableConcept": {"coding": [{"code": "A16AB02"}]},
        }
    },
    {"resource": {"resourceType": "Patient", "id": "partial-birth", "birthDate": "2020-05"}},
    {"resource": {"resourceType": "Patient", "id": "year-birth", "birthDate": "2020"}},
    {"resource": {"resourceType": "Patient", "id": "bad-birth", "birthDate": "2020-05-03T00:00:00Z"}},
    {"resource": {"resourceType": "Condition", "id": "orphan", "subject": {"reference": "Patient/nobody"}}},
    {"resource": {"resourceType": "Appointment", "id": "ignored"}},
]


def _without_nones(entry: dict[str, Any]) -> dict[str, Any]:
    resource = {k: v for k, v in entry["resource"].items() if v is not None}
    return {"resource": resource}


def test_round_trip_bundles_give_the_same_records() -> None:
    named = syndromic_child()
    named.name, named.mrn, named.practitioner, named.organization = "Anna Petrova", "MRN-7", "Practitioner/dr-1", "Organization/p9"
    for record in (named, ordinary_child()):
        bundle = record_to_bundle(record)
        records, errors = _same(records_from_bundle(bundle, "t"), records_from_bundle_fast(bundle, "t"))
        assert errors == [] and len(records) == 1
    patient = record_to_bundle(named)["entry"][0]["resource"]
    patient["name"] = [{"given": ["Anna"], "family": "Petrova"}]
    patient["identifier"] = [{"use": "usual", "value": "u-1"},
                             {"type": {"coding": [{"code": "MR"}]}, "value": "MRN-8"}]
    bundle = {"resourceType": "Bundle", "entry": [{"resource": patient}]}
    [record], _ = _same(records_from_bundle(bundle, "t"), records_from_bundle_fast(bundle, "t"))
    assert (record.name, record.mrn) == ("Anna Petrova", "MRN-8")


def test_odd_and_broken_elements_are_read_or_reported_as_the_full_validator_does() -> None:
    bundle = record_to_bundle(ordinary_child())
    bundle["entry"] += [_without_nones(e) for e in ODD_ENTRIES]
    records, errors = _same(
        records_from_bundle(copy.deepcopy(bundle), "x.json"), records_from_bundle_fast(bundle, "x.json")
    )
    record, partial = records
    # a birth date to the month is read as the 15th, and said so; a year alone stays a record error
    assert (partial.patient_id, partial.birth_date) == ("partial-birth", date(2020, 5, 15))
    assert [d.reason for d in partial.dropped] == [MONTH_ONLY_BIRTH]
    assert "a year alone is too coarse" in next(e.reason for e in errors if e.record.endswith("Patient/year-birth"))
    assert record.incomplete  # the bad entries that name the child are listed on its record
    named = {e.record.split()[-1]: e.reason for e in errors} | {d.entry.split()[-1]: d.reason for d in record.dropped}
    assert {n for n in named if "/" in n and n.split("/")[1].startswith("bad")} == {
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in ODD_ENTRIES
        if e["resource"]["id"].startswith("bad")
    }
    assert "onsetDateTime" in named["Condition/bad-date"] and "id" in named["Condition/bad_id"]
    assert "status" in named["Observation/bad-obs-status"]
    assert not any(n.split("/")[-1].startswith("ok") for n in named)
    assert "Condition/no-subject" in {e.record.split()[-1] for e in errors}  # names no child: a record error
    # its own, ok-obs, ok-obs-string, ok-obs-issued, obs-instant, obs-period, obs-panel's two (not ok-obs-withdrawn)
    assert len(record.measurements) == 8
    assert [(m.loinc, m.value) for m in record.measurements[-2:]] == [("8302-2", 91.0), ("29463-7", 13.1)]
    assert "without a full date" in named["Observation/bad-obs-undated"]
    assert "valueString" in named["Observation/bad-hpo-maybe"] and "valueQuantity" in named["Observation/bad-hpo-quantity"]
    # the features, in order: present, absent, false, asserted, NEG, "Absent", the phenotype in the value;
    # the cancelled one and the Condition entered in error are not read
    assert [(f.code, f.refuted) for f in record.facts if f.system == "hpo"] == [
        ("HP:0001250", False), ("HP:0001250", True), ("HP_0001250", True), ("HP:0001250", False),
        ("HP:0001250", True), ("HP:0001250", True), ("HP:0001263", False),
    ]
    read_q21 = [e for e in ODD_ENTRIES if e["resource"]["id"] in {"ok-tz", "ok-utc", "ok-partial", "ok-recorded", "ok-refuted",
                                                                     "ok-local-and-icd"}]
    assert len([f for f in record.facts if f.code == "Q21.0"]) == len(read_q21)  # not ok-withdrawn's


def test_a_leap_second_is_read_as_its_date_by_both_readers() -> None:
    """FHIR's dateTime allows second 60; the validating reader (POST /api/screening) had called such a measurement
    "without a full date" and the child incomplete, while screen-emr read it."""
    bundle = record_to_bundle(ordinary_child())
    child = bundle["entry"][0]["resource"]["id"]
    bundle["entry"].append(
        {
            "resource": {
                "resourceType": "Observation",
                "id": "leap",
                "status": "final",
                "subject": {"reference": f"Patient/{child}"},
                "code": {"coding": [{"system": "http://loinc.org", "code": "3016-3"}]},
                "effectiveDateTime": "2021-12-31T23:59:60Z",
                "valueQuantity": {"value": 3.1, "unit": "mIU/L", "system": "http://unitsofmeasure.org", "code": "m[IU]/L"},
            }
        }
    )
    [record], errors = _same(records_from_bundle(copy.deepcopy(bundle), "t"), records_from_bundle_fast(bundle, "t"))
    assert errors == [] and record.dropped == []
    assert ("3016-3", date(2021, 12, 31)) in [(m.loinc, m.date) for m in record.measurements]


@pytest.mark.parametrize("suffix", [".json", ".ndjson"])
def test_files_with_broken_lines_and_loose_resources(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"extract{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(record_to_bundle(syndromic_child("a"))))
    else:
        loose = [e["resource"] for e in record_to_bundle(ordinary_child("c"))["entry"]]
        lines = [
            json.dumps(record_to_bundle(syndromic_child("a"))),
            "{not json",
            json.dumps({"resourceType": "Patient"}),
            *[json.dumps(r) for r in reversed(loose)],
            json.dumps(record_to_bundle(ordinary_child("b"))),
        ]
        path.write_text("\n".join(lines) + "\n")
    records, errors = _same(read_fhir(path), read_fhir_fast(path))
    assert [r.patient_id for r in records] == (["a"] if suffix == ".json" else ["a", "b", "c"])


def test_simulated_population_reads_identically(tmp_path: Path, maps: CodeMaps) -> None:
    path = tmp_path / "children.ndjson"
    with path.open("w") as out:
        for record, _ in simulate_controls(maps, 300, seed=random.Random(3).randint(0, 999)):
            out.write(json.dumps(record_to_bundle(record)) + "\n")
    records, errors = _same(read_fhir(path), read_fhir_fast(path))
    assert len(records) == 300 and errors == []
