"""Orient a mammogram chest-wall-left and find the pectoral muscle on an MLO view (numpy + scipy).

The pectoral muscle is the brightest structure of an MLO film after the labels; a detector that
sees it flags it, and left-right comparisons need the two breasts in one frame. The muscle is a
bright wedge in the top corner on the chest-wall side bounded by a nearly straight edge, so it is
estimated as a straight line fitted to the edge of the bright region grown from that corner.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["PectoralLine", "chest_wall_on_right", "orient_chest_wall_left", "pectoral_line", "pectoral_mask"]


_MARGIN = 6


@dataclass(frozen=True)
class PectoralLine:
    """``col = top_col + slope * row`` in the chest-wall-left frame; muscle where ``col < line``."""

    top_col: float
    slope: float


def chest_wall_on_right(breast: np.ndarray) -> bool:
    """True when the breast (boolean mask) leans on the right edge: more of it lies in the right half."""
    half = breast.shape[1] // 2
    return bool(breast[:, half:].sum() > breast[:, :half].sum())


def orient_chest_wall_left(image: np.ndarray, breast: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """(image, mask, flipped): mirrored left-right when the chest wall is on the right."""
    if chest_wall_on_right(breast):
        return image[:, ::-1], breast[:, ::-1], True
    return image, breast, False


def pectoral_line(image: np.ndarray, breast: np.ndarray) -> PectoralLine | None:
    """The muscle's edge on a chest-wall-left MLO film in [0, 1], or None when no plausible wedge is found.

    Region growing from the top chest-wall corner: per row, the run of pixels from the chest wall
    brighter than the Otsu level of the upper third of the breast, kept non-widening down the film;
    its edge is fitted by least squares, trimmed once. A wedge that is not one (a line leaning the wrong way, or reaching past most of the
    breast) is refused rather than cutting tissue away.
    """
    rows, cols = image.shape
    tissue_rows = np.flatnonzero(breast.any(axis=1))
    if len(tissue_rows) < rows // 4:
        return None
    top = int(tissue_rows[0])
    # Digitised films sit on a black margin: the chest wall is the breast's leftmost column, not column 0.
    wall = int(np.median([np.flatnonzero(breast[r]).min() for r in tissue_rows[: len(tissue_rows) // 2]]))
    width = int(breast[top : top + max(rows // 8, 1)].sum(axis=1).max())
    smooth = ndimage.gaussian_filter(image.astype(np.float32), 4.0)
    # Going away from the chest wall, the muscle's edge is the steepest fall in brightness of the row.
    fall = -ndimage.sobel(smooth, axis=1)
    candidate_rows, candidate_cols = [], []
    for r in range(top, min(top + len(tissue_rows) * 3 // 5, rows)):
        inside = np.flatnonzero(breast[r])
        if inside.size < 4 * _MARGIN:
            continue
        lo, hi = wall + _MARGIN, int(inside.max()) - 2 * _MARGIN
        if hi <= lo:
            continue
        candidate_rows.append(r)
        candidate_cols.append(lo + int(np.argmax(fall[r, lo:hi])))
    if len(candidate_rows) < 20:
        return None
    fit = _ransac_line(np.asarray(candidate_rows, np.float64), np.asarray(candidate_cols, np.float64), seed=0)
    if fit is None:
        return None
    slope, intercept = fit
    bottom_row = (wall - intercept) / slope if slope < 0 else np.inf
    top_width = intercept + slope * top - wall
    plausible = slope < -0.15 and 0.05 * width < top_width < 0.9 * max(width, 1) and bottom_row < rows * 0.95
    return PectoralLine(float(intercept), float(slope)) if plausible else None


def pectoral_mask(shape: tuple[int, int], line: PectoralLine | None) -> np.ndarray:
    """Boolean mask of the muscle wedge (empty without a line)."""
    if line is None:
        return np.zeros(shape, dtype=bool)
    rr, cc = np.mgrid[0 : shape[0], 0 : shape[1]]
    return cc < line.top_col + line.slope * rr


def _ransac_line(rows: np.ndarray, cols: np.ndarray, *, seed: int, tries: int = 300, tolerance: float = 5.0) -> tuple[float, float] | None:
    """(slope, intercept) of the line through most edge points leaning like a muscle edge, refitted on its inliers.

    Dense tissue also has steep edges, so the edge points are many short runs; the muscle is the only
    edge that stays straight over a third of the film, and it leans towards the chest wall going down.
    """
    rng = np.random.default_rng(seed)
    best: np.ndarray | None = None
    for _ in range(tries):
        i, j = rng.choice(len(rows), 2, replace=False)
        if abs(rows[j] - rows[i]) < 10:
            continue
        slope = (cols[j] - cols[i]) / (rows[j] - rows[i])
        if not -4.0 < slope < -0.15:
            continue
        inliers = np.abs(cols - (cols[i] + slope * (rows - rows[i]))) <= tolerance
        if best is None or inliers.sum() > best.sum():
            best = inliers
    if best is None or best.sum() < max(20, 0.2 * len(rows)):
        return None
    slope, intercept = np.polyfit(rows[best], cols[best], 1)
    return float(slope), float(intercept)


def _run_from(row: np.ndarray) -> int:
    """Length of the run of True values at the start of ``row``."""
    off = np.flatnonzero(~row)
    return int(off[0]) if off.size else int(row.size)


def _otsu(values: np.ndarray) -> float:
    hist, edges = np.histogram(values, bins=128)
    centres = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(hist)
    total = weight[-1]
    mean = np.cumsum(hist * centres)
    between = (mean[-1] * weight / total - mean) ** 2 / np.maximum(weight * (total - weight), 1)
    return float(centres[int(np.argmax(between[:-1]))])
