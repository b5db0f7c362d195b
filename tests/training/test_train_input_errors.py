"""A --data that a training task cannot read is one line naming the path and what was expected, exit 2.

It had been a reader's traceback (exit 1) for chest-xray and mammography, and numpy's "need at least one array to
stack" for ct-chest. Every case stops before any training, so these run in-process in well under a second each.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medscreen.cli import main
from training import ct_figures, mammography_figures, rewire_fold_mean
from training.errors import TrainingInputError

TASKS = ("chest-xray", "mammography", "ct-chest")


@pytest.fixture
def train(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("MEDSCREEN_HOME", str(tmp_path / "var"))
    monkeypatch.setenv("MEDSCREEN_MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")

    def run(task: str, data: Path, *options: str) -> tuple[int, str]:
        capsys.readouterr()
        code = main(["--create-home", "train", task, "--data", str(data), "--epochs", "1", "--threads", "1", "--out", str(tmp_path / "out"), *options])
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if not line.startswith("medscreen: ")]  # the root's "home ..." line
        assert len(lines) == 1, err
        assert not (tmp_path / "out").exists()
        return code, lines[0]

    return run


@pytest.mark.parametrize("task", TASKS)
def test_missing_data_folder(train, tmp_path: Path, task: str) -> None:  # type: ignore[no-untyped-def]
    code, line = train(task, tmp_path / "nonexistent")
    assert code == 2
    assert line.startswith("medscreen train: --data ") and f"{tmp_path / 'nonexistent'} does not exist" in line
    assert "expected the shared data folder" in line


@pytest.mark.parametrize(
    ("task", "expected"),
    [("chest-xray", "chest-xray/kermany/[train/]{NORMAL,PNEUMONIA}"), ("mammography", "mammography/mias/Info.txt"),
     ("ct-chest", "ct/lidc/small/LIDC-IDRI-*")],
)
def test_empty_data_folder(train, tmp_path: Path, task: str, expected: str) -> None:  # type: ignore[no-untyped-def]
    empty = tmp_path / "empty"
    empty.mkdir()
    code, line = train(task, empty)
    assert code == 2
    assert line.startswith(f"medscreen train: --data {empty}: ") and expected in line


def test_ct_chest_wrong_layout_names_the_folder_it_searched(train, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # --data ../shared/data/ct (one level too deep): nothing under ct/ct/lidc.
    data = tmp_path / "ct"
    (data / "lidc" / "small" / "LIDC-IDRI-0001").mkdir(parents=True)
    code, line = train("ct-chest", data)
    assert code == 2
    assert f"{data / 'ct' / 'lidc'} holds no LIDC case" in line


def test_mammography_films_without_info(train, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    mias = tmp_path / "data" / "mammography" / "mias"
    mias.mkdir(parents=True)
    (mias / "Info.txt").write_text("mdb001 G CIRC B 535 425 197\n")
    code, line = train("mammography", tmp_path / "data")
    assert code == 2
    assert "holds no MIAS film" in line


@pytest.mark.parametrize(("labels", "said"), [("", "needs columns StudyInstanceUID and label"), ("StudyInstanceUID,label\n", "holds no labelled study")])
def test_export_folder_with_empty_labels(train, tmp_path: Path, labels: str, said: str) -> None:  # type: ignore[no-untyped-def]
    export = tmp_path / "export"
    (export / "dicom").mkdir(parents=True)
    (export / "labels.csv").write_text(labels)
    code, line = train("chest-xray", export)
    assert code == 2
    assert line.startswith("medscreen train: --data ") and said in line and "medscreen export-training" in line


def test_figure_commands_say_what_data_they_need(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "metrics.json").write_text(json.dumps({"cross_validation": {"fold_patient": {}}}))
    (model / "bundle.json").write_text("{}")
    for module in (ct_figures, mammography_figures, rewire_fold_mean):
        with pytest.raises(SystemExit) as stopped:
            module.main([str(model), "--data", str(tmp_path / "nonexistent")])
        assert stopped.value.code == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and f"--data {tmp_path / 'nonexistent'} does not exist" in err, module.__name__


def test_ct_chest_refuses_folds_it_cannot_honour(train, shared_data: Path) -> None:  # type: ignore[no-untyped-def]
    # ct-chest is leave-one-patient-out (3 LIDC patients): --folds 5 had been ignored without a word.
    code, line = train("ct-chest", shared_data, "--folds", "5")
    assert code == 2
    assert line.startswith("medscreen train: --folds 5: ct-chest is cross-validated leave-one-patient-out")
    assert "3 folds for the 3 patients" in line and line.endswith("omit --folds")


def test_ct_chest_folds_are_one_per_patient(tmp_path: Path) -> None:
    from training.tasks.ct_chest import leave_one_patient_out

    patients = ["LIDC-IDRI-0001", "LIDC-IDRI-0002", "LIDC-IDRI-0003"]
    assert leave_one_patient_out(patients, None, tmp_path) == 3
    assert leave_one_patient_out(patients, 3, tmp_path) == 3
    with pytest.raises(TrainingInputError, match="--folds 2: ct-chest is cross-validated leave-one-patient-out"):
        leave_one_patient_out(patients, 2, tmp_path)
    with pytest.raises(TrainingInputError, match="holds 1 LIDC patient; .* needs at least 2"):
        leave_one_patient_out(patients[:1], None, tmp_path)


def test_retrain_refuses_zero_epochs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`medscreen retrain --epochs 0` had been accepted (as `train --epochs 0` had, which registered an untrained
    version): a usage error, exit 2, before anything is read."""
    monkeypatch.setenv("MEDSCREEN_HOME", str(tmp_path / "var"))
    with pytest.raises(SystemExit) as stopped:
        main(["--create-home", "retrain", "--task", "chest-xray", "--data", str(tmp_path), "--epochs", "0"])
    assert stopped.value.code == 2
    assert "--epochs: must be 1 or more, got 0" in capsys.readouterr().err


def test_retrain_refuses_a_task_it_cannot_retrain_as_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`medscreen retrain --task mammography` (only chest-xray is retrained from an export) had exited 1, the code of
    a refused gate, after reading the export: a usage error, exit 2, naming the task it takes."""
    from training.retrain import RETRAINABLE_TASKS

    monkeypatch.setenv("MEDSCREEN_HOME", str(tmp_path / "var"))
    with pytest.raises(SystemExit) as stopped:
        main(["--create-home", "retrain", "--task", "mammography", "--data", str(tmp_path)])
    assert stopped.value.code == 2
    assert "invalid choice: 'mammography' (choose from" in capsys.readouterr().err
    assert [str(task) for task in RETRAINABLE_TASKS] == ["chest-xray"]  # the parser's choices, kept in step
