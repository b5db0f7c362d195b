"""The numpy preprocessing shared by training and serving, on real DICOM files."""

from __future__ import annotations

import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.encaps import encapsulate, generate_fragmented_frames
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.uid import RLELossless

from datasets.errors import UnreadableImage
from datasets.preprocess import (
    PreprocessSpec,
    apply_window,
    dicom_to_array,
    percentile_rescale,
    prepare_image,
    read_image_file,
    resize,
)
from tests.conftest import FIXTURES, REPO

DICOM = FIXTURES / "datasets" / "dicom"


def test_ct_rescale_slope_intercept_gives_hounsfield_units() -> None:
    ds = pydicom.dcmread(DICOM / "CT_small.dcm")
    image = dicom_to_array(ds, apply_voi=False)
    raw = ds.pixel_array.astype(np.float32)
    assert np.allclose(image.pixels, raw * float(ds.RescaleSlope) + float(ds.RescaleIntercept))
    assert image.spacing_mm == tuple(float(v) for v in ds.PixelSpacing)
    assert not image.voi_applied


def test_monochrome1_is_inverted_so_that_bright_means_dense() -> None:
    ds = pydicom.dcmread(DICOM / "dx_image.dcm")
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    raw = apply_modality_lut(ds.pixel_array, ds).astype(np.float32)
    image = dicom_to_array(ds, apply_voi=False)
    assert np.allclose(image.pixels, raw.max() + raw.min() - raw)


def test_voi_lut_sequence_is_applied() -> None:
    ds = pydicom.dcmread(DICOM / "vlut_04.dcm")
    assert "VOILUTSequence" in ds
    image = dicom_to_array(ds)
    expected = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds, prefer_lut=True)
    assert image.voi_applied
    assert np.allclose(image.pixels, expected)


def test_window_and_percentile_rescale_map_to_unit_range() -> None:
    hu = np.array([[-2000.0, -1350.0, -600.0, 150.0, 3000.0]])
    assert np.allclose(apply_window(hu, -600, 1500), [[0.0, 0.0, 0.5, 1.0, 1.0]])
    scaled = percentile_rescale(np.arange(1000, dtype=np.float32).reshape(10, 100))
    assert scaled.min() == 0.0 and scaled.max() == 1.0
    assert percentile_rescale(np.ones((4, 4))).max() == 0.0  # flat image: no division by zero


def test_prepare_image_from_jpeg_and_dicom_gives_the_same_contract() -> None:
    spec = PreprocessSpec(size=(128, 128))
    jpeg = prepare_image(read_image_file(FIXTURES / "datasets/kermany/train/NORMAL/IM-0115-0001.jpeg"), spec)
    dicom = prepare_image(read_image_file(DICOM / "dx_image.dcm"), spec)
    for array in (jpeg, dicom):
        assert array.shape == (1, 1, 128, 128) and array.dtype == np.float32
        assert 0.0 <= array.min() and array.max() <= 1.0


def test_spec_round_trips_through_json_form() -> None:
    spec = PreprocessSpec(size=(32, 32), window=(-600.0, 1500.0))
    assert PreprocessSpec.from_dict(spec.to_dict()) == spec


def test_resize_shrinks_by_area_average() -> None:
    image = np.zeros((4, 4), np.float32)
    image[:2, :2] = 1.0
    assert np.allclose(resize(image, (2, 2)), [[1.0, 0.0], [0.0, 0.0]])


def test_unreadable_file_raises_dataset_error(tmp_path) -> None:
    bad = tmp_path / "broken.dcm"
    bad.write_bytes(b"\0" * 128 + b"DICM" + b"garbage")
    with pytest.raises(UnreadableImage):
        read_image_file(bad)


def test_pgm_and_png_films_read_the_same(tmp_path) -> None:
    png = FIXTURES / "datasets/mias/mdb001.png"
    pgm = tmp_path / "mdb001.pgm"
    Image.open(png).save(pgm)
    assert np.array_equal(read_image_file(png).pixels, read_image_file(pgm).pixels)


def test_serving_side_modules_do_not_import_torch() -> None:
    code = (
        "import sys, datasets.preprocess, datasets.dicom_series, datasets.ct_candidates, datasets.mias, "
        "datasets.lidc, datasets.chest_xray, datasets.splits, inference.shipped_models, models; "
        "assert 'torch' not in sys.modules and 'monai' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def _secondary_capture(pixels: np.ndarray, photometric: str) -> pydicom.Dataset:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.SamplesPerPixel = 1 if pixels.ndim == 2 else 3
    if ds.SamplesPerPixel == 3:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.PixelData = pixels.astype(np.uint8).tobytes()
    return ds


def test_a_grey_film_stored_as_colour_reads_as_the_training_read_its_jpeg() -> None:
    """A chest film wrapped as an RGB secondary capture (as a JPEG often is) reads as training read the JPEG
    (Pillow's luma); a colour image is refused with a reason."""
    from datasets.errors import UnsupportedImage

    jpeg = sorted((FIXTURES / "datasets" / "kermany" / "train" / "NORMAL").glob("*.jpeg"))[0]
    rgb = np.asarray(Image.open(jpeg).convert("RGB"))
    trained_on = read_image_file(jpeg).pixels
    as_colour = dicom_to_array(_secondary_capture(rgb, "RGB")).pixels
    as_grey = dicom_to_array(_secondary_capture(rgb[..., 0], "MONOCHROME2")).pixels
    assert np.array_equal(as_colour, trained_on) and np.array_equal(as_grey, trained_on)
    coloured = rgb.copy()
    coloured[: rgb.shape[0] // 5, :, 0] = 255  # a red band over a fifth of the image
    with pytest.raises(UnsupportedImage, match="colour image"):
        dicom_to_array(_secondary_capture(coloured, "RGB"))


def _constant_frames(target: Path, frames: int, side: int = 512) -> Path:
    """The DX fixture's header with ``frames`` copies of one constant RLE frame (a few kB for all of them)."""
    ds = pydicom.dcmread(FIXTURES / "inference" / "images" / "dx_chest_highdicom.dcm")
    ds.Rows = ds.Columns = side
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelData = np.full((side, side), 700, np.uint16).tobytes()
    ds.compress(RLELossless, encoding_plugin="pylibjpeg")
    frame = b"".join(next(generate_fragmented_frames(ds.PixelData)))
    ds.PixelData = encapsulate([frame] * frames, has_bot=True)
    ds.NumberOfFrames = frames
    ds.save_as(target)
    return target


def test_only_the_frame_used_is_decoded(tmp_path: Path) -> None:
    # Every frame was decoded to use one: a 182 kB file of 1000 constant 1024x1024 frames cost 2 GB and 25 s.
    # Here 200 frames of 512x512 (100 MB decoded in all).
    ds = pydicom.dcmread(_constant_frames(tmp_path / "frames.dcm", 200))
    tracemalloc.start()
    image = dicom_to_array(ds, apply_voi=False, frame=3)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert image.pixels.shape == (512, 512) and float(image.pixels.max()) == 700.0
    assert peak < 20 << 20
