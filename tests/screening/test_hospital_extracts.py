"""EMR extracts as hospital systems export them: Excel's CSV headers, compressed Bulk Data files, resources repeated
across an extract. Each is read as written or refused with what to do, never screened on part of the record."""

from __future__ import annotations

import copy
import gzip
import json
from datetime import date
from pathlib import Path

import pytest

from datasets.emr_csv import read_csv_extract
from datasets.emr_records import ChildRecord, CodedFact, Measurement, RecordError
from datasets.errors import ExtractError
from datasets.extract_partitions import plan_partitions, read_partition
from datasets.fhir_emr import record_to_bundle, records_from_bundle
from datasets.fhir_entry_rules import merged_record
from datasets.fhir_fast import NESTED_TOO_DEEP, read_fhir_fast, records_from_bundle_fast
from medscreen.cli import main
from screening.batch_screen import screen_batch
from screening.findings import CodeMaps
from screening.screener import Screener
from tests.screening.conftest import ordinary_child, syndromic_child


def _split(items: list[ChildRecord | RecordError]) -> tuple[list[ChildRecord], list[RecordError]]:
    return [i for i in items if isinstance(i, ChildRecord)], [i for i in items if isinstance(i, RecordError)]


def test_csv_columns_are_read_in_any_case_and_spacing(tmp_path: Path) -> None:
    """Excel and database exports write headers their own way. Required columns so written stopped the run; an
    optional one was ignored without a word: a ``Death_Date`` screened a child who had died, and a ``Status`` of
    refuted made an excluded Down syndrome a diagnosis, taking the child out of screening."""
    (tmp_path / "patients.csv").write_bytes(
        b"\xef\xbb\xbfPatient_ID, Birth Date ,SEX,Death-Date,Name\r\np1,2021-03-01,F,2023-05-01,Anna\r\np2,2021-03-01,M,,Ben\r\n"
    )
    (tmp_path / "diagnoses.csv").write_bytes(
        b"Patient_ID,Date,System,Code,Status\r\np1,2021-03-01,icd10,Q21.1,\r\np2,2021-03-01,icd10,Q90.9,Refuted\r\n"
    )
    (tmp_path / "observations.csv").write_bytes(
        b'Patient_ID,Date,LOINC,Value,Unit\r\np2,2022-03-01,8302-2,"80,5",cm\r\n'
    )
    records, errors = _split(list(read_csv_extract(tmp_path)))
    assert errors == []
    by_id = {r.patient_id: r for r in records}
    assert by_id["p1"].deceased == date(2023, 5, 1) and by_id["p1"].name == "Anna"
    assert [(f.code, f.refuted) for f in by_id["p2"].facts] == [("Q90.9", True)]
    assert [(m.loinc, m.value) for m in by_id["p2"].measurements] == [("8302-2", 80.5)]
    assert not any(r.incomplete for r in records)


def _read(path: Path, work: Path) -> list[ChildRecord | RecordError]:
    return [item for p in plan_partitions(path, work) for item in read_partition(p)]


def test_gzip_compressed_extract_files_are_read_and_other_compressions_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Bulk Data folder whose Condition file was stored compressed (``Condition.ndjson.gz``) had been screened
    without a word as if the children had no diagnosis (the syndromic child "screened, not flagged"); one
    compressed NDJSON file was refused as "not UTF-8 text", pointing to iconv. gzip is read; another compression
    stops the run with the file's name."""
    bundle = record_to_bundle(syndromic_child("kid1"))
    resources = [e["resource"] for e in bundle["entry"]]
    conditions = sum(r["resourceType"] == "Condition" for r in resources)

    def lines(kind: str) -> bytes:
        return "".join(json.dumps(r) + "\n" for r in resources if r["resourceType"] == kind).encode()

    export = tmp_path / "export"
    export.mkdir()
    (export / "Patient.ndjson").write_bytes(lines("Patient"))
    (export / "Observation.ndjson").write_bytes(lines("Observation"))
    (export / "Condition.ndjson.gz").write_bytes(gzip.compress(lines("Condition")))
    [record] = _read(export, tmp_path / "split-1")
    assert isinstance(record, ChildRecord) and len(record.facts) == conditions and not record.incomplete

    packed = tmp_path / "export.ndjson.gz"
    packed.write_bytes(gzip.compress(json.dumps(bundle).encode() + b"\n"))
    [record] = _read(packed, tmp_path / "split-2")
    assert isinstance(record, ChildRecord) and len(record.facts) == conditions

    only_packed = tmp_path / "only-packed"
    only_packed.mkdir()
    (only_packed / "kid1.json.gz").write_bytes(gzip.compress(json.dumps(bundle).encode()))
    out = tmp_path / "flags.ndjson"
    args = ["--out", str(out), "--as-of", "2024-03-01", "--quiet", "--no-store"]
    assert main(["screen-emr", str(only_packed), *args]) == 0
    [flag] = [json.loads(line) for line in out.read_text().splitlines()]
    assert flag["patient_id"] == "kid1" and flag["flagged"] is True

    (export / "Encounter.ndjson.bz2").write_bytes(b"BZh9")
    with pytest.raises(ExtractError, match=r"Encounter.ndjson.bz2: compressed in a form not read here"):
        _read(export, tmp_path / "split-3")
    (tmp_path / "broken.ndjson.gz").write_bytes(gzip.compress(b"{}\n")[:-6])
    with pytest.raises(ExtractError, match=r"broken.ndjson.gz cannot be decompressed"):
        _read(tmp_path / "broken.ndjson.gz", tmp_path / "split-4")


MICROCEPHALY = "HP:0000252"


def _single_dip() -> ChildRecord:
    """An ordinary boy whose head circumference at 12 months lies below -2 SD once; the next visit is on his centile
    (a measurement error or a passing dip, which the persistence rule does not read as microcephaly)."""
    record = ChildRecord("p1", date(2021, 1, 10), "M")
    record.facts += [
        CodedFact("condition", "icd10", "J06.9", date(2021, 6, 1)),
        CodedFact("condition", "icd10", "Q21.0", date(2021, 2, 1)),
    ]
    record.measurements += [
        Measurement("9843-4", 42.8, "cm", date(2022, 1, 12)),
        Measurement("9843-4", 48.6, "cm", date(2023, 1, 10)),
        Measurement("29463-7", 9.6, "kg", date(2022, 1, 12)),
    ]
    return record


def test_a_resource_repeated_in_an_extract_is_read_once(tmp_path: Path, screener: Screener) -> None:
    """The same Observation twice in a Bundle (a search's overlapping pages or includes, a Bundle built from two
    queries), in two files of a Bulk Data export, or in two Bundles of the child (a cumulative extract appended to
    last month's) had been two measurements: the single low head circumference "persisted" as microcephaly, and a
    repeated Condition counted twice among the congenital codes. Each reader now reads the same resource once."""
    as_of = date(2024, 3, 1)
    original = _single_dip()
    assert MICROCEPHALY not in {f.hpo for f in screener.screen(original, as_of).findings}
    bundle = record_to_bundle(original)
    repeated = copy.deepcopy(bundle)
    repeated["entry"] += copy.deepcopy([e for e in bundle["entry"] if e["resource"]["resourceType"] != "Patient"])
    (tmp_path / "repeated.ndjson").write_text(json.dumps(repeated) + "\n")
    export = tmp_path / "export"
    export.mkdir()
    resources = [e["resource"] for e in bundle["entry"]]
    (export / "Patient.ndjson").write_text(json.dumps(resources[0]) + "\n")
    for name in ("Observation.000.ndjson", "Observation.001.ndjson"):  # overlapping export files
        (export / name).write_text("".join(json.dumps(r) + "\n" for r in resources[1:]))
    read = [
        *records_from_bundle(copy.deepcopy(repeated), "x"),
        *records_from_bundle_fast(copy.deepcopy(repeated), "x"),
        *read_fhir_fast(tmp_path / "repeated.ndjson"),
        *_read(export, tmp_path / "split"),
        merged_record([original, copy.deepcopy(original)]),
    ]
    assert len(read) == 5 and all(isinstance(r, ChildRecord) for r in read)
    for record in read:
        assert isinstance(record, ChildRecord)
        assert (record.facts, sorted(record.measurements), record.dropped) == (
            original.facts,
            sorted(original.measurements),
            [],
        )
        result = screener.screen(record, as_of)
        assert (
            MICROCEPHALY not in {f.hpo for f in result.findings}
            and result.risk == screener.screen(original, as_of).risk
        )

    differing = copy.deepcopy(bundle)  # two resources sharing an id but not their content: both are read
    other = copy.deepcopy(differing["entry"][-1])
    other["resource"]["valueQuantity"]["value"] = 9.9
    differing["entry"].append(other)
    for reader in (records_from_bundle, records_from_bundle_fast):
        [record] = reader(copy.deepcopy(differing), "x")
        assert isinstance(record, ChildRecord) and len(record.measurements) == len(original.measurements) + 1


def test_a_search_result_page_says_its_later_pages_are_not_read(tmp_path: Path) -> None:
    """A searchset saved from a FHIR server (``Patient?_revinclude=Condition:subject``) is paged (20 to 100
    entries): its ``link`` names the ``next`` page. Read as it came, the child had been "screened" on the first
    page's findings alone, a negative on part of the record. Each reader now lists the later pages as unread (the
    child ``incomplete``); the last page of a search, or a Bundle without a next page, reads as before."""
    bundle = record_to_bundle(syndromic_child("kid1"))
    page = copy.deepcopy(bundle)
    page["type"], page["total"] = "searchset", 1
    page["entry"] = page["entry"][:5]
    for entry in page["entry"]:
        entry["search"] = {"mode": "match" if entry["resource"]["resourceType"] == "Patient" else "include"}
    base = "https://emr.example.org/fhir"
    page["link"] = [
        {"relation": "self", "url": f"{base}/Patient?_revinclude=Condition:subject"},
        {"relation": "next", "url": f"{base}?_getpages=7f3c&_getpagesoffset=5&_count=5&_bundletype=searchset"},
    ]
    (tmp_path / "page1.json").write_text(json.dumps(page))
    (tmp_path / "page1.ndjson").write_text(json.dumps(page) + "\n")
    read = [
        *records_from_bundle(copy.deepcopy(page), "x"),
        *records_from_bundle_fast(copy.deepcopy(page), "x"),
        *read_fhir_fast(tmp_path / "page1.json"),
        *read_fhir_fast(tmp_path / "page1.ndjson"),
    ]
    assert len(read) == 4
    for record in read:
        assert isinstance(record, ChildRecord) and record.incomplete
        assert [d.entry for d in record.dropped] in (["Bundle.link"], ["line 1 Bundle.link"])
        assert "one page of a search result" in record.dropped[0].reason
    last = copy.deepcopy(page)
    last["link"] = [{"relation": "self", "url": f"{base}/Patient"}, {"relation": "previous", "url": f"{base}?p=0"}]
    for reader in (records_from_bundle, records_from_bundle_fast):
        [record] = reader(copy.deepcopy(last), "x")
        assert isinstance(record, ChildRecord) and not record.incomplete


def _transaction(bundle: dict, patient_url: str | None, reference: str) -> dict:  # type: ignore[type-arg]
    """``bundle`` as an integration engine posts it: a transaction whose Patient is a conditional update by record
    number and whose other resources name the Patient by ``reference``."""
    out = copy.deepcopy(bundle)
    out["type"] = "transaction"
    patient = out["entry"][0]
    patient["resource"].pop("id")
    patient["resource"]["identifier"] = [{"system": "https://hospital.example/mrn", "value": "0012345"}]
    patient["request"] = {"method": "PUT", "url": "Patient?identifier=https://hospital.example/mrn|0012345"}
    if patient_url:
        patient["fullUrl"] = patient_url
    for entry in out["entry"][1:]:
        entry["resource"]["subject"] = {"reference": reference}
        entry["request"] = {"method": "POST", "url": entry["resource"]["resourceType"]}
    return out


def test_a_transactions_conditional_reference_names_its_patient() -> None:
    """FHIR transactions may name the Patient by a conditional reference (``Patient?identifier=system|value``), which
    the receiving server resolves. It had been read as a Patient called "Patient?identifier=...": every resource of the
    child a record error, and the child, its Patient read alone, "screened" with no finding, not flagged."""
    bundle = record_to_bundle(syndromic_child("kid1"))
    expected = len(bundle["entry"]) - 1
    for patient_url, reference in [
        ("urn:uuid:0d7c5c7e-2f49-4d3b-a1a8-7b0e5c1f9a11", "Patient?identifier=https://hospital.example/mrn|0012345"),
        (
            "urn:uuid:0d7c5c7e-2f49-4d3b-a1a8-7b0e5c1f9a11",
            "Patient?identifier=https%3A%2F%2Fhospital.example%2Fmrn%7C0012345",
        ),
        (None, "Patient?identifier=0012345"),  # no system: the one Patient with that value
    ]:
        transaction = _transaction(bundle, patient_url, reference)
        for reader in (records_from_bundle, records_from_bundle_fast):
            [record] = reader(copy.deepcopy(transaction), "x")
            assert isinstance(record, ChildRecord) and not record.incomplete
            assert len(record.facts) + len(record.measurements) == expected, (reader, reference)
    other = _transaction(bundle, None, "Patient?identifier=https://hospital.example/mrn|999")
    for reader in (records_from_bundle, records_from_bundle_fast):
        records, errors = _split(list(reader(copy.deepcopy(other), "x")))
        assert [r.facts for r in records] == [[]] and errors and "not in the input" in errors[0].reason


def test_a_bundles_only_child_is_incomplete_when_its_resources_name_another_patient(tmp_path: Path) -> None:
    """A Bundle of one child whose resources name the Patient by another id (the source system's record number where
    the export wrote a new Patient.id) or by none had its child "screened", not flagged, on the Patient alone, beside
    record errors that did not say whose the resources were. The child is now incomplete, saying how many resources
    of its Bundle were not read; a Bundle of several children still reads them as before."""
    bundle = record_to_bundle(syndromic_child("a1b2"))
    mismatched = copy.deepcopy(bundle)
    for entry in mismatched["entry"][1:]:
        entry["resource"]["subject"] = {"reference": "Patient/MRN-0012345"}
    del mismatched["entry"][1]["resource"]["subject"]  # a Condition naming no Patient: invalid, read by neither
    (tmp_path / "child.json").write_text(json.dumps(mismatched))
    n = len(mismatched["entry"]) - 1
    for items in (
        list(records_from_bundle(copy.deepcopy(mismatched), "x")),
        list(records_from_bundle_fast(copy.deepcopy(mismatched), "x")),
        list(read_fhir_fast(tmp_path / "child.json")),
    ):
        records, errors = _split(items)
        [record] = records
        assert record.facts == [] and record.incomplete and errors
        assert [d.entry for d in record.dropped] == ["Bundle"]
        assert record.dropped[0].reason.startswith(f"{n} resources of the Bundle name no Patient in it")
    two = copy.deepcopy(mismatched)
    two["entry"].append(record_to_bundle(syndromic_child("c3d4"))["entry"][0])
    for reader in (records_from_bundle, records_from_bundle_fast):
        records, _ = _split(list(reader(copy.deepcopy(two), "x")))
        assert len(records) == 2 and not any(r.incomplete for r in records)


def test_a_growth_value_coded_with_two_loinc_codes_is_one_measurement(screener: Screener) -> None:
    """US Core writers code a head circumference 9843-4 and add the specific 8287-5 (by tape measure), a weight
    29463-7 and 3141-9 (measured): the reader makes a measurement of each code, and a single low value, which the
    next visit does not repeat, had "persisted" (two measurements beyond the line) as microcephaly. It is one
    measurement, child by child and in a population's batch alike."""
    as_of = date(2024, 3, 1)
    once = record_to_bundle(_single_dip())
    twice = copy.deepcopy(once)
    for entry in twice["entry"]:
        coding = entry["resource"].get("code", {}).get("coding", [{}])[0]
        extra = {"9843-4": "8287-5", "29463-7": "3141-9"}.get(coding.get("code", ""))
        if entry["resource"]["resourceType"] == "Observation" and extra:
            entry["resource"]["code"]["coding"].append({"system": "http://loinc.org", "code": extra})
    [record] = records_from_bundle_fast(twice, "x")
    assert isinstance(record, ChildRecord) and len(record.measurements) == 2 * len(_single_dip().measurements)
    expected = screener.screen(_single_dip(), as_of)
    assert MICROCEPHALY not in {f.hpo for f in expected.findings}
    for result in (screener.screen(record, as_of), *screen_batch(screener, [record, _single_dip()], as_of)):
        assert (result.findings, result.risk) == (expected.findings, expected.risk)


def test_a_bundle_of_each_childs_bundle_is_read_child_by_child(tmp_path: Path, client, token_for) -> None:  # type: ignore[no-untyped-def]
    """A collection of each child's Bundle (or document) had been read as nothing without a word: its entries were
    Bundles, a type screening skips; POST /api/screening answered 422 "no readable Patient in the Bundle ()". Each
    inner Bundle is read as a Bundle (two levels deep; a third is a record error naming it)."""
    inner = [record_to_bundle(syndromic_child("kid1")), record_to_bundle(ordinary_child("kid2"))]
    outer = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"fullUrl": f"urn:uuid:{i}", "resource": b} for i, b in enumerate(inner)],
    }
    (tmp_path / "children.json").write_text(json.dumps(outer))
    for items in (
        list(records_from_bundle(copy.deepcopy(outer), "x")),
        list(records_from_bundle_fast(copy.deepcopy(outer), "x")),
        list(read_fhir_fast(tmp_path / "children.json")),
    ):
        records, errors = _split(items)
        assert errors == [] and [(r.patient_id, len(r.facts)) for r in records] == [("kid1", 11), ("kid2", 3)]
    deeper = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": outer}, {"resource": {**outer, "entry": [{"resource": outer}]}}],
    }
    for reader in (records_from_bundle, records_from_bundle_fast):
        records, errors = _split(list(reader(copy.deepcopy(deeper), "x")))
        assert [r.patient_id for r in records] == ["kid1", "kid2"]
        assert [(e.record, e.reason) for e in errors] == [
            (f"entry[1] entry[0] entry[{i}]", NESTED_TOO_DEEP) for i in (0, 1)
        ]
    doctor = token_for("dr-ivanova", "paediatrician")
    response = client.post("/api/screening?as_of=2024-03-01", json=outer, headers=doctor)
    assert response.status_code == 200, response.text
    assessed = [
        e["resource"]["subject"]["reference"]
        for e in response.json()["entry"]
        if e["resource"]["resourceType"] == "RiskAssessment"
    ]
    assert assessed == ["Patient/kid1", "Patient/kid2"]
    # one child in two of the Bundles is one child, screened once on both, as screen-emr reads it
    halves = record_to_bundle(syndromic_child("kid1"))
    second = {**halves, "entry": [halves["entry"][0], *halves["entry"][6:]]}
    halves["entry"] = halves["entry"][:6]
    split = {**outer, "entry": [{"resource": halves}, {"resource": second}]}
    response = client.post("/api/screening?as_of=2024-03-01", json=split, headers=doctor)
    assert response.status_code == 200, response.text
    [assessment] = [
        e["resource"] for e in response.json()["entry"] if e["resource"]["resourceType"] == "RiskAssessment"
    ]
    whole = client.post("/api/screening?as_of=2024-03-01", json=inner[0], headers=doctor).json()["entry"][0]["resource"]
    assert assessment["prediction"][0] == whole["prediction"][0]
    empty = client.post("/api/screening", json={"resourceType": "Bundle", "type": "collection"}, headers=doctor)
    assert empty.status_code == 422 and empty.json()["detail"] == "no Patient resource in the Bundle"


def test_a_category_code_is_the_diagnosis_all_its_subcategories_are(maps: CodeMaps, screener: Screener) -> None:
    """Extracts that write three-character ICD-10 code Down syndrome as Q90: read as nothing, the child had been
    screened, and flagged, for the syndrome's own findings. A category is a diagnosis when every WHO subcategory is
    one of the same entity (Q90, Q96); D57 also holds the sickle-cell trait, Q87 many syndromes: no diagnosis."""
    assert maps.meaning("condition", "icd10", "Q90", "").orphan == ("ORPHA:870", "Down syndrome")
    assert maps.meaning("condition", "icd10", "Q96", "").orphan == ("ORPHA:881", "Turner syndrome")
    assert maps.meaning("condition", "icd10", "D57", "").orphan is None
    assert maps.meaning("condition", "icd10", "Q87", "").orphan is None
    record = syndromic_child()
    record.facts.append(CodedFact("condition", "icd10", "Q90", date(2021, 3, 2)))
    assert screener.screen(record, date(2024, 3, 1)).status == "already_diagnosed"


def test_a_csv_row_repeated_cell_for_cell_is_read_once(tmp_path: Path, screener: Screener) -> None:
    """A query that joins each diagnosis to every encounter, or two extracts appended, repeats rows: read twice, a
    malformation counted twice among the congenital codes and the single low head circumference "persisted" as
    microcephaly. A row that differs (another date) is still read."""
    (tmp_path / "patients.csv").write_text("patient_id,birth_date,sex\np1,2021-01-10,M\n")
    rows = [
        "p1,2021-06-01,icd10,J06.9",
        "p1,2021-02-01,icd10,Q21.0",
        "p1,2021-02-01,icd10,Q21.0",
        "p1,2022-02-01,icd10,J06.9",
    ]
    (tmp_path / "diagnoses.csv").write_text("patient_id,date,system,code\n" + "\n".join(rows) + "\n")
    measured = [
        "p1,2022-01-12,9843-4,42.8,cm",
        "p1,2022-01-12,9843-4,42.8,cm",
        "p1,2023-01-10,9843-4,48.6,cm",
        "p1,2022-01-12,29463-7,9.6,kg",
    ]
    (tmp_path / "observations.csv").write_text("patient_id,date,loinc,value,unit\n" + "\n".join(measured) + "\n")
    [record] = read_csv_extract(tmp_path)
    assert isinstance(record, ChildRecord)
    assert [(f.code, f.date) for f in record.facts] == [
        ("J06.9", date(2021, 6, 1)),
        ("Q21.0", date(2021, 2, 1)),
        ("J06.9", date(2022, 2, 1)),
    ]
    assert len(record.measurements) == 3 and not record.incomplete
    result = screener.screen(record, date(2024, 3, 1))
    assert MICROCEPHALY not in {f.hpo for f in result.findings}


def test_a_utf16_csv_is_named_as_utf16(tmp_path: Path) -> None:
    """Excel's "Unicode Text" export is UTF-16 (tab-separated): it stopped with "not UTF-8 text (byte 0xff) ...
    iconv -f WINDOWS-1252", advice that garbles it. It is named as UTF-16, with the conversion that works."""
    files = {
        "patients.csv": "patient_id\tbirth_date\tsex\r\np1\t2021-01-10\tM\r\n",
        "diagnoses.csv": "patient_id\tdate\tsystem\tcode\r\n",
        "observations.csv": "patient_id\tdate\tloinc\tvalue\tunit\r\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_bytes(text.encode("utf-16"))
    with pytest.raises(ExtractError, match=r"patients.csv is UTF-16 text .*iconv -f UTF-16 -t UTF-8"):
        list(read_csv_extract(tmp_path))
