"""Text in a study that declares no Specific Character Set (or only ISO_IR 6) but holds 8-bit bytes, as modalities
writing their local code page send it: read in the site's MEDSCREEN_DICOM_DEFAULT_CHARSET on the worklist and to the
RIS, and written in UTF-8 in the SR and heat-map (their bytes had stood undeclared: invalid DICOM). ISO_IR 100 text
with bytes 0x80-0x9F is read as Windows-1252, which is what Windows modalities mean by it (charset review 4)."""

from __future__ import annotations

import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from sqlalchemy import select

from inference.instance_headers import read_instance_headers
from inference.outgoing import read_document
from inference.receive.process import build_ingestor
from inference.scorers import TaskScore
from inference.tables import ScoreResult, Study
from inference.worker_process import build_worker
from inference.writeback import ResultToWrite, build_heatmap, build_sr
from service.settings import Settings
from tests.inference.conftest import INFERENCE_FIXTURES, Pipeline

DX_CHEST = INFERENCE_FIXTURES / "images" / "dx_chest_highdicom.dcm"


def _source(tmp_path: Path, declared: str | None, raw_name: bytes) -> Path:
    """The chest DX with the patient's name as these bytes, under this declaration (None: no Specific Character Set)."""
    ds = dcmread(DX_CHEST)
    if declared is None:
        ds.pop(0x00080005, None)
    else:
        ds.SpecificCharacterSet = declared
    ds.PatientName = raw_name
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path = tmp_path / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path)
    return path


def _documents(source: Dataset, default_charset: str) -> list[Dataset]:
    scored = TaskScore(
        score=0.72, localisation={"kind": "heatmap", "point": [40.0, 60.0]}, source=source,
        heatmap=np.linspace(0, 1, 64).reshape(8, 8), image=np.full((64, 64), 0.5),
    )
    result = ResultToWrite(
        "chest-xray", "chest-xray", "1", "run-1", 0.6, "positive", scored, default_charset=default_charset
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        heatmap = build_heatmap(result, series_instance_uid=result.new_uid())
        assert heatmap is not None
        return [build_sr(result, series_instance_uid=result.new_uid()), heatmap]


def _dciodvfy_errors(path: Path) -> list[str]:
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, errors="replace", timeout=60)
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]


# name as written, its bytes, the declaration (None: none), the site's default
UNDECLARED = {
    "latin-1": ("Gößling^Anja", "Gößling^Anja".encode("latin-1"), None, "ISO_IR 100"),
    "iso-ir-6-latin-1": ("Gößling^Anja", "Gößling^Anja".encode("latin-1"), "ISO_IR 6", "ISO_IR 100"),
    "windows-1252": ("Šimková^Zoë", "Šimková^Zoë".encode("cp1252"), None, "ISO_IR 100"),
    "utf-8": ("Müller^Jürgen", "Müller^Jürgen".encode(), None, "ISO_IR 192"),
    "gbk": ("王^小东", "王^小东".encode("gbk"), None, "GB18030"),
}


@pytest.mark.parametrize("label", UNDECLARED)
def test_undeclared_8_bit_names_are_read_in_the_sites_character_set(label: str, tmp_path: Path) -> None:
    name, raw, declared, default = UNDECLARED[label]
    headers = read_instance_headers(_source(tmp_path, declared, raw), default_charset=default)
    assert headers.patient_name == name


@pytest.mark.parametrize("label", UNDECLARED)
def test_documents_of_an_undeclared_study_are_written_in_utf8_and_valid(label: str, tmp_path: Path) -> None:
    name, raw, declared, default = UNDECLARED[label]
    for index, document in enumerate(_documents(dcmread(_source(tmp_path, declared, raw)), default)):
        path = tmp_path / f"document-{index}.dcm"
        document.save_as(path, enforce_file_format=True)
        assert dcmread(path).SpecificCharacterSet == "ISO_IR 192"
        assert dcmread(path, stop_before_pixels=True).get_item("PatientName").value.rstrip(b" ") == name.encode()
        if shutil.which("dciodvfy"):
            assert [e for e in _dciodvfy_errors(path) if "(0x0010,0x0010)" in e] == [], f"{label} document {index}"


def test_an_undeclared_ascii_study_is_copied_as_sent(tmp_path: Path) -> None:
    # Only 8-bit text needs a declaration: plain ASCII stays in the default repertoire, undeclared.
    for document in _documents(dcmread(_source(tmp_path, None, b"Doe^Jane")), "ISO_IR 192"):
        assert "SpecificCharacterSet" not in document and str(document.PatientName) == "Doe^Jane"


def test_iso_ir_100_bytes_0x80_to_0x9f_are_read_as_windows_1252(tmp_path: Path) -> None:
    # Š is 0x8A in Windows-1252, a C1 control in Latin-1: the name had been stored and shown as '\x8aimková'.
    path = _source(tmp_path, "ISO_IR 100", "Šimková^Zoë".encode("cp1252"))
    assert read_instance_headers(path).patient_name == "Šimková^Zoë"
    # bytes Windows-1252 leaves undefined stay controls (the RIS feed makes them spaces); others are not touched
    path = _source(tmp_path, "ISO_IR 100", b"A\x81B^\xe9")
    assert read_instance_headers(path).patient_name == "A\x81B^é"
    path = _source(tmp_path, "ISO_IR 101", "Šimková".encode("iso8859_2"))
    assert read_instance_headers(path).patient_name == "Šimková"


def test_the_setting_takes_one_stand_alone_dicom_character_set() -> None:
    assert Settings().dicom_default_charset == "ISO_IR 100"
    assert Settings(dicom_default_charset="GB18030").dicom_default_charset == "GB18030"
    for refused in ("latin1", "utf-8", "ISO 2022 IR 87", "ISO_IR 6", ""):
        with pytest.raises(ValidationError, match="MEDSCREEN_DICOM_DEFAULT_CHARSET"):
            Settings(dicom_default_charset=refused)


def test_the_site_setting_reaches_the_worklist_name_and_the_documents(pipeline: Pipeline, tmp_path: Path) -> None:
    # Through ingest, scoring and the documents' build, as a UTF-8 modality that declares nothing sends it.
    settings = pipeline.settings.model_copy(update={"dicom_default_charset": "ISO_IR 192"})
    site = Pipeline(settings, build_ingestor(settings), pipeline.monitor, build_worker(settings))
    site.receive(_source(tmp_path, None, "Müller^Jürgen".encode()))
    site.complete_route_and_score()
    with site.session() as session:
        study = session.scalars(select(Study)).one()
        result = session.scalars(select(ScoreResult)).one()
    assert study.patient_name == "Müller^Jürgen"
    assert result.sr_sop_instance_uid and result.heatmap_sop_instance_uid
    for uid in (result.sr_sop_instance_uid, result.heatmap_sop_instance_uid):
        document = read_document(settings, study.study_instance_uid, uid)
        assert document is not None and document.SpecificCharacterSet == "ISO_IR 192"
        assert str(document.PatientName) == "Müller^Jürgen"
