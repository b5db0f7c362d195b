"""The FHIR JSON a population run writes without building the resource models is what the models dump:
validating it and dumping it again gives the same bytes, for every kind of result."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, date, datetime

import orjson
import pytest
from fhir.resources.R4B.flag import Flag
from fhir.resources.R4B.riskassessment import RiskAssessment

from datasets.emr_records import DroppedEntry
from datasets.fhir_emr import fhir_id
from screening.fhir_output import flag, flag_json, risk_assessment, risk_assessment_json, unassigned_care_team_outcome
from screening.screener import Screener, ScreeningResult
from tests.screening.conftest import ordinary_child, syndromic_child


def _results(screener: Screener) -> list[ScreeningResult]:
    flagged = screener.screen(syndromic_child(), date(2024, 3, 1))
    assert flagged.flagged and flagged.candidates  # the kind of result a population run writes
    ordinary = screener.screen(ordinary_child(), date(2024, 3, 1))
    return [
        flagged,
        ordinary,
        dataclasses.replace(flagged, status="incomplete", reason="1 entry not read",
                            dropped=[DroppedEntry("line 3 Condition/c1", "invalid date '2022-02-30'")]),
        dataclasses.replace(ordinary, status="out_of_age", reason="7.2 years", risk=None, flagged=False),
        dataclasses.replace(flagged, candidates=[], organ_systems=[], drivers=[]),  # flagged, nothing to name
        dataclasses.replace(flagged, screened_at=datetime(2025, 6, 1, 12, 0, tzinfo=UTC)),  # whole seconds
        dataclasses.replace(flagged, patient_id="MRN 12/34"),  # a CSV record id that is no FHIR id
    ]


def test_the_direct_json_is_what_the_resource_models_dump(screener: Screener) -> None:
    for result in _results(screener):
        direct = risk_assessment_json(result, screener.ontology)
        dumped = RiskAssessment.model_validate(direct).model_dump(mode="json", exclude_none=True)
        assert orjson.dumps(direct) == orjson.dumps(dumped)
        assert risk_assessment(result, screener.ontology).model_dump(mode="json", exclude_none=True) == dumped
        direct_flag = flag_json(result)
        if not result.flagged:
            assert direct_flag is None and flag(result) is None
            continue
        assert direct_flag is not None
        assert orjson.dumps(direct_flag) == orjson.dumps(
            Flag.model_validate(direct_flag).model_dump(mode="json", exclude_none=True)
        )


def test_an_invalid_resource_still_fails_where_it_is_built(screener: Screener) -> None:
    result = dataclasses.replace(_results(screener)[0], model_version="")  # an empty FHIR string
    with pytest.raises(ValueError, match="version"):
        risk_assessment(result, screener.ontology)


def test_each_candidate_names_its_genes_in_the_risk_assessment_and_the_explanation(screener: Screener) -> None:
    from screening.fhir_output import explanation
    from screening.knowledge import DiseaseMatch

    flagged = screener.screen(syndromic_child(), date(2024, 3, 1))
    assert any(c.genes for c in flagged.candidates)
    many = DiseaseMatch("ORPHA:1", "A group", 1.0, (), tuple(f"G{i}" for i in range(9)))
    none = DiseaseMatch("OMIM:2", "No gene known", 0.5, (), ())
    result = dataclasses.replace(flagged, candidates=[*flagged.candidates, many, none])
    rationales = [p["rationale"] for p in risk_assessment_json(result, screener.ontology)["prediction"][1:]]
    for candidate, rationale in zip(result.candidates, rationales, strict=True):
        assert ("; genes: " in rationale) == bool(candidate.genes)
    assert rationales[-2].endswith("genes: G0, G1, G2, G3, G4, G5 and 3 more")
    assert [c["genes"] for c in explanation(result, screener.ontology)["candidates"]][-2:] == [list(many.genes), []]


def test_the_subject_is_a_valid_reference_and_keeps_the_record_id(screener: Screener) -> None:
    """A CSV record id can be any text: the subject names the child by the id the bundle reader gives its
    Patient (fhir_id), which the EMR can resolve, and carries the record id itself as the identifier."""
    result = dataclasses.replace(screener.screen(syndromic_child(), date(2024, 3, 1)), patient_id="MRN 12/34")
    flag_resource = flag_json(result)
    assert flag_resource is not None
    for resource in (risk_assessment_json(result, screener.ontology), flag_resource):
        reference = resource["subject"]["reference"]
        assert reference == f"Patient/{fhir_id('MRN 12/34')}" and re.fullmatch(r"Patient/[A-Za-z0-9\-.]{1,64}", reference)
        assert resource["subject"]["identifier"] == {"value": "MRN 12/34"}
    assert risk_assessment_json(screener.screen(syndromic_child("child-1"), date(2024, 3, 1)), screener.ontology)["subject"] == {
        "reference": "Patient/child-1", "identifier": {"value": "child-1"}}


def test_the_unassigned_care_team_warning_names_the_records_and_the_assign_command() -> None:
    """One warning per care team: a large Bundle's record ids are counted past five; the command assigns the
    organisation when the records name one, else the practitioner."""
    outcome = unassigned_care_team_outcome("paul", {
        ("Practitioner/9", "Organization/clinic-7"): ["r1"],
        ("Practitioner/9",): [f"p{i}" for i in range(7)],
    })
    both, practitioner = (issue.diagnostics for issue in outcome.issue)
    assert all(issue.severity == "warning" for issue in outcome.issue)
    assert "1 record(s) (r1) name Practitioner/9 and Organization/clinic-7" in both
    assert "`medscreen screening assign paul --organization Organization/clinic-7`" in both
    assert "7 record(s) (p0, p1, p2, p3, p4 and 2 more)" in practitioner
    assert "`medscreen screening assign paul --practitioner Practitioner/9`" in practitioner


def test_the_flag_names_model_threshold_and_not_a_diagnosis_and_the_assessment_its_threshold(screener: Screener) -> None:
    """The Flag is the EMR's banner: it named a disease ("best match X") with no model, no alert threshold and no
    "not a diagnosis"; the RiskAssessment had the model but not the threshold the child was flagged at."""
    result = screener.screen(syndromic_child(), date(2024, 3, 1))
    assert result.flagged and result.threshold is not None and result.candidates
    threshold = f"alert threshold {result.threshold:.4g}"
    text = (flag_json(result) or {})["code"]["text"]
    assert result.model_version in text and threshold in text
    assert f"best-matching candidate, not a diagnosis: {result.candidates[0].name}" in text
    assert "best match " not in text
    bare = (flag_json(dataclasses.replace(result, candidates=[])) or {})["code"]["text"]
    assert "not a diagnosis" in bare and result.model_version in bare
    risk = risk_assessment_json(result, screener.ontology)["prediction"][0]
    assert threshold in risk["rationale"] and "not a diagnosis" in risk["rationale"]
