"""The served mammography heat-map: kept to the breast tissue and scaled within it (numpy + scipy, no torch).

The fold networks' maps followed the skin line and lit the pectoral muscle (out-of-fold pointing game
22/61). As the chest map is kept to the lung fields (``datasets.lung_fields.heatmap_within``), the
mammography map is set to zero outside the breast tissue, i.e. the breast of the masked model input
(background and film labels already zeroed by ``datasets.breast_mask``) less the pectoral wedge of an
MLO film (``datasets.pectoral_muscle``), and scaled to [0, 1] within it. The variants below were
declared before their pointing game was measured; ``training.mammography_figures`` measures each out
of fold and picks one inside the cross-validation; the bundle names the one served.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from datasets.lung_fields import heatmap_within
from datasets.mammo_features import blob_responses
from datasets.pectoral_muscle import orient_chest_wall_left, pectoral_line, pectoral_mask
from datasets.preprocess import resize

__all__ = ["BreastTissue", "breast_tissue", "breast_heatmap", "VARIANTS", "DESCRIPTIONS", "SKIN_BAND_PX"]

# Declared before measuring (issue 12, item 5), in order of simplicity (a tie goes to the earlier one):
# - "cnn-tissue": the network's map inside the breast tissue (breast less pectoral muscle);
# - "cnn-inner": the same inside the tissue less a one-cell (6.4 mm) band along the skin line, where
#   the maps peaked; lesions on the skin line itself are rare in screening films;
# - "blobs": the multi-scale bright-blob map of ``datasets.mammo_features`` (no learning) in the tissue;
# - "cnn-x-blobs": the product of the network's and the blob map, each scaled within the tissue:
#   a place must look suspicious to the network and be a compact bright blob.
VARIANTS = ("cnn-tissue", "cnn-inner", "blobs", "cnn-x-blobs")
DESCRIPTIONS = {
    "cnn-tissue": "network map inside the tissue",
    "cnn-inner": "network map inside the tissue less a 6.4 mm skin band",
    "blobs": "multi-scale bright blobs (no learning) inside the tissue",
    "cnn-x-blobs": "network map x bright blobs, each scaled within the tissue",
}
SKIN_BAND_PX = 16  # one heat-map cell of the 512 px film (0.4 mm pixels)
MIN_TISSUE_PX = 500


@dataclass(frozen=True)
class BreastTissue:
    """Boolean masks over the model input: ``mask`` (where the map may be non-zero) = ``breast`` less ``pectoral``."""

    mask: np.ndarray
    breast: np.ndarray
    pectoral: np.ndarray
    method: str  # "breast less pectoral muscle", "breast (no pectoral muscle found)", "whole image (no breast found)"


def breast_tissue(image: np.ndarray) -> BreastTissue:
    """The tissue of a breast-masked film in [0, 1] (zero outside the breast), [rows, cols]."""
    image = np.asarray(image, dtype=np.float32)
    # Percentile rescaling clips the darkest fat to 0 inside the breast too: holes are filled.
    breast = ndimage.binary_fill_holes(image > 0)
    if breast.sum() < MIN_TISSUE_PX:
        # Nothing to keep the map within (a blank or inverted frame): the whole image, named so, rather than
        # failing a study whose score stands on its own.
        whole = np.ones(image.shape, dtype=bool)
        return BreastTissue(whole, whole, np.zeros_like(whole), "whole image (no breast found)")
    oriented, oriented_breast, flipped = orient_chest_wall_left(image, breast)
    line = pectoral_line(oriented, oriented_breast)
    wedge = pectoral_mask(oriented_breast.shape, line) & oriented_breast
    pectoral = wedge[:, ::-1] if flipped else wedge
    tissue = breast & ~pectoral
    if line is None or tissue.sum() < MIN_TISSUE_PX:
        return BreastTissue(breast, breast, np.zeros_like(breast), "breast (no pectoral muscle found)")
    return BreastTissue(tissue, breast, pectoral, "breast less pectoral muscle")


def _scaled_within(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    inside = values[mask]
    low, span = float(inside.min()), float(inside.max() - inside.min())
    scaled = (values - low) / span if span > 1e-6 else np.zeros_like(values)
    return np.where(mask, scaled, 0.0).astype(np.float32)


def breast_heatmap(heatmap: np.ndarray, image: np.ndarray, *, variant: str) -> tuple[np.ndarray, np.ndarray, BreastTissue]:
    """(served map at the image's resolution, zero outside the tissue and scaled to [0, 1] within it;
    the network's map interpolated to that resolution in its own units; the tissue).

    ``heatmap`` is the network's coarse map [h, w] (any monotone units: the peak is what counts),
    ``image`` the breast-masked model input [rows, cols].
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown breast heat-map variant {variant!r}; one of {VARIANTS}")
    image = np.asarray(image, dtype=np.float32)
    tissue = breast_tissue(image)
    mask = tissue.mask
    if variant == "cnn-inner":
        inner = ndimage.binary_erosion(mask, iterations=SKIN_BAND_PX)
        mask = inner if inner.sum() >= MIN_TISSUE_PX else mask
    if variant in ("cnn-tissue", "cnn-inner"):
        served, fine = heatmap_within(heatmap, mask)
        return served, fine, tissue
    fine = resize(np.asarray(heatmap, dtype=np.float32), image.shape)
    blobs = _scaled_within(np.maximum(blob_responses(image, mask)[0], 0.0), mask)
    if variant == "blobs":
        return blobs, fine, tissue
    network, _ = heatmap_within(heatmap, mask)
    return _scaled_within(network * blobs, mask), fine, tissue
