"""Hand-made features of a mammogram and of a woman's two films (numpy + scipy, no torch).

Shared by training and serving: both compute them from the model input (``prepare_image`` with the
breast mask, 512 px at 0.4 mm). Every film is oriented chest-wall-left and its pectoral muscle
removed on MLO views (``datasets.pectoral_muscle``), then described by its density, its texture and
its brightest blobs at four scales (masses are bright blobs 3-25 mm across); the pair features are
the film's differences from the woman's other breast, because most findings are one-sided and
radiologists read asymmetry. The same blob filter gives the heat-map.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from datasets.pectoral_muscle import orient_chest_wall_left, pectoral_line, pectoral_mask

__all__ = ["FilmFeatures", "film_features", "blob_responses", "pair_features", "candidate_pair_features", "CANDIDATE_FEATURES", "CONTRALATERAL_FEATURES", "FILM_FEATURES", "PAIR_FEATURES", "FEATURES_VERSION", "GRID"]

FEATURES_VERSION = 1
# Blob scales in 0.4 mm pixels: sigma 0.8-6.4 mm, blobs of about 2-18 mm across (larger masses peak at 16;
# a 32 px scale was tried and made the strongest candidates the whole dense disc: fewer lesions among them).
SIGMAS = (2.0, 4.0, 8.0, 16.0)
GRID = 32  # heat-map cells across the 512 px film (16 px, 6.4 mm)
CANDIDATES = 24  # blob candidates kept per film
SPACING = 12  # px between candidates (4.8 mm)
# The density map of each breast in a common frame (its bounding box), compared left to right.
FRAME = (16, 8)

FILM_FEATURES = (
    "log_area", "pectoral_found", "mean", "std", "p10", "p50", "p90", "p99", "skew", "kurtosis", "dense_fraction",
    "gradient_mean", "local_std_mean", "local_contrast_p99",
    *(f"blob{int(s)}_{stat}" for s in SIGMAS for stat in ("max", "top10", "p99")),
    "blob_any_max",
)
CANDIDATE_FEATURES = (
    *(f"blob{int(s)}" for s in SIGMAS), "best_scale", "blob", "local_brightness", "local_contrast", "local_std",
    "frame_row", "frame_col", "edge_distance", "rank",
)
CONTRALATERAL_FEATURES = ("blob_excess", "density_excess", "film_blob_excess")
PAIR_FEATURES = (
    *(f"diff_{name}" for name in FILM_FEATURES if name not in ("pectoral_found",)),
    "frame_excess_max", "frame_excess_mean", "frame_abs_mean", "histogram_distance",
)


@dataclass(frozen=True)
class FilmFeatures:
    """One film's features, its blob heat-map on the GRID and its density map in the common frame."""

    values: np.ndarray  # [len(FILM_FEATURES)]
    heatmap: np.ndarray  # [GRID, GRID] in the film's own orientation, 0 outside the tissue
    frame: np.ndarray  # [*FRAME] mean brightness of the oriented breast (pectoral removed)
    histogram: np.ndarray  # [32] tissue brightness histogram (density)
    flipped: bool
    candidates: np.ndarray  # [n, len(CANDIDATE_FEATURES)] the brightest blobs, strongest first
    candidate_points: np.ndarray  # [n, 2] (row, col) of each candidate, chest-wall-left (see image_points)
    frame_blobs: np.ndarray  # [*FRAME] strongest blob response per frame cell
    box: tuple[int, int, int, int]  # the tissue's bounding box (row0, row1, col0, col1), chest-wall-left
    width: int

    def image_points(self) -> np.ndarray:
        """Candidate (row, col) in the film's own orientation."""
        points = self.candidate_points.copy()
        if self.flipped:
            points[:, 1] = self.width - 1 - points[:, 1]
        return points


def film_features(image: np.ndarray, *, remove_pectoral: bool = True) -> FilmFeatures:
    """Features of one masked film in [0, 1] (zero outside the breast), [rows, cols]."""
    image = np.asarray(image, dtype=np.float32)
    breast = image > 0
    oriented, mask, flipped = orient_chest_wall_left(image, breast)
    line = pectoral_line(oriented, mask) if remove_pectoral else None
    tissue = mask & ~pectoral_mask(mask.shape, line)
    if tissue.sum() < 500:
        tissue = mask if mask.sum() >= 500 else np.ones_like(mask)
    values = oriented[tissue]
    mean, std = float(values.mean()), float(values.std()) + 1e-6
    p10, p50, p90, p99 = np.percentile(values, [10, 50, 90, 99])
    centred = (values - mean) / std
    smooth = ndimage.gaussian_filter(oriented, 2.0)
    gradient = np.hypot(ndimage.sobel(smooth, 0), ndimage.sobel(smooth, 1))
    local_mean = ndimage.uniform_filter(oriented, 15)
    local_std = np.sqrt(np.maximum(ndimage.uniform_filter(oriented**2, 15) - local_mean**2, 0))
    contrast = oriented - ndimage.gaussian_filter(oriented, 16.0)
    blob_map, responses, inners = blob_responses(oriented, tissue)
    blob_stats = []
    for response, inner in zip(responses, inners, strict=True):
        inside = response[inner]
        blob_stats += [float(inside.max()), float(np.sort(inside)[-10:].mean()), float(np.percentile(inside, 99))]
    row_features = [
        float(np.log(tissue.sum())), float(line is not None), mean, std, p10, p50, p90, p99,
        float((centred**3).mean()), float((centred**4).mean()), float((values > p50 + std).mean()),
        float(gradient[tissue].mean()), float(local_std[tissue].mean()), float(np.percentile(contrast[tissue], 99)),
        *blob_stats, float(blob_map.max()),
    ]
    heatmap = _cells(blob_map, GRID)
    if flipped:
        heatmap = heatmap[:, ::-1]
    frame, box = _frame(oriented, tissue)
    candidates, points = _candidates(oriented, tissue, responses, blob_map, contrast, local_std, box, std)
    return FilmFeatures(
        np.asarray(row_features, dtype=np.float64), heatmap.astype(np.float32), frame,
        np.histogram(values, bins=32, range=(0.0, 1.0))[0] / max(values.size, 1), flipped,
        candidates, points, _frame_max(blob_map, tissue, box), box, int(image.shape[1]),
    )


def blob_responses(image: np.ndarray, tissue: np.ndarray) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """(blob map, per-scale responses, per-scale inner masks) of a film in [0, 1] over its ``tissue`` mask.

    The response is the scale-normalised negative Laplacian of Gaussian in units of the tissue's
    brightness spread; the map keeps each scale only inside the tissue eroded by about twice its
    sigma, because the skin line and the muscle edge are the strongest "blobs" of any film.
    Rotation-free, so it is the same whichever way the film faces.
    """
    values = image[tissue]
    std = float(values.std()) + 1e-6
    filled = np.where(tissue, image, float(np.percentile(values, 50)))
    blob_map, responses, inners = np.zeros_like(image), [], []
    for sigma in SIGMAS:
        response = -(sigma**2) * ndimage.gaussian_laplace(filled, sigma) / std
        inner = ndimage.binary_erosion(tissue, iterations=min(int(2 * sigma) + 2, 24))
        inner = inner if inner.sum() > 50 else tissue
        blob_map = np.maximum(blob_map, np.where(inner, response, 0))
        responses.append(response)
        inners.append(inner)
    return blob_map, responses, inners


def pair_features(own: FilmFeatures, other: FilmFeatures) -> np.ndarray:
    """The film's differences from the woman's other breast (same view), [len(PAIR_FEATURES)]."""
    keep = [i for i, name in enumerate(FILM_FEATURES) if name != "pectoral_found"]
    excess = own.frame - other.frame
    valid = (own.frame > 0) & (other.frame > 0)
    excess = np.where(valid, excess, 0.0)
    # Earth mover's distance between the two brightness histograms (1-D: the L1 of the cumulative sums).
    emd = float(np.abs(np.cumsum(own.histogram) - np.cumsum(other.histogram)).sum() / len(own.histogram))
    return np.concatenate([
        own.values[keep] - other.values[keep],
        [float(excess.max()), float(excess[valid].mean()) if valid.any() else 0.0, float(np.abs(excess[valid]).mean()) if valid.any() else 0.0, emd],
    ])


def _cells(values: np.ndarray, grid: int) -> np.ndarray:
    """Max over each of grid x grid cells."""
    rows, cols = values.shape
    trimmed = values[: rows // grid * grid, : cols // grid * grid]
    return trimmed.reshape(grid, rows // grid, grid, cols // grid).max(axis=(1, 3))


def _frame(oriented: np.ndarray, tissue: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Mean brightness over a FRAME grid laid on the tissue's bounding box (a rough common frame for two breasts), and the box."""
    rows, cols = np.flatnonzero(tissue.any(axis=1)), np.flatnonzero(tissue.any(axis=0))
    box = (int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)
    sums = np.zeros(FRAME)
    counts = np.zeros(FRAME)
    rr, cc = np.nonzero(tissue)
    cell_r, cell_c = _frame_cell(rr, cc, box)
    np.add.at(sums, (cell_r, cell_c), oriented[rr, cc])
    np.add.at(counts, (cell_r, cell_c), 1)
    r_size = (box[1] - box[0]) / FRAME[0]
    c_size = (box[3] - box[2]) / FRAME[1]
    # Cells mostly outside the tissue (the skin line's corner) carry no comparable density.
    return np.where(counts > 0.5 * r_size * c_size, sums / np.maximum(counts, 1), 0.0), box


def _frame_cell(rows: np.ndarray, cols: np.ndarray, box: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    r = ((rows - box[0]) * FRAME[0] // max(box[1] - box[0], 1)).clip(0, FRAME[0] - 1)
    c = ((cols - box[2]) * FRAME[1] // max(box[3] - box[2], 1)).clip(0, FRAME[1] - 1)
    return r.astype(int), c.astype(int)


def _frame_max(values: np.ndarray, tissue: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    out = np.zeros(FRAME)
    rr, cc = np.nonzero(tissue)
    cell_r, cell_c = _frame_cell(rr, cc, box)
    np.maximum.at(out, (cell_r, cell_c), values[rr, cc])
    return out


def _candidates(
    oriented: np.ndarray, tissue: np.ndarray, responses: list[np.ndarray], blob_map: np.ndarray, contrast: np.ndarray,
    local_std: np.ndarray, box: tuple[int, int, int, int], std: float,
) -> tuple[np.ndarray, np.ndarray]:
    """The CANDIDATES strongest local maxima of the blob map (at least SPACING px apart) with their features."""
    peaks = (blob_map == ndimage.maximum_filter(blob_map, size=2 * SPACING + 1)) & (blob_map > 0)
    rows, cols = np.nonzero(peaks)
    order = np.argsort(-blob_map[rows, cols])[:CANDIDATES]
    rows, cols = rows[order], cols[order]
    edge_distance = ndimage.distance_transform_edt(tissue)
    local = ndimage.gaussian_filter(oriented, 8.0)
    median = float(np.median(oriented[tissue]))
    height, width = max(box[1] - box[0], 1), max(box[3] - box[2], 1)
    table = np.zeros((CANDIDATES, len(CANDIDATE_FEATURES)))
    points = np.zeros((CANDIDATES, 2))
    for k, (r, c) in enumerate(zip(rows, cols, strict=True)):
        per_scale = [float(resp[r, c]) for resp in responses]
        table[k] = [
            *per_scale, float(np.argmax(per_scale)), float(blob_map[r, c]), (float(local[r, c]) - median) / std,
            float(contrast[r, c]) / std, float(local_std[r, c]) / std, (r - box[0]) / height, (c - box[2]) / width,
            float(edge_distance[r, c]) / width, float(k),
        ]
        points[k] = (r, c)
    # Films with fewer peaks repeat their weakest one, so every film has CANDIDATES rows (fixed ONNX shapes).
    n = len(rows)
    if 0 < n < CANDIDATES:
        table[n:], points[n:] = table[n - 1], points[n - 1]
    return table, points


def candidate_pair_features(own: FilmFeatures, other: FilmFeatures | None) -> np.ndarray:
    """[CANDIDATES, len(CONTRALATERAL_FEATURES)]: each candidate against the same place in the other breast.

    Without the other breast the values are 0 (no asymmetry known); the model is trained with the
    comparison, so a one-sided study is scored by a model trained without it (see the task).
    """
    out = np.zeros((len(own.candidates), len(CONTRALATERAL_FEATURES)))
    if other is None:
        return out
    cell_r, cell_c = _frame_cell(own.candidate_points[:, 0], own.candidate_points[:, 1], own.box)
    padded = np.pad(other.frame_blobs, 1)
    padded_frame = np.pad(other.frame, 1)
    for k, (r, c) in enumerate(zip(cell_r, cell_c, strict=True)):
        around = padded[r : r + 3, c : c + 3]
        density = padded_frame[r : r + 3, c : c + 3]
        own_density = own.frame[r, c]
        out[k] = [
            own.candidates[k, CANDIDATE_FEATURES.index("blob")] - float(around.max()),
            own_density - float(density[1, 1]) if own_density > 0 and density[1, 1] > 0 else 0.0,
            own.values[FILM_FEATURES.index("blob_any_max")] - other.values[FILM_FEATURES.index("blob_any_max")],
        ]
    return out
