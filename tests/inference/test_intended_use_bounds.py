"""The intended-use bounds at their edges (mutation review 3: I1-I4, I6-I10). Headers only: the real DX chest and
GE Senographe headers against the shipped bundles' intended use, no pixels decoded, no service started."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydicom import dcmread

from inference.errors import OutOfScope
from inference.intended_use import IntendedUse, check_intended_use, patient_age_years
from inference.shipped_models import SHIPPED_MODELS_DIR
from tests.inference.conftest import INFERENCE_FIXTURES

DX_CHEST = INFERENCE_FIXTURES / "images" / "dx_chest_highdicom.dcm"  # DX, 211x169, 1.2 mm, 005Y, F
MG = INFERENCE_FIXTURES / "images" / "mg_ge_senographe.dcm"
CT = INFERENCE_FIXTURES / "images" / "ct_small_pydicom.dcm"


def _use(task: str) -> IntendedUse:
    use = IntendedUse.from_bundle(json.loads((SHIPPED_MODELS_DIR / task / "bundle.json").read_text()))
    assert use is not None
    return use


def _header(source: Any = DX_CHEST, **attributes: object) -> Any:
    ds = dcmread(source, stop_before_pixels=True)
    for keyword, value in attributes.items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return ds


def _mammogram_header(rows: int = 2294, columns: int = 1914, spacing: float = 0.1) -> Any:
    """The GE Senographe header as a full-field film (its own matrix is 1x2)."""
    return _header(MG, Rows=rows, Columns=columns, PixelSpacing=[spacing, spacing], ImagerPixelSpacing=[spacing, spacing])


def test_the_chest_header_is_in_scope_as_it_is() -> None:
    ds = _header()
    assert check_intended_use(_use("chest-xray"), [ds], "chest-xray v1") == [ds]


@pytest.mark.parametrize("age", ["001Y", "005Y", "012M", "071M", "053W", "366D", "312W"])
def test_ages_at_the_chest_model_bounds_are_scored(age: str) -> None:
    ds = _header(PatientAge=age)
    assert check_intended_use(_use("chest-xray"), [ds], "chest-xray v1") == [ds]


@pytest.mark.parametrize(
    "age, shown",
    [("006M", "patient 6 months"), ("011M", "patient 11 months"), ("000Y", "patient 0 months"),
     ("006Y", "patient 6 y"), ("072M", "patient 6 y"), ("400W", "patient 7 y"), ("010D", "patient 0 months"), ("052W", "patient 11 months")],
)
def test_ages_outside_the_chest_model_bounds_are_not_scored(age: str, shown: str) -> None:
    """An infant is not scored by the 1-5 y model (I1), nor is a 6-year-old (I2), nor 400 weeks (I10)."""
    with pytest.raises(OutOfScope, match=f"^{shown}; chest-xray v1 is validated for 1-5 y"):
        check_intended_use(_use("chest-xray"), [_header(PatientAge=age)], "chest-xray v1")


@pytest.mark.parametrize(
    "age, years", [("052W", 52 * 7 / 365.25), ("400W", 400 * 7 / 365.25), ("010D", 10 / 365.25), ("018M", 1.5)]
)
def test_patient_age_units(age: str, years: float) -> None:
    assert patient_age_years(_header(PatientAge=age)) == pytest.approx(years)


def test_a_birth_date_after_the_study_is_no_age() -> None:
    """A negative age is unknown, so a bundle bounding only the upper age does not score it (I9)."""
    ds = _header(PatientAge=None, PatientBirthDate="20210101", StudyDate="20200125")
    assert patient_age_years(ds) is None
    with pytest.raises(OutOfScope, match="patient age unknown"):
        check_intended_use(IntendedUse(summary="", age_years=(None, 5.0)), [ds], "m v1")


def test_a_listed_sex_is_enforced() -> None:
    use = IntendedUse(summary="", sexes=("F",))
    female = _header(PatientSex="F")
    assert check_intended_use(use, [female], "m v1") == [female]
    with pytest.raises(OutOfScope, match="^patient sex M; m v1 is validated for F"):
        check_intended_use(use, [_header(PatientSex="M")], "m v1")


@pytest.mark.parametrize("spacing", [1.0, 0.02])
def test_a_mammogram_outside_the_pixel_spacing_bounds_is_not_scored(spacing: float) -> None:
    use = _use("mammography")
    assert check_intended_use(use, [_mammogram_header()], "mammography v1")
    with pytest.raises(OutOfScope, match=f"^pixel spacing {spacing:g} mm outside 0.03-0.4 mm"):
        check_intended_use(use, [_mammogram_header(spacing=spacing)], "mammography v1")


def test_a_chest_film_at_3_mm_per_pixel_is_not_scored() -> None:
    with pytest.raises(OutOfScope, match="^pixel spacing 3 mm outside 0.05-2 mm"):
        check_intended_use(_use("chest-xray"), [_header(PixelSpacing=[3.0, 3.0], ImagerPixelSpacing=[3.0, 3.0])],
                           "chest-xray v1")


@pytest.mark.parametrize("rows, columns", [(300, 640), (640, 300)])
def test_a_film_short_in_one_dimension_is_not_scored(rows: int, columns: int) -> None:
    with pytest.raises(OutOfScope, match=f"^image of {columns}x{rows} pixels; at least 512x512 needed"):
        check_intended_use(_use("mammography"), [_mammogram_header(rows, columns)], "mammography v1")


@pytest.mark.parametrize("thumbnail_first", [False, True])
def test_one_thumbnail_among_full_views_keeps_the_study_unscored(thumbnail_first: bool) -> None:
    full, thumbnail = _header(), _header(Rows=51, Columns=64)
    images = [thumbnail, full] if thumbnail_first else [full, thumbnail]
    with pytest.raises(OutOfScope, match="^image of 64x51 pixels; at least 128x128 needed"):
        check_intended_use(_use("chest-xray"), images, "chest-xray v1")


def test_images_of_another_modality_are_left_out_or_refused() -> None:
    use, dx, ct = _use("chest-xray"), _header(), _header(CT)
    assert ct.Modality == "CT"
    with pytest.raises(OutOfScope, match="^modality CT; chest-xray v1 is validated for CR, DX"):
        check_intended_use(use, [ct], "chest-xray v1")
    assert check_intended_use(use, [dx, ct], "chest-xray v1") == [dx]
    assert check_intended_use(use, [ct, dx], "chest-xray v1") == [dx]
