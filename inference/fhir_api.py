"""``GET /fhir/...``: champion results as FHIR R4 resources, for an EMR or a viewer that reads rather than
receives. Role-checked (radiologist, ml-engineer, quality) and audited like the study view; as there, only the
clinical roles get the patient identifier (``subject``) and the accession number (``basedOn``).

A `shadow` version's results are recorded for monitoring and are not served here (a search leaves them out, a read
is a 404), as the push leaves them out, unless ``MEDSCREEN_WRITEBACK_SHADOW`` is set: a reader shows what it gets
as a final report, and the shipped mammography version (cross-validated AUROC 0.58) had been served so."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy import func, select

from inference.api import sees_patient_identity
from inference.fhir_results import ResultFacts, device_id, facts_of, result_resources
from inference.result_feed import served_as_finding
from inference.tables import ScoreResult, Study
from service.audit import record_audit
from service.auth import AuthenticatedUser, Role, require_role
from service.deps import SessionDep, SettingsDep
from service.fhir_push import searchset_bundle
from service.lifecycle import ModelRole
from service.request_params import MAX_INT32_ROW_ID

__all__ = ["router"]

router = APIRouter(prefix="/fhir", tags=["fhir"])
_ROW_ID = re.compile(r"[0-9]{1,10}")
Reader = Annotated[AuthenticatedUser, Depends(require_role(Role.radiologist, Role.ml_engineer, Role.quality))]
FHIR_JSON = "application/fhir+json"


def _fhir(body: Any, status_code: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status_code, media_type=FHIR_JSON)


def _not_found(what: str) -> JSONResponse:
    return _fhir({"resourceType": "OperationOutcome",
                  "issue": [{"severity": "error", "code": "not-found", "diagnostics": f"no {what}"}]}, 404)


def _facts_for(user: AuthenticatedUser, result: ScoreResult, study: Study) -> ResultFacts:
    facts = facts_of(result, study)
    return facts if sees_patient_identity(user) else replace(facts, patient_id="", accession_number="")


def _champion_results(session: SessionDep, study: Study, *, include_shadow: bool) -> list[ScoreResult]:
    return list(session.scalars(
        select(ScoreResult)
        .where(ScoreResult.study_id == study.id, ScoreResult.role == ModelRole.champion)
        .where(served_as_finding(include_shadow=include_shadow))
        .order_by(ScoreResult.id)
    ))


@router.get("/DiagnosticReport", summary="Champion results of a study as a searchset Bundle (reports, observations, devices)")
def search_reports(
    request: Request, session: SessionDep, settings: SettingsDep, user: Reader,
    study: Annotated[str, Query(description="Study Instance UID (the report's imagingStudy): <uid>, urn:oid:<uid>, or as a token "
                                      "of its identifier, urn:dicom:uid|urn:oid:<uid>; several separated by commas")],
) -> JSONResponse:
    # A comma separates values that are OR'd (FHIR search.html); a UID holds none. Two studies in one search had been
    # read as one UID that names no study, total 0.
    uids = {uid for uid in map(_study_uid, study.split(",")) if uid}
    resources = []
    for found in session.scalars(select(Study).where(Study.study_instance_uid.in_(uids)).order_by(Study.id)):
        record_audit(session, user.username, "fhir.read", "study", found.study_instance_uid)
        for result in _champion_results(session, found, include_shadow=settings.writeback_shadow):
            resources.extend(result_resources(_facts_for(user, result, found), with_replaced=False))
    bundle = searchset_bundle(str(request.base_url) + "fhir", resources, searched={"study": study})
    return _fhir(bundle.model_dump(mode="json", exclude_none=True))


def _study_uid(token: str) -> str | None:
    """The Study Instance UID a ``study`` search names: ``<uid>`` or ``urn:oid:<uid>``, alone or as a FHIR token with
    the system of the report's imagingStudy identifier (``urn:dicom:uid|urn:oid:<uid>``, as a client searching by
    that identifier sends it: it had been read as a UID, and answered total 0 for a study with a result). With
    another system (or none, ``|<uid>``) it names no study of medscreen's."""
    system, bar, code = token.rpartition("|")
    if bar and system != "urn:dicom:uid":
        return None
    return code.removeprefix("urn:oid:")


@router.get("/DiagnosticReport/{resource_id}", summary="One champion result as a DiagnosticReport")
def read_report(resource_id: str, session: SessionDep, settings: SettingsDep, user: Reader) -> JSONResponse:
    return _read(session, settings, user, "DiagnosticReport", resource_id)


@router.get("/Observation/{resource_id}", summary="One observation (probability or call) of a champion result")
def read_observation(resource_id: str, session: SessionDep, settings: SettingsDep, user: Reader) -> JSONResponse:
    return _read(session, settings, user, "Observation", resource_id)


@router.get("/Device/{resource_id}", summary="A model version as a Device")
def read_device(resource_id: str, session: SessionDep, settings: SettingsDep, user: Reader) -> JSONResponse:
    versions = session.execute(
        select(func.min(ScoreResult.id), ScoreResult.model_name, ScoreResult.model_version)
        .where(ScoreResult.role == ModelRole.champion, served_as_finding(include_shadow=settings.writeback_shadow))
        .group_by(ScoreResult.model_name, ScoreResult.model_version)
    ).all()
    for result_id, name, version in versions:
        if device_id(name, version) == resource_id:
            row = session.execute(
                select(ScoreResult, Study).join(Study, Study.id == ScoreResult.study_id).where(ScoreResult.id == result_id)
            ).one()
            device = result_resources(facts_of(*row), with_replaced=False)[0]
            return _fhir(device.model_dump(mode="json", exclude_none=True))
    return _not_found(f"Device/{resource_id}")


def _read(
    session: SessionDep, settings: SettingsDep, user: AuthenticatedUser, resource_type: str, resource_id: str
) -> JSONResponse:
    prefix = "medscreen-dr-" if resource_type == "DiagnosticReport" else "medscreen-obs-"
    number = resource_id.removeprefix(prefix).split("-")[0]
    # ASCII digits within the key's range (score_results.id is 32-bit on PostgreSQL; '²' passes str.isdigit() but
    # not int()): past it, or past 2^63 - 1 on SQLite, it had been a 500.
    if not resource_id.startswith(prefix) or not _ROW_ID.fullmatch(number) or int(number) > MAX_INT32_ROW_ID:
        return _not_found(f"{resource_type}/{resource_id}")
    row = session.execute(
        select(ScoreResult, Study).join(Study, Study.id == ScoreResult.study_id)
        .where(ScoreResult.id == int(number), ScoreResult.role == ModelRole.champion)
        .where(served_as_finding(include_shadow=settings.writeback_shadow))
    ).first()
    if row is None:
        return _not_found(f"{resource_type}/{resource_id}")
    result, study = row
    record_audit(session, user.username, "fhir.read", "study", study.study_instance_uid)
    for resource in result_resources(_facts_for(user, result, study), with_replaced=False):
        if resource.get_resource_type() == resource_type and resource.id == resource_id:
            return _fhir(resource.model_dump(mode="json", exclude_none=True))
    return _not_found(f"{resource_type}/{resource_id}")
