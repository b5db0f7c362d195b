"""MONAI training augmentations per task (training only; inference sees unaugmented inputs)."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from monai.transforms import (
    Compose,
    RandAdjustContrast,
    RandAffine,
    RandFlip,
    RandGaussianNoise,
    RandGaussianSmooth,
    RandRotate90,
    RandScaleIntensity,
)
from PIL import Image

from datasets.lung_fields import CENTRAL_ELLIPSE

__all__ = ["build_augmentation", "augment_batch", "RandBorderErase", "AcquisitionShift", "jpeg_roundtrip"]


class AcquisitionShift:
    """Vectorised batch augmentation for another site's films: one torch pass per batch, per-sample draws.

    Rotation, zoom/crop and shift (one ``affine_grid``), gamma, contrast, blur, noise, random margin
    erasure (Kermany's text markers and cropping sit at the edges) and JPEG re-encoding at a random
    quality (another site's export, a film sent through a viewer's "save as"). Ten times cheaper than
    MONAI's per-sample transforms, which is what let the cross-validation fit a shared 2-core machine.
    """

    batched = True

    def __init__(self, seed: int, *, rotate: float = 0.15, zoom: tuple[float, float] = (0.8, 1.1), shift: float = 0.08,
                 gamma: tuple[float, float] = (0.6, 1.6), blur_prob: float = 0.25, noise_std: float = 0.03,
                 erase_prob: float = 0.6, erase_fraction: float = 0.15,
                 jpeg_prob: float = 0.3, jpeg_quality: tuple[int, int] = (25, 90), frame_prob: float = 0.0) -> None:
        self.generator = torch.Generator().manual_seed(seed)
        self.rotate, self.zoom, self.shift = rotate, zoom, shift
        self.gamma, self.blur_prob, self.noise_std = gamma, blur_prob, noise_std
        self.erase_prob, self.erase_fraction = erase_prob, erase_fraction
        self.jpeg_prob, self.jpeg_quality = jpeg_prob, jpeg_quality
        self.frame_prob = frame_prob

    def _uniform(self, n: int, low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=self.generator)

    def __call__(self, batch: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        n, _, h, w = x.shape
        angle = self._uniform(n, -self.rotate, self.rotate)
        scale = self._uniform(n, *self.zoom)  # < 1 samples a smaller region: zoom in, crop the edges
        cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
        theta = torch.stack([
            torch.stack([cos, -sin, self._uniform(n, -self.shift, self.shift) * 2], dim=1),
            torch.stack([sin, cos, self._uniform(n, -self.shift, self.shift) * 2], dim=1),
        ], dim=1)
        grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
        x = torch.nn.functional.grid_sample(x, grid, padding_mode="zeros", align_corners=False)
        log_gamma = self._uniform(n, float(np.log(self.gamma[0])), float(np.log(self.gamma[1])))
        x = x.clamp(0, 1) ** torch.exp(log_gamma)[:, None, None, None]
        contrast = self._uniform(n, 0.8, 1.2)[:, None, None, None]
        mean = x.mean(dim=(2, 3), keepdim=True)
        x = (x - mean) * contrast + mean
        if torch.rand(1, generator=self.generator).item() < self.blur_prob:
            sigma = float(self._uniform(1, 0.4, 1.2))
            radius = 2
            taps = torch.exp(-(torch.arange(-radius, radius + 1, dtype=torch.float32) ** 2) / (2 * sigma**2))
            taps = taps / taps.sum()
            x = torch.nn.functional.conv2d(x, taps.view(1, 1, 1, -1), padding=(0, radius))
            x = torch.nn.functional.conv2d(x, taps.view(1, 1, -1, 1), padding=(radius, 0))
        x = x + torch.randn(x.shape, generator=self.generator) * self.noise_std * torch.rand(n, 1, 1, 1, generator=self.generator)
        erase = torch.rand(n, generator=self.generator) < self.erase_prob
        margins = (torch.rand(n, 4, generator=self.generator) * self.erase_fraction * torch.tensor([h, h, w, w])).long()
        rows, cols = torch.arange(h)[None, :], torch.arange(w)[None, :]
        keep_rows = (rows >= margins[:, 0:1]) & (rows < h - margins[:, 1:2])
        keep_cols = (cols >= margins[:, 2:3]) & (cols < w - margins[:, 3:4])
        keep = (keep_rows[:, :, None] & keep_cols[:, None, :]) | ~erase[:, None, None]
        return self._jpeg(self._frame((x * keep[:, None].float()).clamp(0, 1)))

    def _frame(self, x: torch.Tensor) -> torch.Tensor:
        """Blank everything outside a random ellipse around the lungs on a share of the batch: the film's
        periphery (markers, shoulders, abdomen, how it was cropped) then cannot be what calls it normal."""
        n, _, h, w = x.shape
        chosen = torch.rand(n, generator=self.generator) < self.frame_prob
        # The lung fields' fallback ellipse, its centre jittered and its size drawn per film.
        ellipse_r, ellipse_c, axis_r, axis_c = CENTRAL_ELLIPSE
        centre_r = (ellipse_r + self._uniform(n, -0.04, 0.04)) * h
        centre_c = (ellipse_c + self._uniform(n, -0.04, 0.04)) * w
        size = self._uniform(n, 0.95, 1.3)
        rows = torch.arange(h, dtype=torch.float32)[None, :, None]
        cols = torch.arange(w, dtype=torch.float32)[None, None, :]
        inside = ((rows - centre_r[:, None, None]) / (axis_r * h * size[:, None, None])) ** 2 + (
            (cols - centre_c[:, None, None]) / (axis_c * w * size[:, None, None])
        ) ** 2 <= 1.0
        keep = inside | ~chosen[:, None, None]
        return x * keep[:, None].float()

    def _jpeg(self, x: torch.Tensor) -> torch.Tensor:
        """Re-encode a random share of the batch as 8-bit JPEG at a random quality (the last step: an export)."""
        chosen = torch.rand(x.shape[0], generator=self.generator) < self.jpeg_prob
        qualities = torch.randint(self.jpeg_quality[0], self.jpeg_quality[1] + 1, (x.shape[0],), generator=self.generator)
        for i in torch.nonzero(chosen).flatten().tolist():
            x[i, 0] = torch.from_numpy(jpeg_roundtrip(x[i, 0].numpy(), int(qualities[i])))
        return x


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    """``image`` in [0, 1] through an 8-bit greyscale JPEG at ``quality`` and back."""
    buffer = io.BytesIO()
    Image.fromarray(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8), mode="L").save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded, dtype=np.float32) / 255.0


class RandBorderErase:
    """Blank a random margin on each side of the image (array form, channel first).

    Kermany films carry text markers and label-correlated cropping near the edges; erasing margins
    of random width makes the edge an unreliable cue, so the network has to look at the lung fields.
    """

    def __init__(self, prob: float, max_fraction: float, seed: int = 0) -> None:
        self.prob = prob
        self.max_fraction = max_fraction
        self.rng = np.random.default_rng(seed)

    def set_random_state(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if self.rng.random() >= self.prob:
            return image
        image = torch.as_tensor(image).clone()
        h, w = image.shape[-2:]
        top, bottom = (int(v) for v in self.rng.integers(0, int(h * self.max_fraction) + 1, 2))
        left, right = (int(v) for v in self.rng.integers(0, int(w * self.max_fraction) + 1, 2))
        image[..., :top, :] = 0
        image[..., h - bottom :, :] = 0
        image[..., :, :left] = 0
        image[..., :, w - right :] = 0
        return image


def build_augmentation(task: str, seed: int) -> Compose:
    if task == "chest-xray":
        # No left-right flip: the heart side is anatomy, and flipped films do not occur.
        # Acquisition shift (another site's detector, processing and export): gamma, contrast, blur,
        # noise, crop/zoom and rotation; margins erased against the data set's text-marker shortcut.
        transform = Compose(
            [
                RandAffine(prob=0.8, rotate_range=0.15, scale_range=(-0.1, 0.25), translate_range=(10, 10), padding_mode="zeros"),
                RandAdjustContrast(prob=0.5, gamma=(0.6, 1.6)),
                RandScaleIntensity(prob=0.3, factors=0.2),
                RandGaussianSmooth(prob=0.25, sigma_x=(0.3, 1.2), sigma_y=(0.3, 1.2)),
                RandGaussianNoise(prob=0.3, std=0.03),
                RandBorderErase(prob=0.6, max_fraction=0.15),
            ]
        )
    elif task == "mammography":
        transform = Compose(
            [
                RandFlip(prob=0.5, spatial_axis=1),  # left and right breasts are mirror images
                RandFlip(prob=0.3, spatial_axis=0),
                RandAffine(prob=0.5, rotate_range=0.2, scale_range=0.15, padding_mode="zeros"),
                RandAdjustContrast(prob=0.3, gamma=(0.8, 1.25)),
            ]
        )
    elif task == "ct-chest":
        transform = Compose(
            [
                RandFlip(prob=0.5, spatial_axis=0),
                RandFlip(prob=0.5, spatial_axis=1),
                RandRotate90(prob=0.5, spatial_axes=(0, 1)),
                RandGaussianNoise(prob=0.3, std=0.02),
            ]
        )
    else:
        raise ValueError(f"unknown task {task!r}")
    transform.set_random_state(seed=seed)
    return transform


def augment_batch(transform: Callable[..., Any], batch: np.ndarray, group: int = 8) -> torch.Tensor:
    """Apply the channel-first array transform to [N, C, H, W], one random draw per group of samples.

    Stacking ``group`` samples along the channel axis makes one MONAI call transform all of them
    alike; per-sample calls cost about 20 ms each on a busy 2-core machine, more than the network.
    """
    n, c, h, w = batch.shape
    out = []
    for start in range(0, n, group):
        chunk = torch.from_numpy(np.ascontiguousarray(batch[start : start + group])).reshape(-1, h, w)
        moved = torch.as_tensor(transform(chunk))
        out.append(moved.reshape(-1, c, moved.shape[-2], moved.shape[-1]))
    return torch.cat(out).float()
