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


def test_every_medscreen_name_the_repository_reads_or_sets_is_a_setting_or_allowed() -> None:
    """An unknown MEDSCREEN_* name is a warning, and stops `serve` (medscreen/cli.py): a name the tests or benchmarks
    read or set that is neither a setting nor in NOT_SETTINGS would warn on every command or stop the test services.
    Names only mentioned (in prose, in a test of the warning) are not read or set."""
    import re
    import subprocess

    from service.settings import NOT_SETTINGS, unknown_variables

    tracked = subprocess.run(["git", "ls-files", "*.py", "Makefile", ".ci/*"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.split()
    # Read (environ.get, getenv, environ[...]), set (setenv, NAME=value, {"NAME": value}).
    reads_or_sets = re.compile(
        r"""(?:getenv|environ\.get|environ\[|setenv)\(?\s*["'](MEDSCREEN_\w+)|\b(MEDSCREEN_\w+)=|["'](MEDSCREEN_\w+)["']\s*:"""
    )
    names = {"".join(groups) for path in tracked if (REPO / path).is_file()
             for groups in reads_or_sets.findall((REPO / path).read_text(errors="replace"))}
    assert {"MEDSCREEN_HOME", "MEDSCREEN_HTTP_PORT"} <= names and NOT_SETTINGS <= names  # each allowed: it is read
    assert unknown_variables(dict.fromkeys(names, "")) == {}
