"""What write-back produces for DX, MG and CT, checked the way viewers and validators read it: the SR has one
TID 1500 measurement group per scored image with the region as SCOORD on that image (OHIF's IHE AI Results
display), the first group is the study's result, and the SR and heat-map SC pass dcmtk-independent
`dciodvfy` (Debian dicom3tools) with no errors. The models are the shipped ONNX bundles, run for real."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import onnxruntime as ort
import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from benchmarks.study_factory import wrap_mammogram, wrap_radiograph
from inference.champions import LoadedModel
from inference.scorers import score_task
from inference.shipped_models import SHIPPED_MODELS_DIR
from inference.writeback import OPERATING_POINT, PROBABILITY, STEERING, ResultToWrite, build_heatmap, build_sr
from service.lifecycle import SteeringRight
from tests.conftest import FIXTURES

pytestmark = pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools is not installed (make test installs it)")
KERMANY = FIXTURES / "datasets" / "kermany" / "train"
MIAS = FIXTURES / "datasets" / "mias"


def _shipped(task: str) -> LoadedModel:
    bundle = json.loads((SHIPPED_MODELS_DIR / task / "bundle.json").read_text())
    session = ort.InferenceSession(str(SHIPPED_MODELS_DIR / task / "model.onnx"), providers=["CPUExecutionProvider"])
    return LoadedModel(task, task, "1", bundle.get("mlflow_run_id"), float(bundle["threshold"]), bundle, session)


def _studies(tmp_path: Path) -> dict[str, list[Path]]:
    mg_uid = str(generate_uid())
    return {
        "chest-xray": [wrap_radiograph(KERMANY / "PNEUMONIA" / "person1000_virus_1681.jpeg", tmp_path / "dx.dcm")],
        "mammography": [
            wrap_mammogram(MIAS / "mdb001.png", tmp_path / "mg-l.dcm", laterality="L", study_uid=mg_uid),
            wrap_mammogram(MIAS / "mdb002.png", tmp_path / "mg-r.dcm", laterality="R", study_uid=mg_uid),
        ],
        "ct-chest": sorted((FIXTURES / "inference" / "ct").glob("*.dcm")),
    }


def _dciodvfy_errors(path: Path) -> list[str]:
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]


@pytest.mark.parametrize("task", ["chest-xray", "mammography", "ct-chest"])
def test_sr_and_heatmap_pass_dciodvfy_with_a_group_per_image(task: str, tmp_path: Path) -> None:
    files = _studies(tmp_path)[task]
    model = _shipped(task)
    scored = score_task(task, model, [dcmread(f) for f in files], min_ct_slices=3)
    call = "positive" if scored.score >= model.threshold else "negative"
    steering = SteeringRight.shadow if task == "mammography" else SteeringRight.raise_only
    result = ResultToWrite(task, model.name, model.version, model.run_id, model.threshold, call, scored, steering=steering)
    sr = build_sr(result, series_instance_uid=str(generate_uid()))
    heatmap = build_heatmap(result, series_instance_uid=str(generate_uid()))
    written = [("sr", sr)] + ([("heatmap", heatmap)] if heatmap is not None else [])
    assert task == "ct-chest" or heatmap is not None
    for name, ds in written:
        path = tmp_path / f"{name}.dcm"
        ds.save_as(path, enforce_file_format=True)
        assert _dciodvfy_errors(path) == [], f"{task} {name}"

    report = hd.sr.Comprehensive3DSR.from_dataset(dcmread(tmp_path / "sr.dcm"))
    groups = report.content.get_planar_roi_measurement_groups()
    expected = {"chest-xray": 1, "mammography": 2, "ct-chest": len(scored.regions)}[task]
    assert len(groups) == expected >= 1
    scores = [float(g.get_measurements(name=PROBABILITY)[0].value) for g in groups]
    # Each group states the operating point its call is made at and the version's steering right.
    assert all(abs(float(g.get_measurements(name=OPERATING_POINT)[0].value) - model.threshold) < 1e-6 for g in groups)
    assert {g.get_qualitative_evaluations(name=STEERING)[0].value.value for g in groups} == {
        "SHADOW" if task == "mammography" else "RAISE"
    }
    assert scores == sorted(scores, reverse=True) and abs(scores[0] - scored.score) < 1e-6
    referenced = set()
    for group, region in zip(groups, sorted(scored.regions, key=lambda r: -r.score), strict=True):
        roi = group.roi
        assert roi is not None and roi.value_type == hd.sr.ValueTypeValues.SCOORD
        assert roi.graphic_type == hd.sr.GraphicTypeValues.POINT
        image = roi.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID  # SELECTED FROM
        assert image == region.source.SOPInstanceUID
        referenced.add(image)
    if task == "mammography":
        assert referenced == {str(dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}
        assert heatmap is not None and heatmap.Laterality in ("L", "R")
