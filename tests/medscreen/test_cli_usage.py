"""Usage errors of the ``medscreen`` command: exit code 2, the unknown argument named, under the usage of the
command it was given to."""

from __future__ import annotations

from pathlib import Path

import pytest

from medscreen.cli import main
from tests.conftest import REPO


def usage_error(capsys: pytest.CaptureFixture[str], *argv: str) -> list[str]:
    with pytest.raises(SystemExit) as stopped:
        main(list(argv))
    assert stopped.value.code == 2
    return capsys.readouterr().err.splitlines()


def test_an_unknown_option_is_named_under_the_usage_of_its_command(capsys: pytest.CaptureFixture[str]) -> None:
    # It had said "the following arguments are required: COMMAND", naming no --bogus.
    assert usage_error(capsys, "--bogus")[-1] == "medscreen: error: unrecognized arguments: --bogus"
    assert usage_error(capsys, "--create-home", "--bogus", "users", "list")[-1] == (
        "medscreen: error: unrecognized arguments: --bogus"
    )
    # It had shown the top-level usage ("usage: medscreen [-h] [--create-home] COMMAND ...").
    serve = usage_error(capsys, "serve", "--bogus")
    assert serve[0].startswith("usage: medscreen serve ") and serve[-1] == (
        "medscreen serve: error: unrecognized arguments: --bogus"
    )
    users = usage_error(capsys, "users", "--bogus")
    assert users[0].startswith("usage: medscreen users ") and users[-1].endswith("unrecognized arguments: --bogus")
    assert usage_error(capsys)[-1] == "medscreen: error: the following arguments are required: COMMAND"


def test_routes_test_names_only_the_rules_file_as_required_and_a_missing_path_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # PATH is optional (no path: the stored studies); it had been listed as required.
    assert usage_error(capsys, "routes", "test")[-1] == (
        "medscreen routes test: error: the following arguments are required: RULES_FILE"
    )
    # A path that does not exist: exit code 2 as in `medscreen score` (it had been 1).
    rules = REPO / "inference" / "default_routes.yaml"
    assert main(["routes", "test", str(rules), str(tmp_path / "nonexistent")]) == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert error.startswith("medscreen routes test: ") and "nonexistent" in error


def test_export_training_takes_only_a_known_task(capsys: pytest.CaptureFixture[str]) -> None:
    # An unknown task (chest_xray, pneumonia) had written an empty labels.csv, a crosswalk and audit rows, exit 0.
    error = usage_error(capsys, "export-training", "--task", "chest_xray", "--since", "2026-01-01", "out")[-1]
    assert error.startswith("medscreen export-training: error: argument --task: invalid choice: 'chest_xray'")
    assert "chest-xray" in error
