"""An unread measurement makes a record incomplete, and screen-emr stores an unflagged incomplete child for its
clinician's page (mutation review 3: R2, R4). The real screener, the real command and app on SQLite."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from datasets.emr_records import Measurement
from datasets.fhir_emr import record_to_bundle
from medscreen.cli import main
from screening.fhir_output import risk_assessment
from screening.screener import Screener
from screening.tables import ScreeningRun
from service.db import session_scope
from tests.screening.conftest import ordinary_child
from tests.screening.test_incomplete_records import BROKEN

AS_OF = date(2024, 3, 1)


@pytest.mark.parametrize(
    "measurement",
    [
        Measurement("8302-2", 96.0, "furlongs", date(2023, 6, 1)),  # a height in a unit not read
        Measurement("8302-2", 96.0, "cm", date(2019, 1, 1)),  # measured before birth (2020-05-01)
    ],
)
def test_an_unread_measurement_makes_the_record_incomplete(screener: Screener, measurement: Measurement) -> None:
    assert screener.screen(ordinary_child(), AS_OF).status == "screened"
    record = ordinary_child()
    record.measurements.append(measurement)
    result = screener.screen(record, AS_OF)
    assert result.status == "incomplete" and result.dropped, result.reason
    assert risk_assessment(result, screener.ontology).model_dump(mode="json", exclude_none=True)["status"] == "preliminary"


def test_screen_emr_stores_an_unflagged_incomplete_child_for_its_clinician(
    screening_app: FastAPI, client: TestClient, token_for, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("MEDSCREEN_DATABASE_URL", str(screening_app.state.engine.url))
    child = ordinary_child("o1")
    child.practitioner = "Practitioner/dr-a"
    bundle = record_to_bundle(child)
    bundle["entry"].append({"resource": {**BROKEN, "subject": {"reference": "Patient/o1"}}})
    extract = tmp_path / "extract.ndjson"
    extract.write_text(json.dumps(bundle) + "\n" + json.dumps(record_to_bundle(ordinary_child("o2"))) + "\n")
    assert main(["screen-emr", str(extract), "--out", str(tmp_path / "flags.ndjson"), "--as-of", "2024-03-01", "--quiet"]) == 0
    with session_scope(screening_app.state.session_factory) as session:
        rows = [(r.patient_id, r.status, r.flagged) for r in session.scalars(select(ScreeningRun))]
    assert rows == [("o1", "incomplete", False)]  # o2, screened and not flagged, is not stored
    doctor = token_for("dr-a", "paediatrician")
    assert main(["screening", "assign", "dr-a", "--practitioner", "Practitioner/dr-a"]) == 0
    listed = client.get("/api/screening/flags", headers=doctor).json()
    assert listed["flags"] == [] and listed["incomplete_total"] == 1
    assert [(r["patient_id"], r["status"], r["risk_is_lower_bound"]) for r in listed["incomplete"]] == [("o1", "incomplete", True)]
