"""A score that does not depend on how a film was stored (review 5): a padded margin (Pixel Padding Value) scores as the
same margin stored dark, for the chest and mammography models; a chest film stored mirrored (Patient Orientation
``R\\F``) or upside down (``L\\H``) scores as the film itself, and its heat-map lies on the stored pixels."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pydicom
import pytest

from benchmarks.study_factory import wrap_mammogram, wrap_radiograph
from inference.champions import LoadedModel
from inference.film_orientation import frontal_mirror_axes
from inference.scorers import TaskScore, score_chest_xray, score_mammography
from inference.shipped_models import SHIPPED_MODELS_DIR, read_bundle
from inference.writeback import ResultToWrite, build_heatmap, heatmap_shape
from tests.conftest import FIXTURES

CHEST_FILMS = sorted((FIXTURES / "datasets" / "kermany" / "train").glob("*/*.jpeg"))
MAMMOGRAMS = sorted((FIXTURES / "datasets" / "mias").glob("*.png"))
PAD = 4095
PADDING_TOLERANCE = 0.02


@pytest.fixture(scope="module")
def models() -> dict[str, LoadedModel]:
    loaded = {}
    for task in ("chest-xray", "mammography"):
        shipped = read_bundle(SHIPPED_MODELS_DIR / task)
        session = ort.InferenceSession(str(shipped.onnx_path), providers=["CPUExecutionProvider"])
        loaded[task] = LoadedModel(
            task, task, "shipped", None, float(shipped.bundle["threshold"]), shipped.bundle, session
        )
    return loaded


def _with_margin(path: Path, margin: str, *, declare: bool = True) -> pydicom.Dataset:
    """The wrapped film as 12-bit pixels whose outer 3% is padding (PAD, declared as PixelPaddingValue unless not
    ``declare``) or the film's darkest value ("dark": the margin an unpadded detector stores)."""
    ds = pydicom.dcmread(path)
    pixels = ds.pixel_array.astype(np.uint16) * 16
    width = max(1, round(0.03 * max(pixels.shape)))
    inner = pixels[width:-width, width:-width].copy()
    pixels[:] = PAD if margin == "padding" else pixels.min()
    pixels[width:-width, width:-width] = inner
    if margin == "padding" and declare:
        ds.PixelPaddingValue = PAD
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelData = pixels.tobytes()
    return ds


@pytest.mark.parametrize("film", CHEST_FILMS, ids=[p.name for p in CHEST_FILMS])
def test_a_padded_chest_film_scores_as_its_margin_stored_dark(film: Path, models, tmp_path: Path) -> None:
    model = models["chest-xray"]
    path = wrap_radiograph(film, tmp_path / "cxr.dcm")
    dark = score_chest_xray(model, [_with_margin(path, "dark")], min_ct_slices=1).score
    padded = score_chest_xray(model, [_with_margin(path, "padding")], min_ct_slices=1).score
    assert padded == pytest.approx(dark, abs=PADDING_TOLERANCE)


def test_padding_had_moved_the_chest_score(models, tmp_path: Path) -> None:
    """The failure the fix removes, on one pneumonia film: its padding not declared, the white margin sets the rescale."""
    model = models["chest-xray"]
    path = wrap_radiograph(
        FIXTURES / "datasets/kermany/train/PNEUMONIA/person1000_bacteria_2931.jpeg", tmp_path / "p.dcm"
    )
    undeclared = score_chest_xray(model, [_with_margin(path, "padding", declare=False)], min_ct_slices=1).score
    declared = score_chest_xray(model, [_with_margin(path, "padding")], min_ct_slices=1).score
    assert declared > model.threshold > undeclared


@pytest.mark.parametrize("film", MAMMOGRAMS, ids=[p.name for p in MAMMOGRAMS])
def test_a_padded_mammogram_scores_as_its_margin_stored_dark(film: Path, models, tmp_path: Path) -> None:
    model = models["mammography"]
    path = wrap_mammogram(film, tmp_path / "mg.dcm", laterality="L")
    dark = score_mammography(model, [_with_margin(path, "dark")], min_ct_slices=1).score
    padded = score_mammography(model, [_with_margin(path, "padding")], min_ct_slices=1).score
    assert padded == pytest.approx(dark, abs=PADDING_TOLERANCE)


def _turned(path: Path, orientation: list[str], axes: tuple[int, ...]) -> pydicom.Dataset:
    ds = pydicom.dcmread(path)
    ds.PatientOrientation = orientation
    if axes:
        ds.PixelData = np.ascontiguousarray(np.flip(ds.pixel_array, axes)).tobytes()
    return ds


def _overlay(result: TaskScore, threshold: float) -> np.ndarray:
    """The heat-map Secondary Capture's pixels below its caption band."""
    written = ResultToWrite("chest-xray", "chest-xray", "1", "run-1", threshold, "positive", result)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        heatmap = build_heatmap(written, series_instance_uid=written.new_uid())
    assert heatmap is not None
    pixels = np.asarray(heatmap.pixel_array, dtype=np.int16)
    return pixels[pixels.shape[0] - heatmap_shape(result.source)[0] :]


@pytest.mark.parametrize(("orientation", "axes"), [(["R", "F"], (1,)), (["L", "H"], (0,)), (["R", "H"], (0, 1))])
@pytest.mark.parametrize("film", CHEST_FILMS[::2], ids=[p.name for p in CHEST_FILMS[::2]])
def test_a_mirrored_chest_film_scores_as_the_film_and_its_heatmap_lies_on_the_stored_pixels(
    film: Path, orientation: list[str], axes: tuple[int, ...], models, tmp_path: Path
) -> None:
    model = models["chest-xray"]
    path = wrap_radiograph(film, tmp_path / "cxr.dcm")
    hung = score_chest_xray(model, [_turned(path, ["L", "F"], ())], min_ct_slices=1)
    stored = _turned(path, orientation, axes)
    turned = score_chest_xray(model, [stored], min_ct_slices=1)
    assert turned.score == pytest.approx(hung.score, abs=1e-4)
    assert turned.heatmap is not None and hung.heatmap is not None and turned.image is not None
    # The model's input and its map, as handed to the write-back, are on the stored (mirrored) pixels.
    assert np.allclose(turned.heatmap, np.flip(hung.heatmap, axes), atol=1e-5)
    assert np.allclose(turned.image, np.flip(hung.image, axes), atol=1e-6)
    # The SR's point is the mirror of the hung film's, in the stored image's pixel coordinates.
    col, row = turned.localisation["point"]
    hung_col, hung_row = hung.localisation["point"]
    rows, cols = int(stored.Rows), int(stored.Columns)
    assert (col, row) == pytest.approx(
        (cols - hung_col if 1 in axes else hung_col, rows - hung_row if 0 in axes else hung_row)
    )
    # The heat-map written back overlays the stored film: the mirror of the hung film's overlay (bilinear resize
    # rounding aside).
    difference = np.abs(_overlay(turned, model.threshold) - np.flip(_overlay(hung, model.threshold), axes))
    assert float(np.percentile(difference, 99)) <= 2


def test_a_mammogram_is_not_turned_by_its_patient_orientation(models, tmp_path: Path) -> None:
    """A mammogram's Patient Orientation follows its laterality (``A\\R`` for a right CC): its networks learnt both
    sides and its map finds the chest wall from the tissue, so the header turns nothing."""
    model = models["mammography"]
    path = wrap_mammogram(MAMMOGRAMS[0], tmp_path / "mg.dcm", laterality="R", view_position="CC")
    as_stored = score_mammography(model, [_turned(path, [], ())], min_ct_slices=1)
    declared = score_mammography(model, [_turned(path, ["A", "R"], ())], min_ct_slices=1)
    upside = score_mammography(model, [_turned(path, ["P", "H"], ())], min_ct_slices=1)
    assert as_stored.score == declared.score == upside.score


@pytest.mark.parametrize(
    ("orientation", "axes"),
    [
        (["L", "F"], ()),
        (["R", "F"], (1,)),
        (["RA", "FP"], (1,)),  # oblique: the leading letter is the main direction
        (["L", "H"], (0,)),
        (["R", "H"], (0, 1)),
        (["F", "L"], ()),  # turned by 90 degrees: not a mirror, scored as stored
        (["A", "F"], ()),  # a lateral
        ("R", ()),
        ("", ()),
        (None, ()),
    ],
)
def test_only_a_mirrored_or_upside_down_frontal_film_is_turned(orientation: object, axes: tuple[int, ...]) -> None:
    ds = pydicom.Dataset()
    if orientation is not None:
        ds.PatientOrientation = orientation
    assert frontal_mirror_axes(ds) == axes
