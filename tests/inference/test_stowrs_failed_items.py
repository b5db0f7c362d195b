"""STOW-RS names each failed instance (PS3.18 10.5.3): Referenced SOP Class and Instance UID on every
Failed SOP Sequence item whose header, or at least file meta, could be read.

Failed items carried only the failure reason and a text, so a sender of a large study could not tell which
instance to retry or report (review defect 8). The real app, real files.
"""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from pydicom import dcmread

from tests.inference.test_codestream_limits import j2k_siz_bomb
from tests.inference.test_stowrs import CT, LIDC_STUDY, post
from tests.service.conftest import AddUser

SOP_CLASS, SOP_INSTANCE = "00081150", "00081155"


def _named(item: dict) -> tuple[str | None, str | None]:
    def value(tag: str) -> str | None:
        return item[tag]["Value"][0] if tag in item else None

    return value(SOP_CLASS), value(SOP_INSTANCE)


def _uids(path: Path) -> tuple[str, str]:
    ds = dcmread(path, stop_before_pixels=True)
    return str(ds.SOPClassUID), str(ds.SOPInstanceUID)


def test_a_differing_duplicate_names_the_instance(client: TestClient, add_user: AddUser, tmp_path: Path) -> None:
    sender = add_user("pacs-sender", "sender", "ml-engineer")
    assert post(client, sender, CT[0]).status_code == 200
    changed = dcmread(CT[0])
    changed.SeriesDescription = "changed after it was sent"
    changed.save_as(tmp_path / "changed.dcm")
    response = post(client, sender, tmp_path / "changed.dcm", CT[1])
    assert response.status_code == 202, response.text
    [failed] = response.json()["00081198"]["Value"]
    assert failed["0040A160"]["Value"][0].startswith("differing-duplicate")
    assert _named(failed) == _uids(CT[0])


def test_an_instance_of_another_study_names_the_instance(client: TestClient, add_user: AddUser) -> None:
    sender = add_user("pacs-sender", "sender", "ml-engineer")
    response = post(client, sender, CT[0], url="/dicomweb/studies/1.2.3")
    assert response.status_code == 409, response.text
    [failed] = response.json()["00081198"]["Value"]
    assert LIDC_STUDY in failed["0040A160"]["Value"][0]
    assert _named(failed) == _uids(CT[0])


def test_a_refused_pixel_element_names_the_instance_from_its_file_meta(
    client: TestClient, add_user: AddUser, tmp_path: Path
) -> None:
    sender = add_user("pacs-sender", "sender", "ml-engineer")
    bomb = j2k_siz_bomb(tmp_path / "j2k.dcm", 16000)
    response = post(client, sender, bomb)
    assert response.status_code == 409, response.text
    [failed] = response.json()["00081198"]["Value"]
    assert failed["0040A160"]["Value"][0].startswith("codestream-mismatch")
    assert _named(failed) == _uids(bomb)


def test_bytes_that_are_not_dicom_name_nothing(client: TestClient, add_user: AddUser) -> None:
    sender = add_user("pacs-sender", "sender", "ml-engineer")
    [failed] = post(client, sender, b"not dicom at all").json()["00081198"]["Value"]
    assert _named(failed) == (None, None)
