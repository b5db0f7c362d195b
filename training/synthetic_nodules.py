"""Synthetic lung nodules inserted into real CT slices: more positives than three LIDC slabs hold.

A nodule is a lobulated ellipsoid of solid (-100..60 HU) or ground-glass (-650..-300 HU) density
with a soft edge and texture noise, blended into the real parenchyma around it. Used only for
training and for a separately reported validation figure; the model card says so.
"""

from __future__ import annotations

import numpy as np

from datasets.ct_candidates import SLAB_MM, extract_patch, lung_mask
from datasets.dicom_series import Volume

__all__ = ["insert_nodule", "synthetic_positive_patches", "random_lung_points"]


def insert_nodule(slab: np.ndarray, centre: tuple[int, int], radius_mm: float, spacing: tuple[float, float, float], rng: np.random.Generator) -> np.ndarray:
    """A copy of the odd-length ``slab`` [S, H, W] with a nodule centred on its middle slice at ``centre``."""
    out = slab.copy()
    slice_mm, row_mm, col_mm = spacing
    solid = rng.random() < 0.65
    density = rng.uniform(-100.0, 60.0) if solid else rng.uniform(-650.0, -300.0)
    lobes, amplitude, phase = int(rng.integers(3, 7)), rng.uniform(0.0, 0.25), rng.uniform(0, 2 * np.pi)
    stretch = rng.uniform(0.8, 1.25)
    half = int(np.ceil(radius_mm * 1.6 / min(row_mm, col_mm))) + 2
    r0, c0 = centre
    rows = np.arange(max(r0 - half, 0), min(r0 + half, slab.shape[1]))
    cols = np.arange(max(c0 - half, 0), min(c0 + half, slab.shape[2]))
    dy = (rows[:, None] - r0) * row_mm * stretch
    dx = (cols[None, :] - c0) * col_mm / stretch
    distance = np.hypot(dy, dx)
    angle = np.arctan2(dy, dx)
    middle = slab.shape[0] // 2
    for index in range(slab.shape[0]):
        dz = (index - middle) * slice_mm
        if abs(dz) >= radius_mm:
            continue
        plane_radius = np.sqrt(radius_mm**2 - dz**2) * (1.0 + amplitude * np.sin(lobes * angle + phase))
        weight = 1.0 / (1.0 + np.exp((distance - plane_radius) / 0.6))  # soft edge about 0.6 mm
        texture = rng.normal(0.0, 25.0 if solid else 60.0, weight.shape)
        region = out[index][np.ix_(rows, cols)]
        out[index][np.ix_(rows, cols)] = region + weight * (density + texture - region)
    return out


def random_lung_points(volume: Volume, mask: np.ndarray, count: int, rng: np.random.Generator, *, avoid: list[tuple[int, int, int, float]] | None = None, max_hu: float = -600.0) -> list[tuple[int, int, int]]:
    """Points in aerated lung (HU < ``max_hu``) at least 15 mm from every point in ``avoid``."""
    z, r, c = np.nonzero(mask & (volume.hu < max_hu))
    if len(z) == 0:
        return []
    points = []
    row_mm = volume.spacing_mm[1]
    for i in rng.permutation(len(z))[: count * 4]:
        if avoid and any(abs(z[i] - az) <= 2 and np.hypot(r[i] - ar, c[i] - ac) * row_mm < 15 + rad * row_mm for az, ar, ac, rad in avoid):
            continue
        points.append((int(z[i]), int(r[i]), int(c[i])))
        if len(points) == count:
            break
    return points


def synthetic_positive_patches(volume: Volume, count: int, rng: np.random.Generator, avoid: list[tuple[int, int, int, float]]) -> np.ndarray:
    """``count`` patches [N, 3, 32, 32] each centred (with 1-2 px jitter) on a freshly inserted nodule."""
    mask = lung_mask(volume.hu, volume.spacing_mm[1])
    # Enough slices either side for the patch's planes SLAB_MM above and below (5 at 1.25 mm, 3 at 2.5 mm).
    reach = int(np.ceil(SLAB_MM / max(volume.spacing_mm[0], 1e-3)))
    patches = []
    for z, r, c in random_lung_points(volume, mask, count, rng, avoid=avoid):
        indices = [int(np.clip(z + k, 0, volume.hu.shape[0] - 1)) for k in range(-reach, reach + 1)]
        slab = insert_nodule(volume.hu[indices], (r, c), rng.uniform(2.5, 12.0), volume.spacing_mm, rng)
        local = Volume(slab, volume.spacing_mm, tuple(float(i) for i in range(len(indices))), ("",) * len(indices))
        jr, jc = (int(v) for v in rng.integers(-2, 3, 2))
        patches.append(extract_patch(local, reach, r + jr, c + jc))
    return np.stack(patches).astype(np.float32) if patches else np.zeros((0, 3, 32, 32), np.float32)
