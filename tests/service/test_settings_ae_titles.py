"""AE title settings are checked when the settings are read, not when a DICOM process first builds its AE."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from inference.receive.dimse import build_ae
from service.settings import Settings


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("dicom_ae_title", "MEDSCREEN-AI-SERVER"),  # 19 characters
        ("pacs_ae_title", "PACS\\MAIN"),
        ("dicom_allowed_aes", ["ORTHANC", "   "]),
        ("dicom_allowed_aes", ["ORTHANC-MAIN-ARCHIVE"]),
    ],
)
def test_an_ae_title_dicom_cannot_carry_is_refused_with_its_setting_named(
    tmp_path, setting: str, value: object
) -> None:
    # pynetdicom refused these only when a receiver process built its AE: the process died at start and was restarted
    # for ever (the service 'degraded'), or each write-back and count query failed.
    with pytest.raises(ValidationError, match=f"MEDSCREEN_{setting.upper()}: .* is not a DICOM AE title"):
        Settings(home=tmp_path, **{setting: value})


def test_titles_dicom_takes_are_kept_and_build_the_receiver(tmp_path) -> None:
    settings = Settings(
        home=tmp_path, dicom_ae_title="MEDSCREEN_AI_01", dicom_allowed_aes=["ORTHANC", "PACS 1"], pacs_ae_title=""
    )
    ae = build_ae(settings.dicom_ae_title, settings.dicom_allowed_aes, settings.dicom_max_pdu)
    assert ae.ae_title == "MEDSCREEN_AI_01" and settings.pacs_ae_title == ""
