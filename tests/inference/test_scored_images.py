"""A model scores only the images its intended-use gate admitted; real headers, the shipped bundles, the pipeline.

A mammogram view the bundle does not list (XCCM, a spot or magnification view) was left out of the gate's
checks yet scored, and could set the study's score (review defect 4).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from sqlalchemy import select

from benchmarks.study_factory import wrap_radiograph
from inference.intended_use import IntendedUse, check_intended_use
from inference.shipped_models import SHIPPED_MODELS_DIR
from inference.tables import ScoreResult, Study
from tests.conftest import FIXTURES
from tests.inference.conftest import INFERENCE_FIXTURES, Pipeline

MG = INFERENCE_FIXTURES / "images" / "mg_ge_senographe.dcm"


def _use(task: str) -> IntendedUse:
    use = IntendedUse.from_bundle(json.loads((SHIPPED_MODELS_DIR / task / "bundle.json").read_text()))
    assert use is not None
    return use


def _mammogram(folder: Path, study_uid: str, size: tuple[int, int], view: str, spacing_mm: float) -> Path:
    """The real GE Senographe header with a synthetic film (its own pixels are 1x2) in ``study_uid``."""
    ds = dcmread(MG)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Rows, ds.Columns = size
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation, ds.SamplesPerPixel = 16, 12, 11, 0, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.ImagerPixelSpacing = ds.PixelSpacing = [spacing_mm, spacing_mm]
    ds.ViewPosition = view
    ds.PixelData = np.random.default_rng(size[0]).integers(0, 4000, size, dtype=np.uint16).tobytes()
    path = folder / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def _cc_and_unlisted_thumbnail(folder: Path) -> tuple[Path, Path]:
    """An in-scope CC view, and a 64x51 thumbnail at 0.01 mm (outside both bounds) labelled XCCM (not listed)."""
    study = generate_uid()
    return _mammogram(folder, study, (640, 512), "CC", 0.1), _mammogram(folder, study, (64, 51), "XCCM", 0.01)


def test_the_gate_returns_only_the_images_it_admitted(tmp_path: Path) -> None:
    cc, thumbnail = _cc_and_unlisted_thumbnail(tmp_path)
    admitted = check_intended_use(_use("mammography"), [dcmread(cc), dcmread(thumbnail)], "mammography v1")
    assert [str(ds.ViewPosition) for ds in admitted] == ["CC"]


def test_a_view_the_bundle_does_not_list_is_not_scored(pipeline: Pipeline, tmp_path: Path) -> None:
    cc, thumbnail = _cc_and_unlisted_thumbnail(tmp_path)
    pipeline.receive(cc, thumbnail)
    pipeline.complete_route_and_score()
    with pipeline.session() as session:
        study = session.scalars(select(Study)).one()
        result = session.scalars(select(ScoreResult)).one()
    assert (study.task, result.outcome) == ("mammography", "scored")
    assert [view["view_position"] for view in result.localisation["views"]] == ["CC"]
    assert result.localisation["sop_instance_uid"] == str(dcmread(cc).SOPInstanceUID)


DX_CHEST = INFERENCE_FIXTURES / "images" / "dx_chest_highdicom.dcm"
DX_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.1.1"


def _raw_copy(folder: Path, source: Path, study_uid: str | None = None) -> Path:
    """``source`` as the For Processing (raw detector) image a DR system sends beside the processed one."""
    ds = dcmread(source)
    if study_uid is not None:
        ds.StudyInstanceUID = study_uid
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = DX_FOR_PROCESSING
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.PresentationIntentType = "FOR PROCESSING"
    path = folder / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path)
    return path


def test_a_for_processing_radiograph_beside_the_processed_one_is_not_scored(pipeline: Pipeline, tmp_path: Path) -> None:
    pipeline.receive(DX_CHEST, _raw_copy(tmp_path, DX_CHEST))
    pipeline.complete_route_and_score()
    with pipeline.session() as session:
        result = session.scalars(select(ScoreResult)).one()
    assert (result.task, result.outcome) == ("chest-xray", "scored")
    assert "films" not in result.localisation  # one film scored, not two
    assert result.localisation["sop_instance_uid"] == str(dcmread(DX_CHEST).SOPInstanceUID)


def test_a_study_of_for_processing_radiographs_only_is_out_of_scope(pipeline: Pipeline, tmp_path: Path) -> None:
    pipeline.receive(_raw_copy(tmp_path, DX_CHEST, study_uid=generate_uid()))
    pipeline.complete_route_and_score()
    with pipeline.session() as session:
        study = session.scalars(select(Study)).one()
        result = session.scalars(select(ScoreResult)).one()
    assert (study.status, result.outcome, result.score) == ("out_of_scope", "out_of_scope", None)
    assert "only For Processing (raw detector) images" in (result.reason or "")


KERMANY = FIXTURES / "datasets" / "kermany" / "train"
NORMAL = KERMANY / "NORMAL" / "IM-0115-0001.jpeg"
PNEUMONIA = KERMANY / "PNEUMONIA" / "person1000_bacteria_2931.jpeg"


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def _edited(path: Path, **attributes: object) -> Path:
    ds = dcmread(path)
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    ds.save_as(path, enforce_file_format=True)
    return path


def _copy_in_study(source: Path, folder: Path, pixels: np.ndarray, **attributes: object) -> Path:
    """An image of the study of ``source`` in a new series: its header, other pixels (RGB when 3-D), ``attributes``."""
    ds = dcmread(source)
    ds.SeriesInstanceUID, ds.SeriesNumber, ds.InstanceNumber = generate_uid(), 99, 1
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    if pixels.ndim == 3:
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.PixelData = pixels.astype(np.uint8).tobytes()
    path = folder / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_a_derived_copy_beside_its_film_is_not_scored(pipeline: Pipeline, tmp_path: Path) -> None:
    """Review 3 defect 1: a post-processed copy (DERIVED\\SECONDARY) arriving with the film was scored beside it, and
    the study's score was the higher of the two."""
    film = wrap_radiograph(NORMAL, tmp_path / "film.dcm", view_position="PA")
    inverted = _copy_in_study(film, tmp_path, 255 - dcmread(film).pixel_array, ImageType=["DERIVED", "SECONDARY"])
    pipeline.receive(film, inverted)
    pipeline.complete_route_and_score()
    with pipeline.session() as session:
        result = session.scalars(select(ScoreResult)).one()
    assert (result.outcome, "films" in result.localisation) == ("scored", False)
    assert result.localisation["sop_instance_uid"] == str(dcmread(film).SOPInstanceUID)


def test_a_colour_image_is_left_out_and_named_not_failing_the_study(pipeline: Pipeline, tmp_path: Path) -> None:
    """Review 3 defect 1: one colour image (here a vendor's overlay sent as an ORIGINAL DX) made the whole revision
    "could not score"."""
    film = wrap_radiograph(PNEUMONIA, tmp_path / "film.dcm", view_position="PA")
    grey = dcmread(film).pixel_array
    rgb = np.stack([grey, grey, grey], axis=-1).astype(np.int32)
    rgb[40:120, 30:110, 0] = 255
    colour = _copy_in_study(film, tmp_path, rgb.clip(0, 255))
    pipeline.receive(film, colour)
    pipeline.complete_route_and_score()
    with pipeline.session() as session:
        result = session.scalars(select(ScoreResult)).one()
    assert (result.outcome, result.call) == ("scored", "positive")
    assert result.localisation["sop_instance_uid"] == str(dcmread(film).SOPInstanceUID)
    [left_out] = result.localisation["left_out"]
    assert left_out["sop_instance_uid"] == str(dcmread(colour).SOPInstanceUID) and "colour" in left_out["reason"]


def test_a_lateral_with_an_empty_view_position_is_not_scored(pipeline: Pipeline, tmp_path: Path) -> None:
    """Review 3 defect 5: ViewPosition empty (Type 2), the view stated in View Code Sequence and PatientOrientation:
    the lateral passed the PA/AP gate, its 0.999 made the study positive and the SR pointed at it."""
    study = generate_uid()
    pa = wrap_radiograph(NORMAL, tmp_path / "pa.dcm", view_position="", study_uid=study)
    lateral = wrap_radiograph(PNEUMONIA, tmp_path / "lat.dcm", view_position="", study_uid=study)
    _edited(pa, ViewCodeSequence=[_code("272479007", "SCT", "postero-anterior")], PatientOrientation=["L", "F"])
    _edited(lateral, ViewCodeSequence=[_code("R-10232", "SRT", "right lateral")], PatientOrientation=["A", "F"],
            SeriesDescription="CHEST LAT")
    pipeline.receive(pa, lateral)
    pipeline.complete_route_and_score()
    with pipeline.session() as session:
        result = session.scalars(select(ScoreResult)).one()
    assert (result.outcome, result.call, "films" in result.localisation) == ("scored", "negative", False)
    assert result.localisation["sop_instance_uid"] == str(dcmread(pa).SOPInstanceUID)


def test_a_spot_or_magnification_mammogram_is_not_scored(pipeline: Pipeline, tmp_path: Path) -> None:
    """Review 3 defect 9: DICOM codes spot and magnification as a View Modifier (CID 4015) and keeps ViewPosition CC;
    the gate read ViewPosition only and scored them."""
    study = generate_uid()
    cc = _mammogram(tmp_path, study, (640, 512), "CC", 0.1)
    spot = _edited(_mammogram(tmp_path, study, (640, 512), "CC", 0.1), ViewCodeSequence=[_code("399162004", "SCT", "cranio-caudal")])
    ds = dcmread(spot)
    ds.ViewCodeSequence[0].ViewModifierCodeSequence = [_code("399055006", "SCT", "Spot Compression")]
    ds.save_as(spot, enforce_file_format=True)
    magnified = _edited(_mammogram(tmp_path, study, (640, 512), "CC", 0.1), EstimatedRadiographicMagnificationFactor=1.8)
    pipeline.receive(cc, spot, magnified)
    pipeline.complete_route_and_score()
    with pipeline.session() as session:
        result = session.scalars(select(ScoreResult)).one()
    assert result.outcome == "scored" and len(result.localisation["views"]) == 1
    assert result.localisation["sop_instance_uid"] == str(dcmread(cc).SOPInstanceUID)
