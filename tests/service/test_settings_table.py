"""The README documents every setting, exactly as Settings defines it."""

from __future__ import annotations

from service.settings import Settings
from service.settings_table import settings_table
from tests.conftest import REPO


def test_readme_settings_table_is_the_generated_one() -> None:
    readme = (REPO / "README.md").read_text()
    assert settings_table() in readme, "regenerate with: python -m service.settings_table"


def test_every_setting_has_a_description() -> None:
    assert all(field.description for field in Settings.model_fields.values())


def test_settings_come_from_medscreen_environment(monkeypatch) -> None:
    monkeypatch.setenv("MEDSCREEN_DICOM_PORT", "11999")
    monkeypatch.setenv("MEDSCREEN_QUIET_PERIOD_BY_MODALITY", '{"CT": 20}')
    settings = Settings()
    assert settings.dicom_port == 11999
    assert settings.quiet_period_for("CT") == 20 and settings.quiet_period_for("MG") == settings.quiet_period_s
