"""A champion result as FHIR R4 resources for the EMR: a ``DiagnosticReport`` with its ``Observation``s.

- ``Observation`` probability (valueQuantity, UCUM ``1``) and call (positive/negative at the operating
  point; or a ``dataAbsentReason`` with the reason: ``error`` "could not score", or ``not-applicable`` "not
  scored: outside the model's intended use"), each with ``device`` naming the model and version;
- a ``Device`` for the model version (manufacturer medscreen, model name, version, MLflow run);
- the ``DiagnosticReport`` pointing at them, at the ``ImagingStudy`` by its Study Instance UID and at the
  order by its accession number, its conclusion saying "decision support, not a diagnosis".

Built with ``fhir.resources`` (R4B, the R4-compatible models ``screening`` uses too), so an invalid resource
fails here and never reaches an EMR. Ids are derived from the result id, so a resend replaces, never adds.
The same function serves ``GET /fhir/...`` and the push, so both say the same thing. A study has one current
result: when a late image re-opens and re-scores it, the earlier report is served and re-pushed as
``entered-in-error`` and the later one names it with the R4 extension ``diagnosticReport-replaces``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Any

from fhir.resources.R4B.device import Device
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.resource import Resource
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import object_session

from inference.dicom_dates import dicom_date
from inference.score_text import score_and_threshold
from inference.tables import ScoreResult, Study
from service.lifecycle import ModelRole, SteeringRight, StudyStatus

__all__ = [
    "NOT_SCORED_OUT_OF_SCOPE", "SHADOW_NOTE", "ResultFacts", "facts_of", "neighbours", "study_day", "result_resources",
    "report_id", "device_id",
]

DECISION_SUPPORT = "Decision support, not a diagnosis"
NOT_SCORED_OUT_OF_SCOPE = "not scored: outside the model's intended use"
SHADOW_NOTE = "shadow model: recorded for monitoring, not a finding"
_LOCAL = "urn:medscreen:code"
_MODEL = "urn:medscreen:model"
_UCUM = "http://unitsofmeasure.org"
_DICOM_UID = "urn:dicom:uid"
_V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
_OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
_V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
_REPLACES = "http://hl7.org/fhir/StructureDefinition/diagnosticReport-replaces"


@dataclass(frozen=True)
class ResultFacts:
    result_id: int
    study_instance_uid: str
    accession_number: str
    patient_id: str
    task: str
    model_name: str
    model_version: str
    mlflow_run_id: str | None
    outcome: str
    score: float | None
    threshold: float | None
    call: str | None
    reason: str | None
    created_at: datetime
    # DICOM StudyDate (DA, YYYYMMDD) as received; "" when the study had none.
    study_date: str = ""
    # The version's SteeringRight when it scored; a shadow result reaches the EMR only by the site's choice
    # (MEDSCREEN_WRITEBACK_SHADOW) and must say what it is.
    steering: str = SteeringRight.raise_only.value
    # One current result per study: the earlier result this one replaces, and the later one that replaced it.
    replaces: ResultFacts | None = None
    superseded_by: int | None = None


def neighbours(result: ScoreResult) -> tuple[ScoreResult | None, ScoreResult | None]:
    """The study's champion results just before and just after this one (a late image re-opened and re-scored the
    study). Shadow results take no part: they are never the study's result, only monitoring. Read through the
    result's own session, so the read, the push and the ORU all see the same chain.

    Ordered by (revision, id), as the worklist orders them: a result stored late for an older revision (its job was
    queued before a corrected re-send withdrew the study) comes before the newer revision's, never after it."""
    session = object_session(result)
    if session is None or result.steering == SteeringRight.shadow:
        return None, None
    same_study = (ScoreResult.study_id == result.study_id, ScoreResult.role == ModelRole.champion,
                  or_(ScoreResult.steering.is_(None), ScoreResult.steering != SteeringRight.shadow.value))
    earlier = or_(ScoreResult.revision < result.revision,
                  and_(ScoreResult.revision == result.revision, ScoreResult.id < result.id))
    later = or_(ScoreResult.revision > result.revision,
                and_(ScoreResult.revision == result.revision, ScoreResult.id > result.id))
    before = session.scalar(select(ScoreResult).where(*same_study, earlier)
                            .order_by(ScoreResult.revision.desc(), ScoreResult.id.desc()).limit(1))
    after = session.scalar(select(ScoreResult).where(*same_study, later)
                           .order_by(ScoreResult.revision, ScoreResult.id).limit(1))
    return before, after


def facts_of(result: ScoreResult, study: Study, *, chain: bool = True) -> ResultFacts:
    before, after = neighbours(result) if chain else (None, None)
    return ResultFacts(
        result_id=result.id,
        study_instance_uid=study.study_instance_uid,
        accession_number=study.accession_number,
        patient_id=study.patient_id,
        task=result.task,
        model_name=result.model_name,
        model_version=result.model_version,
        mlflow_run_id=result.mlflow_run_id,
        outcome=result.outcome,
        score=result.score,
        threshold=result.threshold,
        call=result.call,
        reason=result.reason,
        created_at=result.created_at,
        study_date=study.study_date,
        steering=result.steering or SteeringRight.raise_only.value,
        replaces=replace(facts_of(before, study, chain=False), superseded_by=result.id) if before else None,
        superseded_by=after.id if after else None,
    )


def report_id(result_id: int) -> str:
    return f"medscreen-dr-{result_id}"


def device_id(model_name: str, model_version: str) -> str:
    return "medscreen-" + re.sub(r"[^A-Za-z0-9.-]", "-", f"{model_name}-{model_version}")[:54]


def study_day(study_date: str) -> date | None:
    """The day of a DICOM StudyDate (DA), or None when it is empty or not a date. Only the day: StudyTime and the
    zone offset are not kept, and a DICOM time without an offset is the modality's local time."""
    return dicom_date(study_date)


def _subject(facts: ResultFacts) -> dict[str, Any]:
    # A logical reference: the EMR resolves the patient by its identifier; medscreen holds no Patient resource.
    return {"type": "Patient", "identifier": {"value": facts.patient_id}} if facts.patient_id else {}


def result_resources(facts: ResultFacts, *, with_replaced: bool = True) -> list[Resource]:
    """Device, Observation(s) and DiagnosticReport of one champion result, validated; ``with_replaced`` (the push)
    adds the observations and report of the result it replaces, re-sent as entered-in-error, so that the EMR
    holds one current result for the study."""
    issued = facts.created_at.isoformat()
    # effective is the clinically relevant time, when the images were taken, not when the model ran (a backfilled
    # film of last year would show as today's finding); FHIR allows a date alone, and a study without a date says none.
    day = study_day(facts.study_date)
    effective = {"effectiveDateTime": day.isoformat()} if day else {}
    model = f"{facts.model_name} {facts.model_version}"
    the_device_id = device_id(facts.model_name, facts.model_version)
    device_ref = {"reference": f"Device/{the_device_id}", "display": f"medscreen {model}"}
    device = Device.model_validate({
        "resourceType": "Device",
        "id": the_device_id,
        "identifier": [{"system": _MODEL, "value": f"{facts.model_name}:{facts.model_version}"}],
        "manufacturer": "medscreen",
        "deviceName": [{"name": facts.model_name, "type": "model-name"}],
        "version": [{"value": facts.model_version}],
        "type": {"text": "AI decision support software (triage); not a diagnostic device"},
        "note": [{"text": f"MLflow run {facts.mlflow_run_id or 'unknown'}"}],
    })
    subject = _subject(facts)
    # A shadow version's card says it must not be shown as a finding: preliminary, and said in words, as the SR does.
    shadow = facts.steering == SteeringRight.shadow
    status = "preliminary" if shadow else "final"
    caveat = f"{SHADOW_NOTE}. " if shadow else ""
    if facts.superseded_by is not None:
        # R4 has no "superseded" status. The older result was right for the images it saw, but it is no longer the
        # study's result, and an EMR lists final and amended reports as current: entered-in-error ("should not be
        # treated as valid") is the status EMRs leave out, and the later report names it (diagnosticReport-replaces).
        status = "entered-in-error"
        caveat = (f"Superseded by DiagnosticReport/{report_id(facts.superseded_by)}, a later result of this study "
                  f"(re-scored after new images): not the current result. ")
    common: dict[str, Any] = {
        "resourceType": "Observation",
        "status": status,
        "category": [{"coding": [{"system": _OBSERVATION_CATEGORY, "code": "imaging", "display": "Imaging"}]}],
        **effective,
        "issued": issued,
        "device": device_ref,
        "note": [{"text": f"{caveat}{DECISION_SUPPORT}. {model}."}],
        **({"subject": subject} if subject else {}),
    }
    # Outside intended use the model's answer does not apply to this patient (`not-applicable`); `error` is a
    # technical failure, which invites a resend.
    absent_code, not_scored = (
        ("not-applicable", NOT_SCORED_OUT_OF_SCOPE) if facts.outcome == StudyStatus.out_of_scope
        else ("error", "could not score")
    )
    observations: list[Observation] = []
    if facts.outcome == "scored" and facts.score is not None:
        observations.append(Observation.model_validate({
            **common,
            "id": f"medscreen-obs-{facts.result_id}-probability",
            "code": {"coding": [{"system": _LOCAL, "code": f"{facts.task}-probability"}],
                     "text": f"Probability of finding ({facts.task}, AI)"},
            "valueQuantity": {"value": round(facts.score, 6), "unit": "1", "system": _UCUM, "code": "1"},
        }))
        shown, threshold = (
            score_and_threshold(facts.score, facts.threshold) if facts.threshold is not None
            else (f"{facts.score:.3f}", "unknown")
        )
        observations.append(Observation.model_validate({
            **common,
            "id": f"medscreen-obs-{facts.result_id}-call",
            "code": {"coding": [{"system": _LOCAL, "code": f"{facts.task}-call"}],
                     "text": f"Call at the model's operating point ({facts.task}, AI)"},
            "valueCodeableConcept": {"coding": [{"system": _LOCAL, "code": str(facts.call)}],
                                     "text": f"{facts.call} at operating point {threshold}"},
            "method": {"text": f"{model}, operating point {threshold}"},
        }))
    else:
        observations.append(Observation.model_validate({
            **common,
            "id": f"medscreen-obs-{facts.result_id}-call",
            "code": {"coding": [{"system": _LOCAL, "code": f"{facts.task}-call"}],
                     "text": f"Call at the model's operating point ({facts.task}, AI)"},
            "dataAbsentReason": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/data-absent-reason",
                                             "code": absent_code}],
                                 "text": f"{not_scored}: {facts.reason or 'no reason given'}"},
        }))
    if facts.outcome == "scored" and facts.score is not None:
        conclusion = (f"{DECISION_SUPPORT}: {model} gives probability {shown}, {facts.call} at its "
                      f"operating point {threshold}." if facts.threshold is not None else "")
    else:
        conclusion = f"{DECISION_SUPPORT}: {model}: {not_scored}: {facts.reason or 'no reason given'}."
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "id": report_id(facts.result_id),
        "identifier": [{"system": "urn:medscreen:result", "value": str(facts.result_id)}],
        "status": status,
        "category": [{"coding": [{"system": _V2_0074, "code": "RAD", "display": "Radiology"}]}],
        "code": {"coding": [{"system": _LOCAL, "code": f"{facts.task}-triage"}], "text": f"AI triage: {facts.task}"},
        **effective,
        "issued": issued,
        "result": [{"reference": f"Observation/{o.id}"} for o in observations],
        "imagingStudy": [{
            "type": "ImagingStudy",
            "identifier": {"system": _DICOM_UID, "value": f"urn:oid:{facts.study_instance_uid}"},
        }],
        "conclusion": caveat + conclusion,
        **({"subject": subject} if subject else {}),
    }
    if facts.replaces is not None:
        report["extension"] = [{"url": _REPLACES, "valueReference": {"reference": f"DiagnosticReport/{report_id(facts.replaces.result_id)}"}}]
    if facts.accession_number:
        report["basedOn"] = [{
            "type": "ServiceRequest",
            "identifier": {"type": {"coding": [{"system": _V2_0203, "code": "ACSN"}]}, "value": facts.accession_number},
        }]
    replaced = result_resources(facts.replaces, with_replaced=False)[1:] if with_replaced and facts.replaces else []
    return [device, *observations, DiagnosticReport.model_validate(report), *replaced]
