"""Intended use, machine-readable and enforced: a study outside a version's validated population is not scored,
keeps its arrival place, and says why (issue 11). Real headers, the shipped bundles, the real pipeline."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from sqlalchemy import select

from inference.errors import OutOfScope
from inference.intended_use import IntendedUse, check_intended_use, patient_age_years, view_of
from inference.shipped_models import SHIPPED_MODELS_DIR
from inference.tables import ScoreResult, Study
from service.db import session_scope
from tests.inference.conftest import INFERENCE_FIXTURES, Pipeline
from worklist.policy import PriorityPolicy
from worklist.recompute import recompute_worklist
from worklist.tables import WorklistEntry

DX_CHEST = INFERENCE_FIXTURES / "images" / "dx_chest_highdicom.dcm"
MG = INFERENCE_FIXTURES / "images" / "mg_ge_senographe.dcm"


def _use(task: str) -> IntendedUse:
    use = IntendedUse.from_bundle(json.loads((SHIPPED_MODELS_DIR / task / "bundle.json").read_text()))
    assert use is not None
    return use


def _as_new_study(source: Path, tmp_path: Path, **attributes: object) -> Path:
    ds = dcmread(source)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    for keyword, value in attributes.items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    path = tmp_path / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path)
    return path


def _mammogram(tmp_path: Path, rows: int, columns: int, laterality: str | None) -> Path:
    """The real GE Senographe header with a synthetic film of the given size (its own pixels are 1x2)."""
    ds = dcmread(MG)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation, ds.SamplesPerPixel = 16, 12, 11, 0, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.ImagerPixelSpacing = ds.PixelSpacing = [0.1, 0.1]
    ds.PixelData = (np.random.default_rng(0).integers(0, 4000, (rows, columns), dtype=np.uint16)).tobytes()
    for keyword in ("ImageLaterality", "Laterality"):
        if keyword in ds:
            delattr(ds, keyword)
    if laterality:
        ds.ImageLaterality = laterality
    path = tmp_path / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_age_is_read_from_patient_age_or_birth_date_against_study_date() -> None:
    ds = dcmread(DX_CHEST)
    assert patient_age_years(ds) == pytest.approx(5.0)
    del ds.PatientAge
    assert patient_age_years(ds) == pytest.approx(5.76, abs=0.01)  # born 2014-04-22, seen 2020-01-25
    ds.PatientAge = "018M"
    assert patient_age_years(ds) == pytest.approx(1.5)
    del ds.PatientAge
    ds.PatientBirthDate = ""
    assert patient_age_years(ds) is None


@pytest.mark.parametrize(
    ("born", "seen", "in_scope"),
    [
        ("20250301", "20260301", True),  # the 1st birthday, 29 Feb 2024 not between: 1 y
        ("20230301", "20240301", True),  # the 1st birthday with 29 Feb 2024 between (days / 365.25: 1.0007)
        ("20250302", "20260301", False),  # the day before the 1st birthday: 11 months
        ("20200301", "20260301", False),  # the 6th birthday (days / 365.25 made it 5.9986, scored)
        ("20200302", "20260301", True),  # the day before the 6th birthday: 5 y
        ("20200229", "20260228", True),  # born on 29 February: 5 y on 28 February ...
        ("20200229", "20260301", False),  # ... and 6 y on 1 March
    ],
)
def test_the_age_gate_counts_birthdays_as_the_calendar_does(born: str, seen: str, in_scope: bool) -> None:
    use = _use("chest-xray")  # validated for 1-5 completed years
    ds = dcmread(DX_CHEST)
    del ds.PatientAge
    ds.PatientBirthDate, ds.StudyDate = born, seen
    if in_scope:
        check_intended_use(use, [ds], "chest-xray v1")
    else:
        with pytest.raises(OutOfScope, match=r"^patient (11 months|6 y); chest-xray v1 is validated for 1-5 y$"):
            check_intended_use(use, [ds], "chest-xray v1")


def test_dates_in_the_acr_nema_form_give_the_age() -> None:
    """PS3.5 6.2 asks readers to accept YYYY.MM.DD, which older archives still send: such a 3-year-old's film had
    been refused as "patient age unknown (no PatientAge, no PatientBirthDate with StudyDate)" (review7 time_locale)."""
    ds = dcmread(DX_CHEST)
    del ds.PatientAge
    ds.PatientBirthDate, ds.StudyDate = "2016.03.01", "2019.06.01"
    assert patient_age_years(ds) == pytest.approx(3.25, abs=0.01)
    check_intended_use(_use("chest-xray"), [ds], "chest-xray v1")
    ds.PatientBirthDate = "01.03.2016"  # day first: not a DICOM date, never guessed
    assert patient_age_years(ds) is None


def test_a_birth_after_the_study_is_named_not_reported_as_missing() -> None:
    """Both dates in the header, the birth later (a mistyped year): the refusal had said there was no birth date,
    so the tags were searched for instead of the record corrected (review7 time_locale)."""
    ds = dcmread(DX_CHEST)
    del ds.PatientAge
    ds.PatientBirthDate, ds.StudyDate = "20220301", "20200125"
    with pytest.raises(
        OutOfScope, match=r"^patient age unknown \(birth date 2022-03-01 is after the study date 2020-01-25\); chest-xray v1"
    ):
        check_intended_use(_use("chest-xray"), [ds], "chest-xray v1")


def test_the_shipped_chest_model_refuses_an_adult_and_an_unknown_age() -> None:
    use = _use("chest-xray")
    ds = dcmread(DX_CHEST)
    check_intended_use(use, [ds], "chest-xray v1")  # a 5-year-old: in scope
    ds.PatientAge = "064Y"
    with pytest.raises(OutOfScope, match=r"^patient 64 y; chest-xray v1 is validated for 1-5 y$"):
        check_intended_use(use, [ds], "chest-xray v1")
    ds.PatientAge, ds.PatientBirthDate = "", ""
    with pytest.raises(OutOfScope, match="patient age unknown"):
        check_intended_use(use, [ds], "chest-xray v1")
    ds.PatientAge = "003Y"
    ds.ViewPosition = "LL"
    with pytest.raises(OutOfScope, match="no PA/AP view"):
        check_intended_use(use, [ds], "chest-xray v1")


def test_a_chest_body_part_spelt_in_spanish_is_the_chest_and_an_abdomen_is_not() -> None:
    use = _use("chest-xray")
    ds = dcmread(DX_CHEST)
    for spelling in ("TORAX", "Tórax", "THORAX", "CHEST"):
        ds.BodyPartExamined = spelling
        check_intended_use(use, [ds], "chest-xray v1")
    ds.BodyPartExamined = "ABDOMEN"
    with pytest.raises(OutOfScope, match="body part ABDOMEN"):
        check_intended_use(use, [ds], "chest-xray v1")


def test_the_shipped_mammography_model_refuses_a_thumbnail_and_a_film_without_laterality(tmp_path: Path) -> None:
    use = _use("mammography")
    check_intended_use(use, [dcmread(_mammogram(tmp_path, 640, 512, "L"))], "mammography v1")
    with pytest.raises(OutOfScope, match="image of 51x64 pixels; at least 512x512 needed"):
        check_intended_use(use, [dcmread(_mammogram(tmp_path, 64, 51, "L"))], "mammography v1")
    with pytest.raises(OutOfScope, match="without laterality"):
        check_intended_use(use, [dcmread(_mammogram(tmp_path, 640, 512, None))], "mammography v1")


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda tmp: _as_new_study(DX_CHEST, tmp, PatientAge="064Y"), "patient 64 y; chest-xray v1 is validated for 1-5 y"),
        (lambda tmp: _mammogram(tmp, 64, 51, "R"), "image of 51x64 pixels"),
        (lambda tmp: _mammogram(tmp, 640, 512, None), "without laterality"),
    ],
    ids=["adult-chest-film", "thumbnail-mg", "mg-without-laterality"],
)
def test_out_of_scope_studies_are_not_scored_and_keep_their_arrival_place(
    pipeline: Pipeline, tmp_path: Path, make, reason: str
) -> None:
    pipeline.receive(make(tmp_path))
    pipeline.complete_route_and_score()
    with pipeline.session() as session:
        study = session.scalars(select(Study)).one()
        result = session.scalars(select(ScoreResult)).one()
    assert (study.status, result.outcome, result.score, result.call) == ("out_of_scope", "out_of_scope", None, None)
    assert reason in (result.reason or "") and study.status_reason == result.reason
    assert result.sr_sop_instance_uid is None  # nothing is written back for a study the model did not judge
    with session_scope(pipeline.worker.session_factory) as session:
        recompute_worklist(session, PriorityPolicy(aging_cap=timedelta(minutes=90)))
        entry = session.scalars(select(WorklistEntry)).one()
        assert (entry.state, entry.tier, entry.due_at) == ("out_of_scope", "unscored", entry.arrived_at)
        assert reason in (entry.score_reason or "") and "intended use" in entry.priority_reason


def _view_code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def test_an_empty_view_position_is_read_from_the_view_code_then_the_patient_orientation() -> None:
    """Review 3 defect 5: a lateral with an empty ViewPosition passed the PA/AP gate; an image that states no view
    anywhere is still left to assembly, as before."""
    use = _use("chest-xray")
    pa, by_code, by_orientation, unstated = (dcmread(DX_CHEST) for _ in range(4))
    for ds in (pa, by_code, by_orientation, unstated):
        ds.ViewPosition = ""
    pa.ViewCodeSequence = [_view_code("R-40888", "SRT", "postero-anterior")]
    by_code.ViewCodeSequence = [_view_code("399173006", "SCT", "left lateral")]
    by_orientation.PatientOrientation = ["P", "F"]
    unstated.PatientOrientation = ["L", "F"]  # frontal, PA or AP: not told apart, so as an unlabelled film
    admitted = check_intended_use(use, [pa, by_code, by_orientation, unstated], "chest-xray v1")
    assert [ds is pa or ds is unstated for ds in admitted] == [True, True]
    assert (view_of(pa), view_of(by_code), view_of(by_orientation), view_of(unstated)) == ("PA", "LL", "LATERAL", "")
    with pytest.raises(OutOfScope, match="no PA/AP view"):
        check_intended_use(use, [by_code, by_orientation], "chest-xray v1")


def test_spot_and_magnification_views_are_left_out_of_the_mammography_gate(tmp_path: Path) -> None:
    """Review 3 defect 9: CID 4015 Spot Compression (R-102D7) and Magnification (399163009), or an estimated
    magnification of 1.8, with ViewPosition CC: the gate admitted them."""
    use = _use("mammography")
    plain, spot, magnification, magnified = (dcmread(_mammogram(tmp_path, 640, 512, "R")) for _ in range(4))
    for ds, modifier in ((spot, ("R-102D7", "SRT", "Spot Compression")), (magnification, ("399163009", "SCT", "Magnification"))):
        view = _view_code("399162004", "SCT", "cranio-caudal")
        view.ViewModifierCodeSequence = [_view_code(*modifier)]
        ds.ViewCodeSequence = [view]
    magnified.EstimatedRadiographicMagnificationFactor = 1.8
    plain.EstimatedRadiographicMagnificationFactor = 1.1  # a contact view
    admitted = check_intended_use(use, [plain, spot, magnification, magnified], "mammography v1")
    assert [ds is plain for ds in admitted] == [True]
    for ds, reason in ((spot, "spot compression"), (magnification, "magnification view"), (magnified, "magnification 1.8")):
        with pytest.raises(OutOfScope, match=reason):
            check_intended_use(use, [ds], "mammography v1")
