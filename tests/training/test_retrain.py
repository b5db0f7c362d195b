"""Retraining from an export folder: a tiny real run (one epoch) on de-identified DX films registers a new
version with the ``challenger`` alias and a bundle that passed the ONNX parity gate; the patients whose figures
it reports chose neither its weights nor its threshold, and its AUROC interval resamples patients."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from mlflow.tracking import MlflowClient
from pydicom.uid import generate_uid

import training.engine
import training.metrics
from training.deidentify import Deidentifier
from training.errors import TrainingError
from training.export_training import deidentify_file
from training.retrain import _films, retrain_from_export, split_export

FILM = Path(__file__).resolve().parents[1] / "fixtures" / "inference" / "images" / "dx_chest_highdicom.dcm"

pytestmark = pytest.mark.integration


def write_export(root: Path, per_class: int, studies_each: int = 1) -> Path:
    """An export-training folder of ``per_class`` studies per label: the real film, brightened for positives;
    each patient has ``studies_each`` studies (follow-up films) of one label."""
    rng = np.random.default_rng(0)
    source = root / "source"
    source.mkdir(parents=True)
    deid = Deidentifier()
    rows = ["StudyInstanceUID,PatientID,label"]
    for i in range(2 * per_class):
        label = (i // studies_each) % 2
        ds = pydicom.dcmread(FILM)
        pixels = ds.pixel_array.astype(np.float32)
        pixels = pixels * (1.3 if label else 0.8) + rng.normal(0, 20, pixels.shape)
        ds.PixelData = np.clip(pixels, 0, 2 ** int(ds.BitsStored) - 1).astype(ds.pixel_array.dtype).tobytes()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
        ds.PatientID = f"P{i // studies_each:03d}"
        path = source / f"{i}.dcm"
        ds.save_as(path)
        target = deidentify_file(path, root / "export" / "dicom", deid)
        assert target is not None
        rows.append(f"{deid.new_uid(str(ds.StudyInstanceUID))},{deid.pseudonym(ds.PatientID)},{label}")
    (root / "export" / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "export"


def test_retrain_registers_a_challenger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stats review 4, defect 4: the held-out studies had chosen the kept epoch (the best of their AUROCs) and the
    threshold they report sensitivity at, and the AUROC interval that decides the steering right resampled a
    patient's films as independent studies."""
    seen: dict = {}
    real_fit, real_choose, real_evaluate = training.engine.fit, training.metrics.choose_threshold, training.metrics.evaluate_binary

    def spy_fit(*args, **kwargs):
        seen["select_best"] = kwargs.get("select_best", True)
        return real_fit(*args, **kwargs)

    def spy_choose(labels, scores, **kwargs):
        seen["threshold_chosen_on"] = len(labels)
        seen["threshold"] = real_choose(labels, scores, **kwargs)
        return seen["threshold"]

    def spy_evaluate(labels, scores, **kwargs):
        seen["evaluate"] = kwargs
        return real_evaluate(labels, scores, **kwargs)

    monkeypatch.setattr(training.engine, "fit", spy_fit)
    monkeypatch.setattr(training.metrics, "choose_threshold", spy_choose)
    monkeypatch.setattr(training.metrics, "evaluate_binary", spy_evaluate)
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    export = write_export(tmp_path, 8, studies_each=2)
    result = retrain_from_export("chest-xray", export, tmp_path / "bundle", tracking_uri, epochs=1)
    client = MlflowClient(tracking_uri, tracking_uri)
    version = client.get_model_version_by_alias("chest-xray", "challenger")
    assert str(version.version) == result["version"] and version.tags["source"] == "retrained"
    # Validated on a handful of the export's own studies: far too little to let its positives move studies.
    assert version.tags["steering"] == "shadow"
    assert (tmp_path / "bundle" / "model.onnx").is_file()
    # Review 7 (ML engineer), defect 3: the bundle declared an 8x8 heat-map and the card said "8x8 heat map, as the
    # shipped chest-xray model", where the graph (and the shipped model) gives 14x14.
    import json

    import onnxruntime as ort

    graph = {o.name: o.shape[1:] for o in ort.InferenceSession(str(tmp_path / "bundle" / "model.onnx")).get_outputs()}
    declared = {o["name"]: o["shape"][1:] for o in json.loads((tmp_path / "bundle" / "bundle.json").read_text())["outputs"]}
    assert declared == graph == {"score": [1], "heatmap": [1, 14, 14]}

    _, labels, patients = _films(export)
    fit_idx, op_idx, val_idx = split_export(patients, labels, 0)
    patients = np.asarray(patients)
    assert seen["select_best"] is False
    # The threshold comes from the operating-point patients, whom neither the fitting nor the validation holds.
    assert seen["threshold_chosen_on"] == len(op_idx)
    assert seen["evaluate"]["threshold"] == seen["threshold"] == result["headline"]["threshold"]
    assert set(seen["evaluate"]["groups"]) == set(patients[val_idx])
    assert len(seen["evaluate"]["groups"]) == result["headline"]["n_val"] == 2 * len(set(patients[val_idx]))
    card = (tmp_path / "bundle" / "card.md").read_text()
    assert "export" in card and "last epoch's weights are kept" in card
    assert "bootstrap resamples of the validation patients" in card and "operating-point patients" in card
    assert "patient-unaware" not in card
    assert "14x14 heat map" in card and "8x8" not in card


def test_the_export_is_split_by_patient_into_fitting_operating_point_and_validation() -> None:
    patients = [f"P{i // 3:02d}" for i in range(60)]  # 20 patients, 3 studies each
    labels = np.array([(i // 3) % 2 for i in range(60)])
    parts = split_export(patients, labels, 0)
    assert sorted(np.concatenate(parts).tolist()) == list(range(60))
    owners = [{patients[i] for i in idx} for idx in parts]
    assert not (owners[0] & owners[1] or owners[0] & owners[2] or owners[1] & owners[2])
    assert all(set(labels[idx].tolist()) == {0, 1} for idx in parts)
    assert [len(o) for o in owners] == [12, 4, 4]
    # Four positive studies of one patient: enough studies, too few patients to hold each part out.
    with pytest.raises(TrainingError, match="1 patients with a positive study.*at least 3 patients of each"):
        split_export(["A"] * 4 + [f"N{i}" for i in range(8)], np.array([1] * 4 + [0] * 8), 0)


def test_retrain_refuses_too_few_studies_and_other_tasks(tmp_path: Path) -> None:
    export = write_export(tmp_path, 2)
    with pytest.raises(TrainingError, match="need 4 of each"):
        retrain_from_export("chest-xray", export, tmp_path / "bundle", f"sqlite:///{tmp_path / 'm.db'}", epochs=1)
    with pytest.raises(TrainingError, match="supports chest-xray"):
        retrain_from_export("ct-chest", export, tmp_path / "bundle", f"sqlite:///{tmp_path / 'm.db'}", epochs=1)


def test_train_command_accepts_an_export_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """`medscreen train TASK --data EXPORT` retrains on the export and registers a challenger, not a champion."""
    from medscreen.cli import main

    monkeypatch.setenv("MEDSCREEN_HOME", str(tmp_path / "var"))
    export = write_export(tmp_path, 5)
    assert main(["train", "chest-xray", "--data", str(export), "--epochs", "1", "--create-home"]) == 0
    assert "registered as challenger" in capsys.readouterr().out
    uri = f"sqlite:///{(tmp_path / 'var').resolve() / 'mlflow.db'}"
    version = MlflowClient(uri, uri).get_model_version_by_alias("chest-xray", "challenger")
    assert version.tags["source"] == "retrained"
    # Review 7 (ML engineer), defect 2: on a registry with no chest-xray version the challenger had been version 1 with
    # no champion to be judged against, and start-up then registered no shipped bundle: chest films scored nothing.
    champion = MlflowClient(uri, uri).get_model_version_by_alias("chest-xray", "champion")
    assert (str(champion.version), champion.tags["source"], str(version.version)) == ("1", "shipped", "2")


def test_train_command_refuses_limit_and_folds_on_an_export_and_honours_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """Review 7 (ML engineer), defect 1: on an export folder `--limit 2 --folds 3 --threads 1` had been ignored without
    a word: a full retrain on every study was registered as challenger, with torch on every core."""
    import torch

    import training.retrain_cli
    from medscreen.cli import main

    monkeypatch.setenv("MEDSCREEN_HOME", str(tmp_path / "var"))
    export = tmp_path / "export"
    (export / "dicom").mkdir(parents=True)
    (export / "labels.csv").write_text("StudyInstanceUID,PatientID,label\n")
    threads_before = torch.get_num_threads()
    seen: dict = {}

    def fake_retrain(args, settings) -> int:
        seen["threads"] = torch.get_num_threads()
        return 0

    monkeypatch.setattr(training.retrain_cli, "run_retrain", fake_retrain)
    try:
        for options in (["--limit", "2"], ["--folds", "3"]):
            assert main(["train", "chest-xray", "--data", str(export), *options, "--create-home"]) == 2
            line = capsys.readouterr().err.strip().splitlines()[-1]
            assert line.startswith("medscreen train: --data ") and f"leave out {options[0]}" in line and "export-training` folder" in line
        assert not seen  # refused before any training
        assert main(["train", "chest-xray", "--data", str(export), "--threads", "1", "--create-home"]) == 0
        assert seen["threads"] == 1
    finally:
        torch.set_num_threads(threads_before)


def test_an_export_of_other_films_than_chest_radiographs_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review 7 (ML engineer), defect 6: an export of mammograms (`export-training --task mammography`) had trained the
    chest model and been registered as its challenger, shadow-scored on every chest film."""
    from training.errors import TrainingInputError

    monkeypatch.setattr(
        "tests.training.test_retrain.FILM", Path(__file__).resolve().parents[1] / "fixtures" / "inference" / "images" / "mg_ge_senographe.dcm"
    )
    export = write_export(tmp_path, 2)
    with pytest.raises(TrainingInputError, match=r"4 of 4 studies are not CR or DX films \(MG 4\): a chest-xray retrain"):
        _films(export)
