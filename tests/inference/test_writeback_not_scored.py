"""A later revision the champion did not score gets an SR that replaces the earlier one in the PACS: the PACS had
kept the earlier revision's call as the study's only AI result while the study held an image no model assessed
(review round 3: honesty D1, a corrected header)."""

from __future__ import annotations

import shutil
import subprocess
import warnings
from pathlib import Path

import highdicom as hd
import pytest
from pydicom import dcmread
from pydicom.uid import Comprehensive3DSRStorage

from inference.writeback import CALL, REASON, NotScoredToWrite, build_not_scored_sr
from tests.inference.conftest import INFERENCE_FIXTURES

DX_CHEST = INFERENCE_FIXTURES / "images" / "dx_chest_highdicom.dcm"


@pytest.mark.parametrize(
    ("outcome", "meaning"),
    [("could_not_score", "could not score"), ("out_of_scope", "outside the model's intended use")],
)
def test_a_not_scored_revision_replaces_the_earlier_sr(outcome: str, meaning: str, tmp_path: Path) -> None:
    source = dcmread(DX_CHEST, stop_before_pixels=True)
    previous = dcmread(DX_CHEST, stop_before_pixels=True)  # only its four UIDs are named
    previous.SOPClassUID, previous.SeriesInstanceUID, previous.SOPInstanceUID = Comprehensive3DSRStorage, "1.2.3.4", "1.2.3.5"
    result = NotScoredToWrite("chest-xray", "chest-xray", "1", "run-1", outcome, "a colour image", source)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sr = build_not_scored_sr(result, series_instance_uid=result.new_uid(), previous=previous)
    path = tmp_path / "sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    if shutil.which("dciodvfy"):
        checked = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, errors="replace", timeout=60)
        assert [line for line in (checked.stdout + checked.stderr).splitlines() if line.startswith("Error")] == []
    read = dcmread(path)
    assert read.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == "1.2.3.5"
    (group,) = hd.sr.Comprehensive3DSR.from_dataset(read).content.get_image_measurement_groups()
    assert meaning in group.get_qualitative_evaluations(name=CALL)[0].value.meaning
    assert group.get_measurements() == []  # no probability, no operating point
    texts = [item for item in group[0].ContentSequence if item.ConceptNameCodeSequence[0].CodeValue == REASON.value]
    assert [item.TextValue for item in texts] == ["a colour image"]
