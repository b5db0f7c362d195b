"""The breast mask removes film labels and background and keeps the breast."""

from __future__ import annotations

import numpy as np

from datasets.breast_mask import breast_mask
from datasets.mias import load_mias, read_film
from datasets.preprocess import PreprocessSpec, prepare_image
from tests.conftest import FIXTURES


def test_mask_keeps_the_breast_and_drops_a_label() -> None:
    film = load_mias(FIXTURES / "datasets" / "mias")[0]
    image = prepare_image(read_film(film), PreprocessSpec(size=(512, 512)))[0, 0]
    labelled = image.copy()
    labelled[20:60, 20:80] = 1.0  # a film label in a background corner, as MIAS films carry
    mask = breast_mask(labelled)
    assert not mask[20:60, 20:80].any()
    assert mask[image > 0.3].mean() > 0.95  # dense tissue is inside
    assert 0.2 < mask.mean() < 0.8


def test_masked_spec_zeroes_the_background() -> None:
    film = load_mias(FIXTURES / "datasets" / "mias")[0]
    plain = prepare_image(read_film(film), PreprocessSpec(size=(256, 256)))[0, 0]
    masked = prepare_image(read_film(film), PreprocessSpec(size=(256, 256), extra={"mask": "breast"}))[0, 0]
    assert masked.shape == plain.shape and (masked <= plain).all()
    inside = masked > 0
    assert np.array_equal(masked[inside], plain[inside]) and (~inside).mean() > 0.2
