"""Routing rules: loading, validation and the decision with its reasons."""

from __future__ import annotations

from pathlib import Path

import pytest

from inference.errors import RoutingRulesError
from inference.instance_headers import read_instance_headers
from inference.route import load_rules
from tests.inference.conftest import INFERENCE_FIXTURES


def _series(path: Path) -> dict[str, str]:
    return read_instance_headers(path).series_headers()


@pytest.mark.parametrize(
    ("fixture", "task"),
    [
        ("ct/lidc-0002-0.dcm", "ct-chest"),
        ("images/mg_ge_senographe.dcm", "mammography"),
        ("images/dx_chest_highdicom.dcm", "chest-xray"),
    ],
)
def test_default_rules_route_real_studies(fixture: str, task: str) -> None:
    decision = load_rules().route("1.2.3", 1, [_series(INFERENCE_FIXTURES / fixture)])
    assert decision.task == task


def test_unmatched_study_is_not_applicable_with_every_rules_reason() -> None:
    decision = load_rules().route("1.2.3", 2, [_series(INFERENCE_FIXTURES / "images" / "dx_abdomen_ge.dcm")])
    assert decision.task is None and decision.revision == 2
    text = " ".join(decision.reasons)
    assert "modality DX is not CT" in text
    assert "BodyPartExamined='ABDOMEN'" in text


def test_a_ct_that_is_not_of_the_chest_is_not_applicable() -> None:
    head_ct = {"Modality": "CT", "BodyPartExamined": "HEAD", "StudyDescription": "CT BRAIN"}
    assert load_rules().route("1.2.3", 1, [head_ct]).task is None


@pytest.mark.parametrize(
    ("series", "task"),
    [
        ({"Modality": "DX", "StudyDescription": "Rx Tórax PA"}, "chest-xray"),  # Spanish, as ISO-IR 100 decodes it
        ({"Modality": "CR", "StudyDescription": "RX TORAX"}, "chest-xray"),
        ({"Modality": "DX", "StudyDescription": "Radiographie pulmonaire"}, "chest-xray"),
        ({"Modality": "CT", "StudyDescription": "TC de tórax sin contraste"}, "ct-chest"),
        ({"Modality": "CT", "SeriesDescription": "Scanner poumon"}, "ct-chest"),
        ({"Modality": "DX", "StudyDescription": "Rx abdomen"}, None),
    ],
)
def test_chest_studies_described_in_other_languages_are_routed(series: dict[str, str], task: str | None) -> None:
    assert load_rules().route("1.2.3", 1, [series]).task == task


def test_one_matching_series_routes_the_study() -> None:
    series = [{"Modality": "SR"}, {"Modality": "CT", "StudyDescription": "CT THORAX low dose"}]
    decision = load_rules().route("1.2.3", 1, series)
    assert (decision.task, decision.rule) == ("ct-chest", "ct-of-the-chest")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rules: []", "non-empty `rules`"),
        ("rules:\n  - task: brain-mri\n    modality: [MR]", "task 'brain-mri'"),
        ("rules:\n  - task: ct-chest", "`modality` must list"),
        ("rules:\n  - task: ct-chest\n    modality: CT\n    any_header_matches: {PatientName: x}", "not a routable"),
        ("rules:\n  - task: ct-chest\n    modality: CT\n    any_header_matches: {BodyPartExamined: '('}", "bad regular"),
        ("rules: [", "cannot read"),
    ],
)
def test_invalid_rules_are_refused_with_the_reason(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    with pytest.raises(RoutingRulesError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load_rules(path)
