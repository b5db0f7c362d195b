"""The typed Bundle decoder (msgspec structs, :mod:`datasets.fhir_bundle_decoder`) reads a Bundle line with
nothing to report into the same records as the per-resource fast reader, and sends every other line to it:
the NDJSON reader's records, dropped entries and record errors are exactly those of the per-resource
reader, line by line."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from datasets.emr_records import ChildRecord, RecordError
from datasets.errors import ExtractError
from datasets.fhir_bulk import (
    _patient_key,
    _patient_key_by_parsing,
    bulk_files,
    partition_by_patient,
    read_partition_file,
)
from datasets.fhir_bundle_decoder import BundleLineReader
from datasets.fhir_emr import record_to_bundle
from datasets.fhir_fast import read_fhir_fast, records_from_bundle_fast
from tests.screening.conftest import ordinary_child, syndromic_child
from tests.screening.test_fast_reader import ODD_ENTRIES

SOURCE = "extract.ndjson"


def _per_resource(line: bytes, number: int = 1) -> list[ChildRecord | RecordError]:
    """What the per-resource reader makes of one Bundle line (the reference)."""
    return list(records_from_bundle_fast(orjson.loads(line), SOURCE, where=f"line {number} "))


def _read(tmp_path: Path, *lines: bytes) -> list[ChildRecord | RecordError]:
    path = tmp_path / SOURCE
    path.write_bytes(b"\n".join(lines) + b"\n")
    return list(read_fhir_fast(path))


def _line(bundle: dict[str, Any]) -> bytes:
    return json.dumps(bundle).encode()


def _with(*entries: dict[str, Any]) -> dict[str, Any]:
    bundle = record_to_bundle(ordinary_child())
    bundle["entry"] += copy.deepcopy(list(entries))
    return bundle


@pytest.mark.parametrize("odd", ODD_ENTRIES, ids=[e["resource"]["id"] for e in ODD_ENTRIES])
def test_each_odd_entry_reads_as_the_per_resource_reader_and_only_valid_lines_take_the_typed_path(
    tmp_path: Path, odd: dict[str, Any]
) -> None:
    resource = {k: v for k, v in odd["resource"].items() if v is not None}
    line = _line(_with({"resource": resource}))
    assert _read(tmp_path, line) == _per_resource(line)
    typed = BundleLineReader(SOURCE).records(line)
    rid = resource["id"]
    if rid.startswith("ok") or rid == "ignored":
        assert typed == [r for r in _per_resource(line) if isinstance(r, ChildRecord)]
    else:  # reported by the per-resource reader: the typed path stands aside
        assert typed is None


_BIRTH_SEX = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex"


def _clinical_sex(code: str) -> dict[str, Any]:
    """HL7's sex parameter for clinical use (a complex extension, the value in its ``value`` part)."""
    return {"url": "http://hl7.org/fhir/StructureDefinition/patient-sexParameterForClinicalUse", "extension": [
        {"url": "value", "valueCodeableConcept": {"coding": [
            {"system": "http://terminology.hl7.org/CodeSystem/sex-parameter-for-clinical-use", "code": code}]}}]}


# Lines the typed path must either read exactly as the per-resource reader or hand over to it.
SHAPES: dict[str, dict[str, Any]] = {
    # other resource types, whose elements of the same name have other shapes: still read typed
    "organization-name-is-a-string": {"resource": {"resourceType": "Organization", "id": "o1", "name": "Clinic 7"}},
    "appointment-service-type-is-a-list": {
        "resource": {"resourceType": "Appointment", "id": "a1", "status": "booked",
                     "serviceType": [{"coding": [{"code": "x"}]}], "participant": []}
    },
    "coverage-class-is-a-list": {"resource": {"resourceType": "Coverage", "id": "c1", "class": [{"value": "g"}]}},
    "unknown-elements-skipped": {
        "resource": {
            "resourceType": "Condition", "id": "u1", "subject": {"reference": "Patient/child-ordinary"},
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "80146002", "display": "x"}], "text": "t"},
            "clinicalStatus": {"coding": [{"code": "active"}]}, "extension": [{"url": "u", "valueDecimal": 1.5e300}],
            "note": [{"text": "Zoë \u00e9"}],
        }
    },
    "encounter-class-as-a-string": {
        "resource": {"resourceType": "Encounter", "id": "e1", "status": "finished", "class": "AMB",
                     "subject": {"reference": "Patient/child-ordinary"}, "period": {"start": "2022-03-01"},
                     "serviceType": {"coding": [{"system": "http://snomed.info/sct", "code": "394537008"}]}}
    },
    "medication-concept-null": {
        "resource": {"resourceType": "MedicationRequest", "id": "m1", "status": "active", "intent": "order",
                     "subject": {"reference": "Patient/child-ordinary"}, "medicationCodeableConcept": None}
    },
    "medication-reference-only": {
        "resource": {"resourceType": "MedicationRequest", "id": "m2", "status": "active", "intent": "order",
                     "subject": {"reference": "Patient/child-ordinary"}, "medicationReference": {"reference": "M/1"}}
    },
    "observation-integer-value": {
        "resource": {"resourceType": "Observation", "id": "w1", "status": "final",
                     "subject": {"reference": "Patient/child-ordinary"}, "effectiveDateTime": "2022-02-01",
                     "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
                     "valueQuantity": {"value": 14, "unit": "kg"}}
    },
    # shapes msgspec refuses, where the per-resource reader reads or reports: handed over
    "observation-status-a-list": {
        "resource": {"resourceType": "Observation", "id": "w2", "status": ["final"],
                     "subject": {"reference": "Patient/child-ordinary"},
                     "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]}}
    },
    "observation-via-patient-element": {
        "resource": {"resourceType": "Observation", "id": "w3", "status": "final",
                     "patient": {"reference": "Patient/child-ordinary"}, "effectiveDateTime": "2022-02-01",
                     "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]},
                     "valueQuantity": {"value": 91}}
    },
    "encounter-type-null": {
        "resource": {"resourceType": "Encounter", "id": "e2", "status": "finished", "class": {"code": "AMB"},
                     "subject": {"reference": "Patient/child-ordinary"}, "type": None}
    },
    "medication-missing": {
        "resource": {"resourceType": "MedicationRequest", "id": "m3", "status": "active", "intent": "order",
                     "subject": {"reference": "Patient/child-ordinary"}}
    },
    "identifier-use-a-number": {"resource": {"resourceType": "Patient", "id": "p2", "birthDate": "2021-01-01",
                                             "identifier": [{"use": 3, "value": "v"}]}},
    "bad-id-of-a-skipped-resource": {"resource": {"resourceType": "Organization", "id": "o_1"}},
    # a Patient in active use (as most servers write it) is read typed; one who has died, a merged record, one
    # not in use, or deceased[x] given twice (invalid) goes to the per-resource reader
    "patient-active": {"resource": {"resourceType": "Patient", "id": "p3", "birthDate": "2021-01-01", "active": True}},
    "patient-deceased": {"resource": {"resourceType": "Patient", "id": "p4", "birthDate": "2021-01-01",
                                      "deceasedDateTime": "2023-04"}},
    "patient-deceased-boolean": {"resource": {"resourceType": "Patient", "id": "p5", "birthDate": "2021-01-01",
                                              "deceasedBoolean": True}},
    "patient-alive": {"resource": {"resourceType": "Patient", "id": "p6", "birthDate": "2021-01-01",
                                   "deceasedBoolean": False}},
    "patient-replaced": {"resource": {"resourceType": "Patient", "id": "p7", "birthDate": "2021-01-01",
                                      "link": [{"other": {"reference": "Patient/p8"}, "type": "replaced-by"}]}},
    "patient-inactive": {"resource": {"resourceType": "Patient", "id": "p9", "birthDate": "2021-01-01", "active": False}},
    "patient-deceased-twice": {"resource": {"resourceType": "Patient", "id": "p10", "birthDate": "2021-01-01",
                                            "deceasedBoolean": True, "deceasedDateTime": "2023-04-01"}},
    "patient-active-a-string": {"resource": {"resourceType": "Patient", "id": "p11", "birthDate": "2021-01-01",
                                             "active": "yes"}},
    # the sex a growth chart is read by, in an extension: read typed where the gender decides, else handed over
    "patient-birth-sex-beside-a-gender": {"resource": {"resourceType": "Patient", "id": "p12", "birthDate": "2021-01-01",
                                                       "gender": "female", "extension": [{"url": _BIRTH_SEX, "valueCode": "F"}]}},
    "patient-birth-sex-of-unknown-gender": {"resource": {"resourceType": "Patient", "id": "p13", "birthDate": "2021-01-01",
                                                         "gender": "unknown", "extension": [{"url": _BIRTH_SEX, "valueCode": "F"}]}},
    "patient-sex-for-clinical-use": {"resource": {"resourceType": "Patient", "id": "p14", "birthDate": "2021-01-01",
                                                  "gender": "other", "extension": [_clinical_sex("male-typical")]}},
    # a gestational age written as text is handed over; another value as text is no measurement, read typed
    "observation-gestation-as-text": {
        "resource": {"resourceType": "Observation", "id": "g1", "status": "final",
                     "subject": {"reference": "Patient/child-ordinary"}, "effectiveDateTime": "2021-01-01",
                     "code": {"coding": [{"system": "http://loinc.org", "code": "76516-4"}]}, "valueString": "28+3"}
    },
    "observation-other-text": {
        "resource": {"resourceType": "Observation", "id": "g2", "status": "final",
                     "subject": {"reference": "Patient/child-ordinary"}, "effectiveDateTime": "2021-01-01",
                     "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]}, "valueString": "tall"}
    },
}
_HANDED_OVER = {
    "observation-status-a-list", "observation-via-patient-element", "encounter-type-null",
    "identifier-use-a-number", "bad-id-of-a-skipped-resource", "medication-missing",
    "patient-deceased", "patient-deceased-boolean", "patient-alive", "patient-replaced", "patient-inactive",
    "patient-deceased-twice", "patient-active-a-string", "patient-birth-sex-of-unknown-gender",
    "patient-sex-for-clinical-use", "observation-gestation-as-text", "medication-reference-only",
}


@pytest.mark.parametrize("name", list(SHAPES))
def test_shapes_of_other_types_and_refused_types_read_as_the_per_resource_reader(tmp_path: Path, name: str) -> None:
    line = _line(_with(SHAPES[name]))
    assert _read(tmp_path, line) == _per_resource(line)
    assert (BundleLineReader(SOURCE).records(line) is None) == (name in _HANDED_OVER)



@pytest.mark.parametrize(
    "entries",
    [
        ["not an entry"],  # an entry that is not an object
        [{"resource": ["a", "list"]}],  # a resource that is not an object
        [{"resource": None}, {"fullUrl": "urn:x"}],  # entries without a resource are skipped
        [{"resource": {"resourceType": "Condition", "id": "c9", "subject": {"reference": "Patient/nobody"}}}],
        [{"resource": {"resourceType": "Patient", "id": "twin", "birthDate": "2021-02-03"}},
         {"resource": {"resourceType": "Patient", "id": "twin", "birthDate": "2021-02-04", "gender": "female"}}],
    ],
    ids=["entry-not-an-object", "resource-a-list", "no-resource", "unknown-patient", "same-patient-twice"],
)
def test_a_line_with_a_malformed_entry_gives_the_same_result_as_before(tmp_path: Path, entries: list[Any]) -> None:
    bundle = record_to_bundle(syndromic_child())
    bundle["entry"] += entries
    line = _line(bundle)
    assert _read(tmp_path, line) == _per_resource(line)


def test_broken_json_invalid_utf8_and_loose_resources_are_handed_over(tmp_path: Path) -> None:
    good = _line(record_to_bundle(syndromic_child("a")))
    loose = _line(record_to_bundle(ordinary_child("c"))["entry"][0]["resource"])
    items = _read(tmp_path, good, b"{not json", b'{"resourceType": "Bundle", "entry": {"a": 1}}', loose)
    errors = [(e.record, e.reason.split(":")[0]) for e in items if isinstance(e, RecordError)]
    assert errors == [("line 2", "not JSON"), ("line 3 ", "invalid Bundle")]
    assert [r.patient_id for r in items if isinstance(r, ChildRecord)] == ["a", "c"]
    # invalid UTF-8, even in an element nobody reads: msgspec would skip it, orjson refuses the line, and the file
    # is refused whole (a file that is not UTF-8 is not JSON; its children had gone unscreened, charset review 4)
    bad_utf8 = good[:-1] + b', "meta": {"source": "\xff"}}'
    assert BundleLineReader(SOURCE).records(bad_utf8) is None
    with pytest.raises(ExtractError, match=r"not UTF-8 text \(byte 0xff at line 2, byte offset \d+ "):
        _read(tmp_path, good, bad_utf8, loose)


def test_a_number_beyond_the_double_range_in_an_unread_element_is_the_one_difference(tmp_path: Path) -> None:
    """orjson refuses 1e400 anywhere in a line (not JSON); the typed decoder skips the elements it does
    not read without converting their numbers, so it reads the line's child (RFC 8259 allows such a
    number, and ``json.loads``, the full validator's parser, reads it as infinity)."""
    line = _line(record_to_bundle(syndromic_child("a")))[:-1] + b', "meta": {"versionId": 1e400}}'
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(line)
    [record] = _read(tmp_path, line)
    assert isinstance(record, ChildRecord) and record.patient_id == "a"


def test_a_bundle_json_file_reads_typed_as_before(tmp_path: Path) -> None:
    odd = [{k: v for k, v in e["resource"].items() if v is not None} for e in ODD_ENTRIES]
    typed = [shape for name, shape in SHAPES.items() if name not in _HANDED_OVER]
    bundle = _with(*typed, *[{"resource": r} for r in odd if r["id"].startswith("ok")])
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(bundle, indent=2))
    assert BundleLineReader("bundle.json").records(path.read_bytes()) is not None
    assert list(read_fhir_fast(path)) == list(records_from_bundle_fast(bundle, "bundle.json"))


def _partition_of(tmp_path: Path, resources: list[Any]) -> Path:
    """A Bulk Data export of ``resources`` split into one partition file, as population runs split it."""
    export = tmp_path / "export"
    export.mkdir()
    (export / "Resources.ndjson").write_text("".join(json.dumps(r) + "\n" for r in resources))
    [part] = partition_by_patient(bulk_files(export), tmp_path / "split", 1)
    return part


@pytest.mark.parametrize(
    ("name", "resource"),
    [(n, s["resource"]) for n, s in SHAPES.items()]
    + [(e["resource"]["id"], {k: v for k, v in e["resource"].items() if v is not None}) for e in ODD_ENTRIES],
)
def test_a_bulk_partition_reads_typed_as_the_per_resource_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, resource: dict[str, Any]
) -> None:
    loose = [e["resource"] for e in record_to_bundle(ordinary_child())["entry"]]
    part = _partition_of(tmp_path, [*loose[:3], resource, *loose[3:]])
    texts = [line.partition(b"\t")[2] for line in part.read_bytes().splitlines(keepends=True)]
    typed = BundleLineReader(SOURCE).resource_records(texts)
    read = list(read_partition_file(part, SOURCE))
    monkeypatch.setattr(BundleLineReader, "resource_records", lambda self, texts: None)  # the per-resource way
    assert read == list(read_partition_file(part, SOURCE))
    valid = name not in _HANDED_OVER and (name in SHAPES or name.startswith("ok") or name == "ignored")
    assert (typed is not None) == valid
    if typed is not None:
        assert typed == read


def test_the_splitter_finds_each_resources_patient_as_a_full_parse_does() -> None:
    lines = [json.dumps(e["resource"]).encode() for e in ODD_ENTRIES + list(SHAPES.values())]
    lines += [json.dumps(e["resource"]).encode() for e in record_to_bundle(syndromic_child())["entry"]]
    lines += [
        b"{not json", b"[1, 2]", b'"text"', b"null",
        b'{"resourceType": "Patient", "id": 7}', b'{"resourceType": "Patient"}',
        b'{"resourceType": "Condition", "subject": "Patient/a"}',
        b'{"resourceType": "Condition", "subject": {"reference": 5}, "patient": {"reference": "Patient/b"}}',
        b'{"resourceType": "Condition", "subject": {"display": "x"}, "patient": {"reference": "Patient/c"}}',
        b'{"resourceType": "Condition", "subject": null, "patient": {"reference": "d"}}',
        b'{"resourceType": "Condition", "subject": {"reference": "Patient/e"}, "note": "\xff"}',
        '{"resourceType": "Condition", "subject": {"reference": "Patient/Zo\u00eb"}}'.encode(),
    ]
    keys = [_patient_key(line) for line in lines]
    assert keys == [_patient_key_by_parsing(line) for line in lines]
    assert {"b", "c", "d", "Zo\u00eb", "child-syndromic"} <= {k for k in keys if k}
