"""Quality review over HTTP: metrics, drift, the champion comparison and the report (role ``quality``), and
promotion through the gate and rollback (role ``ml-engineer``), each a single audited action."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Response, status
from pydantic import BaseModel
from sqlalchemy import select

from inference.shipped_models import SHIPPED_MODELS_DIR
from inference.tables import ScoreResult
from quality.drift import DriftThresholds, header_drift, score_drift, version_validation_distribution
from quality.errors import GateRefused, RegistryError
from quality.gate import (
    GateRules,
    compare_versions,
    evaluate_gate,
    promote_through_gate,
    registry_champion,
    require_known_version,
    rollback_champion,
)
from quality.metrics import (
    compute_metrics,
    load_paired_cases,
    screening_flag_outcomes,
    sensitivity_over_read,
    subgroup_metrics,
    time_to_read_around,
)
from quality.operating_point import DEFAULT_MIN_SENSITIVITY, site_operating_point
from quality.report import (
    ReportQuery,
    build_report,
    list_versions_in_service,
    log_report_to_mlflow,
    render_report,
)
from quality.steering import grant_steering
from service.audit import record_audit
from service.auth import AuthenticatedUser, require_role
from service.db import utcnow
from service.deps import SessionDep, SettingsDep
from service.error_responses import AUTHENTICATED, error_responses
from service.errors import SteeringRefused
from service.lifecycle import SteeringRight
from service.request_params import StoredText
from service.security_headers import attachment
from service.settings import Settings
from service.steering import defer_rules_from_settings
from service.tables import Role
from service.url_credentials import hide_url_credentials

__all__ = ["router", "drift_thresholds", "gate_rules"]

router = APIRouter(prefix="/api/quality", tags=["quality"], responses=AUTHENTICATED)
QualityUser = Annotated[AuthenticatedUser, Depends(require_role(Role.quality, Role.ml_engineer))]
EngineerUser = Annotated[AuthenticatedUser, Depends(require_role(Role.ml_engineer))]
Since = Annotated[datetime | None, Query(description="Studies that arrived at or after this instant (ISO 8601, UTC).")]
Until = Annotated[datetime | None, Query(description="Studies that arrived before this instant (ISO 8601, UTC).")]


def drift_thresholds(settings: Settings) -> DriftThresholds:
    return DriftThresholds(
        settings.quality_psi_alert, settings.quality_flag_rate_alert, settings.quality_baseline_weeks, settings.quality_drift_min_week_n,
        min_baseline_n=settings.quality_drift_min_baseline_n,
    )


def gate_rules(settings: Settings) -> GateRules:
    return GateRules(settings.quality_gate_min_studies, settings.quality_gate_min_class_fraction, settings.quality_gate_alpha,
                     defer_rules_from_settings(settings), max_unscored_share=settings.quality_max_unscored_share,
                     margin=settings.quality_gate_margin)


def _require_known(session: Any, settings: Settings, task: str, version: str, *, registered: bool = False) -> None:
    """404 for a task that is not an imaging task or a version with no results here that is not registered (with
    ``registered``, one the registry does not hold): figures, drift or a report of a typo (``v1``) had been a 200
    reading "0 confirmed studies", where ``quality report`` refuses it."""
    try:
        require_known_version(session, settings.resolved_mlflow_tracking_uri, task, version, registered=registered)
    except RegistryError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from exc


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@router.get("/versions")
def versions(session: SessionDep, user: QualityUser) -> list[dict[str, Any]]:
    """Task, version and role of every model version with scored results (the filters of the page)."""
    return list_versions_in_service(session)


@router.get("/metrics", responses=error_responses(404))
def metrics(
    session: SessionDep,
    settings: SettingsDep,
    user: QualityUser,
    task: str,
    version: str,
    since: Since = None,
    until: Until = None,
    policy_since: Annotated[
        datetime | None, Query(description="When the worklist policy started: time to read before and after it.")
    ] = None,
    min_sensitivity: Annotated[
        float, Query(ge=0.5, le=1.0, description="The sensitivity the suggested site threshold must hold (site_operating_point).")
    ] = DEFAULT_MIN_SENSITIVITY,
) -> dict[str, Any]:
    """404 for a task that is not an imaging task or a version with no results here that is not registered (its
    figures had been empty, 200)."""
    _require_known(session, settings, task, version)
    cases = load_paired_cases(session, task=task, model_version=version, since=_utc(since), until=_utc(until))
    overall = compute_metrics(cases)
    unscored = cases.unscored_of(task, version)
    body = {
        "task": task,
        "version": version,
        "overall": overall.to_dict(),
        # Beside "overall", which is over scored studies only: the read studies it leaves out, and sensitivity with
        # the could-not-score positives counted as missed (out-of-scope ones are counted in "unscored" only).
        "unscored": unscored.to_dict(),
        "sensitivity_over_read_in_intended_use": sensitivity_over_read(overall, unscored, cases).to_dict(),
        "subgroups": {k: {g: m.to_dict() for g, m in v.items()} for k, v in subgroup_metrics(cases).items()},
        "site_operating_point": site_operating_point(cases, min_sensitivity=min_sensitivity).to_dict(),
    }
    if policy_since is not None:
        body["time_to_read"] = time_to_read_around(cases, _utc(policy_since) or policy_since)
    return body


@router.get("/screening")
def screening(session: SessionDep, user: QualityUser, since: Since = None, until: Until = None) -> list[dict[str, Any]]:
    """Rare-disease screener flags per version against the paediatricians' outcomes (referred = true positive)."""
    return screening_flag_outcomes(session, since=_utc(since), until=_utc(until))


@router.get("/drift", responses=error_responses(404))
def drift(
    session: SessionDep,
    settings: SettingsDep,
    user: QualityUser,
    task: str,
    version: str,
    since: Since = None,
    until: Until = None,
) -> dict[str, Any]:
    """Weekly score PSI, flag rate and header drift by arrival week. The flag-rate and header baseline is the
    version's first weeks in service whatever the period; one of fewer than ``min_baseline_n`` studies raises no
    alert and ``baseline_note`` says so. 404 for an unknown task or version, as for the metrics."""
    _require_known(session, settings, task, version)
    thresholds = drift_thresholds(settings)
    report = score_drift(
        session,
        task,
        version,
        thresholds,
        reference=version_validation_distribution(settings.resolved_mlflow_tracking_uri, SHIPPED_MODELS_DIR, task, version),
        since=_utc(since),
        until=_utc(until),
    )
    headers, alerts = header_drift(session, task, thresholds, model_version=version, since=_utc(since), until=_utc(until))
    report.alerts.extend(alerts)
    return report.to_dict() | {"headers": headers}


@router.get("/compare", responses=error_responses(404))
def compare(
    session: SessionDep, settings: SettingsDep, user: QualityUser, task: str, challenger: str, champion: str | None = None
) -> dict[str, Any]:
    """The challenger against the champion on the same confirmed studies, and the gate's verdict. The champion is the
    registry's (the version a promotion would replace) unless ``champion`` names another."""
    champion = champion or registry_champion(settings.resolved_mlflow_tracking_uri, task, challenger)
    try:
        comparison = compare_versions(session, task, challenger, champion)
    except RegistryError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from exc
    return evaluate_gate(comparison, gate_rules(settings)).to_dict()


def _report(
    session: Any, settings: Settings, task: str, version: str, since: datetime | None, until: datetime | None,
    *, registered: bool = False,
) -> Any:
    _require_known(session, settings, task, version, registered=registered)
    return build_report(
        session,
        ReportQuery(task, version, _utc(since), _utc(until)),
        thresholds=drift_thresholds(settings),
        rules=gate_rules(settings),
        models_dir=Path(SHIPPED_MODELS_DIR),
        now=utcnow(),
        champion_version=registry_champion(settings.resolved_mlflow_tracking_uri, task, version),
        tracking_uri=settings.resolved_mlflow_tracking_uri,
    )


@router.get("/report", response_class=Response, responses=error_responses(404))
def report(
    session: SessionDep,
    settings: SettingsDep,
    user: QualityUser,
    task: str,
    version: str,
    since: Since = None,
    until: Until = None,
    fragment: bool = False,
) -> Response:
    """The report as a standalone HTML document (a download), or its body for the quality page."""
    built = _report(session, settings, task, version, since, until)
    record_audit(session, user.username, "quality.report", "model", f"{task}:{version}", {"fragment": fragment})
    headers = {} if fragment else {"Content-Disposition": attachment(f"quality-{task}-v{version}.html")}
    return Response(render_report(built, document=not fragment), media_type="text/html; charset=utf-8", headers=headers)


# Writing to the MLflow store is an ml-engineer's action: the quality role is read-only.
@router.post("/report/mlflow", responses=error_responses(404))
def report_to_mlflow(
    session: SessionDep, settings: SettingsDep, user: EngineerUser, task: str, version: str, since: Since = None, until: Until = None
) -> dict[str, str]:
    """Log the report as an artifact of the model version's MLflow run (tagged on the version)."""
    from mlflow.exceptions import MlflowException

    document = render_report(_report(session, settings, task, version, since, until, registered=True))
    try:
        artifact = log_report_to_mlflow(settings.resolved_mlflow_tracking_uri, task, version, document, utcnow())
    except (MlflowException, ValueError) as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=hide_url_credentials(f"{task} v{version}: {exc}")) from exc
    record_audit(session, user.username, "quality.report_logged", "model", f"{task}:{version}", {"artifact": artifact})
    return {"artifact": artifact}


# Stored in the audit log (and, on PostgreSQL, refused there with a NUL: a 500): StoredText is a 422.
class PromoteRequest(BaseModel):
    task: StoredText
    version: StoredText
    force: bool = False


class RollbackRequest(BaseModel):
    task: StoredText


class SteeringRequest(BaseModel):
    task: StoredText
    version: StoredText
    right: SteeringRight
    source: StoredText = "this site's studies confirmed by final reads"


@router.post("/promote", responses=error_responses(404, 409, 413))
def promote(body: PromoteRequest, session: SessionDep, settings: SettingsDep, user: EngineerUser) -> dict[str, Any]:
    """Gate the version on confirmed studies, then make it champion; 409 with the reasons when it fails."""
    from mlflow.exceptions import MlflowException

    try:
        decision = promote_through_gate(
            session,
            settings.resolved_mlflow_tracking_uri,
            body.task,
            body.version,
            actor=user.username,
            rules=gate_rules(settings),
            force=body.force,
        )
    except GateRefused as exc:
        session.commit()  # the refusal is audited too
        raise HTTPException(status.HTTP_409_CONFLICT, detail=f"gate refused: {exc}") from exc
    except (RegistryError, MlflowException) as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from exc
    # Say what the new champion may do to the worklist.
    return {"promoted": body.version, "task": body.task, "steering": decision.steering} | decision.to_dict()


@router.post("/rollback", responses=error_responses(404, 413))
def rollback(body: RollbackRequest, session: SessionDep, settings: SettingsDep, user: EngineerUser) -> dict[str, str]:
    try:
        previous, current = rollback_champion(
            session, settings.resolved_mlflow_tracking_uri, body.task, actor=user.username,
            rules=defer_rules_from_settings(settings),
        )
    except RegistryError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from exc
    if previous == current:  # a second rollback: nothing moved or audited
        return {"task": body.task, "from": previous, "to": current,
                "detail": f"champion is already v{current}, the version the last promotion replaced: nothing rolled back"}
    return {"task": body.task, "from": previous, "to": current}


@router.post("/steering", responses=error_responses(409, 413))
def steering(body: SteeringRequest, session: SessionDep, settings: SettingsDep, user: EngineerUser) -> dict[str, Any]:
    """Record the version's steering right; `defer` only on this site's confirmed studies meeting the
    MEDSCREEN_STEERING_DEFER_* thresholds (409 with the reasons otherwise). Audited either way."""
    try:
        evidence = grant_steering(
            session, settings.resolved_mlflow_tracking_uri, body.task, body.version, body.right, actor=user.username,
            site=body.source, rules=defer_rules_from_settings(settings),
        )
    except SteeringRefused as exc:
        session.commit()  # the refusal is audited too
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from exc
    return {"task": body.task, "version": body.version, "right": body.right.value,
            "evidence": None if evidence is None else evidence.__dict__}


@router.get("/tasks")
def tasks(session: SessionDep, user: QualityUser) -> list[str]:
    return sorted(t for (t,) in session.execute(select(ScoreResult.task).distinct()))
