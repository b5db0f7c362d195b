"""Lung fields found without a network on real Kermany films: plausible size and place, both sides, and a
white (consolidated) lung kept inside the mask."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from datasets.lung_fields import central_ellipse, lung_fields
from datasets.preprocess import PreprocessSpec, prepare_image, read_image_file
from tests.conftest import FIXTURES

FILMS = sorted((FIXTURES / "datasets" / "kermany" / "train").glob("*/*.jpeg"))
SPEC = PreprocessSpec(size=(128, 128))
CLEAR_NORMAL = FIXTURES / "datasets" / "kermany" / "train" / "NORMAL" / "IM-0115-0001.jpeg"


def _film(path: Path) -> np.ndarray:
    return prepare_image(read_image_file(path), SPEC)[0, 0]


@pytest.mark.parametrize("path", FILMS, ids=[p.name for p in FILMS])
def test_fields_are_two_lungs_inside_the_chest(path: Path) -> None:
    fields = lung_fields(_film(path))
    mask = fields.mask
    assert mask.shape == (128, 128) and mask.dtype == bool
    assert 0.15 <= mask.mean() <= 0.55, f"{fields.method}: area {mask.mean():.3f}"
    row, col = ndimage.center_of_mass(mask)
    assert 50 <= row <= 80 and 54 <= col <= 74  # about the centre of a frontal film
    # One field each side, and nothing on the film's outer edge (air, arms, text markers live there).
    assert 0.35 <= mask[:, :64].sum() / mask.sum() <= 0.65
    assert not mask[:, :4].any() and not mask[:, -4:].any() and not mask[:4].any()
    # The neck and the shoulders are outside: the top eighth of the film is at most grazed.
    assert mask[:16].mean() < 0.1


def test_clear_normal_films_are_found_as_two_fields_not_the_fallback() -> None:
    normals = [p for p in FILMS if p.parent.name == "NORMAL" and p.name.startswith("IM-")]
    assert normals and all(lung_fields(_film(p)).method == "two-fields" for p in normals)


def test_a_white_lung_stays_inside_the_mask() -> None:
    # Whiting out the film's left half (the patient's right lung) the way a lobar consolidation or an
    # effusion does: that side is what a pointer must reach, so it must not be masked out.
    image = _film(CLEAR_NORMAL)
    before = lung_fields(image).mask
    white = image.copy()
    white[:, :64] = np.maximum(white[:, :64], 0.9)
    after = lung_fields(white)
    assert after.method in ("mirrored", "fields-and-ellipse", "ellipse")
    # Mirrored from the other side, most of that lung is inside (the mirror image is of the smaller,
    # heart-side lung, so not all of it); the mask is not one-sided.
    assert after.mask[:, :64][before[:, :64]].mean() > 0.5
    assert after.mask[:, :64].sum() >= 0.4 * after.mask.sum()


def test_a_film_without_lungs_falls_back_to_the_central_ellipse() -> None:
    blank = np.full((128, 128), 0.8, np.float32)
    fields = lung_fields(blank)
    assert fields.method == "ellipse" and np.array_equal(fields.mask, central_ellipse((128, 128)))

