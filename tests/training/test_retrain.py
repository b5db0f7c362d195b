"""Retraining from an export folder: a tiny real run (one epoch) on de-identified DX films registers a new
version with the ``challenger`` alias and a bundle that passed the ONNX parity gate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from mlflow.tracking import MlflowClient
from pydicom.uid import generate_uid

from training.deidentify import Deidentifier
from training.errors import TrainingError
from training.export_training import deidentify_file
from training.retrain import retrain_from_export

FILM = Path(__file__).resolve().parents[1] / "fixtures" / "inference" / "images" / "dx_chest_highdicom.dcm"

pytestmark = pytest.mark.integration


def write_export(root: Path, per_class: int) -> Path:
    """An export-training folder of ``per_class`` studies per label: the real film, brightened for positives."""
    rng = np.random.default_rng(0)
    source = root / "source"
    source.mkdir(parents=True)
    deid = Deidentifier()
    rows = ["StudyInstanceUID,PatientID,label"]
    for i in range(2 * per_class):
        label = i % 2
        ds = pydicom.dcmread(FILM)
        pixels = ds.pixel_array.astype(np.float32)
        pixels = pixels * (1.3 if label else 0.8) + rng.normal(0, 20, pixels.shape)
        ds.PixelData = np.clip(pixels, 0, 2 ** int(ds.BitsStored) - 1).astype(ds.pixel_array.dtype).tobytes()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
        ds.PatientID = f"P{i:03d}"
        path = source / f"{i}.dcm"
        ds.save_as(path)
        target = deidentify_file(path, root / "export" / "dicom", deid)
        assert target is not None
        rows.append(f"{deid.new_uid(str(ds.StudyInstanceUID))},{deid.pseudonym(ds.PatientID)},{label}")
    (root / "export" / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "export"


def test_retrain_registers_a_challenger(tmp_path: Path) -> None:
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    export = write_export(tmp_path, 6)
    result = retrain_from_export("chest-xray", export, tmp_path / "bundle", tracking_uri, epochs=1)
    client = MlflowClient(tracking_uri, tracking_uri)
    version = client.get_model_version_by_alias("chest-xray", "challenger")
    assert str(version.version) == result["version"] and version.tags["source"] == "retrained"
    # Validated on a handful of the export's own studies: far too little to let its positives move studies.
    assert version.tags["steering"] == "shadow"
    assert (tmp_path / "bundle" / "model.onnx").is_file() and "export" in (tmp_path / "bundle" / "card.md").read_text()


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
