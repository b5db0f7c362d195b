"""Never feed on our own output; never abort a PACS batch on valid DICOM we do not score (issue 11).

A real pynetdicom SCU sends to the real receiver; medscreen's own SR and heat-map, made by the real
pipeline with the shipped model, are sent back."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.presentation import StoragePresentationContexts
from sqlalchemy import select

from benchmarks.study_factory import wrap_radiograph
from inference.ingest import InstanceIngestor
from inference.intake import not_scored
from inference.outgoing import outgoing_dir
from inference.records import InstanceHeaders
from inference.tables import Instance, NotScoredInstance, ScoreResult, ScoringJob, Study
from service.db import make_session_factory, session_scope
from service.settings import Settings
from tests.conftest import FIXTURES
from tests.inference.conftest import INFERENCE_FIXTURES, Pipeline
from worklist.policy import policy_from_settings
from worklist.recompute import recompute_worklist
from worklist.tables import WorklistEntry

CT = sorted((INFERENCE_FIXTURES / "ct").glob("*.dcm"))
DX_CHEST = INFERENCE_FIXTURES / "images" / "dx_chest_highdicom.dcm"
NO_PIXELS = INFERENCE_FIXTURES / "bad" / "no_pixel_data_dx.dcm"
SR_STORAGE = "1.2.840.10008.5.1.4.1.1.88.33"
PR_STORAGE = "1.2.840.10008.5.1.4.1.1.11.1"
KO_STORAGE = "1.2.840.10008.5.1.4.1.1.88.59"
SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
PDF_STORAGE = "1.2.840.10008.5.1.4.1.1.104.1"


def _non_image(source: Path, sop_class_uid: str, modality: str) -> Dataset:
    """A non-image object of the study of ``source`` (its patient and study header, no pixels)."""
    ds = dcmread(source)
    for keyword in ("PixelData", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
                    "SamplesPerPixel", "PhotometricInterpretation"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class_uid
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = modality
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def _send(port: int, datasets: list[Dataset | Path]) -> list[int]:
    ae = AE(ae_title="ORTHANC")
    for context in StoragePresentationContexts[:120]:
        ae.add_requested_context(context.abstract_syntax, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="MEDSCREEN")
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(item).Status) for item in datasets]
    finally:
        assoc.release()


def test_a_mixed_batch_is_acknowledged_and_only_images_join_the_study(
    ingestor: InstanceIngestor, dimse_server, sqlite_settings: Settings
) -> None:
    others = [
        _non_image(CT[0], SR_STORAGE, "SR"),
        _non_image(CT[0], PR_STORAGE, "PR"),
        _non_image(CT[0], KO_STORAGE, "KO"),
        _non_image(CT[0], SEG_STORAGE, "SEG"),
        _non_image(CT[0], PDF_STORAGE, "DOC"),
    ]
    without_pixels = dcmread(NO_PIXELS)
    without_pixels.StudyInstanceUID = dcmread(CT[0]).StudyInstanceUID  # an image without pixels in a known study
    batch: list[Dataset | Path] = [CT[0], *others, CT[1], without_pixels, CT[2]]
    # Before issue 11: SR/PR/KO were refused 0x0122 and the image without pixels 0xA900, which aborts a PACS batch.
    assert _send(sqlite_settings.dicom_port, batch) == [0x0000] * len(batch)
    with make_session_factory(ingestor.engine)() as session:
        study = session.scalars(select(Study)).one()
        instances = session.scalars(select(Instance.sop_instance_uid)).all()
        ignored = {row.modality: row for row in session.scalars(select(NotScoredInstance))}
        events = [e.kind for e in study.events]
    assert sorted(instances) == sorted(str(dcmread(p).SOPInstanceUID) for p in CT)
    assert (study.revision, study.instance_count, study.modality) == (1, 3, "CT")
    assert set(ignored) == {"SR", "PR", "KO", "SEG", "DOC", "CR"} and {r.kind for r in ignored.values()} == {"ignored"}
    assert "structured report" in ignored["SR"].reason and "key object selection" in ignored["KO"].reason
    assert "without pixel data" in ignored["CR"].reason
    assert events.count("ignored") == 6 and "reopened" not in events
    assert not any(ingestor.spool.incoming.iterdir())


def test_medscreen_never_feeds_on_its_own_output(pipeline: Pipeline, tmp_path: Path) -> None:
    pipeline.receive(DX_CHEST)
    pipeline.complete_route_and_score()
    with pipeline.session() as session:
        result = session.scalars(select(ScoreResult)).one()
        study_uid = session.scalars(select(Study.study_instance_uid)).one()
    assert result.sr_sop_instance_uid and result.sr_sop_instance_uid.startswith(pipeline.settings.uid_root)
    ours = [outgoing_dir(pipeline.settings) / study_uid / f"{uid}.dcm"
            for uid in (result.sr_sop_instance_uid, result.heatmap_sop_instance_uid)]
    assert dcmread(ours[1]).Modality == "OT"  # the heat-map is a Secondary Capture: scorable unless recognised

    # The PACS sends the whole study back, three times over (an auto-routing rule after each quiet period).
    for _ in range(3):
        pipeline.receive(DX_CHEST, *ours)
        pipeline.complete_route_and_score()
    with pipeline.session() as session:
        study = session.scalars(select(Study)).one()
        derived = session.scalars(select(NotScoredInstance)).all()
        jobs = session.scalars(select(ScoringJob)).all()
        instances = session.scalars(select(Instance)).all()
    assert (study.revision, study.status, len(jobs), len(instances)) == (1, "scored", 1, 1)
    assert sorted(d.sop_instance_uid for d in derived) == sorted([result.sr_sop_instance_uid, result.heatmap_sop_instance_uid])
    assert {d.kind for d in derived} == {"derived"} and {d.times_received for d in derived} == {3}


def test_own_output_is_recognised_by_manufacturer_and_by_remembered_uids(pipeline: Pipeline, tmp_path: Path) -> None:
    pipeline.receive(DX_CHEST)
    pipeline.complete_route_and_score()
    with pipeline.session() as session:
        result = session.scalars(select(ScoreResult)).one()
    heatmap = dcmread(next(outgoing_dir(pipeline.settings).rglob(f"{result.heatmap_sop_instance_uid}.dcm")))
    headers = InstanceHeaders(
        study_instance_uid=heatmap.StudyInstanceUID, series_instance_uid="1.2.3.4", sop_instance_uid="1.2.3.4.5",
        sop_class_uid=heatmap.SOPClassUID, transfer_syntax_uid=ExplicitVRLittleEndian, modality="OT",
        manufacturer="medscreen",
    )
    # A PACS that re-identifies objects (new UIDs) still leaves the Manufacturer medscreen wrote.
    assert not_scored(headers, uid_root="9.9.", remembered=False, study_status="scored").kind == "derived"
    # A site that changed MEDSCREEN_UID_ROOT: the UIDs medscreen remembers sending still count.
    plain = dataclasses.replace(headers, manufacturer="ACME")
    assert not_scored(plain, uid_root="9.9.", remembered=True, study_status="scored").kind == "derived"
    assert not_scored(plain, uid_root="9.9.", remembered=False, study_status="receiving") is None


def test_only_new_images_of_a_scored_modality_start_a_revision(pipeline: Pipeline, tmp_path: Path) -> None:
    pipeline.receive(DX_CHEST)
    pipeline.complete_route_and_score()
    study_uid = str(dcmread(DX_CHEST).StudyInstanceUID)

    screenshot = dcmread(INFERENCE_FIXTURES / "images" / "sc_rle.dcm")
    screenshot.StudyInstanceUID = study_uid
    screenshot.SOPInstanceUID = screenshot.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    path = tmp_path / "screenshot.dcm"
    screenshot.save_as(path)
    pipeline.receive(path)
    with pipeline.session() as session:
        study = session.scalars(select(Study)).one()
        assert (study.revision, study.status) == (1, "scored")
        assert session.scalars(select(NotScoredInstance.reason)).one().startswith("a OT image does not re-open")

    late = dcmread(DX_CHEST)
    late.SOPInstanceUID = late.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    late_path = tmp_path / "late.dcm"
    late.save_as(late_path)
    pipeline.receive(late_path)
    with pipeline.session() as session:
        study = session.scalars(select(Study)).one()
        assert (study.revision, study.status) == (2, "receiving")


def test_broken_data_is_still_refused(ingestor: InstanceIngestor, dimse_server, sqlite_settings: Settings) -> None:
    broken = dcmread(CT[0])
    broken.StudyInstanceUID = "not a uid"
    assert _send(sqlite_settings.dicom_port, [broken, CT[0]]) == [0xA900, 0x0000]
    with make_session_factory(ingestor.engine)() as session:
        assert session.scalars(select(NotScoredInstance)).all() == []


KERMANY = FIXTURES / "datasets" / "kermany" / "train"
SC_STORAGE = "1.2.840.10008.5.1.4.1.1.7"


def _film(jpeg: Path, tmp_path: Path) -> Path:
    return wrap_radiograph(jpeg, tmp_path / f"{jpeg.stem}.dcm", view_position="PA")


def _made_from(source: Path, tmp_path: Path, pixels: np.ndarray, **attributes: object) -> Path:
    """An image made from ``source`` in its study (a new series): its header, other pixels, ``attributes``."""
    ds = dcmread(source)
    ds.SeriesInstanceUID, ds.SeriesNumber, ds.InstanceNumber = generate_uid(), 99, 1
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    if pixels.ndim == 3:
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.PixelData = pixels.astype(np.uint8).tobytes()
    path = tmp_path / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def _colour_overlay(source: Path) -> np.ndarray:
    """Another product's heat-map over the film, in colour (a red blob)."""
    grey = dcmread(source).pixel_array
    rgb = np.stack([grey, grey, grey], axis=-1).astype(np.int32)
    rgb[40:120, 30:110, 0] = 255
    rgb[40:120, 30:110, 2] //= 3
    return rgb.clip(0, 255)


def _tier(pipeline: Pipeline) -> str:
    with session_scope(pipeline.worker.session_factory) as session:
        recompute_worklist(session, policy_from_settings(pipeline.settings))
        return session.scalars(select(WorklistEntry.tier)).one()


def test_a_derived_copy_does_not_reopen_a_scored_study(pipeline: Pipeline, tmp_path: Path) -> None:
    """Review 3 defect 1: an inverted "black bone" copy (DX, DERIVED\\SECONDARY) re-opened a negative study and was
    scored beside the film: 0.096 became 0.962 and the study was raised."""
    film = _film(KERMANY / "NORMAL" / "IM-0115-0001.jpeg", tmp_path)
    pipeline.receive(film)
    pipeline.complete_route_and_score()
    tier = _tier(pipeline)
    inverted = _made_from(film, tmp_path, 255 - dcmread(film).pixel_array, ImageType=["DERIVED", "SECONDARY"])
    pipeline.receive(inverted)
    pipeline.complete_route_and_score()
    with pipeline.session() as session:
        study = session.scalars(select(Study)).one()
        ignored = session.scalars(select(NotScoredInstance)).one()
        results = session.scalars(select(ScoreResult)).all()
        events = [(e.kind, (e.detail or {}).get("reason", "")) for e in study.events]
    assert (study.revision, study.status, len(results)) == (1, "scored", 1)
    assert (ignored.kind, ignored.sop_instance_uid) == ("ignored", str(dcmread(inverted).SOPInstanceUID))
    assert ("ignored", ignored.reason) in events and "DERIVED\\SECONDARY" in ignored.reason
    assert _tier(pipeline) == tier


def test_another_products_colour_overlay_does_not_cancel_a_raise(pipeline: Pipeline, tmp_path: Path) -> None:
    """Review 3 defect 1: another vendor's overlay (Secondary Capture, Modality DX, RGB) re-opened a positive study,
    the revision could not be scored ("a colour image") and the study lost its raise."""
    film = _film(KERMANY / "PNEUMONIA" / "person1000_bacteria_2931.jpeg", tmp_path)
    pipeline.receive(film)
    pipeline.complete_route_and_score()
    assert _tier(pipeline) == "positive"
    overlay = _made_from(film, tmp_path, _colour_overlay(film), SOPClassUID=SC_STORAGE, Manufacturer="OtherVendor AI",
                         ImageType=["DERIVED", "SECONDARY"], ConversionType="WSD")
    pipeline.receive(overlay)
    pipeline.complete_route_and_score()
    with pipeline.session() as session:
        study = session.scalars(select(Study)).one()
        ignored = session.scalars(select(NotScoredInstance)).one()
    assert (study.revision, study.status) == (1, "scored")
    assert ignored.reason == "a Secondary Capture (DX) does not re-open a received study"
    assert _tier(pipeline) == "positive"
