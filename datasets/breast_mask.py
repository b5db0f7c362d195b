"""The breast in a mammogram (numpy + scipy): background, film labels and scanner marks removed.

A model that sees labels and the skin line learns them; zeroing everything outside the breast keeps
its input (and so its heat-map) on tissue. Pectoral muscle is not removed (see the mammography card).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["breast_mask", "apply_breast_mask"]


def breast_mask(image: np.ndarray, *, level: float = 0.08) -> np.ndarray:
    """Boolean mask of the breast in a [0, 1] film: the largest bright component, holes filled.

    Labels and markers are separate bright islands in the background, so keeping the largest
    component drops them; a small opening cuts the thin bridges that sometimes join a label to the skin.
    """
    image = np.asarray(image, dtype=np.float32)
    smooth = ndimage.uniform_filter(image, size=3)
    foreground = ndimage.binary_opening(smooth > level, structure=np.ones((5, 5), bool))
    labels, count = ndimage.label(foreground)
    if count == 0:
        return np.ones(image.shape, dtype=bool)
    sizes = ndimage.sum_labels(foreground, labels, index=np.arange(1, count + 1))
    largest = labels == (int(np.argmax(sizes)) + 1)
    return ndimage.binary_fill_holes(largest)


def apply_breast_mask(image: np.ndarray) -> np.ndarray:
    """The film with everything outside :func:`breast_mask` set to 0 (same shape and dtype)."""
    return np.where(breast_mask(image), image, 0).astype(image.dtype)
