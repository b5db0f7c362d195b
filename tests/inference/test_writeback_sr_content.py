"""What the SR says beside the probability and the call (review D4: "Above operating point" without the operating
point, and nothing telling a shadow version's SR, sent with MEDSCREEN_WRITEBACK_SHADOW, from a finding)."""

from __future__ import annotations

import warnings

import highdicom as hd
import pytest
from pydicom import dcmread
from sqlalchemy import select

from inference.outgoing import read_document
from inference.scorers import TaskScore
from inference.tables import ScoreResult, Study
from inference.writeback import CALL, OPERATING_POINT, STEERING, ResultToWrite, build_sr
from service.lifecycle import SteeringRight
from tests.inference.conftest import INFERENCE_FIXTURES, Pipeline

DX_CHEST = INFERENCE_FIXTURES / "images" / "dx_chest_highdicom.dcm"
STEERING_CODES = {SteeringRight.defer: "DEFER", SteeringRight.raise_only: "RAISE", SteeringRight.shadow: "SHADOW"}


def _groups(sr) -> list:
    return hd.sr.Comprehensive3DSR.from_dataset(sr).content.get_planar_roi_measurement_groups()


@pytest.mark.parametrize("steering", list(SteeringRight))
def test_each_group_states_the_operating_point_and_the_steering_right(steering: SteeringRight) -> None:
    scored = TaskScore(
        score=0.72, localisation={"kind": "heatmap", "point": [40.0, 60.0]}, source=dcmread(DX_CHEST),
        heatmap=None, image=None,
    )
    result = ResultToWrite("chest-xray", "chest-xray", "1", "run-1", 0.672, "positive", scored, steering=steering)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sr = build_sr(result, series_instance_uid=result.new_uid())
    (group,) = _groups(sr)
    assert float(group.get_measurements(name=OPERATING_POINT)[0].value) == pytest.approx(0.672)
    assert group.get_qualitative_evaluations(name=CALL)[0].value.value == "POS"
    (right,) = group.get_qualitative_evaluations(name=STEERING)
    assert right.value.value == STEERING_CODES[steering]
    if steering == SteeringRight.shadow:
        assert "not a finding" in right.value.meaning


def test_the_scoring_job_writes_the_versions_steering_right(pipeline: Pipeline) -> None:
    pipeline.receive(DX_CHEST)
    pipeline.complete_route_and_score()
    with pipeline.session() as session:
        study = session.scalars(select(Study)).one()
        result = session.scalars(select(ScoreResult)).one()
    assert result.sr_sop_instance_uid is not None
    sr = read_document(pipeline.settings, study.study_instance_uid, result.sr_sop_instance_uid)
    (group,) = _groups(sr)
    assert float(group.get_measurements(name=OPERATING_POINT)[0].value) == pytest.approx(result.threshold)
    assert group.get_qualitative_evaluations(name=STEERING)[0].value.value == STEERING_CODES[SteeringRight(result.steering)]
