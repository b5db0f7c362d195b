"""Simulated reconstruction kernels for CT training: the same slab as a softer or a sharper, noisier scanner
would reconstruct it, so the patch classifier learns what does not change between kernels.

Soft: in-plane Gaussian blur of 0.3-1.2 mm. Sharp: unsharp mask (0.7 mm, amount 0.3-1.0) plus 10-40 HU of
white noise. Training only; the serving path normalises instead (``datasets.ct_candidates``).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from datasets.dicom_series import Volume

__all__ = ["soft_kernel", "sharp_kernel", "kernel_variants"]


def soft_kernel(volume: Volume, rng: np.random.Generator) -> Volume:
    sigma_mm = rng.uniform(0.3, 1.2)
    _, row_mm, col_mm = volume.spacing_mm
    hu = ndimage.gaussian_filter(volume.hu, sigma=(0, sigma_mm / row_mm, sigma_mm / col_mm))
    return dataclasses.replace(volume, hu=hu.astype(np.float32))


def sharp_kernel(volume: Volume, rng: np.random.Generator) -> Volume:
    amount, noise = rng.uniform(0.3, 1.0), rng.uniform(10.0, 40.0)
    _, row_mm, col_mm = volume.spacing_mm
    blurred = ndimage.gaussian_filter(volume.hu, sigma=(0, 0.7 / row_mm, 0.7 / col_mm))
    hu = volume.hu + amount * (volume.hu - blurred) + rng.normal(0.0, noise, volume.hu.shape)
    return dataclasses.replace(volume, hu=hu.astype(np.float32))


def kernel_variants(volume: Volume, rng: np.random.Generator) -> list[Volume]:
    """The volume as reconstructed, softer and sharper."""
    return [volume, soft_kernel(volume, rng), sharp_kernel(volume, rng)]
