"""Fixtures of the worklist tests: the real app (SQLite and PostgreSQL) from the service tests, and helpers
that write studies and scoring results the way ingest and the scoring worker store them."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pydicom.uid import generate_uid
from sqlalchemy.orm import Session

from inference.tables import ScoreResult, ScoringJob, Study
from service.db import utcnow
from service.settings import Settings
from tests.peers import medscreen_service  # noqa: F401  (fixture)
from tests.service.conftest import add_user, app, client, database_url, service_settings  # noqa: F401  (fixtures)

_accessions = itertools.count(1)


def make_study(
    session: Session,
    *,
    arrived: datetime | None = None,
    modality: str = "CR",
    task: str | None = "chest-xray",
    status: str = "routed",
    order_priority: str = "",
    site: str = "St Elsewhere",
    description: str = "CHEST PA",
) -> Study:
    arrived = arrived or utcnow()
    study = Study(
        study_instance_uid=generate_uid(),
        status=status,
        revision=1,
        modality=modality,
        task=task,
        instance_count=1,
        study_description=description,
        accession_number=f"ACC{next(_accessions):06d}",
        patient_id="PID-1",
        patient_name="Doe^Jane",
        institution_name=site,
        order_priority=order_priority,
        first_received_at=arrived,
        last_received_at=arrived,
        completed_at=arrived + timedelta(seconds=10),
    )
    session.add(study)
    session.flush()
    return study


def add_result(
    session: Session,
    study: Study,
    *,
    score: float | None,
    threshold: float = 0.5,
    role: str = "champion",
    outcome: str = "scored",
    model_version: str = "3",
    reason: str | None = None,
    at: datetime | None = None,
    steering: str = "defer",
    **extra: Any,
) -> ScoreResult:
    """Store a result as the worker does: a job, then its result; the champion's sets the study status.

    ``steering`` defaults to ``defer``: these tests exercise the policy of a version that earned it."""
    at = at or utcnow()
    model_name = f"{study.task}-{role}"
    job = ScoringJob(
        study_id=study.id,
        revision=study.revision,
        task=study.task or "",
        model_name=model_name,
        model_version=model_version,
        role=role,
        state="done",
        attempts=1,
        next_attempt_at=at,
        created_at=at,
        updated_at=at,
    )
    session.add(job)
    session.flush()
    call = None if score is None else ("positive" if score >= threshold else "negative")
    result = ScoreResult(
        study_id=study.id,
        job_id=job.id,
        revision=study.revision,
        task=study.task or "",
        model_name=model_name,
        model_version=model_version,
        role=role,
        outcome=outcome,
        score=score,
        threshold=threshold if outcome == "scored" else None,
        call=call if outcome == "scored" else None,
        reason=reason,
        created_at=at,
        steering=steering,
        **extra,
    )
    session.add(result)
    if role == "champion":
        study.status = outcome
    session.flush()
    return result


def register_serving_versions(settings: Settings, registered_store: Path, versions: dict[str, str]) -> None:
    """Registry entries for results these tests store directly (``add_result``: model ``<task>-<role>``): each named
    version is its model's champion, recorded ``defer`` on evidence that earns it, so that the recompute loop, which
    steers each open entry with the lesser of its result's right and its version's right now, leaves every result
    the right it was stored with. A version the registry does not hold steers nothing."""
    import shutil
    import warnings

    from mlflow.tracking import MlflowClient

    from service.lifecycle import SteeringRight
    from service.model_registry import set_steering
    from service.steering import DeferRules, SteeringEvidence

    settings.home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(registered_store, settings.home / "mlflow.db")
    uri = settings.resolved_mlflow_tracking_uri
    registry = MlflowClient(uri, uri)
    evidence = SteeringEvidence("site-confirmed", "test site", 500, 0.95, 0.9, specificity_ci_low=0.87, sensitivity=0.96,
                                sensitivity_ci_low=0.93)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, version in versions.items():
            registry.create_registered_model(name)
            for _ in range(int(version)):
                registry.create_model_version(name, source=str(settings.home / "no-model"))
            set_steering(uri, name, version, SteeringRight.defer, evidence=evidence, rules=DeferRules())
            registry.set_registered_model_alias(name, "champion", version)
