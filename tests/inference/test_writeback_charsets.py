"""Write-back carries the patient's name in any character set the study declares (review D1: a study declared
with the standard Japanese or Korean ISO 2022 sets, or ISO_IR 6, crashed the SR and heat-map build, the job was
dead-lettered and the score lost), and a header the DICOM libraries refuse costs the documents, never the score."""

from __future__ import annotations

import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from sqlalchemy import select

from inference.outgoing import read_document
from inference.scorers import TaskScore
from inference.tables import OutgoingResult, ScoreResult, Study, StudyEvent
from inference.worker_process import build_worker
from inference.writeback import ResultToWrite, build_heatmap, build_sr, header_for_documents
from tests.inference.conftest import INFERENCE_FIXTURES, Pipeline

DX_CHEST = INFERENCE_FIXTURES / "images" / "dx_chest_highdicom.dcm"
# PS3.5 Annex H (Japanese, H.3.1) and Annex I (Korean, I.2) examples, with the declarations they are given there.
JAPANESE = (["", "ISO 2022 IR 87"], "Yamada^Tarou=山田^太郎=やまだ^たろう")
KOREAN = (["", "ISO 2022 IR 149"], "Hong^Gildong=洪^吉洞=홍^길동")
CHARACTER_SETS = {
    "japanese": JAPANESE,
    "korean": KOREAN,
    "korean-ir6": (["ISO 2022 IR 6", "ISO 2022 IR 149"], KOREAN[1]),
    "korean-single": ("ISO 2022 IR 149", "Hong^Gildong"),
    "iso-ir-6": ("ISO_IR 6", "Test^Lena"),
}


def _source(tmp_path: Path, character_set: str | list[str], name: str, **attributes: object) -> Path:
    """The in-scope chest DX with its patient's name written (encoded by pydicom) in the given character set."""
    ds = dcmread(DX_CHEST)
    ds.SpecificCharacterSet = character_set
    ds.PatientName = ds.ReferringPhysicianName = name
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    path = tmp_path / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path)
    return path


def _documents(source: Dataset) -> list[Dataset]:
    scored = TaskScore(
        score=0.72, localisation={"kind": "heatmap", "point": [40.0, 60.0]}, source=source,
        heatmap=np.linspace(0, 1, 64).reshape(8, 8), image=np.full((64, 64), 0.5),
    )
    result = ResultToWrite("chest-xray", "chest-xray", "1", "run-1", 0.6, "positive", scored, "1.2.826.0.1.3680043.8.498.77.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        heatmap = build_heatmap(result, series_instance_uid=result.new_uid())
        assert heatmap is not None
        return [build_sr(result, series_instance_uid=result.new_uid()), heatmap]


def _dciodvfy_errors(path: Path) -> list[str]:
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, errors="replace", timeout=60)
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]


@pytest.mark.parametrize("label", CHARACTER_SETS)
def test_names_in_iso_2022_and_iso_ir_6_are_written_exactly_in_utf8(label: str, tmp_path: Path) -> None:
    character_set, name = CHARACTER_SETS[label]
    source = dcmread(_source(tmp_path, character_set, name))
    assert str(source.PatientName) == name
    for index, document in enumerate(_documents(source)):
        path = tmp_path / f"document-{index}.dcm"
        document.save_as(path, enforce_file_format=True)
        written = dcmread(path)
        assert written.SpecificCharacterSet == "ISO_IR 192"
        assert str(written.PatientName) == str(written.ReferringPhysicianName) == name
        raw = dcmread(path, stop_before_pixels=True)
        assert raw.get_item("PatientName").value.rstrip(b" ") == name.encode("utf-8")
        assert str(written.PatientID) == str(source.PatientID)
        if shutil.which("dciodvfy"):
            assert _dciodvfy_errors(path) == [], f"{label} document {index}"
    # The source the scorer read keeps its own declaration and bytes.
    assert source.SpecificCharacterSet == character_set and str(source.PatientName) == name


def test_a_single_character_set_is_still_copied_as_sent(tmp_path: Path) -> None:
    source = dcmread(_source(tmp_path, "ISO_IR 126", "Test^Θεόδωρος"))
    raw_name = dcmread(_source(tmp_path, "ISO_IR 126", "Test^Θεόδωρος")).get_item("PatientName").value
    for index, document in enumerate(_documents(source)):
        path = tmp_path / f"document-{index}.dcm"
        document.save_as(path, enforce_file_format=True)
        assert dcmread(path).SpecificCharacterSet == "ISO_IR 126"
        assert dcmread(path).get_item("PatientName").value == raw_name


def _timeline(pipeline: Pipeline, study_id: int) -> list[StudyEvent]:
    with pipeline.session() as session:
        return list(session.scalars(select(StudyEvent).where(StudyEvent.study_id == study_id).order_by(StudyEvent.id)))


def test_a_korean_study_is_scored_and_its_documents_carry_the_name(pipeline: Pipeline, tmp_path: Path) -> None:
    pipeline.receive(_source(tmp_path, *KOREAN))
    pipeline.complete_route_and_score()
    with pipeline.session() as session:
        study = session.scalars(select(Study)).one()
        result = session.scalars(select(ScoreResult)).one()
    assert (study.status, result.outcome) == ("scored", "scored") and result.score is not None
    assert result.sr_sop_instance_uid and result.heatmap_sop_instance_uid
    for uid in (result.sr_sop_instance_uid, result.heatmap_sop_instance_uid):
        document = read_document(pipeline.settings, study.study_instance_uid, uid)
        assert document is not None and str(document.PatientName) == KOREAN[1]


def test_a_spelled_out_patient_sex_is_written_as_its_letter(pipeline: Pipeline, tmp_path: Path) -> None:
    """highdicom refuses to copy PatientSex 'FEMALE' into the heat-map: the documents of such a study (seen in
    real files) had not been built. It is written as 'F'; a value that is no sex at all is sent empty."""
    pipeline.receive(_source(tmp_path, "ISO_IR 100", "Doe^Jane", PatientSex="FEMALE"))
    pipeline.complete_route_and_score()
    with pipeline.session() as session:
        study = session.scalars(select(Study)).one()
        result = session.scalars(select(ScoreResult)).one()
    assert result.sr_sop_instance_uid and result.heatmap_sop_instance_uid
    for uid in (result.sr_sop_instance_uid, result.heatmap_sop_instance_uid):
        document = read_document(pipeline.settings, study.study_instance_uid, uid)
        assert document is not None and document.PatientSex == "F"
    assert header_for_documents(_with_sex("unknown")).PatientSex == ""
    assert header_for_documents(_with_sex("male")).PatientSex == "M"


def _with_sex(value: str) -> Dataset:
    header = Dataset()
    header.PatientSex = value
    return header


def test_documents_that_cannot_be_built_cost_the_write_back_not_the_score(
    pipeline: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A header value highdicom refuses had made the job retry until dead-lettered, the score thrown away and
    the study `failed`. (The refusal is stood in for: every value seen to be refused is now normalised.)"""

    def refuse(*args: object, **kwargs: object) -> Dataset:
        raise ValueError("Invalid value for PatientSex: 'X-UNKNOWN'")

    monkeypatch.setattr("inference.score_job.build_heatmap", refuse)
    with_pacs = build_worker(pipeline.settings.model_copy(update={
        "pacs_ae_title": "PACS", "pacs_host": "127.0.0.1", "pacs_port": 1, "scoring_max_attempts": 2,
    }))
    pipeline.receive(_source(tmp_path, "ISO_IR 100", "Doe^Jane"))
    pipeline.monitor.run_once()
    with_pacs.enqueue_routed()
    while with_pacs.process_one():
        pass
    with pipeline.session() as session:
        study = session.scalars(select(Study)).one()
        result = session.scalars(select(ScoreResult)).one()
        outgoing = session.scalars(select(OutgoingResult)).all()
    assert (study.status, result.outcome, result.role) == ("scored", "scored", "champion")
    assert result.score is not None and result.call in ("positive", "negative")
    assert result.writeback_state == "failed" and result.sr_sop_instance_uid is None and outgoing == []
    dead = [event for event in _timeline(pipeline, study.id) if event.kind == "write-back-dead"]
    assert len(dead) == 1 and "PatientSex" in dead[0].detail["reason"]
    assert [event.kind for event in _timeline(pipeline, study.id)].count("scored") == 1


def test_a_birth_date_that_is_no_date_is_written_empty_and_the_documents_are_built(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    """highdicom refuses a document whose copied birth date, study date or study time does not convert
    ('03.12.2019', seen in real files): such a study had been scored with no SR and no heat-map. They are
    written empty (Type 2), never guessed; a valid date is copied as sent."""
    pipeline.receive(_source(tmp_path, "ISO_IR 100", "Doe^Jane", PatientBirthDate="03.12.2019", StudyTime="25:99"))
    pipeline.complete_route_and_score()
    with pipeline.session() as session:
        study = session.scalars(select(Study)).one()
        result = session.scalars(select(ScoreResult)).one()
    assert result.outcome == "scored" and result.sr_sop_instance_uid and result.heatmap_sop_instance_uid
    for uid in (result.sr_sop_instance_uid, result.heatmap_sop_instance_uid):
        document = read_document(pipeline.settings, study.study_instance_uid, uid)
        assert document is not None
        assert (document.PatientBirthDate, document.StudyTime, str(document.PatientName)) == ("", "", "Doe^Jane")
        if shutil.which("dciodvfy"):
            path = tmp_path / f"{uid}.dcm"
            document.save_as(path, enforce_file_format=True)
            assert _dciodvfy_errors(path) == []
    valid = dcmread(_source(tmp_path, "ISO_IR 100", "Doe^Jane", PatientBirthDate="20190312"))
    assert header_for_documents(valid).PatientBirthDate == "20190312"
