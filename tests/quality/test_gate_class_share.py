"""The gate's per-class share, and a retrained version's own site never validating it (mutation review 3: G1, S3).
The real app on SQLite and a real MLflow registry, as in test_quality_api."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.db import session_scope
from tests.quality.quality_rows import add_final_read, add_result, add_study
from tests.quality.test_quality_api import T0, database_url, register_versions, seed_pairs  # noqa: F401
from tests.service.conftest import AddUser, add_user, app, client, service_settings  # noqa: F401


def seed_with_positives(application: FastAPI, n: int, positives: int) -> None:
    """``n`` confirmed studies, ``positives`` of them with the finding; champion v3 and challenger v4 agree on each."""
    with session_scope(application.state.session_factory) as session:
        for i in range(n):
            truth = i < positives
            study = add_study(session, arrived=T0 + timedelta(minutes=i))
            add_result(session, study, score=0.9 if truth else 0.1, model_version="3")
            add_result(session, study, score=0.9 if truth else 0.1, role="challenger", model_version="4")
            add_final_read(session, study, truth, read_at=T0 + timedelta(minutes=i, hours=2))


@pytest.mark.parametrize(
    "positives, reasons",
    [
        (9, ["9 positive studies (2.0%); the gate needs at least 10% per class"]),
        (45, []),  # exactly 10%
    ],
)
def test_the_gate_needs_a_tenth_of_each_class(
    app: FastAPI, client: TestClient, add_user: AddUser, positives: int, reasons: list[str]  # noqa: F811
) -> None:
    """McNemar on 9 positives cannot show a sensitivity drop: such a comparison does not pass, however well it agrees."""
    seed_with_positives(app, 450, positives)
    gate = client.get("/api/quality/compare", params={"task": "chest-xray", "challenger": "4"},
                      headers=add_user("emma", "ml-engineer")).json()
    assert gate["comparison"]["n_paired"] == 450 and gate["comparison"]["challenger"]["n_positive"] == positives
    assert gate["reasons"] == reasons and gate["passed"] is (not reasons)


def test_a_version_retrained_on_this_sites_exports_cannot_earn_defer_on_its_studies(
    app: FastAPI, client: TestClient, add_user: AddUser  # noqa: F811
) -> None:
    tracking_uri = app.state.settings.resolved_mlflow_tracking_uri
    mlflow = register_versions(tracking_uri, "chest-xray", 4)
    mlflow.set_model_version_tag("chest-xray", "3", "source", "retrained")
    seed_pairs(app, 400)
    ask = {"task": "chest-xray", "version": "3", "right": "defer", "source": "St Elsewhere final reads 2026-03"}
    refused = client.post("/api/quality/steering", json=ask, headers=add_user("emma", "ml-engineer"))
    assert refused.status_code == 409 and "the validation data come from the training source" in refused.json()["detail"]
    assert "steering" not in mlflow.get_model_version("chest-xray", "3").tags
    # The same evidence earns defer for a version not trained here (the rule is the only refusal).
    mlflow.delete_model_version_tag("chest-xray", "3", "source")
    granted = client.post("/api/quality/steering", json=ask, headers=add_user("erin", "ml-engineer"))
    assert granted.status_code == 200, granted.text
