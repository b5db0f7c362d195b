"""A refused instance's reason says what is wrong without quoting the value: it goes to the log, the quarantine's
sidecar, GET /api/quarantine (which ml-engineers read) and the sender, and a malformed UID can be anything a sender
put there, a patient's name or ID in the wrong element among them."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydicom import dcmread
from pydicom.dataelem import DataElement

from inference.instance_headers import is_valid_uid, uid_defect
from tests.inference.conftest import INFERENCE_FIXTURES
from tests.inference.test_stowrs import post
from tests.service.conftest import AddUser

LEAK = "Leakname^Secret PID4242"


def _with_study_uid(tmp_path: Path, value: str) -> Path:
    ds = dcmread(INFERENCE_FIXTURES / "images" / "dx_chest_highdicom.dcm")
    ds["StudyInstanceUID"] = DataElement(0x0020000D, "UI", value)
    path = tmp_path / "malformed.dcm"
    ds.save_as(path)
    return path


def test_a_malformed_uid_is_described_by_its_length_and_the_rule_it_breaks(
    client: TestClient, add_user: AddUser, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sender = add_user("pacs-sender", "sender")
    with caplog.at_level(logging.WARNING, logger="inference.ingest"):
        answer = post(client, sender, _with_study_uid(tmp_path, LEAK))
    assert answer.status_code == 409, answer.text
    engineer = add_user("mle", "ml-engineer")
    (item,) = client.get("/api/quarantine", headers=engineer).json()["items"]
    reason = f"StudyInstanceUID ({len(LEAK)} characters) is not a valid DICOM UID: it holds a letter at position 1"
    assert item["reason"].startswith(reason), item["reason"]
    sidecar = next(Path(client.app.state.ingestor.spool.quarantine).rglob("*.json"))  # type: ignore[attr-defined]
    # medscreen's own line (pydicom's warning quoting the value is held at ERROR by configure_logging).
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name == "inference.ingest")
    assert "quarantined an instance from pacs-sender" in logged
    for told in (answer.text, json.dumps(item), sidecar.read_text(), logged):
        assert "Leakname" not in told and "PID4242" not in told, told


def test_a_malformed_study_uid_in_a_stow_url_is_not_quoted(client: TestClient, add_user: AddUser) -> None:
    sender = add_user("pacs-sender", "sender")
    answer = post(client, sender, INFERENCE_FIXTURES / "images" / "dx_chest_highdicom.dcm", url="/dicomweb/studies/PID4242")
    assert answer.status_code == 409, answer.text
    assert "PID4242" not in answer.text and "the study UID (7 characters, not valid: it holds a letter" in answer.text


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        ("", "it is empty"),
        ("1." + "2" * 70, "longer than the 64 characters"),
        ("1.2.3 4", "a space at position 6"),
        ("12\x0034", "a NUL character (0x00) at position 3"),
        ("1.2\n", "a control character at position 4"),
        ("1..2", "an empty component"),
        ("1.2.", "an empty component"),
        ("1.02.3", "a component starts with 0"),
        ("1.2-3", "a character other than a digit or '.' at position 4"),
    ],
)
def test_each_rule_a_uid_breaks_is_named(value: str, rule: str) -> None:
    defect = uid_defect(value)
    assert defect is not None and rule in defect and not is_valid_uid(value)


def test_valid_uids_have_no_defect() -> None:
    for value in ("0", "0.1", "1.2.840.10008.5.1.4.1.1.2", "1." + "2" * 62):
        assert uid_defect(value) is None and is_valid_uid(value)
