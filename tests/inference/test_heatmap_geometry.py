"""The heat-map's header describes its pixels as the source's does (review D2: Patient Orientation was `P\\F` for
every radiograph and mammogram, whatever the source said; D6: a chest heat-map carried the source's laterality,
where README says General Series Laterality is the breast's for mammography and present and empty otherwise)."""

from __future__ import annotations

import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from inference.scorers import TaskScore
from inference.writeback import ResultToWrite, build_heatmap
from tests.inference.conftest import INFERENCE_FIXTURES

IMAGES = INFERENCE_FIXTURES / "images"
DX_CHEST = IMAGES / "dx_chest_highdicom.dcm"  # PatientOrientation L\F, ImageLaterality L
MG_CC = IMAGES / "mg_ge_senographe.dcm"  # PatientOrientation R\P, ImageLaterality L
CT = sorted((INFERENCE_FIXTURES / "ct").glob("*.dcm"))[0]  # no PatientOrientation, axial IOP


def _heatmap(task: str, source: Dataset, tmp_path: Path) -> Dataset:
    scored = TaskScore(
        score=0.72, localisation={"kind": "heatmap", "point": [40.0, 60.0]}, source=source,
        heatmap=np.linspace(0, 1, 64).reshape(8, 8), image=np.full((64, 64), 0.5),
    )
    result = ResultToWrite(task, task, "1", "run-1", 0.6, "positive", scored)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        heatmap = build_heatmap(result, series_instance_uid=result.new_uid())
    assert heatmap is not None
    path = tmp_path / "heatmap.dcm"
    heatmap.save_as(path, enforce_file_format=True)
    if shutil.which("dciodvfy"):
        checked = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, errors="replace", timeout=60)
        assert [line for line in (checked.stdout + checked.stderr).splitlines() if line.startswith("Error")] == []
    return dcmread(path)


@pytest.mark.parametrize(("task", "path", "orientation", "laterality"), [
    ("chest-xray", DX_CHEST, ["L", "F"], ""),
    ("mammography", MG_CC, ["R", "P"], "L"),
])
def test_orientation_is_the_sources_and_laterality_only_a_breasts(
    task: str, path: Path, orientation: list[str], laterality: str, tmp_path: Path
) -> None:
    heatmap = _heatmap(task, dcmread(path), tmp_path)
    assert list(heatmap.PatientOrientation) == orientation
    assert "Laterality" in heatmap and (heatmap.Laterality or "") == laterality


@pytest.mark.parametrize(("cosines", "orientation"), [
    ([1, 0, 0, 0, 1, 0], ["L", "P"]),  # axial
    ([0, 1, 0, 0, 0, -1], ["P", "F"]),  # sagittal
    ([0.866, 0.5, 0, -0.5, 0.866, 0], ["LP", "PR"]),  # axial, rotated 30 degrees
])
def test_without_patient_orientation_it_is_derived_from_image_orientation(
    cosines: list[float], orientation: list[str], tmp_path: Path
) -> None:
    source = dcmread(CT)
    source.ImageOrientationPatient = cosines
    assert "PatientOrientation" not in source
    assert list(_heatmap("ct-chest", source, tmp_path).PatientOrientation) == orientation


def test_an_unknown_or_invalid_orientation_is_sent_empty(tmp_path: Path) -> None:
    source = dcmread(DX_CHEST)
    source.PatientOrientation = ["X", "F"]
    heatmap = _heatmap("chest-xray", source, tmp_path)
    assert "PatientOrientation" in heatmap and not heatmap.PatientOrientation


def test_the_heatmap_keeps_the_sources_aspect_spacing_and_reference_with_the_caption_outside(tmp_path: Path) -> None:
    """Review D3: every heat-map was squashed to 512x512 (the model's square input), with no spacing or reference
    to its source, and the caption was a black band over the top of the image (the lung apices)."""
    source = dcmread(DX_CHEST)  # 169 rows x 211 columns, Pixel Spacing 1.2\1.2012
    scored = TaskScore(score=0.72, localisation={"kind": "heatmap", "point": [40.0, 60.0]}, source=source,
                       heatmap=None, image=np.full((64, 64), 0.5))
    result = ResultToWrite("chest-xray", "chest-xray", "1", "run-1", 0.6, "positive", scored)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        heatmap = build_heatmap(result, series_instance_uid=result.new_uid())
    assert heatmap is not None
    pixels = heatmap.pixel_array
    # The caption's band is added above the image: its rows are black and yellow text, the image under it untouched.
    band = next(row for row in range(pixels.shape[0]) if (pixels[row] == pixels[row, 0]).all() and pixels[row, 0, 0] > 0)
    assert band >= 40 and (pixels[band:] == pixels[band, 0]).all() and pixels[band, 0, 0] == pixels[band, 0, 2]
    rows, columns = pixels.shape[0] - band, pixels.shape[1]
    assert max(rows, columns) == 512 and abs(rows / columns - 169 / 211) < 0.01
    spacing = [float(value) for value in heatmap.PixelSpacing]
    assert spacing[0] * rows == pytest.approx(1.2 * 169, rel=1e-6)
    assert spacing[1] * columns == pytest.approx(1.2012 * 211, rel=1e-4)
    (reference,) = heatmap.SourceImageSequence
    assert (reference.ReferencedSOPClassUID, reference.ReferencedSOPInstanceUID) == (source.SOPClassUID, source.SOPInstanceUID)
    _heatmap("chest-xray", source, tmp_path)  # and dciodvfy has no errors


def test_a_source_without_pixel_spacing_gets_none(tmp_path: Path) -> None:
    source = dcmread(DX_CHEST)
    del source.PixelSpacing
    heatmap = _heatmap("chest-xray", source, tmp_path)
    assert "PixelSpacing" not in heatmap and heatmap.Columns == 512
