"""EMR extracts as hospital systems export them: Excel's CSV headers, compressed Bulk Data files, resources repeated
across an extract. Each is read as written or refused with what to do, never screened on part of the record."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from datasets.emr_csv import read_csv_extract
from datasets.emr_records import ChildRecord, RecordError


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
