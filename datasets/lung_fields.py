"""The lung fields of a frontal chest radiograph (numpy + scipy + Pillow), without a trained network.

There are no lung masks in the data, so the fields are found from what every frontal film shows: two
dark regions inside the bright body, one each side of the mediastinum. A consolidated (white) lung is
exactly what the model must point at, so a side that is missing is mirrored from the other, each field
is filled to its convex hull (bright consolidation inside a lung stays in), and when nothing plausible
is found the mask falls back to a central ellipse rather than to nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from datasets.preprocess import resize

__all__ = ["LungFields", "lung_fields", "central_ellipse", "heatmap_within", "CENTRAL_ELLIPSE"]

# Plausible lungs on a frontal film, as fractions of the image: measured on Kermany development films
# (both fields together cover about a quarter to a half of the film, never its outer edge band).
MIN_FIELD_AREA = 0.02
MIN_TOTAL_AREA = 0.15
MIN_HEIGHT = 0.5
MAX_TOTAL_AREA = 0.65
EDGE_BAND = 0.04


@dataclass(frozen=True)
class LungFields:
    """Boolean mask [rows, cols] of both lung fields and how it was found."""

    mask: np.ndarray
    # "two-fields", "mirrored" (one side found, the other mirrored from it), "fields-and-ellipse" (fields too
    # small to be whole lungs, the central ellipse added) or "ellipse" (nothing plausible found)
    method: str


# Where both lungs lie on a centred frontal film, as fractions of its side: centre (row, column) and
# semi-axes (rows, columns). Also the training augmentation's framing ellipse (``training.augment``).
CENTRAL_ELLIPSE = (0.47, 0.5, 0.36, 0.40)


def central_ellipse(shape: tuple[int, int]) -> np.ndarray:
    """The fallback: an ellipse over the central film, where both lungs lie on a centred frontal view."""
    rows, cols = shape
    centre_r, centre_c, axis_r, axis_c = CENTRAL_ELLIPSE
    rr, cc = np.mgrid[0:rows, 0:cols]
    return ((rr - centre_r * rows) / (axis_r * rows)) ** 2 + ((cc - centre_c * cols) / (axis_c * cols)) ** 2 <= 1.0


def _hull_fill(component: np.ndarray) -> np.ndarray:
    points = np.argwhere(component)
    try:
        hull = ConvexHull(points)
    except QhullError:  # a degenerate (straight-line) component: keep it as it is
        return component
    canvas = Image.new("1", (component.shape[1], component.shape[0]), 0)
    ImageDraw.Draw(canvas).polygon([(float(points[i, 1]), float(points[i, 0])) for i in hull.vertices], fill=1)
    return np.asarray(canvas, dtype=bool) | component


def _fields_at(smooth: np.ndarray, level: float, disk: np.ndarray, inner: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Plausible lung fields (left-half, right-half candidates, largest first) darker than ``level``."""
    rows, cols = smooth.shape
    # The opening cuts thin dark bridges (between ribs, through the neck); what then still reaches the
    # film's edge band is the air or soft tissue outside the rib cage, not a lung.
    dark = ndimage.binary_opening(smooth < level, structure=disk)
    labels, count = ndimage.label(dark)
    if count == 0:
        return [], []
    # Per-component area, pixels on the edge band and centre by bincount: scipy's per-label
    # statistics cost more than the rest of the search together.
    flat = labels.ravel()
    pixels = np.bincount(flat, minlength=count + 1).astype(np.float64)
    grid_r, grid_c = np.indices(labels.shape)
    centre_r = np.bincount(flat, weights=grid_r.ravel(), minlength=count + 1) / np.maximum(pixels, 1)
    centre_c = np.bincount(flat, weights=grid_c.ravel(), minlength=count + 1) / np.maximum(pixels, 1)
    edge = np.bincount(labels[~inner], minlength=count + 1)
    index = np.arange(1, count + 1)
    areas, centres = pixels[1:] / dark.size, zip(centre_r[1:], centre_c[1:], strict=True)
    edge = edge[1:]
    left: list[tuple[float, np.ndarray]] = []
    right: list[tuple[float, np.ndarray]] = []
    for i, area, on_edge, (row, col) in zip(index, areas, edge, centres, strict=True):
        if area < MIN_FIELD_AREA or on_edge > 0 or not (0.15 * rows <= row <= 0.70 * rows and 0.1 * cols <= col <= 0.9 * cols):
            continue
        (left if col < cols / 2 else right).append((float(area), labels == i))
    return [c for _, c in sorted(left, key=lambda a: -a[0])], [c for _, c in sorted(right, key=lambda a: -a[0])]


def lung_fields(image: np.ndarray) -> LungFields:
    """The lung fields of a normalised frontal film ([rows, cols] in [0, 1], bright = dense).

    Lungs grow with the darkness threshold until they merge with the air outside the body, so the
    threshold is searched over the central film's grey levels and the one giving the largest enclosed
    dark fields wins (a pair, one each side, before a single field).
    """
    image = np.asarray(image, dtype=np.float32)
    rows, cols = image.shape
    smooth = ndimage.gaussian_filter(image, sigma=max(rows, cols) / 128.0)
    centre = smooth[rows // 8 : rows - rows // 8, cols // 8 : cols - cols // 8]
    disk = _disk(max(1, round(max(rows, cols) / 64)))
    band_r, band_c = max(1, round(EDGE_BAND * rows)), max(1, round(EDGE_BAND * cols))
    inner = np.zeros(image.shape, dtype=bool)
    inner[band_r:-band_r, band_c:-band_c] = True
    best: tuple[float, list[np.ndarray]] | None = None
    for level in np.quantile(centre, np.linspace(0.10, 0.70, 13)):
        left, right = _fields_at(smooth, float(level), disk, inner)
        fields = [side[0] for side in (left, right) if side]
        area = float(sum(f.mean() for f in fields))
        if fields and area <= MAX_TOTAL_AREA / 2:
            rank = area + (1.0 if len(fields) == 2 else 0.0)
            if best is None or rank > best[0]:
                best = (rank, fields)
    ellipse = central_ellipse((rows, cols))
    if best is None:
        return LungFields(ellipse, "ellipse")
    # Each field is filled to its hull and mirrored across the body's midline: a lung that is only partly
    # dark (consolidation, the heart's shadow) or not found at all (a white lung, or one open to the outside
    # air) is then still inside the mask, where the pointer must be able to land.
    found = np.logical_or.reduce([_hull_fill(f) for f in best[1]])
    columns = np.flatnonzero(found.any(axis=0))
    # The midline: between the outer edges of both fields, or the film's centre when one side is missing.
    twice_midline = int(columns[0] + columns[-1]) if len(best[1]) == 2 else cols - 1
    mask = ndimage.binary_dilation(found | _mirrored(found, twice_midline), structure=disk)
    method = "two-fields" if len(best[1]) == 2 else "mirrored"
    lung_rows = np.flatnonzero(mask.any(axis=1))
    if mask.mean() < MIN_TOTAL_AREA or (lung_rows[-1] - lung_rows[0] + 1) < MIN_HEIGHT * rows:
        # Only the upper zones were dark enough to find (lower-lobe pneumonia is white): the central ellipse
        # is added rather than letting the mask cut off the part of the lung most likely to be abnormal.
        return LungFields(mask | ellipse, "fields-and-ellipse")
    return LungFields(mask, method)


def heatmap_within(heatmap: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A coarse heat-map at the mask's resolution: (zero outside the mask and scaled to [0, 1] within it;
    the interpolated map in its own units), so that the overlay's colours and the peak stay inside the organ.

    The coarse map is interpolated between cell centres: masking whole cells would either keep the
    shoulder that shares a cell with an apex or drop the apex with it. It is then smoothed over half a
    cell because a calibrated map saturates: on half of the pneumonia films several cells are exactly 1.0
    in float32, and a plain argmax would pick the first of them in raster order (the top of the film);
    smoothed, the peak is the middle of the saturated region.
    """
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        raise ValueError("empty organ mask: nothing to scale the heat-map within")
    fine = resize(np.asarray(heatmap, dtype=np.float32), (mask.shape[0], mask.shape[1]))
    neutral = float(fine[mask].min())
    cell = mask.shape[0] / heatmap.shape[0]
    smooth = ndimage.gaussian_filter(np.where(mask, fine, neutral), sigma=cell / 2.0)
    inside = smooth[mask]
    low, span = float(inside.min()), float(inside.max() - inside.min())
    scaled = (smooth - low) / span if span > 1e-6 else np.zeros_like(smooth)
    return np.where(mask, scaled, 0.0).astype(np.float32), fine


def _mirrored(mask: np.ndarray, twice_midline: int) -> np.ndarray:
    """``mask`` reflected left-right about the column ``twice_midline / 2``; what falls off the film is dropped."""
    cols = mask.shape[1]
    source = twice_midline - np.arange(cols)
    inside = (source >= 0) & (source < cols)
    out = np.zeros_like(mask)
    out[:, inside] = mask[:, source[inside]]
    return out


def _disk(radius: int) -> np.ndarray:
    rr, cc = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return np.asarray(rr**2 + cc**2 <= radius**2)
