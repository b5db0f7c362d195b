"""EMR extracts as hospital systems export them: Excel's CSV headers, compressed Bulk Data files, resources repeated
across an extract. Each is read as written or refused with what to do, never screened on part of the record."""

from __future__ import annotations

import gzip
import json
from datetime import date
from pathlib import Path

import pytest

from datasets.emr_csv import read_csv_extract
from datasets.emr_records import ChildRecord, RecordError
from datasets.errors import ExtractError
from datasets.extract_partitions import plan_partitions, read_partition
from datasets.fhir_emr import record_to_bundle
from medscreen.cli import main
from tests.screening.conftest import syndromic_child


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
