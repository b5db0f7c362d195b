"""EMR readers: FHIR R4 Bundles and NDJSON (validated by fhir.resources), the CSV extract, and their
per-record errors: one bad record never stops a batch."""

from __future__ import annotations

import json
import re
from datetime import date
from pathlib import Path

import pytest

from datasets.emr_csv import read_csv_extract
from datasets.emr_records import ChildRecord, RecordError
from datasets.errors import ExtractError
from datasets.fhir_emr import fhir_id, read_fhir, record_to_bundle, records_from_bundle
from tests.screening.conftest import ordinary_child, syndromic_child


def _split(items: list[ChildRecord | RecordError]) -> tuple[list[ChildRecord], list[RecordError]]:
    return [i for i in items if isinstance(i, ChildRecord)], [i for i in items if isinstance(i, RecordError)]


def test_a_bundle_round_trips_through_the_fhir_models() -> None:
    original = syndromic_child()
    records, errors = _split(list(records_from_bundle(record_to_bundle(original), "test")))
    assert errors == []
    [record] = records
    assert record.birth_date == original.birth_date and record.sex == "F"
    assert sorted((f.system, f.code, f.date) for f in record.facts) == sorted(
        (f.system, f.code, f.date) for f in original.facts
    )
    assert len(record.measurements) == len(original.measurements)
    assert record.measurements[0].unit == "cm"


def test_malformed_resources_are_reported_one_by_one_and_the_rest_is_read() -> None:
    bundle = record_to_bundle(ordinary_child())
    bundle["entry"] += [
        {"resource": {"resourceType": "Condition", "id": "bad-date", "subject": {"reference": "Patient/child-ordinary"},
                      "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "Q21.0"}]},
                      "onsetDateTime": "2021-13-45"}},
        {"resource": {"resourceType": "Observation", "id": "no-status", "code": {"text": "height"},
                      "subject": {"reference": "Patient/child-ordinary"}}},
        {"resource": {"resourceType": "Condition", "id": "orphan", "subject": {"reference": "Patient/nobody"},
                      "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "Q02"}]}}},
        {"resource": {"resourceType": "Patient", "id": "no-birth-date", "gender": "male"}},
        {"resource": {"resourceType": "Appointment", "id": "ignored"}},
    ]
    records, errors = _split(list(records_from_bundle(bundle, "upload.json")))
    assert [r.patient_id for r in records] == ["child-ordinary"]
    assert len(records[0].facts) == 3  # the three valid conditions are still read
    # The child's own unreadable entries are listed on the record, which is therefore incomplete.
    assert records[0].incomplete
    dropped = " | ".join(f"{d.entry}: {d.reason}" for d in records[0].dropped)
    assert "Condition/bad-date" in dropped and "onsetDateTime" in dropped
    assert "Observation/no-status" in dropped and len(records[0].dropped) == 2
    reasons = " | ".join(f"{e.record}: {e.reason}" for e in errors)
    assert "Patient/no-birth-date" in reasons and "no birthDate" in reasons
    assert "reference a Patient not in the input" in reasons and "nobody" not in reasons  # no identifier in clear
    assert len(errors) == 2


def test_ids_the_project_writes_are_valid_fhir_ids() -> None:
    record = ordinary_child("case-PMID_24739679_patient_K1")
    record.name, record.mrn, record.practitioner = "Anna Petrova", "MRN-0042", "Practitioner/dr-a"
    bundle = record_to_bundle(record)
    records, errors = _split(list(records_from_bundle(bundle, "test")))
    assert errors == [] and not records[0].incomplete
    assert re.fullmatch(r"[A-Za-z0-9.-]{1,64}", records[0].patient_id)
    assert records[0].patient_id.startswith("case-PMID-24739679-patient-K1")
    assert fhir_id("case-PMID-1") == "case-PMID-1"  # a valid id is kept as it is
    assert (records[0].name, records[0].mrn, records[0].practitioner) == ("Anna Petrova", "MRN-0042", "Practitioner/dr-a")
    assert fhir_id("x" * 100) != fhir_id("x" * 99) and len(fhir_id("x" * 100)) <= 64


def test_ndjson_with_a_broken_line_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "extract.ndjson"
    lines = [json.dumps(record_to_bundle(syndromic_child("a"))), "{not json", json.dumps({"resourceType": "Patient"}),
             json.dumps(record_to_bundle(ordinary_child("b")))]
    path.write_text("\n".join(lines) + "\n")
    records, errors = _split(list(read_fhir(path)))
    assert [r.patient_id for r in records] == ["a", "b"]
    assert [e.record for e in errors][0] == "line 2"
    assert "not a FHIR Bundle" not in errors[0].reason and "not JSON" in errors[0].reason


def test_a_bulk_export_of_loose_resources_is_grouped_by_patient(tmp_path: Path) -> None:
    path = tmp_path / "bulk.ndjson"
    resources = [e["resource"] for e in record_to_bundle(ordinary_child("c"))["entry"]]
    path.write_text("\n".join(json.dumps(r) for r in reversed(resources)) + "\n")
    records, errors = _split(list(read_fhir(path)))
    assert errors == [] and len(records) == 1 and len(records[0].facts) == 3


def test_a_repeated_patient_resource_is_the_same_child_and_a_differing_one_is_listed(tmp_path: Path) -> None:
    """The last Patient resource of an id had replaced the first without a word (and with it the child's age): the
    first is read; a repeat that agrees is nothing more, one that says another birth date is an unread entry."""
    from datasets.fhir_fast import read_fhir_fast

    bundle = record_to_bundle(syndromic_child("twice"))
    patient = next(e for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")["resource"]
    younger = {**patient, "birthDate": "2023-01-01"}
    loose = [e["resource"] for e in bundle["entry"]]
    for layout, lines, differs in (
        ("bundle, the same Patient twice", [{**bundle, "entry": [*bundle["entry"], {"resource": dict(patient)}]}], False),
        ("bundle, another birth date", [{**bundle, "entry": [*bundle["entry"], {"resource": younger}]}], True),
        ("bulk export, another birth date", [*loose, younger], True),
    ):
        path = tmp_path / "extract.ndjson"
        path.write_text("".join(json.dumps(line) + "\n" for line in lines))
        for reader in (read_fhir, read_fhir_fast):
            records, errors = _split(list(reader(path)))
            assert errors == [] and [r.patient_id for r in records] == ["twice"], (layout, reader.__name__)
            record = records[0]
            assert record.birth_date.isoformat() == patient["birthDate"] and len(record.facts) > 3, (layout, reader.__name__)
            repeats = [d.reason for d in record.dropped if "again" in d.reason]
            assert repeats == ([f"Patient twice again, with birth date 2023-01-01 and sex {record.sex} where the first read "
                                f"says {patient['birthDate']} and {record.sex}: the first is read"] if differs else []), layout


def test_a_sex_written_another_way_is_read_and_one_no_reader_knows_is_listed(tmp_path: Path) -> None:
    """A German extract's "w", an ISO/IEC 5218 "2", a FHIR writer's "F": each had been read as "not known" without a
    word, and a child of unknown sex lost the growth findings of her own chart. Now they are read; a value no reader
    knows is still "not known" (growth on both charts), listed on the record, so the child is incomplete."""
    from datasets.fhir_fast import read_fhir_fast

    folder = tmp_path / "csv"
    folder.mkdir()
    values = {"w": "F", "weiblich": "F", "2": "F", "1": "M", "m": "M", " Female ": "F", "d": "U", "unknown": "U", "": "U",
              "q": "U"}
    _write(folder, "patients.csv", ["patient_id,birth_date,sex"] + [f"p{k},2021-01-01,{v}" for k, v in enumerate(values)])
    _write(folder, "diagnoses.csv", ["patient_id,date,system,code"])
    _write(folder, "observations.csv", ["patient_id,date,loinc,value,unit"])
    records, errors = _split(list(read_csv_extract(folder)))
    assert errors == [] and [r.sex for r in records] == list(values.values())
    assert [[d.reason for d in r.dropped] for r in records] == [[]] * 9 + [
        ["sex 'q' is not male, female, other or unknown (nor M/F/U, 1/2/0/9 or m/w/d): read as not known"]]
    assert records[-1].dropped[0].entry == "patients.csv:11"

    for gender, sex, listed in (("F", "F", False), ("other", "U", False), ("girl", "U", True)):
        bundle = record_to_bundle(syndromic_child("g"))
        patient = next(e for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")["resource"]
        patient["gender"] = gender
        for layout, lines in (("bundle", [bundle]), ("bulk export", [e["resource"] for e in bundle["entry"]])):
            path = tmp_path / "extract.ndjson"
            path.write_text("".join(json.dumps(line) + "\n" for line in lines))
            for reader in (read_fhir, read_fhir_fast):
                (record,) = list(reader(path))
                assert isinstance(record, ChildRecord) and record.sex == sex, (gender, layout, reader.__name__)
                assert [d.reason for d in record.dropped] == (
                    [f"gender {gender!r} is not male, female, other or unknown (nor M/F/U, 1/2/0/9 or m/w/d): read as not known"]
                    if listed else []
                ), (gender, layout, reader.__name__)


def test_the_sex_a_growth_chart_needs_is_read_from_the_patients_extensions(tmp_path: Path) -> None:
    """A child whose administrative gender is "other" or "unknown" may still have a sex at birth (US Core's birthsex)
    or a sex parameter for clinical use (HL7, meant for reference ranges and charts, so it decides where present).
    Before, such a child was read on both growth charts; a gender of male or female stays as it was."""
    from datasets.fhir_fast import read_fhir_fast

    birth_sex = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex"

    def clinical(code: str) -> dict:  # type: ignore[type-arg]
        return {"url": "http://hl7.org/fhir/StructureDefinition/patient-sexParameterForClinicalUse", "extension": [
            {"url": "period", "valuePeriod": {"start": "2021-01-01"}},
            {"url": "value", "valueCodeableConcept": {"coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/sex-parameter-for-clinical-use", "code": code}]}}]}

    for gender, extensions, sex in (
        ("unknown", [{"url": birth_sex, "valueCode": "F"}], "F"),
        ("other", [{"url": "http://example.org/x", "valueString": "y"}, {"url": birth_sex, "valueCode": "M"}], "M"),
        ("unknown", [{"url": birth_sex, "valueCode": "UNK"}], "U"),
        ("female", [{"url": birth_sex, "valueCode": "M"}], "F"),  # a known gender stands beside the birth sex
        ("other", [clinical("female-typical")], "F"),
        ("male", [clinical("female-typical"), {"url": birth_sex, "valueCode": "M"}], "F"),  # for clinical use: decides
        ("unknown", [clinical("specified")], "U"),
        (None, [{"url": birth_sex, "valueCode": "F"}], "F"),
    ):
        bundle = record_to_bundle(syndromic_child("g"))
        patient = next(e for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")["resource"]
        patient.pop("gender")
        if gender is not None:
            patient["gender"] = gender
        patient["extension"] = extensions
        for layout, lines in (("bundle", [bundle]), ("bulk export", [e["resource"] for e in bundle["entry"]])):
            path = tmp_path / "extract.ndjson"
            path.write_text("".join(json.dumps(line) + "\n" for line in lines))
            for reader in (read_fhir, read_fhir_fast):
                (record,) = list(reader(path))
                assert isinstance(record, ChildRecord) and record.sex == sex, (gender, extensions, layout, reader.__name__)
                assert record.dropped == [], (gender, layout, reader.__name__)


def _write(folder: Path, name: str, rows: list[str]) -> None:
    (folder / name).write_text("\n".join(rows) + "\n")


def test_csv_extract_sorted_and_unsorted_give_the_same_records(tmp_path: Path) -> None:
    patients = ["patient_id,birth_date,sex", "p1,2020-01-01,F", "p2,2021-06-30,male", "p3,not-a-date,M"]
    diagnoses = ["patient_id,date,system,code,kind,status", "p1,2021-01-02,icd10,Q21.0,,", "p1,2021-02-02,icd10,R62.0,,",
                 "p2,2022-01-01,snomed,394580004,encounter,", "p2,2022-02-01,hpo,HP:0000252,,refuted",
                 "p2,2022-03-01,nonsense,X,,", "zz,2022-01-01,icd10,Q02,,"]
    observations = ["patient_id,date,loinc,value,unit", "p1,2021-01-02,8302-2,70.5,cm", 'p1,2021-03-02,8302-2,"72,5",cm',
                    'p2,2022-01-01,29463-7,"3,450",g', "p2,2022-01-01,29463-7,abc,kg"]
    for layout, order in (("sorted", 1), ("unsorted", -1)):
        folder = tmp_path / layout
        folder.mkdir()
        _write(folder, "patients.csv", patients)
        _write(folder, "diagnoses.csv", [diagnoses[0]] + diagnoses[1:][::order])
        _write(folder, "observations.csv", observations)
        records, errors = _split(list(read_csv_extract(folder)))
        by_id = {r.patient_id: r for r in records}
        assert set(by_id) == {"p1", "p2"}
        assert {f.code for f in by_id["p1"].facts} == {"Q21.0", "R62.0"}
        assert [m.value for m in by_id["p1"].measurements] == [70.5, 72.5] and by_id["p1"].birth_date == date(2020, 1, 1)
        assert {(f.kind, f.refuted) for f in by_id["p2"].facts} == {("encounter", False), ("condition", True)}
        reasons = sorted(e.reason.split(":")[0] for e in errors)
        assert reasons == ["1 rows reference no patient in patients.csv", "invalid patient row"], layout
        assert any(e.reason == "invalid patient row: birth_date 'not-a-date' is not a date written YYYY-MM-DD" for e in errors)
        # p2's diagnosis in a system not read and its invalid observation row are listed on its record: it is incomplete.
        assert not by_id["p1"].incomplete
        # "3,450" g may be 3450 g written with a thousands separator: not read as 3.45
        assert sorted(d.reason.split(":")[0] for d in by_id["p2"].dropped) == [
            "invalid observation row", "invalid observation row", "unread diagnosis row"]


def test_a_repeated_patient_row_is_an_error_not_a_second_child_without_findings(tmp_path: Path) -> None:
    """The first row takes all of the child's diagnoses; a repeat had been read as the same child again, with
    none: "screened, low risk" beside (or in the store, in place of) the child's real result."""
    diagnoses = ["patient_id,date,system,code", "p1,2021-01-02,icd10,Q21.0", "p1,2021-02-02,hpo,HP:0001250"]
    for layout, patients in (
        ("sorted", ["patient_id,birth_date,sex", "p1,2020-01-01,F", "p1,2019-01-01,F", "p2,2021-01-01,M"]),
        ("unsorted", ["patient_id,birth_date,sex", "p2,2021-01-01,M", "p1,2020-01-01,F", "p2,2021-01-01,M", "p1,2019-01-01,F"]),
    ):
        folder = tmp_path / layout
        folder.mkdir()
        _write(folder, "patients.csv", patients)
        _write(folder, "diagnoses.csv", diagnoses)
        _write(folder, "observations.csv", ["patient_id,date,loinc,value,unit"])
        records, errors = _split(list(read_csv_extract(folder)))
        assert sorted(r.patient_id for r in records) == ["p1", "p2"], layout
        p1 = next(r for r in records if r.patient_id == "p1")
        assert p1.birth_date == date(2020, 1, 1) and {f.code for f in p1.facts} == {"Q21.0", "HP:0001250"}
        repeats = sorted(e.record for e in errors)
        assert repeats == (["patients.csv:3"] if layout == "sorted" else ["patients.csv:4", "patients.csv:5"]), layout
        assert all("repeats patients.csv:" in e.reason and "one row per child" in e.reason for e in errors)


def test_a_csv_message_names_the_line_the_row_begins_on(tmp_path: Path) -> None:
    """Rows had been counted instead of lines: after a quoted line break and a blank line, the errors named lines
    3 and 4 for rows on lines 5 and 6 of the file."""
    (tmp_path / "patients.csv").write_bytes(b'patient_id,birth_date,sex,name\r\nc1,2022-03-01,F,"Anna\r\nMaria"\r\n'
                                            b"\r\nc2,2022-13-01,M,Ben\r\nc1,2022-04-01,F,Anna\r\n")
    _write(tmp_path, "diagnoses.csv", ["patient_id,date,system,code"])
    _write(tmp_path, "observations.csv", ["patient_id,date,loinc,value,unit"])
    records, errors = _split(list(read_csv_extract(tmp_path)))
    assert [r.patient_id for r in records] == ["c1"]
    assert sorted((e.record, e.reason.split(":")[0]) for e in errors) == [
        ("patients.csv:5", "invalid patient row"), ("patients.csv:6", "patient_id 'c1' repeats patients.csv")]


def test_a_missing_csv_file_or_column_stops_the_batch_with_its_name(tmp_path: Path) -> None:
    _write(tmp_path, "patients.csv", ["patient_id,birth_date,sex", "p1,2021-01-01,F"])
    _write(tmp_path, "diagnoses.csv", ["patient_id,date,code", "p1,2021-02-01,Q90.9"])  # no system column
    with pytest.raises(ExtractError, match="diagnoses.csv has no column system"):
        list(read_csv_extract(tmp_path))
    _write(tmp_path, "diagnoses.csv", ["patient_id,date,system,code", "p1,2021-02-01,icd10,Q90.9"])
    with pytest.raises(ExtractError, match="observations.csv is missing"):
        list(read_csv_extract(tmp_path))


def test_excel_exports_read_or_stop_with_what_to_do(tmp_path: Path) -> None:
    """Excel's "CSV UTF-8" starts each file with a byte-order mark, which had made the first column "no column
    patient_id"; a Windows-1252 export had stopped the batch with a traceback; a semicolon-separated one (Excel
    in much of Europe) is told apart from a file missing its columns."""
    (tmp_path / "patients.csv").write_bytes(b"\xef\xbb\xbfpatient_id,birth_date,sex,name\r\np1,2021-01-01,F,Anna\r\n")
    (tmp_path / "diagnoses.csv").write_bytes(b"\xef\xbb\xbfpatient_id,date,system,code\r\np1,2022-01-01,icd10,Q90.9\r\n")
    (tmp_path / "observations.csv").write_bytes(b"\xef\xbb\xbfpatient_id,date,loinc,value,unit\r\n")
    records, errors = _split(list(read_csv_extract(tmp_path)))
    assert errors == [] and [(r.patient_id, r.name, [f.code for f in r.facts]) for r in records] == [("p1", "Anna", ["Q90.9"])]
    rows = [b"patient_id,birth_date,sex,name"] + [b"p%05d,2021-01-01,F,Anna" % i for i in range(2000)] + [b"p99999,2021-01-01,M,J\xfcrgen"]
    (tmp_path / "patients.csv").write_bytes(b"\n".join(rows) + b"\n")  # the byte far past the header
    with pytest.raises(ExtractError, match=r"patients.csv is not UTF-8 text \(byte 0xfc cannot be read\): export it as UTF-8"):
        list(read_csv_extract(tmp_path))
    _write(tmp_path, "patients.csv", ["patient_id;birth_date;sex", "p1;2021-01-01;F"])
    with pytest.raises(ExtractError, match="its header has ';': comma-separated columns are read"):
        list(read_csv_extract(tmp_path))


def test_a_byte_order_mark_before_the_first_record_is_read_past(tmp_path: Path) -> None:
    """Windows tools (PowerShell's Out-File -Encoding utf8) write UTF-8 with a byte-order mark: the file's first
    child had been a "not JSON" record error, unscreened, in every reader and layout."""
    from datasets.extract_partitions import plan_partitions, read_partition
    from datasets.fhir_fast import read_fhir_fast

    bom = b"\xef\xbb\xbf"
    bundles = [record_to_bundle(syndromic_child("first")), record_to_bundle(ordinary_child("second"))]
    (tmp_path / "children.ndjson").write_bytes(bom + b"".join(json.dumps(b).encode() + b"\n" for b in bundles))
    (tmp_path / "child.json").write_bytes(bom + json.dumps(bundles[0]).encode())
    export = tmp_path / "export"
    export.mkdir()
    for rtype in ("Patient", "Condition"):
        lines = [json.dumps(e["resource"]) for b in bundles for e in b["entry"] if e["resource"]["resourceType"] == rtype]
        (export / f"{rtype}.ndjson").write_bytes(bom + "\n".join(lines).encode() + b"\n")
    for path, expected in ((tmp_path / "children.ndjson", ["first", "second"]), (tmp_path / "child.json", ["first"])):
        for reader in (read_fhir, read_fhir_fast):
            records, errors = _split(list(reader(path)))
            assert errors == [] and [r.patient_id for r in records] == expected, (path.name, reader.__name__)
    for source in (tmp_path / "children.ndjson", export):
        split = tmp_path / f"split-{source.name}"
        items = [i for p in plan_partitions(source, split, 1 << 20) for i in read_partition(p)]
        records, errors = _split(items)
        assert errors == [] and sorted(r.patient_id for r in records) == ["first", "second"], source.name


def _loose_lines(records: list[ChildRecord]) -> list[bytes]:
    """The resources of ``records`` as a Bulk Data export writes them: every Patient, then the rest."""
    resources = [e["resource"] for r in records for e in record_to_bundle(r)["entry"]]
    resources.sort(key=lambda r: r["resourceType"] != "Patient")
    return [json.dumps(r).encode() + b"\n" for r in resources]


@pytest.mark.parametrize("full_validation", [False, True])
def test_every_file_of_a_folder_is_read_whatever_its_layout(tmp_path: Path, full_validation: bool) -> None:
    """A folder of NDJSON files of Bundles had been taken for a Bulk Data export, whose reader skipped Bundle
    lines: every child in them was lost with exit code 0, and so were the Bundle .json files beside one .ndjson."""
    from datasets.extract_partitions import plan_partitions, read_partition

    children = {n: syndromic_child(n) if n in "ace" else ordinary_child(n) for n in "abcde"}
    folder = tmp_path / "extract"
    folder.mkdir()
    (folder / "children-1.ndjson").write_bytes(b"".join(json.dumps(record_to_bundle(children[n])).encode() + b"\n" for n in "ab"))
    (folder / "child-c.json").write_text(json.dumps(record_to_bundle(children["c"])))
    # loose resources, with one child's whole Bundle among them
    (folder / "resources.ndjson").write_bytes(b"".join(_loose_lines([children["d"]]))
                                              + json.dumps(record_to_bundle(children["e"])).encode() + b"\n")
    items = [i for p in plan_partitions(folder, tmp_path / "split", 1 << 20) for i in read_partition(p, full_validation)]
    records, errors = _split(items)
    assert errors == []
    assert {r.patient_id: len(r.facts) for r in records} == {n: len(c.facts) for n, c in children.items()}


@pytest.mark.parametrize("first_line", [b"\xef\xbb\xbf", b'{"resourceType": "Patient", "id": \n'])
def test_a_file_of_loose_resources_is_split_by_patient_past_a_bom_or_a_broken_first_line(
    tmp_path: Path, first_line: bytes
) -> None:
    """A loose-resource file whose first line did not parse (a byte-order mark on it, or a broken line) had been
    read as Bundle lines and cut into byte ranges: children whose diagnoses fell in another range were "screened",
    risk 0.0001, their diagnoses in the errors file as unattached resources."""
    from datasets.extract_partitions import plan_partitions, read_partition

    children = [syndromic_child(f"child-{k}") for k in range(3)]
    lines = _loose_lines(children)
    path = tmp_path / "export.ndjson"
    path.write_bytes(first_line + lines[0] + b"".join(lines[1:]) if first_line.startswith(b"\xef") else first_line + b"".join(lines))
    partitions = plan_partitions(path, tmp_path / "split", 2000)  # several partitions, as 16 MB make of a real extract
    assert len(partitions) > 1 and {p.kind for p in partitions} == {"resources"}
    records, errors = _split([i for p in partitions for i in read_partition(p)])
    assert {r.patient_id: len(r.facts) for r in records} == {c.patient_id: len(c.facts) for c in children}
    assert [e.reason.split(":")[0] for e in errors] == ([] if first_line.startswith(b"\xef") else ["not JSON"])


@pytest.mark.parametrize("text", ["NaN", "nan", "Infinity", "-inf", "1e400", "1_0"])
def test_a_value_that_is_no_finite_number_is_listed_in_every_reader(tmp_path: Path, text: str) -> None:
    """float() takes "NaN", "Infinity" and "1_0": a NaN weight had vanished without a word (the child "screened")
    and an "Infinity" TSH had been a raised TSH; the validating reader listed both, so the readers disagreed."""
    from datasets.emr_records import Measurement
    from datasets.fhir_fast import read_fhir_fast

    child = ordinary_child("c")
    child.measurements = [Measurement("3016-3", 3.0, "m[IU]/L", date(2022, 1, 1))]
    bundle = record_to_bundle(child)
    [observation] = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"]
    observation["valueQuantity"]["value"] = text
    path = tmp_path / "child.json"
    path.write_text(json.dumps(bundle))
    for reader in (read_fhir, read_fhir_fast):
        [record] = list(reader(path))
        assert isinstance(record, ChildRecord) and record.measurements == [] and record.incomplete, reader.__name__
        assert [d.reason.split(":")[0] for d in record.dropped] in (["invalid Observation"], ["unread Observation"])
    _write(tmp_path, "patients.csv", ["patient_id,birth_date,sex", "c,2020-01-01,F"])
    _write(tmp_path, "diagnoses.csv", ["patient_id,date,system,code"])
    _write(tmp_path, "observations.csv", ["patient_id,date,loinc,value,unit", f"c,2022-01-01,3016-3,{text},m[IU]/L",
                                          "c,2022-02-01,3016-3,1e1,m[IU]/L"])
    [record] = list(read_csv_extract(tmp_path))
    assert isinstance(record, ChildRecord) and [m.value for m in record.measurements] == [10.0]
    assert [d.reason for d in record.dropped] == [f"invalid observation row: {text!r} is "
                                                  + ("beyond any measurement" if text == "1e400" else "not a number")]


def test_a_value_given_as_a_bound_is_listed_not_read_as_the_bound(tmp_path: Path) -> None:
    """A laboratory writes a value beyond its measuring range as ">10" (Quantity.comparator): it had been read as
    exactly 10, so a TSH of ">10" was no raised TSH and the child "screened" on a complete record."""
    from datasets.emr_records import Measurement
    from datasets.fhir_bulk import read_partition_file
    from datasets.fhir_fast import read_fhir_fast

    child = ordinary_child("c")
    child.measurements = [Measurement("3016-3", 10.0, "m[IU]/L", date(2022, 1, 1)), Measurement("718-7", 12.0, "g/dL", date(2022, 1, 1))]
    bundle = record_to_bundle(child)
    tsh = next(e["resource"] for e in bundle["entry"] if e["resource"].get("code", {}).get("coding", [{}])[0].get("code") == "3016-3")
    tsh["valueQuantity"]["comparator"] = ">"
    path = tmp_path / "child.json"
    path.write_text(json.dumps(bundle))
    part = tmp_path / "part.ndjson"  # a Bulk Data partition: "<file>:<line>\t<resource>"
    part.write_text("".join(f"x.ndjson:{k}\t{json.dumps(e['resource'])}\n" for k, e in enumerate(bundle["entry"], 1)))
    for name, items in (("read_fhir", read_fhir(path)), ("read_fhir_fast", read_fhir_fast(path)),
                        ("bulk partition", read_partition_file(part, "x.ndjson"))):
        [record] = list(items)
        assert isinstance(record, ChildRecord) and record.incomplete, name
        assert [m.loinc for m in record.measurements] == ["718-7"], name
        assert [d.reason for d in record.dropped] == ["unread Observation: valueQuantity >10 m[IU]/L: a bound, not a measured value"], name
    _write(tmp_path, "patients.csv", ["patient_id,birth_date,sex", "c,2020-01-01,F"])
    _write(tmp_path, "diagnoses.csv", ["patient_id,date,system,code"])
    _write(tmp_path, "observations.csv", ["patient_id,date,loinc,value,unit", "c,2022-01-01,3016-3,>10,m[IU]/L"])
    [record] = list(read_csv_extract(tmp_path))
    assert isinstance(record, ChildRecord) and record.measurements == []
    assert [d.reason for d in record.dropped] == ["invalid observation row: >10: a bound, not a measured value"]


_NUSINERSEN = {"coding": [{"system": "http://www.whocc.no/atc", "code": "M09AX07", "display": "nusinersen"}]}


def _request(patient: str, rid: str, **medication: object) -> dict[str, object]:
    return {"resourceType": "MedicationRequest", "id": rid, "status": "active", "intent": "order",
            "subject": {"reference": f"Patient/{patient}"}, "authoredOn": "2023-01-05", **medication}


def test_a_drug_named_by_reference_is_read_from_its_medication(tmp_path: Path) -> None:
    """medicationReference (to a Medication in the Bundle, contained, or in an export's Medication.ndjson) is how
    Epic and many US Core servers write a drug: it had not been read at all, and a child on nusinersen was flagged
    as an unrecognised rare-disease suspect on a complete record."""
    from datasets.extract_partitions import plan_partitions, read_partition
    from datasets.fhir_fast import read_fhir_fast

    medication = {"resourceType": "Medication", "id": "nus", "code": _NUSINERSEN}
    forms = {
        "by-id": ([medication], {"medicationReference": {"reference": "Medication/nus"}}),
        "by-url": ([medication], {"medicationReference": {"reference": "urn:uuid:5b0e1c1e-0000-4000-8000-000000000001"}}),
        "contained": ([], {"contained": [dict(medication, id="m")], "medicationReference": {"reference": "#m"}}),
        "elsewhere": ([], {"medicationReference": {"reference": "Medication/absent", "display": "nusinersen"}}),
    }
    for form, (extra, named) in forms.items():
        bundle = record_to_bundle(ordinary_child(form))
        bundle["entry"] += [{"fullUrl": "urn:uuid:5b0e1c1e-0000-4000-8000-000000000001", "resource": r} for r in extra]
        bundle["entry"].append({"resource": _request(form, "mr", **named)})
        path = tmp_path / f"{form}.json"
        path.write_text(json.dumps(bundle))
        for reader in (read_fhir, read_fhir_fast):
            [record] = list(reader(path))
            assert isinstance(record, ChildRecord), (form, reader.__name__)
            drugs = [(f.system, f.code) for f in record.facts if f.kind == "medication"]
            if form == "elsewhere":
                assert drugs == [] and [d.reason for d in record.dropped] == [
                    "unread MedicationRequest: medicationReference Medication/absent (nusinersen): no Medication with a"
                    " code by that reference in the input, the drug is not read"], reader.__name__
            else:
                assert drugs == [("atc", "M09AX07")] and not record.incomplete, (form, reader.__name__)
    # a Bulk Data export: the Medication in its own file, the children split over several partitions
    export = tmp_path / "export"
    export.mkdir()
    children = [ordinary_child(f"c{k}") for k in range(6)]
    resources = [e["resource"] for c in children for e in record_to_bundle(c)["entry"]]
    resources += [_request(c.patient_id, f"mr{k}", medicationReference={"reference": "Medication/nus"}) for k, c in enumerate(children)]
    for rtype in ("Patient", "Condition", "MedicationRequest"):
        (export / f"{rtype}.ndjson").write_text("".join(json.dumps(r) + "\n" for r in resources if r["resourceType"] == rtype))
    (export / "Medication.ndjson").write_text(json.dumps(medication) + "\n")
    partitions = plan_partitions(export, tmp_path / "split", 600)
    assert len(partitions) > 1
    records, errors = _split([i for p in partitions for i in read_partition(p)])
    assert errors == [] and len(records) == 6
    assert all([(f.system, f.code) for f in r.facts if f.kind == "medication"] == [("atc", "M09AX07")] for r in records)


def test_a_resource_naming_its_patient_by_identifier_is_that_childs(tmp_path: Path) -> None:
    """A logical reference (subject.identifier, valid R4) had been "has no subject reference": a syndromic child
    whose Conditions all named it so was "screened", risk 0.0001, on a complete record."""
    from datasets.fhir_fast import read_fhir_fast

    mrn = {"system": "urn:oid:1.2.3.4", "value": "MRN-77"}
    for form, subject in (("by-identifier", {"identifier": mrn}), ("by-value", {"identifier": {"value": "MRN-77"}}),
                          ("no-such-patient", {"identifier": {**mrn, "value": "MRN-78"}})):
        child = syndromic_child(form)
        bundle = record_to_bundle(child)
        for entry in bundle["entry"]:
            resource = entry["resource"]
            if resource["resourceType"] == "Patient":
                resource["identifier"] = [{"system": "urn:oid:9.9", "value": "other"}, mrn]
            else:
                resource["subject"] = subject
        path = tmp_path / f"{form}.json"
        path.write_text(json.dumps(bundle))
        for reader in (read_fhir, read_fhir_fast):
            records, errors = _split(list(reader(path)))
            assert len(records) == 1, (form, reader.__name__)
            if form == "no-such-patient":
                assert len(records[0].facts) == 0 and len(errors) == len(child.facts) + len(child.measurements)
                assert errors[0].reason.endswith("names its Patient by identifier urn:oid:1.2.3.4|MRN-78, which no one"
                                                 " Patient in the input carries"), reader.__name__
            else:
                assert errors == [] and len(records[0].facts) == len(child.facts), (form, reader.__name__)
                assert len(records[0].measurements) == len(child.measurements)


def test_csv_dates_with_a_time_of_day_are_read_as_the_date_written(tmp_path: Path) -> None:
    """A database export writes its date columns with the time ("2021-01-05 00:00:00"): every birth date had been a
    record error and every dated row unread. Read as the date written, as the FHIR readers read a dateTime; a date
    in another form ("05/01/2022": May or January) is still never guessed."""
    _write(tmp_path, "patients.csv", ["patient_id,birth_date,sex,death_date", "p1,2021-01-05 00:00:00,F,",
                                      "p2,2021-03-02T23:30:00+01:00,M,2023-05-01 13:05:00", "p3,2021-02-30 00:00:00,M,"])
    _write(tmp_path, "diagnoses.csv", ["patient_id,date,system,code", "p1,2022-01-05T10:00:00Z,icd10,Q21.0",
                                       "p1,05/01/2022,icd10,Q02"])
    _write(tmp_path, "observations.csv", ["patient_id,date,loinc,value,unit", "p1,2022-01-05 08:30,8302-2,70.5,cm"])
    records, errors = _split(list(read_csv_extract(tmp_path)))
    assert [e.reason for e in errors] == [
        "invalid patient row: birth_date '2021-02-30 00:00:00': day is out of range for month"]
    first, second = records
    assert first.birth_date == date(2021, 1, 5) and second.birth_date == date(2021, 3, 2)
    assert second.deceased == date(2023, 5, 1) and second.dropped == []
    assert [f.date for f in first.facts] == [date(2022, 1, 5)] and [m.date for m in first.measurements] == [date(2022, 1, 5)]
    assert [d.reason for d in first.dropped] == ["invalid diagnosis row: date '05/01/2022' is not a date written YYYY-MM-DD"]


def test_a_nul_in_a_csv_row_leaves_its_patient_id_unread_and_is_removed_from_the_name(tmp_path: Path) -> None:
    # PostgreSQL text cannot hold NUL: stored, such a row had failed the batch's store (datasets/emr_records.py).
    (tmp_path / "patients.csv").write_bytes(b"patient_id,birth_date,sex,name,mrn\n"
                                            b"c\x001,2022-03-01,F,Anna,1\nc2,2022-03-01,M,B\x00en,M\x002\n")
    _write(tmp_path, "diagnoses.csv", ["patient_id,date,system,code"])
    _write(tmp_path, "observations.csv", ["patient_id,date,loinc,value,unit"])
    records, errors = _split(list(read_csv_extract(tmp_path)))
    assert [(e.record, e.reason) for e in errors] == [
        ("patients.csv:2", "invalid patient row: patient_id holds a NUL character (0x00)")]
    [record] = records
    assert (record.patient_id, record.name, record.mrn, record.incomplete) == ("c2", "Ben", "", True)
    assert [d.reason for d in record.dropped] == ["holds a NUL character (0x00): not read"]
