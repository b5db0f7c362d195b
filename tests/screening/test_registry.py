"""The screener as a versioned MLflow model: training run, metrics, card, registry alias champion."""

from __future__ import annotations

from pathlib import Path

import pytest

from medscreen.cli import main
from screening.registry import REGISTERED_NAME
from screening.risk_model import load_risk_model
from service.settings import Settings


@pytest.mark.integration
def test_train_logs_registers_and_promotes(
    phenopackets: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MEDSCREEN_HOME", str(settings.home))
    settings.home.mkdir(parents=True, exist_ok=True)
    assert main(["screening", "train", "--phenopackets", str(phenopackets), "--controls", "200"]) == 0
    artefact = settings.home / "screening" / "screener.json"
    model = load_risk_model(artefact)
    assert model.metrics["projections"]["hpo-60"]["n_cases"] == 12 and min(model.coef) >= 0
    assert "Rare-disease screener" in (artefact.parent / "screener_card.md").read_text()

    client = MlflowClient(settings.resolved_mlflow_tracking_uri, settings.resolved_mlflow_tracking_uri)
    champion = client.get_model_version_by_alias(REGISTERED_NAME, "champion")
    run = client.get_run(champion.run_id)
    assert run.data.params["model_version"] == model.version
    assert (
        "sensitivity_at_budget" in run.data.metrics
        and "projections.hpo-30.baseline_finding_count.auprc" in run.data.metrics
    )
    files = {f.path for f in client.list_artifacts(champion.run_id, "screener")}
    assert files == {"screener/screener.json", "screener/card.md"}


def test_registering_the_same_screener_twice_keeps_one_version(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`medscreen screening register` run twice had made two versions of the one shipped screener; the second run
    now finds it and makes it champion again."""
    import json

    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MEDSCREEN_HOME", str(settings.home))
    settings.home.mkdir(parents=True, exist_ok=True)
    assert main(["screening", "register"]) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    client = MlflowClient(settings.resolved_mlflow_tracking_uri, settings.resolved_mlflow_tracking_uri)
    client.delete_registered_model_alias(REGISTERED_NAME, "champion")  # as if another version had been champion
    assert main(["screening", "register"]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert first["version"] == again["version"] == "1" and again["already_registered"] == "true"
    assert [str(v.version) for v in client.search_model_versions(f"name = '{REGISTERED_NAME}'")] == ["1"]
    assert str(client.get_model_version_by_alias(REGISTERED_NAME, "champion").version) == "1"
    assert main(["models", "list"]) == 0
    header, row = capsys.readouterr().out.splitlines()[-2:]
    assert row.split() == [REGISTERED_NAME, "1", "champion", "-", "-", "-", "shipped", first["run_id"]]
    assert row.index(" 1 ") < header.index("version") + len("version") <= row.index("champion")  # in its column


def test_the_screeners_artifacts_are_kept_beside_the_registry_not_in_the_working_directory(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The screener's experiment had been made by MLflow's default, whose artifacts go to ``./mlruns`` of whatever
    folder the command ran in: a service started from the project folder kept its screener outside its home."""
    from mlflow.tracking import MlflowClient

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("MEDSCREEN_HOME", str(settings.home))
    settings.home.mkdir(parents=True, exist_ok=True)
    assert main(["screening", "register"]) == 0
    client = MlflowClient(settings.resolved_mlflow_tracking_uri, settings.resolved_mlflow_tracking_uri)
    champion = client.get_model_version_by_alias(REGISTERED_NAME, "champion")
    artifacts = Path(client.get_run(champion.run_id).info.artifact_uri.removeprefix("file://"))
    assert artifacts.is_relative_to(settings.home.resolve()) and (artifacts / "screener" / "screener.json").is_file()
    assert not (elsewhere / "mlruns").exists()
