"""Write-back tolerates real headers: each Type 2 attribute the SR and the heat-map copy from the source image
may be absent or empty; it is written empty, never a crash (issue 11: a DX without PatientBirthDate or StudyID
made SR building raise AttributeError and the job dead-letter)."""

from __future__ import annotations

import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from inference.scorers import TaskScore
from inference.writeback import COPIED_TYPE2, ResultToWrite, algorithm_device_uid, build_heatmap, build_sr
from tests.inference.conftest import INFERENCE_FIXTURES

DX_CHEST = INFERENCE_FIXTURES / "images" / "dx_chest_highdicom.dcm"


def _result(source, uid_root: str | None = None) -> ResultToWrite:
    scored = TaskScore(
        score=0.72, localisation={"kind": "heatmap", "point": [40.0, 60.0]}, source=source,
        heatmap=np.linspace(0, 1, 64).reshape(8, 8), image=np.full((64, 64), 0.5),
    )
    return ResultToWrite("chest-xray", "chest-xray", "1", "run-1", 0.6, "positive", scored, uid_root)


@pytest.mark.parametrize("keyword", COPIED_TYPE2)
@pytest.mark.parametrize("how", ["absent", "empty"])
def test_a_source_without_a_type2_attribute_still_gets_its_sr_and_heatmap(keyword: str, how: str) -> None:
    source = dcmread(DX_CHEST)
    if how == "absent":
        if keyword in source:
            delattr(source, keyword)
    else:
        setattr(source, keyword, "")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sr = build_sr(_result(source), series_instance_uid="1.2.826.0.1.3680043.8.498.77.1")
        heatmap = build_heatmap(_result(source), series_instance_uid="1.2.826.0.1.3680043.8.498.77.2")
    assert heatmap is not None
    for document in (sr, heatmap):
        assert keyword in document and str(document[keyword].value or "") == ""
        assert document.StudyInstanceUID == source.StudyInstanceUID
    # The source the scorer read is not changed behind its back.
    assert (keyword in source) == (how == "empty")


def test_results_carry_medscreens_uid_root_so_ingest_recognises_them() -> None:
    root = "1.2.826.0.1.3680043.8.498.77."
    result = _result(dcmread(DX_CHEST), root)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sr = build_sr(result, series_instance_uid=result.new_uid())
        heatmap = build_heatmap(result, series_instance_uid=result.new_uid())
    assert heatmap is not None
    for document in (sr, heatmap):
        assert document.SOPInstanceUID.startswith(root) and document.SeriesInstanceUID.startswith(root)
        assert document.Manufacturer == "medscreen"


@pytest.mark.parametrize(("age", "written"), [("3Y", "003Y"), ("56y", "056Y"), (" 12M", "012M"), ("081Y", "081Y"), ("81", None), ("old", None)])
def test_a_malformed_patients_age_is_normalised_or_left_out(age: str, written: str | None, tmp_path: Path) -> None:
    """Review D5: `3Y` (real senders write it, `56Y` and `81` too) was copied into the SR, which dciodvfy and a
    strict PACS refuse (AS is four characters, `nnnD/W/M/Y`)."""
    source = dcmread(DX_CHEST)
    source.PatientAge = age
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sr = build_sr(_result(source), series_instance_uid="1.2.826.0.1.3680043.8.498.77.1")
    assert sr.get("PatientAge") == written
    assert source.PatientAge == age
    path = tmp_path / "sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    if shutil.which("dciodvfy"):
        result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, errors="replace", timeout=60)
        assert [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")] == []


def _content_items(dataset: Dataset) -> list[Dataset]:
    items = []
    for item in dataset.get("ContentSequence", []):
        items += [item, *_content_items(item)]
    return items


@pytest.mark.parametrize("root", ["1.2.826.0.1.3680043.8.498.77.", "1.2.40.0.13.1.99."])
def test_the_algorithms_device_uid_is_under_the_uid_root_and_stable_per_version(root: str) -> None:
    """Review D7: the Device UID (Contributing Equipment, the SR's Device Observer UID) was under pydicom's root."""
    result = _result(dcmread(DX_CHEST), root)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sr = build_sr(result, series_instance_uid=result.new_uid())
        heatmap = build_heatmap(result, series_instance_uid=result.new_uid())
    assert heatmap is not None
    ours = [item.DeviceUID for document in (sr, heatmap) for item in document.ContributingEquipmentSequence
            if item.get("Manufacturer") == "medscreen"]
    observer = [item.UID for item in _content_items(sr) if item.ConceptNameCodeSequence[0].CodeValue == "121012"]
    assert len(ours) == 2 and len(observer) == 1 and len(set(ours + observer)) == 1
    assert ours[0].startswith(root) and len(ours[0]) <= 64
    assert ours[0] == algorithm_device_uid("chest-xray", "1", "run-1", root)
    assert algorithm_device_uid("chest-xray", "2", "run-2", root) != ours[0]
