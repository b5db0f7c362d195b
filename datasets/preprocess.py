"""Numpy-only preprocessing shared by training and the serving worker (never imports torch).

The serving worker reads DICOM; training reads JPEG/PNG/PGM and DICOM. Both end in the same
:func:`prepare_image` so that a model sees the same intensity scaling and size in both places.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from datasets.errors import UnreadableImage, UnsupportedImage

__all__ = [
    "ImageArray",
    "PreprocessSpec",
    "dicom_to_array",
    "read_image_file",
    "apply_window",
    "percentile_rescale",
    "resize",
    "prepare_image",
]


@dataclass(frozen=True)
class ImageArray:
    """A 2-D greyscale image in physical units (HU for CT) with its pixel spacing in mm (row, column)."""

    pixels: np.ndarray
    spacing_mm: tuple[float, float] | None = None
    # True when a VOI LUT or window from the file has already been applied (pixels are display values).
    voi_applied: bool = False
    # True where a pixel is padding, not image (DICOM Pixel Padding Value); None when nothing is padding.
    padding: np.ndarray | None = None


@dataclass(frozen=True)
class PreprocessSpec:
    """How an image becomes a model input; stored in each shipped ``bundle.json``.

    ``window``: (centre, width) applied to physical values (CT in HU); ``None`` means the image's
    own VOI LUT (DICOM) then a percentile rescale, which is what plain radiographs need because
    their raw values depend on the detector. ``extra["mask"] == "breast"`` zeroes everything outside
    the breast (``datasets.breast_mask``) after the rescale.
    """

    size: tuple[int, int]
    window: tuple[float, float] | None = None
    percentiles: tuple[float, float] = (0.5, 99.5)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["size"] = list(self.size)
        data["window"] = list(self.window) if self.window else None
        data["percentiles"] = list(self.percentiles)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessSpec:
        window = data.get("window")
        return cls(
            size=(int(data["size"][0]), int(data["size"][1])),
            window=(float(window[0]), float(window[1])) if window else None,
            percentiles=tuple(data.get("percentiles", (0.5, 99.5))),  # type: ignore[arg-type]
            extra=dict(data.get("extra", {})),
        )


def dicom_to_array(ds: Any, *, apply_voi: bool = True, frame: int = 0) -> ImageArray:
    """Pixel data of a pydicom dataset as float32 physical values, display-oriented.

    Order follows PS3.3 C.11: modality LUT (rescale slope/intercept) then VOI LUT/window, then
    MONOCHROME1 is inverted so that bright always means dense in the model's input. Pixels the header
    declares padding (Pixel Padding Value, up to Pixel Padding Range Limit) are marked in ``padding``.
    """
    from pydicom.pixels import apply_modality_lut, apply_voi_lut, pixel_array

    try:
        # Only the frame used is decoded: ``ds.pixel_array`` decodes every frame, and a 182 kB file of 1000
        # constant 1024x1024 frames cost the scoring worker 2 GB and 25 s to use its first. The function form
        # leaves the dataset's own pixel options and cache as they were.
        raw = pixel_array(ds, index=frame)
    except Exception as exc:  # pydicom raises many types for broken or missing pixel data
        raise UnreadableImage(f"cannot decode pixel data: {exc}") from exc
    colour = getattr(ds, "SamplesPerPixel", 1) != 1
    if colour:
        raw = _grey_of_colour(raw, ds)
    if raw.ndim != 2:
        raise UnsupportedImage(f"pixel array has shape {raw.shape}")
    # Padding is declared in stored values (PS3.3 C.7.5.1.1.2), so it is found before any LUT; colour has none.
    padding = None if colour else _padding_mask(raw, ds)
    # A header pydicom's LUT functions cannot use (an empty RescaleSlope, a window centre without a width, a broken
    # LUT) is bad input, said as such: it had escaped as a TypeError, which stopped `medscreen score` and made the
    # service retry the job until it was dead-lettered.
    _check_rescale(ds)
    try:
        # Keep the modality LUT's own dtype for the VOI step: a VOI LUT table is indexed by integer values.
        modality = apply_modality_lut(raw, ds)
        values = np.asarray(modality, dtype=np.float32)
        voi_applied = False
        has_voi = "VOILUTSequence" in ds or "WindowCenter" in ds
        if apply_voi and has_voi:
            values = np.asarray(apply_voi_lut(modality, ds, prefer_lut=True), dtype=np.float32)
            voi_applied = True
    except (TypeError, ValueError, IndexError, KeyError, AttributeError, ZeroDivisionError) as exc:
        raise UnreadableImage(f"the modality or VOI LUT of the header cannot be applied: {type(exc).__name__}: {exc}") from exc
    if not colour and getattr(ds, "PhotometricInterpretation", "MONOCHROME2") == "MONOCHROME1":
        image = values if padding is None else values[~padding]
        values = (image.max() + image.min() - values) if image.size else values
    return ImageArray(values, _pixel_spacing(ds), voi_applied, padding)


def _padding_mask(raw: np.ndarray, ds: Any) -> np.ndarray | None:
    """True where the stored value is Pixel Padding Value (or between it and Pixel Padding Range Limit, inclusive);
    None when the header declares no padding or no pixel is padding."""
    if ds.get("PixelPaddingValue") in (None, b"", ""):
        return None
    bounds = []
    for keyword in ("PixelPaddingValue", "PixelPaddingRangeLimit"):
        value = ds.get(keyword)
        if value in (None, b"", ""):
            continue
        try:
            bounds.append(float(value))
        except (TypeError, ValueError) as exc:
            raise UnreadableImage(f"{keyword} {value!r} is not one number") from exc
    low, high = min(bounds), max(bounds)
    padding = (raw >= low) & (raw <= high)
    return padding if padding.any() else None


def _check_rescale(ds: Any) -> None:
    """RescaleSlope and RescaleIntercept, when pydicom will apply them (both present, no Modality LUT), are numbers."""
    if ds.get("ModalityLUTSequence") or "RescaleSlope" not in ds or "RescaleIntercept" not in ds:
        return
    for keyword in ("RescaleSlope", "RescaleIntercept"):
        value = ds[keyword].value
        try:
            number = float(value)
        except (TypeError, ValueError) as exc:
            raise UnreadableImage(f"{keyword} {value!r} is not a number") from exc
        if not math.isfinite(number):
            raise UnreadableImage(f"{keyword} {value!r} is not a finite number")


def _pixel_spacing(ds: Any) -> tuple[float, float] | None:
    """(row, column) spacing in mm from PixelSpacing, else ImagerPixelSpacing; None when neither has a value."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword) if keyword in ds else None
        if not value:
            continue
        values = [value] if isinstance(value, str | bytes | int | float) else list(value)
        try:
            row, col = (float(v) for v in values)
        except (TypeError, ValueError) as exc:
            raise UnreadableImage(f"{keyword} {values} is not two numbers (row and column spacing in mm)") from exc
        return (row, col)
    return None


# A grey film stored as colour (a JPEG-wrapped secondary capture): its channels agree but for compression's
# chroma noise. A real colour image (an annotation, a photograph) differs in far more.
_GREY_CHANNEL_SPREAD = 8  # 99th percentile of max - min over the three channels, 8-bit levels


def _grey_of_colour(raw: np.ndarray, ds: Any) -> np.ndarray:
    """The luma of a grey image stored as RGB (as Pillow's ``convert("L")``, which read the training films);
    UnsupportedImage for a colour image."""
    if getattr(ds, "SamplesPerPixel", 1) != 3 or raw.shape[-1] != 3 or raw.dtype != np.uint8:
        raise UnsupportedImage(f"SamplesPerPixel={ds.SamplesPerPixel}: only greyscale images are scored")
    spread = raw.max(axis=-1).astype(np.int16) - raw.min(axis=-1)
    if float(np.percentile(spread, 99)) > _GREY_CHANNEL_SPREAD:
        raise UnsupportedImage("a colour image (its channels differ): only greyscale images are scored")
    rgb = raw.astype(np.uint32)
    # ITU-R 601-2 luma in Pillow's fixed point, so that a film reads as the JPEG of it read in training
    return ((rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16).astype(np.uint8)


def read_image_file(path: Path) -> ImageArray:
    """A greyscale image from a file: DICOM (by preamble or suffix) or anything Pillow reads (PNG, PGM, JPEG)."""
    path = Path(path)
    with path.open("rb") as fh:
        head = fh.read(132)
    if head[128:132] == b"DICM" or path.suffix.lower() in {".dcm", ".dicom"}:
        import pydicom

        try:
            ds = pydicom.dcmread(path)
        except Exception as exc:
            raise UnreadableImage(f"{path.name}: {exc}") from exc
        return dicom_to_array(ds, apply_voi=True)
    try:
        with Image.open(path) as opened:
            img: Image.Image = opened
            # JPEG chest films are stored as RGB with equal channels; "L" keeps 8-bit, "I;16" PGMs stay 16-bit.
            if img.mode not in ("L", "I", "I;16", "F"):
                img = img.convert("L")
            pixels = np.asarray(img, dtype=np.float32)
    except OSError as exc:
        raise UnreadableImage(f"{path.name}: {exc}") from exc
    return ImageArray(pixels, None, True)


def apply_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """Linear window to [0, 1] (CT in HU: lung window is centre -600, width 1500)."""
    low = center - width / 2.0
    return np.clip((values.astype(np.float32) - low) / float(width), 0.0, 1.0)


def percentile_rescale(
    values: np.ndarray, low: float = 0.5, high: float = 99.5, *, where: np.ndarray | None = None
) -> np.ndarray:
    """Map the [low, high] percentiles to [0, 1]: makes JPEG exports and raw DICOM look alike to a model.

    ``where``: the pixels the percentiles are taken over (all when None)."""
    lo, hi = np.percentile(values if where is None else values[where], [low, high])
    if hi <= lo:
        return np.zeros_like(values, dtype=np.float32)
    return np.clip((values.astype(np.float32) - lo) / float(hi - lo), 0.0, 1.0)


def resize(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Area-averaged resize to (rows, cols); Pillow's float mode keeps it numpy-only and fast."""
    if values.shape == tuple(size):
        return values.astype(np.float32)
    img = Image.fromarray(values.astype(np.float32), mode="F")
    # Pillow takes (width, height); BOX averages, which avoids aliasing when shrinking 1024 -> 128.
    resample = Image.Resampling.BOX if values.shape[0] > size[0] else Image.Resampling.BILINEAR
    return np.asarray(img.resize((size[1], size[0]), resample=resample), dtype=np.float32)


def prepare_image(image: ImageArray, spec: PreprocessSpec) -> np.ndarray:
    """The model input for one image: float32 [1, 1, rows, cols] in [0, 1]; padding is background (0)."""
    if image.padding is not None and image.padding.any():
        scaled = _rescale_padded(image.pixels, image.padding, spec)
    else:
        # Resize first: percentiles of a 3000x3000 DR image cost more than the model itself.
        small = resize(image.pixels, spec.size)
        if spec.window is not None:
            scaled = apply_window(small, *spec.window)
        else:
            scaled = percentile_rescale(small, *spec.percentiles)
    if spec.extra.get("mask") == "breast":
        from datasets.breast_mask import apply_breast_mask

        scaled = apply_breast_mask(scaled)
    return scaled[None, None].astype(np.float32)


def _rescale_padded(pixels: np.ndarray, padding: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """:func:`prepare_image`'s rescale of an image with padding: the percentiles are of the image alone, and an input
    pixel that is mostly padding is background.

    A detector's high-value border (CR, DX and MG systems pad a collimated film so) had set the upper percentile,
    which dimmed the whole film: a pneumonia film scored 0.9985 fell to 0.14 once a padded border was added (review 5).
    """
    image = pixels[~padding]
    if image.size == 0:
        return np.zeros(spec.size, dtype=np.float32)
    # Padding is filled with a value the rescale maps to background before the resize averages it with the film's
    # edge, so that the edge fades to background and not toward the padding value.
    fill = spec.window[0] - spec.window[1] / 2.0 if spec.window is not None else float(image.min())
    small = resize(np.where(padding, np.float32(fill), pixels.astype(np.float32)), spec.size)
    share = resize(padding.astype(np.float32), spec.size)  # how much of each input pixel is padding
    if spec.window is not None:
        scaled = apply_window(small, *spec.window)
    else:
        where = share <= 0.0
        if not where.any():
            where = share < 0.5
        if not where.any():
            return np.zeros(spec.size, dtype=np.float32)
        scaled = percentile_rescale(small, *spec.percentiles, where=where)
    return np.where(share >= 0.5, np.float32(0.0), scaled).astype(np.float32)
