"""Pixel Padding Value (0028,0120) and Pixel Padding Range Limit (0028,0121): padding is no part of the image's
contrast rescale and is background in the model input (review 5: a padded high-value border had set the rescale)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from benchmarks.study_factory import wrap_radiograph
from datasets.errors import UnreadableImage
from datasets.preprocess import PreprocessSpec, dicom_to_array, percentile_rescale, prepare_image, resize
from tests.conftest import FIXTURES

FILM = FIXTURES / "datasets" / "kermany" / "train" / "PNEUMONIA" / "person1000_bacteria_2931.jpeg"
SPEC = PreprocessSpec(size=(224, 224))
PAD = 4095
BORDER = 7  # of 224 pixels: a collimated film's padded margin


def _twelve_bit(
    tmp_path: Path, border: str | None = None, *, declare: bool = True, monochrome1: bool = False
) -> pydicom.Dataset:
    """The chest film as 12-bit DX; ``border`` "padding" stores its outer BORDER pixels as PAD (PixelPaddingValue
    set when ``declare``), "dark" as the film's darkest value, None leaves the film whole."""
    ds = pydicom.dcmread(wrap_radiograph(FILM, tmp_path / "film.dcm"))
    pixels = ds.pixel_array.astype(np.uint16) * 16
    if border is not None:
        inner = pixels[BORDER:-BORDER, BORDER:-BORDER].copy()
        pixels[:] = PAD if border == "padding" else pixels.min()
        pixels[BORDER:-BORDER, BORDER:-BORDER] = inner
    if monochrome1:
        # Dense is dark in MONOCHROME1: the film's values inverted within 12 bits, the padding kept at PAD.
        pixels = np.where(pixels == PAD, PAD, 4080 - pixels).astype(np.uint16)
        ds.PhotometricInterpretation = "MONOCHROME1"
    if border == "padding" and declare:
        ds.PixelPaddingValue = PAD
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelData = pixels.tobytes()
    return ds


def _input(ds: pydicom.Dataset) -> np.ndarray:
    return prepare_image(dicom_to_array(ds), SPEC)[0, 0]


def test_padding_is_left_out_of_the_rescale_and_is_background(tmp_path: Path) -> None:
    dark = _input(_twelve_bit(tmp_path, "dark"))
    ignored = _input(_twelve_bit(tmp_path, "padding", declare=False))
    padded = _input(_twelve_bit(tmp_path, "padding"))
    inner = (slice(BORDER, -BORDER), slice(BORDER, -BORDER))
    # Before: the border set the upper percentile, which dimmed the whole film, and the border itself was white.
    assert np.abs(ignored[inner] - dark[inner]).mean() > 0.1 and (ignored[:BORDER] == 1).all()
    assert (padded[:BORDER] == 0).all() and (padded[:, -BORDER:] == 0).all()
    # As the same film whose margin is stored dark: the percentiles differ only by the margin's share of pixels.
    assert np.abs(padded - dark).max() < 0.05


def test_a_monochrome1_film_with_padding_reads_as_its_monochrome2_copy(tmp_path: Path) -> None:
    monochrome2 = _input(_twelve_bit(tmp_path, "padding"))
    monochrome1 = _input(_twelve_bit(tmp_path, "padding", monochrome1=True))
    assert np.allclose(monochrome1, monochrome2, atol=1e-5)
    assert (monochrome1[:BORDER] == 0).all()


def test_the_range_limit_pads_every_value_between(tmp_path: Path) -> None:
    ds = _twelve_bit(tmp_path, "padding")
    pixels = ds.pixel_array.copy()
    pixels[:BORDER] = 4090  # a top margin of values between the padding value and its limit
    ds.PixelData = pixels.tobytes()
    assert not (_input(ds)[:BORDER] == 0).all()
    ds.PixelPaddingRangeLimit = 4088
    image = dicom_to_array(ds)
    assert image.padding is not None and image.padding[:BORDER].all()
    assert (prepare_image(image, SPEC)[0, 0][:BORDER] == 0).all()


def test_an_image_without_padding_is_prepared_as_before(tmp_path: Path) -> None:
    """No padding pixel (none declared, or a value no pixel has): bit for bit the resize then the percentile rescale
    the shipped models were trained and their cards computed on."""
    plain = _twelve_bit(tmp_path)
    declared = _twelve_bit(tmp_path)
    declared.PixelPaddingValue = PAD  # the film's 12-bit values stop at 4080
    for ds in (plain, declared):
        image = dicom_to_array(ds)
        assert image.padding is None
        before = percentile_rescale(resize(image.pixels, SPEC.size), *SPEC.percentiles)
        assert np.array_equal(prepare_image(image, SPEC)[0, 0], before.astype(np.float32))


def test_a_windowed_image_with_padding_is_background_there() -> None:
    ds = pydicom.dcmread(FIXTURES / "datasets" / "dicom" / "CT_small.dcm")
    pixels = ds.pixel_array.copy()
    pixels[:, :8] = -2000
    ds.PixelData = pixels.tobytes()
    ds.PixelPaddingValue = -2000
    spec = PreprocessSpec(size=(128, 128), window=(40.0, 400.0))
    image = dicom_to_array(ds, apply_voi=False)
    assert image.padding is not None and image.padding[:, :8].all()
    assert (prepare_image(image, spec)[0, 0][:, :8] == 0).all()


def test_an_unusable_padding_value_is_bad_input(tmp_path: Path) -> None:
    ds = _twelve_bit(tmp_path)
    ds.add_new(0x00280120, "US", [1, 2])
    with pytest.raises(UnreadableImage, match="PixelPaddingValue"):
        dicom_to_array(ds)
