"""The tests and benchmarks talk to dcmtk's programs even when pynetdicom's namesakes come first on PATH."""

from __future__ import annotations

import subprocess

import pytest

from benchmarks.dcmtk import dcmtk
from tests.inference.conftest import requires_dcmtk


@requires_dcmtk
def test_dcmtk_skips_python_console_scripts_of_the_same_name(tmp_path, monkeypatch) -> None:
    # What an activated virtual environment puts first: pynetdicom's Python storescp, which has no --fork.
    venv_bin = tmp_path / "bin"
    venv_bin.mkdir()
    script = venv_bin / "storescp"
    script.write_text("#!/usr/bin/env python3\nraise SystemExit('pynetdicom storescp')\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{venv_bin}:/usr/local/bin:/usr/bin:/bin")

    found = dcmtk("storescp")

    assert found != str(script)
    assert "--fork" in subprocess.run([found, "--help"], capture_output=True, text=True).stdout


def test_a_missing_program_is_named(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="dcmtk's storescu is not on PATH"):
        dcmtk("storescu")
