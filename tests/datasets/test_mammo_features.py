"""Orientation, pectoral muscle and the film / pair / candidate features of MIAS films (real fixture films)."""

from __future__ import annotations

import numpy as np
import pytest

from datasets.mammo_features import (
    CANDIDATE_FEATURES,
    CONTRALATERAL_FEATURES,
    FILM_FEATURES,
    PAIR_FEATURES,
    candidate_pair_features,
    film_features,
    pair_features,
)
from datasets.mias import load_mias, read_film
from datasets.pectoral_muscle import chest_wall_on_right, orient_chest_wall_left, pectoral_line, pectoral_mask
from datasets.preprocess import PreprocessSpec, prepare_image
from tests.conftest import FIXTURES

SPEC = PreprocessSpec(size=(512, 512), window=None, percentiles=(0.5, 99.5), extra={"mask": "breast"})


@pytest.fixture(scope="module")
def films() -> dict[str, np.ndarray]:
    return {f.refnum: prepare_image(read_film(f), SPEC)[0, 0] for f in load_mias(FIXTURES / "datasets" / "mias")}


def test_a_womans_two_films_face_opposite_ways_and_are_oriented_chest_wall_left(films) -> None:
    # mdb001 and mdb002 are one woman's right and left MLO films.
    assert chest_wall_on_right(films["mdb001"] > 0) != chest_wall_on_right(films["mdb002"] > 0)
    for image in films.values():
        _, mask, _ = orient_chest_wall_left(image, image > 0)
        assert not chest_wall_on_right(mask)


@pytest.mark.parametrize("refnum", ["mdb001", "mdb002", "mdb003"])
def test_the_pectoral_wedge_is_found_in_the_top_chest_wall_corner(films, refnum: str) -> None:
    image, breast, _ = orient_chest_wall_left(films[refnum], films[refnum] > 0)
    line = pectoral_line(image, breast)
    assert line is not None and line.slope < 0
    muscle = pectoral_mask(image.shape, line) & breast
    rest = breast & ~muscle
    assert 0.02 < muscle.sum() / breast.sum() < 0.3
    assert image[muscle].mean() > image[rest].mean()  # the muscle is the brighter wedge
    rows = np.flatnonzero(muscle.any(axis=1))
    assert rows.min() < 20 and rows.max() < image.shape[0] * 0.8  # it starts at the top, never spans the film


def test_no_wedge_is_cut_from_a_film_without_one() -> None:
    rows, cols = np.mgrid[0:512, 0:512]
    disc = (np.hypot(rows - 256, cols - 100) < 200) & (cols >= 60)  # a round breast, flat intensity, no muscle
    image = np.where(disc, 0.5, 0.0).astype(np.float32)
    assert pectoral_line(image, disc) is None


def test_features_do_not_depend_on_which_way_the_film_faces(films) -> None:
    image = films["mdb003"]
    straight, mirrored = film_features(image), film_features(image[:, ::-1].copy())
    assert straight.values.shape == (len(FILM_FEATURES),) and np.isfinite(straight.values).all()
    np.testing.assert_allclose(straight.values, mirrored.values, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(straight.heatmap, mirrored.heatmap[:, ::-1], rtol=1e-4, atol=1e-5)
    assert straight.candidates.shape[1] == len(CANDIDATE_FEATURES)


def test_pair_features_are_differences_and_candidates_sit_on_tissue(films) -> None:
    right, left = film_features(films["mdb001"]), film_features(films["mdb002"])
    forward, backward = pair_features(right, left), pair_features(left, right)
    assert forward.shape == (len(PAIR_FEATURES),)
    n_diff = sum(name.startswith("diff_") for name in PAIR_FEATURES)
    np.testing.assert_allclose(forward[:n_diff], -backward[:n_diff])
    contralateral = candidate_pair_features(right, left)
    assert contralateral.shape == (len(right.candidates), len(CONTRALATERAL_FEATURES)) and np.isfinite(contralateral).all()
    assert not candidate_pair_features(right, None).any()
    rows, cols = right.image_points().astype(int).T
    assert (films["mdb001"][rows, cols] > 0).all()
