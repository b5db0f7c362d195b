"""A CT whose headers describe an impossible geometry ends as could-not-score with the reason, never as a
ZeroDivisionError that retries into the dead letter (issue 14, Low)."""

from __future__ import annotations

import pytest

from inference.assemble import ct_series, read_study
from inference.errors import CouldNotScore
from tests.inference.conftest import INFERENCE_FIXTURES

CT = sorted((INFERENCE_FIXTURES / "ct").glob("*.dcm"))


def test_slices_at_one_position_are_refused() -> None:
    slices = read_study(CT)
    for ds in slices:
        ds.ImagePositionPatient = list(slices[0].ImagePositionPatient)
    with pytest.raises(CouldNotScore, match="duplicate slice positions"):
        ct_series(slices, min_slices=3)


@pytest.mark.parametrize("spacing", [[0.0, 0.0], [0.7, 0.0], [-0.7, 0.7]])
def test_a_zero_or_negative_pixel_spacing_is_refused(spacing: list[float]) -> None:
    slices = read_study(CT)
    for ds in slices:
        ds.PixelSpacing = spacing
    with pytest.raises(CouldNotScore, match="impossible voxel spacing"):
        ct_series(slices, min_slices=3)
