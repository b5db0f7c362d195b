"""The served mammography heat-map stays on breast tissue: zero on the background, the labels and the pectoral muscle."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from datasets.breast_heatmap import VARIANTS, breast_heatmap, breast_tissue
from datasets.mias import load_mias, read_film
from datasets.preprocess import PreprocessSpec, prepare_image
from tests.conftest import FIXTURES

SPEC = PreprocessSpec(size=(512, 512), window=None, percentiles=(0.5, 99.5), extra={"mask": "breast"})


@pytest.fixture(scope="module")
def films() -> dict[str, np.ndarray]:
    return {f.refnum: prepare_image(read_film(f), SPEC)[0, 0] for f in load_mias(FIXTURES / "datasets" / "mias")}


def _cells(mask: np.ndarray) -> np.ndarray:
    return mask.reshape(32, 16, 32, 16).mean(axis=(1, 3))


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("refnum", ["mdb001", "mdb002", "mdb003"])
def test_map_is_zero_off_the_tissue_even_where_the_network_is_hottest(films, refnum: str, variant: str) -> None:
    image = films[refnum]
    tissue = breast_tissue(image)
    assert tissue.method == "breast less pectoral muscle" and tissue.pectoral.sum() > 1000
    # The network at its worst: hottest on the pectoral muscle and on the skin line / background.
    network = np.full((32, 32), 0.1, np.float32)
    network[_cells(tissue.pectoral) > 0.5] = 0.99
    edge = ndimage.binary_dilation(tissue.breast, iterations=8) & ~ndimage.binary_erosion(tissue.breast, iterations=8)
    network[_cells(edge) > 0.3] = 0.95
    network[_cells(~tissue.breast) > 0.9] = 0.9
    served, fine, _ = breast_heatmap(network, image, variant=variant)
    assert served.shape == image.shape == fine.shape
    assert (served[~tissue.breast] == 0).all()  # background and film labels
    assert (served[~tissue.mask] == 0).all() and (served[tissue.pectoral] == 0).all()
    assert served.max() == pytest.approx(1.0) and served.min() == 0.0
    assert tissue.mask[np.unravel_index(int(np.argmax(served)), served.shape)]


def test_network_map_peaks_where_the_network_does_inside_the_tissue(films) -> None:
    image = films["mdb003"]
    tissue = breast_tissue(image)
    rows, cols = np.nonzero(ndimage.binary_erosion(tissue.mask, iterations=40))
    r, c = int(np.median(rows)), int(np.median(cols))
    network = np.full((32, 32), 0.2, np.float32)
    network[r // 16, c // 16] = 0.8
    served, _, _ = breast_heatmap(network, image, variant="cnn-tissue")
    peak = np.unravel_index(int(np.argmax(served)), served.shape)
    assert np.hypot(peak[0] - (r // 16 * 16 + 8), peak[1] - (c // 16 * 16 + 8)) <= 8


def test_a_blank_frame_keeps_the_whole_image() -> None:
    tissue = breast_tissue(np.zeros((512, 512), np.float32))
    assert tissue.mask.all() and tissue.method == "whole image (no breast found)"
