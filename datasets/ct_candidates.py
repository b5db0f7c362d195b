"""Candidate nodules in a chest CT volume and the patches a classifier scores (numpy + scipy only).

The serving worker runs exactly this: lung mask -> dense blobs inside it -> one 2.5-D patch per
blob. The study score is the classifier's highest candidate score; the candidate's position is
the coarse localisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from datasets.dicom_series import Volume
from datasets.preprocess import apply_window, resize

__all__ = ["Candidate", "lung_mask", "find_candidates", "extract_patch", "extract_patches", "LUNG_WINDOW", "PATCH_MM", "PATCH_PX"]

LUNG_WINDOW = (-600.0, 1500.0)
PATCH_MM = 32.0  # field of view of one patch: nodules of 3-30 mm with some context
PATCH_PX = 32  # patches are resampled to 1 mm pixels, whatever the scanner's spacing


@dataclass(frozen=True)
class Candidate:
    slice_index: int
    row: int
    col: int
    diameter_mm: float


def _grow(box: tuple[slice, ...], margin: tuple[int, ...], shape: tuple[int, ...]) -> tuple[slice, ...]:
    return tuple(
        slice(max(int(b.start) - m, 0), min(int(b.stop) + m, n)) for b, m, n in zip(box, margin, shape, strict=True)
    )


# Background kept around the body when a slice is cropped: wider than the closing's 8 iterations, so every
# morphological step gives the same mask as on the whole slice (measured 3-4x faster on 512 px slices).
_BODY_MARGIN = 24


def lung_mask(hu: np.ndarray) -> np.ndarray:
    """Air inside the body, slice by slice, closed so that nodules touching the pleura stay inside."""
    mask = np.zeros(hu.shape, dtype=bool)
    for index, plane in enumerate(hu):
        body = plane > -500
        labels, count = ndimage.label(body)
        if count == 0:
            continue
        sizes = ndimage.sum(body, labels, range(1, count + 1))
        largest = int(np.argmax(sizes)) + 1
        box = _grow(ndimage.find_objects(labels)[largest - 1], (_BODY_MARGIN, _BODY_MARGIN), plane.shape)
        body = ndimage.binary_fill_holes(labels[box] == largest)
        lungs = body & (plane[box] < -400)
        lungs = ndimage.binary_opening(lungs, iterations=2)
        # Closing fills the holes that vessels and nodules punch into the air mask.
        mask[index][box] = ndimage.binary_fill_holes(ndimage.binary_closing(lungs, iterations=8))
    return mask


def find_candidates(volume: Volume, *, max_candidates: int = 256) -> list[Candidate]:
    """Local maxima of the smoothed density inside the lungs, slice by slice, strongest first.

    Thresholding solid tissue missed both ground-glass nodules (-700 HU) and nodules fused with a
    vessel or the pleura into one large component; maxima of a 3 mm Gaussian-smoothed HU map catch
    both, and the patch classifier then sorts nodules from vessels. Maxima are taken within each
    slice, not across slices: a 3-D maximum gave a nodule one candidate on its densest slice, so the
    readers' marks on its other slices had none (14 of 31 marks on LIDC-IDRI-0003; 31 of 31 per slice).
    """
    lungs = lung_mask(volume.hu)
    if not lungs.any():
        return []
    slice_mm, row_mm, col_mm = volume.spacing_mm
    sigma = (0.0, 3.0 / row_mm, 3.0 / col_mm)
    window = (1, int(12 / row_mm) | 1, int(12 / col_mm) | 1)
    # Peaks only count inside the lungs, so the filters run on the lungs' bounding box grown by their
    # reach (Gaussian truncated at 4 sigma, plus the maximum filter's half width): inside it the smoothed
    # values, and so the candidates, are exactly those of the whole volume, at a fraction of the cost.
    reach = tuple(int(np.ceil(4.0 * s)) + w // 2 + 1 for s, w in zip(sigma, window, strict=True))
    box = _grow(ndimage.find_objects(lungs.astype(np.uint8))[0], reach, lungs.shape)
    offset = np.array([b.start for b in box])
    hu = np.clip(volume.hu[box], -1000.0, 200.0)
    smooth = ndimage.gaussian_filter(hu, sigma=sigma)
    peaks = smooth == ndimage.maximum_filter(smooth, size=window)
    peaks &= lungs[box] & (smooth > -800.0)
    z, r, c = np.nonzero(peaks)
    values = smooth[z, r, c]
    z, r, c = z + offset[0], r + offset[1], c + offset[2]
    order = np.argsort(-values)[:max_candidates]
    candidates = []
    for i in order:
        # Equivalent diameter of the denser-than-lung region around the peak on its slice.
        plane = volume.hu[z[i], max(r[i] - 24, 0) : r[i] + 24, max(c[i] - 24, 0) : c[i] + 24] > -750
        labels, _ = ndimage.label(plane)
        centre = labels[min(r[i], 24), min(c[i], 24)]
        area = float((labels == centre).sum()) if centre else 0.0
        candidates.append(Candidate(int(z[i]), int(r[i]), int(c[i]), 2.0 * float(np.sqrt(area * row_mm * col_mm / np.pi))))
    return candidates


def extract_patch(volume: Volume, slice_index: int, row: int, col: int) -> np.ndarray:
    """[3, 32, 32] lung-windowed patch at 1 mm pixels: the slice and its two neighbours (2.5-D)."""
    hu = volume.hu
    _, row_mm, col_mm = volume.spacing_mm
    half_r = int(round(PATCH_MM / row_mm / 2))
    half_c = int(round(PATCH_MM / col_mm / 2))
    planes = []
    for offset in (-1, 0, 1):
        z = int(np.clip(slice_index + offset, 0, hu.shape[0] - 1))
        padded = np.pad(hu[z], ((half_r, half_r), (half_c, half_c)), constant_values=-1000.0)
        crop = padded[row : row + 2 * half_r, col : col + 2 * half_c]
        planes.append(resize(apply_window(crop, *LUNG_WINDOW), (PATCH_PX, PATCH_PX)))
    return np.stack(planes).astype(np.float32)


def extract_patches(volume: Volume, candidates: list[Candidate]) -> np.ndarray:
    """[N, 3, 32, 32] model input for the candidates (N may be 0)."""
    if not candidates:
        return np.zeros((0, 3, PATCH_PX, PATCH_PX), np.float32)
    return np.stack([extract_patch(volume, c.slice_index, c.row, c.col) for c in candidates])
