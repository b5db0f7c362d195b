"""Nothing silent: a record with entries that could not be read is screened as ``incomplete`` with the
entries listed (result, FHIR output, batch output); a missing CSV file or column stops the batch."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from datasets.emr_records import ChildRecord
from datasets.fhir_emr import record_to_bundle, records_from_bundle
from medscreen.cli import main
from screening.fhir_output import explanation, risk_assessment
from screening.screener import Screener
from tests.screening.conftest import ordinary_child, syndromic_child

AS_OF = date(2024, 3, 1)
BROKEN = {
    "resourceType": "Condition",
    "id": "broken-date",
    "subject": {"reference": "Patient/child-syndromic"},
    "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "Q90.9"}]},
    "onsetDateTime": "2022-02-30",
}


def _read(bundle: dict) -> ChildRecord:  # type: ignore[type-arg]
    [record] = [r for r in records_from_bundle(bundle, "test") if isinstance(r, ChildRecord)]
    return record


def test_a_record_with_a_broken_entry_is_screened_as_incomplete_and_says_what_was_lost(screener: Screener) -> None:
    bundle = record_to_bundle(syndromic_child())
    bundle["entry"].append({"resource": BROKEN})
    record = _read(bundle)
    result = screener.screen(record, AS_OF)
    assert result.status == "incomplete" and result.risk is not None and result.flagged
    assert [d.entry for d in result.dropped] == [f"entry[{len(bundle['entry']) - 1}] Condition/broken-date"]
    assessment = risk_assessment(result, screener.ontology).model_dump(mode="json", exclude_none=True)
    assert assessment["status"] == "preliminary"
    notes = " | ".join(n["text"] for n in assessment["note"])
    assert "incomplete record" in notes and "Condition/broken-date" in notes and "onsetDateTime" in notes
    assert result.reason == "1 entry of the record could not be read"
    assert explanation(result, screener.ontology)["dropped"][0]["entry"].endswith("Condition/broken-date")
    # The same child read completely is plainly screened.
    assert screener.screen(_read(record_to_bundle(syndromic_child())), AS_OF).status == "screened"


def test_screen_emr_writes_every_incomplete_child_even_unflagged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = record_to_bundle(ordinary_child("o1"))
    bundle["entry"].append({"resource": {**BROKEN, "subject": {"reference": "Patient/o1"}}})
    extract = tmp_path / "extract.ndjson"
    extract.write_text(json.dumps(bundle) + "\n" + json.dumps(record_to_bundle(ordinary_child("o2"))) + "\n")
    out = tmp_path / "flags.ndjson"
    assert main(["screen-emr", str(extract), "--out", str(out), "--as-of", "2024-03-01", "--quiet"]) == 0
    [line] = [json.loads(raw) for raw in out.read_text().splitlines()]
    assert line["patient_id"] == "o1" and line["status"] == "incomplete" and not line["flagged"]
    assert line["dropped"][0]["entry"].endswith("Condition/broken-date")
    assert line["RiskAssessment"]["status"] == "preliminary"
    summary = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert summary["incomplete"] == 1 and summary["screened"] == 1


def test_screen_emr_refuses_a_csv_extract_without_its_system_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "patients.csv").write_text("patient_id,birth_date,sex\np1,2021-01-01,F\n")
    (tmp_path / "diagnoses.csv").write_text("patient_id,date,code\np1,2021-01-02,Q90.9\n")  # Down syndrome, no system
    (tmp_path / "observations.csv").write_text("patient_id,date,loinc,value,unit\n")
    out = tmp_path / "flags.ndjson"
    assert main(["screen-emr", str(tmp_path), "--out", str(out), "--as-of", "2024-03-01", "--quiet"]) == 2
    assert "diagnoses.csv has no column system" in capsys.readouterr().err
    assert not out.exists()
    (tmp_path / "diagnoses.csv").write_text("patient_id,date,system,code\np1,2021-01-02,icd10,Q90.9\n")
    (tmp_path / "observations.csv").unlink()
    assert main(["screen-emr", str(tmp_path), "--out", str(out), "--quiet"]) == 2
    assert "observations.csv is missing" in capsys.readouterr().err
