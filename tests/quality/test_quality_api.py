"""The quality API and page over the real app: roles, figures, report (download and MLflow), promotion through
the gate and rollback as audited actions against a real MLflow registry; serving never imports torch."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from mlflow.tracking import MlflowClient
from scipy.stats import binomtest
from sqlalchemy import select

from service.db import session_scope
from service.model_registry import ensure_experiment
from service.tables import AuditEvent
from tests.quality.quality_rows import add_final_read, add_result, add_study
from tests.quality.test_quality_metrics import seed
from tests.service.conftest import AddUser, add_user, app, client, service_settings  # noqa: F401

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    # Quality review only reads; the SQLite app is enough here (the worklist tests cover PostgreSQL).
    return f"sqlite:///{tmp_path / 'medscreen.db'}"


def register_versions(tracking_uri: str, task: str, count: int) -> MlflowClient:
    """Model versions 1..count of ``task``, each with its own run (what the report is logged against)."""
    registry = MlflowClient(tracking_uri, tracking_uri)
    experiment = ensure_experiment(tracking_uri, f"medscreen-{task}")  # artifacts beside the store, not in ./mlruns
    registry.create_registered_model(task, tags={"task": task})
    for _ in range(count):
        run = registry.create_run(experiment)
        registry.set_terminated(run.info.run_id)
        registry.create_model_version(task, f"{run.info.artifact_uri}/model", run_id=run.info.run_id, tags={"task": task})
    return registry


def seed_pairs(application: FastAPI, n: int, *, challenger_misses: int = 0, challenger_false_alarms: int = 0,
               champion_false_alarms: int = 0) -> None:
    """``n`` confirmed studies, half with the finding; both versions agree except on ``challenger_misses``
    positives and on the negatives each version alone flags."""
    with session_scope(application.state.session_factory) as session:
        for i in range(n):
            truth = i % 2 == 0
            study = add_study(session, arrived=T0 + timedelta(minutes=i))
            score = 0.9 if truth else 0.1
            negative = i // 2
            champion_alarm = not truth and negative < champion_false_alarms
            add_result(session, study, score=0.8 if champion_alarm else score, model_version="3")
            missed = truth and i // 2 < challenger_misses
            alarm = not truth and champion_false_alarms <= negative < champion_false_alarms + challenger_false_alarms
            add_result(session, study, score=0.2 if missed else 0.8 if alarm else score, role="challenger", model_version="4")
            add_final_read(session, study, truth, read_at=T0 + timedelta(minutes=i, hours=2))


def audit_actions(application: FastAPI) -> list[str]:
    with session_scope(application.state.session_factory) as session:
        return list(session.scalars(select(AuditEvent.action).where(AuditEvent.action.like("model.%")).order_by(AuditEvent.id)))


def test_quality_figures_report_and_roles(app: FastAPI, client: TestClient, add_user: AddUser) -> None:  # noqa: F811
    seed(app.state.session_factory)
    quality = add_user("quinn", "quality")
    assert client.get("/api/quality/versions").status_code == 401
    assert client.get("/api/quality/versions", headers=add_user("rita", "radiologist")).status_code == 403
    versions = client.get("/api/quality/versions", headers=quality).json()
    assert {(v["task"], v["version"], v["role"]) for v in versions} == {
        ("chest-xray", "3", "champion"),
        ("chest-xray", "4", "challenger"),
    }
    body = client.get("/api/quality/metrics", params={"task": "chest-xray", "version": "3"}, headers=quality).json()
    overall = body["overall"]
    assert (overall["tp"], overall["fp"], overall["tn"], overall["fn"]) == (3, 2, 4, 1)
    assert overall["auroc"] == pytest.approx(22 / 24)
    assert set(body["subgroups"]) == {"manufacturer", "station", "age_band", "sex"}
    # Ten confirmed studies say nothing about where this site's threshold should sit; the answer says why.
    point = body["site_operating_point"]
    assert point["threshold"] is None and point["min_sensitivity"] == 0.95 and "4 with the finding and 6 without" in point["reason"]
    assert client.get("/api/quality/metrics", params={"task": "chest-xray", "version": "3", "min_sensitivity": 1.5},
                      headers=quality).status_code == 422
    split = client.get(
        "/api/quality/metrics",
        params={"task": "chest-xray", "version": "3", "policy_since": "2026-03-02T08:05:00Z"},
        headers=quality,
    ).json()["time_to_read"]
    assert (split["before"]["median_hours_positive"], split["after"]["median_hours_all"]) == (2.5, 8.0)

    fragment = client.get(
        "/api/quality/report", params={"task": "chest-xray", "version": "3", "fragment": "true"}, headers=quality
    )
    assert fragment.status_code == 200 and "Content-Disposition" not in fragment.headers
    assert fragment.text.count("<svg") >= 3 and "AUROC 0.917" in fragment.text and "<script" not in fragment.text
    assert "Operating point at this site" in fragment.text and "No threshold suggested: too few confirmed studies" in fragment.text
    # Times as every page states them, to the minute with the zone (it had read 2026-12-03T07:36:45+00:00).
    assert re.search(r"Generated \d{4}-\d\d-\d\d \d\d:\d\d UTC\.", fragment.text), fragment.text
    download = client.get("/api/quality/report", params={"task": "chest-xray", "version": "3"}, headers=quality)
    assert download.headers["Content-Disposition"] == 'attachment; filename="quality-chest-xray-v3.html"'
    assert download.text.startswith("<!doctype html>")

    page = client.get("/quality")
    assert page.status_code == 200 and "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert client.get("/quality/static/quality.js").status_code == 200


def test_report_is_logged_to_mlflow_against_the_version(app: FastAPI, client: TestClient, add_user: AddUser) -> None:  # noqa: F811
    seed(app.state.session_factory)
    tracking_uri = app.state.settings.resolved_mlflow_tracking_uri
    mlflow = register_versions(tracking_uri, "chest-xray", 3)
    # The quality role is read-only: writing to MLflow is an ml-engineer's action.
    reader = add_user("quinn", "quality")
    assert client.post(
        "/api/quality/report/mlflow", params={"task": "chest-xray", "version": "3"}, headers=reader
    ).status_code == 403
    quality = add_user("emma", "ml-engineer")
    response = client.post("/api/quality/report/mlflow", params={"task": "chest-xray", "version": "3"}, headers=quality)
    assert response.status_code == 200, response.text
    artifact = response.json()["artifact"]
    version = mlflow.get_model_version("chest-xray", "3")
    assert version.tags["quality_report"] == artifact
    assert version.run_id is not None
    local = mlflow.download_artifacts(version.run_id, artifact)
    assert "chest-xray version 3" in Path(local).read_text()
    missing = client.post("/api/quality/report/mlflow", params={"task": "chest-xray", "version": "9"}, headers=quality)
    assert missing.status_code == 404


def test_gate_refuses_too_few_studies_then_promotes_and_rolls_back(
    app: FastAPI, client: TestClient, add_user: AddUser  # noqa: F811
) -> None:
    tracking_uri = app.state.settings.resolved_mlflow_tracking_uri
    mlflow = register_versions(tracking_uri, "chest-xray", 4)
    mlflow.set_registered_model_alias("chest-xray", "champion", "3")
    mlflow.set_registered_model_alias("chest-xray", "challenger", "4")
    engineer = add_user("emma", "ml-engineer")
    assert client.post("/api/quality/promote", json={"task": "chest-xray", "version": "4"}, headers=add_user("quinn", "quality")).status_code == 403
    # A NUL goes into the audit row's detail, which PostgreSQL refuses (a 500): a 422 before anything is done.
    nul = client.post("/api/quality/promote", json={"task": "chest-xray", "version": "4\u0000"}, headers=engineer)
    assert nul.status_code == 422 and "NUL" in nul.text

    seed_pairs(app, 40)
    refused = client.post("/api/quality/promote", json={"task": "chest-xray", "version": "4"}, headers=engineer)
    assert refused.status_code == 409 and "at least 400" in refused.json()["detail"]
    assert str(mlflow.get_model_version_by_alias("chest-xray", "champion").version) == "3"
    assert audit_actions(app) == ["model.promote_refused"]

    seed_pairs(app, 400)
    gate = client.get("/api/quality/compare", params={"task": "chest-xray", "challenger": "4"}, headers=engineer).json()
    assert gate["passed"] and gate["comparison"]["n_paired"] == 440
    # A retrain validated on too few studies is recorded shadow: the answer says what the new champion may do.
    mlflow.set_model_version_tag("chest-xray", "4", "steering", "shadow")
    promoted = client.post("/api/quality/promote", json={"task": "chest-xray", "version": "4"}, headers=engineer)
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["steering"] == "shadow"
    assert str(mlflow.get_model_version_by_alias("chest-xray", "champion").version) == "4"
    assert str(mlflow.get_model_version_by_alias("chest-xray", "previous-champion").version) == "3"
    assert "challenger" not in mlflow.get_registered_model("chest-xray").aliases
    # The champion promoted again: said so, not "no champion results ... to compare version 4 with"; nothing audited.
    again = client.post("/api/quality/promote", json={"task": "chest-xray", "version": "4"}, headers=engineer)
    assert again.status_code == 404 and again.json()["detail"] == "chest-xray version 4 is already champion"

    rolled = client.post("/api/quality/rollback", json={"task": "chest-xray"}, headers=engineer)
    assert rolled.json() == {"task": "chest-xray", "from": "4", "to": "3"}
    assert str(mlflow.get_model_version_by_alias("chest-xray", "champion").version) == "3"
    assert audit_actions(app) == ["model.promote_refused", "model.promote", "model.rollback"]
    # A second rollback (a retry) moves nothing and writes no second audit row.
    again = client.post("/api/quality/rollback", json={"task": "chest-xray"}, headers=engineer)
    assert again.status_code == 200 and again.json()["from"] == again.json()["to"] == "3"
    assert "nothing rolled back" in again.json()["detail"]
    assert str(mlflow.get_model_version_by_alias("chest-xray", "champion").version) == "3"
    assert audit_actions(app) == ["model.promote_refused", "model.promote", "model.rollback"]


def test_gate_refuses_a_sensitivity_drop_it_cannot_bound_below_the_margin(
    app: FastAPI, client: TestClient, add_user: AddUser  # noqa: F811
) -> None:
    seed_pairs(app, 440, challenger_misses=12)
    engineer = add_user("emma", "ml-engineer")
    gate = client.get("/api/quality/compare", params={"task": "chest-xray", "challenger": "4"}, headers=engineer).json()
    assert not gate["passed"]
    comparison = gate["comparison"]
    assert (comparison["positives_champion_only"], comparison["positives_challenger_only"]) == (12, 0)
    # Exact one-sided McNemar, reported for information: 12 of 12 discordant positives against the challenger.
    assert comparison["sensitivity_drop_p"] == pytest.approx(0.5**12)
    # The drop 12/220 = 0.055; Tango's 95% interval 0.031-0.093 is not below the 0.05 margin.
    drop = gate["non_inferiority"]["sensitivity"]
    assert drop["value"] == pytest.approx(12 / 220) and drop["ci_high"] == pytest.approx(0.0929, abs=1e-4)
    assert (drop["non_inferior"], drop["studies"], drop["patients"]) == (False, 220, 220)
    assert gate["reasons"] == [
        "not enough evidence that sensitivity is no more than 0.05 below champion v3's: sensitivity drop (champion's "
        "minus challenger's) 0.055, 95% interval 0.031 to 0.093, on 220 confirmed positives of 220 patients; the "
        "interval's upper bound must be below 0.05 (12 positives flagged by the champion only vs 0 by the challenger "
        "only; McNemar p=0.0002, for information)"
    ]


def test_gate_refuses_a_significant_specificity_drop(app: FastAPI, client: TestClient, add_user: AddUser) -> None:  # noqa: F811
    """Every positive kept, but 23 more of 220 negatives flagged (a retrain's specificity 0.98 -> 0.88 passed before)."""
    seed_pairs(app, 440, challenger_false_alarms=25, champion_false_alarms=2)
    engineer = add_user("emma", "ml-engineer")
    gate = client.get("/api/quality/compare", params={"task": "chest-xray", "challenger": "4"}, headers=engineer).json()
    comparison = gate["comparison"]
    assert (comparison["negatives_challenger_only"], comparison["negatives_champion_only"]) == (25, 2)
    assert comparison["sensitivity_drop_p"] == 1.0
    assert comparison["specificity_drop_p"] == pytest.approx(binomtest(25, 27, 0.5, alternative="greater").pvalue)
    assert not gate["passed"] and gate["reasons"] == [
        "not enough evidence that specificity is no more than 0.05 below champion v3's: specificity drop (champion's "
        "minus challenger's) 0.105, 95% interval 0.064 to 0.155, on 220 confirmed negatives of 220 patients; the "
        "interval's upper bound must be below 0.05 (25 negatives flagged by the challenger only vs 2 by the champion "
        f"only; McNemar p={comparison['specificity_drop_p']:.4f}, for information)"
    ]
    # The quality team sees where the challenger's threshold would have to sit here: its false alarms score 0.8 and
    # every positive 0.9, so 0.9 holds sensitivity and, out of fold, clears all 220 negatives (0.886 at its own).
    quality = add_user("quinn", "quality")
    point = client.get("/api/quality/metrics", params={"task": "chest-xray", "version": "4"}, headers=quality).json()["site_operating_point"]
    assert (point["threshold"], point["n"], point["n_positive"]) == (0.9, 440, 220)
    assert (point["sensitivity"]["value"], point["specificity"]["successes"], point["specificity"]["total"]) == (1.0, 220, 220)
    report = client.get("/api/quality/report", params={"task": "chest-xray", "version": "4", "fragment": "true"}, headers=quality).text
    assert "needs a threshold of 0.900" in report and "specificity 0.886" in report and "Advice only" in report
    # Both operating points are drawn on the site's ROC curve.
    assert "version&#x27;s threshold 0.500" in report and "site threshold 0.900" in report


def test_gate_lets_a_few_false_alarms_through_when_the_champion_has_as_many(
    app: FastAPI, client: TestClient, add_user: AddUser  # noqa: F811
) -> None:
    seed_pairs(app, 440, challenger_false_alarms=6, champion_false_alarms=4)
    engineer = add_user("emma", "ml-engineer")
    gate = client.get("/api/quality/compare", params={"task": "chest-xray", "challenger": "4"}, headers=engineer).json()
    assert gate["passed"], gate["reasons"]
    assert gate["comparison"]["specificity_drop_p"] > 0.3


def test_serving_app_does_not_import_torch(tmp_path: Path) -> None:
    code = (
        "import sys, pathlib\n"
        "from medscreen.app import create_app\n"
        "from service.settings import Settings\n"
        f"create_app(Settings(home=pathlib.Path({str(tmp_path / 'var')!r})))\n"
        "import quality.api, quality.page, quality.gate, quality.drift, quality.cli\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'monai', 'training', 'sklearn'))\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=120)


def test_defer_is_earned_through_quality_review_of_confirmed_studies(
    app: FastAPI, client: TestClient, add_user: AddUser  # noqa: F811
) -> None:
    tracking_uri = app.state.settings.resolved_mlflow_tracking_uri
    mlflow = register_versions(tracking_uri, "chest-xray", 4)
    engineer = add_user("emma", "ml-engineer")
    ask = {"task": "chest-xray", "version": "3", "right": "defer", "source": "St Elsewhere final reads 2026-03"}
    assert client.post("/api/quality/steering", json=ask, headers=add_user("quinn", "quality")).status_code == 403

    seed_pairs(app, 120)  # too few confirmed studies
    refused = client.post("/api/quality/steering", json=ask, headers=engineer)
    assert refused.status_code == 409 and "120 studies; at least 200 needed" in refused.json()["detail"]
    assert "steering" not in mlflow.get_model_version("chest-xray", "3").tags  # still no right recorded: shadow

    seed_pairs(app, 200)
    granted = client.post("/api/quality/steering", json=ask, headers=engineer)
    assert granted.status_code == 200, granted.text
    assert granted.json()["evidence"]["n_studies"] == 320 and granted.json()["evidence"]["kind"] == "site-confirmed"
    # Every positive found and no negative flagged: both lower bounds are recorded, and both clear their floors.
    from quality.statistics import wilson_interval

    assert granted.json()["evidence"]["sensitivity_ci_low"] == pytest.approx(wilson_interval(160, 160)[0])
    assert granted.json()["evidence"]["specificity_ci_low"] == pytest.approx(wilson_interval(160, 160)[0])
    tags = mlflow.get_model_version("chest-xray", "3").tags
    assert tags["steering"] == "defer" and "St Elsewhere" in tags["steering_evidence"]
    # Lowering a right needs no evidence.
    shadow = client.post("/api/quality/steering", json={**ask, "right": "shadow"}, headers=engineer)
    assert shadow.status_code == 200 and mlflow.get_model_version("chest-xray", "3").tags["steering"] == "shadow"
    assert audit_actions(app) == ["model.steering_refused", "model.steering", "model.steering"]


def test_quality_promote_command_gates_promotes_and_names_the_right(
    app: FastAPI, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]  # noqa: F811
) -> None:
    """`medscreen quality promote` runs the same gate as the API, audits, and says what the new champion may do."""
    from medscreen.cli import main

    settings = app.state.settings
    mlflow = register_versions(settings.resolved_mlflow_tracking_uri, "chest-xray", 4)
    mlflow.set_registered_model_alias("chest-xray", "champion", "3")
    mlflow.set_model_version_tag("chest-xray", "4", "steering", "shadow")
    monkeypatch.setenv("MEDSCREEN_HOME", str(settings.home))
    monkeypatch.setenv("MEDSCREEN_DATABASE_URL", settings.resolved_database_url)
    monkeypatch.setenv("MEDSCREEN_MLFLOW_TRACKING_URI", settings.resolved_mlflow_tracking_uri)
    seed_pairs(app, 40)
    assert main(["quality", "promote", "--task", "chest-xray", "--version", "4", "--actor", "emma"]) == 1
    assert "refused" in capsys.readouterr().out
    seed_pairs(app, 400)
    assert main(["quality", "promote", "--task", "chest-xray", "--version", "4", "--actor", "emma"]) == 0
    out = capsys.readouterr().out
    assert "champion -> version 4 (gate passed)" in out and "steering right: shadow" in out
    assert str(mlflow.get_model_version_by_alias("chest-xray", "champion").version) == "4"
    assert audit_actions(app) == ["model.promote_refused", "model.promote"]
    assert main(["quality", "promote", "--task", "chest-xray", "--version", "4", "--actor", "emma"]) == 2
    assert capsys.readouterr().err.endswith("\ncannot: chest-xray version 4 is already champion\n")
    assert audit_actions(app) == ["model.promote_refused", "model.promote"]


def test_a_promotion_the_versions_right_does_not_allow_is_an_audited_refusal(
    app: FastAPI, client: TestClient, add_user: AddUser, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A version tagged defer without the evidence (as MLflow's UI allows) was refused only inside move_champion,
    after the gate's audit row: a traceback from the command (exit code 1, as a failed gate), a 500 from the API, and
    no model.promote_refused row. Forcing the gate does not force the right. What cannot be evaluated at all (no
    champion results, nothing to roll back to) is one line and exit code 2."""
    from medscreen.cli import main

    settings = app.state.settings
    mlflow = register_versions(settings.resolved_mlflow_tracking_uri, "chest-xray", 4)
    mlflow.set_registered_model_alias("chest-xray", "champion", "3")
    monkeypatch.setenv("MEDSCREEN_HOME", str(settings.home))
    monkeypatch.setenv("MEDSCREEN_DATABASE_URL", settings.resolved_database_url)
    monkeypatch.setenv("MEDSCREEN_MLFLOW_TRACKING_URI", settings.resolved_mlflow_tracking_uri)
    promote = ["quality", "promote", "--task", "chest-xray", "--version", "4", "--actor", "emma"]
    assert main(promote) == 2 and "cannot: " in capsys.readouterr().err  # no confirmed studies of both versions yet
    assert main(["quality", "rollback", "--task", "chest-xray", "--actor", "emma"]) == 2
    assert "no champion and previous champion" in capsys.readouterr().err

    mlflow.set_model_version_tag("chest-xray", "4", "steering", "defer")
    seed_pairs(app, 400)
    assert main([*promote, "--force"]) == 1
    assert "refused: chest-xray v4 is recorded as defer without the evidence" in capsys.readouterr().out
    refused = client.post("/api/quality/promote", json={"task": "chest-xray", "version": "4", "force": True},
                          headers=add_user("erin", "ml-engineer"))
    assert refused.status_code == 409 and "recorded as defer without the evidence" in refused.json()["detail"]
    assert audit_actions(app) == ["model.promote_refused", "model.promote_refused"]
    assert str(mlflow.get_model_version_by_alias("chest-xray", "champion").version) == "3"


def test_metrics_and_report_state_the_read_studies_the_version_did_not_score(
    app: FastAPI, client: TestClient, add_user: AddUser  # noqa: F811
) -> None:
    """/api/quality/metrics gave sensitivity 1.000 over ten scored studies and no word of five positive studies the
    version could not score (repro 8): it now counts them beside the figures, with the sensitivity over every read
    study in intended use."""
    from tests.quality.test_quality_metrics import seed_unscored

    seed_unscored(app.state.session_factory)
    quality = add_user("quinn", "quality")
    body = client.get("/api/quality/metrics", params={"task": "chest-xray", "version": "3"}, headers=quality).json()
    assert body["overall"]["sensitivity"]["value"] == 1.0 and body["overall"]["n"] == 10  # unchanged
    unscored = body["unscored"]
    assert (unscored["n"], unscored["read_positive"]) == (7, 6)
    assert unscored["could_not_score"] == {"n": 5, "read_positive": 5, "read_negative": 0}
    assert unscored["out_of_scope"] == {"n": 2, "read_positive": 1, "read_negative": 1}
    assert "7 studies read by a radiologist were not scored by this version" in unscored["note"]
    over_read = body["sensitivity_over_read_in_intended_use"]
    assert (over_read["value"], over_read["successes"], over_read["total"]) == (0.5, 5, 10)
    for fragment in ("true", "false"):  # the page and the download
        text = client.get("/api/quality/report", params={"task": "chest-xray", "version": "3", "fragment": fragment},
                          headers=quality).text
        assert "(could not score: 5, of them read positive: 5; outside intended use: 2, of them read positive: 1)" in text


def seed_challenger_failures(application: FastAPI, n: int) -> None:
    """``n`` studies read positive that the champion scored (and found) and the challenger could not score."""
    with session_scope(application.state.session_factory) as session:
        for i in range(n):
            study = add_study(session, arrived=T0 + timedelta(days=1, minutes=i))
            add_result(session, study, score=0.9, model_version="3")
            add_result(session, study, score=None, outcome="could_not_score", reason="pixel data unreadable",
                       role="challenger", model_version="4")
            add_final_read(session, study, True, read_at=T0 + timedelta(days=1, minutes=i, hours=2))


def test_gate_refuses_a_challenger_that_could_not_score_too_many_read_studies(
    app: FastAPI, client: TestClient, add_user: AddUser  # noqa: F811
) -> None:
    """The gate compares the studies both versions scored: 30 positives the challenger could not score had simply
    dropped out, and it passed. Above MEDSCREEN_QUALITY_MAX_UNSCORED_SHARE (5%) of its read studies in intended use
    it refuses, and promotion with it."""
    tracking_uri = app.state.settings.resolved_mlflow_tracking_uri
    register_versions(tracking_uri, "chest-xray", 4)
    seed_pairs(app, 440)
    seed_challenger_failures(app, 20)  # 20 of 460: 4.3%, allowed
    engineer = add_user("emma", "ml-engineer")
    compare = {"task": "chest-xray", "challenger": "4"}
    gate = client.get("/api/quality/compare", params=compare, headers=engineer).json()
    assert gate["passed"], gate["reasons"]
    comparison = gate["comparison"]
    assert comparison["n_paired"] == 440 and comparison["challenger_unscored_share"] == pytest.approx(20 / 460)
    assert comparison["challenger_unscored"]["could_not_score"] == {"n": 20, "read_positive": 20, "read_negative": 0}
    assert comparison["champion_unscored"]["n"] == 0

    seed_challenger_failures(app, 10)  # 30 of 470: 6.4%
    gate = client.get("/api/quality/compare", params=compare, headers=engineer).json()
    assert not gate["passed"] and gate["comparison"]["n_paired"] == 440
    assert gate["reasons"] == [
        "challenger v4 could not score 30 of the 470 studies in its intended use a radiologist read (6.4%, 30 of them "
        "read positive); the gate allows at most 5.0%: those studies are missing from the comparison"
    ]
    refused = client.post("/api/quality/promote", json={"task": "chest-xray", "version": "4"}, headers=engineer)
    assert refused.status_code == 409 and "could not score 30 of the 470" in refused.json()["detail"]
    assert audit_actions(app) == ["model.promote_refused"]
    # The share is the site's setting.
    from quality.api import gate_rules
    from quality.gate import compare_versions, evaluate_gate

    looser = gate_rules(app.state.settings.model_copy(update={"quality_max_unscored_share": 0.07}))
    with session_scope(app.state.session_factory) as session:
        assert evaluate_gate(compare_versions(session, "chest-xray", "4"), looser).passed


def test_quality_report_command_states_the_read_studies_left_unscored(
    app: FastAPI, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path  # noqa: F811
) -> None:
    """`medscreen quality report` printed 'sensitivity 1.000' on the scored studies alone (repro 8)."""
    from medscreen.cli import main
    from tests.quality.test_quality_metrics import seed_unscored

    settings = app.state.settings
    monkeypatch.setenv("MEDSCREEN_HOME", str(settings.home))
    monkeypatch.setenv("MEDSCREEN_DATABASE_URL", settings.resolved_database_url)
    seed_unscored(app.state.session_factory)
    out_file = tmp_path / "report.html"
    assert main(["quality", "report", "--task", "chest-xray", "--version", "3", str(out_file)]) == 0
    out = capsys.readouterr().out
    assert "10 confirmed studies, sensitivity 1.000" in out
    assert "7 studies read by a radiologist were not scored by this version (could not score: 5, of them read " \
           "positive: 5; outside intended use: 2, of them read positive: 1); those figures are over scored studies only." in out
    assert "sensitivity over every read study in intended use (could-not-score positives as missed): 0.500 (5 of 10)" in out
    assert "could not score: 5, of them read positive: 5" in out_file.read_text()


def test_quality_report_command_prints_na_for_a_figure_there_is_none_of(
    app: FastAPI, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path  # noqa: F811
) -> None:
    """Every study read negative: no sensitivity and no AUROC. The command printed 'sensitivity nan' and 'AUROC nan'
    where the report it had just written says 'n/a'."""
    from medscreen.cli import main

    settings = app.state.settings
    monkeypatch.setenv("MEDSCREEN_HOME", str(settings.home))
    monkeypatch.setenv("MEDSCREEN_DATABASE_URL", settings.resolved_database_url)
    with session_scope(app.state.session_factory) as session:
        for i in range(4):
            study = add_study(session, arrived=T0 + timedelta(hours=i))
            add_result(session, study, score=0.2 if i else 0.7, model_version="3")
            add_final_read(session, study, False, read_at=T0 + timedelta(hours=i, minutes=30))
    out_file = tmp_path / "report.html"
    assert main(["quality", "report", "--task", "chest-xray", "--version", "3", str(out_file)]) == 0
    out = capsys.readouterr().out
    assert "4 confirmed studies, sensitivity n/a, specificity 0.750, AUROC n/a" in out, out
    assert "nan" not in out


def test_a_report_or_figures_of_a_version_or_task_not_registered_are_refused(
    app: FastAPI, client: TestClient, add_user: AddUser, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
    capsys: pytest.CaptureFixture[str], tmp_path: Path,
) -> None:
    """`quality report --version v1` (or 99, or --task chest_xray) wrote a report of "0 confirmed studies ... No study
    read by a radiologist was left unscored by this version", exit 0; with --mlflow a traceback after the file was
    written; /api/quality/metrics answered 200 with empty figures (README review 4, defect 2)."""
    from medscreen.cli import main

    settings = app.state.settings
    register_versions(settings.resolved_mlflow_tracking_uri, "chest-xray", 2)
    monkeypatch.setenv("MEDSCREEN_HOME", str(settings.home))
    monkeypatch.setenv("MEDSCREEN_DATABASE_URL", settings.resolved_database_url)
    monkeypatch.setenv("MEDSCREEN_MLFLOW_TRACKING_URI", settings.resolved_mlflow_tracking_uri)
    seed_pairs(app, 4)  # results of versions 3 and 4, which the registry does not hold
    out = tmp_path / "report.html"
    for version, mlflow in (("v1", False), ("99", False), ("99", True), ("3", True)):
        assert main(["quality", "report", "--task", "chest-xray", "--version", version, str(out),
                     *(["--mlflow"] if mlflow else [])]) == 2
        assert capsys.readouterr().err.endswith(f"\ncannot: chest-xray version {version} is not registered\n")
        assert not out.exists()
    with pytest.raises(SystemExit) as usage:
        main(["quality", "report", "--task", "chest_xray", "--version", "1", str(out)])
    assert usage.value.code == 2 and "invalid choice: 'chest_xray'" in capsys.readouterr().err
    # A version with results here, or a registered one with none yet, is reported.
    for version in ("3", "2"):
        assert main(["quality", "report", "--task", "chest-xray", "--version", version, str(out)]) == 0 and out.exists()

    quality = add_user("quinn", "quality")
    for task, version, detail in (("chest-xray", "99", "chest-xray version 99 is not registered"),
                                  ("chest_xray", "3", "chest_xray is not a task (one of ct-chest, mammography, chest-xray)")):
        missing = client.get("/api/quality/metrics", params={"task": task, "version": version}, headers=quality)
        assert missing.status_code == 404 and missing.json()["detail"] == detail
    for version in ("3", "2"):
        assert client.get("/api/quality/metrics", params={"task": "chest-xray", "version": version}, headers=quality).status_code == 200


def test_the_gate_compares_a_challenger_with_the_registry_champion_not_a_rolled_back_one(
    app: FastAPI, client: TestClient, add_user: AddUser, registered_store: Path  # noqa: F811
) -> None:
    """v1 champion with v3 in shadow (v3 misses 10 positives v1 finds), then v2 promoted and rolled back (v3 agrees with
    it). The gate took the version of the latest champion results, v2, the withdrawn one: v3 was judged against it, in
    /compare, `quality gate`, the report and promotion (review 7, quality figures 1)."""
    import shutil

    tracking_uri = app.state.settings.resolved_mlflow_tracking_uri
    # The session's registered store (shipped chest-xray v1) with versions 2 and 3: no second MLflow schema build.
    shutil.copyfile(registered_store, app.state.settings.home / "mlflow.db")
    mlflow = MlflowClient(tracking_uri, tracking_uri)
    for _ in range(2):
        mlflow.create_model_version("chest-xray", source=str(app.state.settings.home / "no-model"))
    with session_scope(app.state.session_factory) as session:
        # Weeks 1-2 v1 champion finds all 20 positives; weeks 3-4 v2 champion misses the same 10 as v3.
        for phase, (champion, misses) in enumerate((("1", 0), ("2", 10))):
            start = T0 + timedelta(days=14 * phase)
            for i in range(40):
                truth = i < 20
                study = add_study(session, arrived=start + timedelta(minutes=i))
                at = start + timedelta(minutes=i)
                add_result(session, study, score=0.9 if truth and i >= misses else 0.1, model_version=champion, at=at)
                add_result(session, study, score=0.9 if truth and i >= 10 else 0.1, role="challenger", model_version="3", at=at)
                add_final_read(session, study, truth, read_at=at + timedelta(hours=1))
    mlflow.set_registered_model_alias("chest-xray", "champion", "1")
    mlflow.set_registered_model_alias("chest-xray", "previous-champion", "1")
    mlflow.set_registered_model_alias("chest-xray", "challenger", "3")
    engineer = add_user("emma", "ml-engineer")

    gate = client.get("/api/quality/compare", params={"task": "chest-xray", "challenger": "3"}, headers=engineer).json()
    assert gate["comparison"]["champion_version"] == "1" and gate["comparison"]["positives_champion_only"] == 10
    report = client.get("/api/quality/report", params={"task": "chest-xray", "version": "3", "fragment": "true"},
                        headers=add_user("quinn", "quality")).text
    assert "Challenger v3 vs champion v1:" in report
    refused = client.post("/api/quality/promote", json={"task": "chest-xray", "version": "3"}, headers=engineer)
    assert refused.status_code == 409 and "below champion v1's" in refused.json()["detail"]
    assert "10 positives flagged by the champion only" in refused.json()["detail"]


def test_score_drift_of_a_retrained_version_is_against_its_own_validation_scores(
    app: FastAPI, client: TestClient, add_user: AddUser, registered_store: Path  # noqa: F811
) -> None:
    """A retrained v2, registered with its own metrics.json, scoring a week exactly as on its validation set: its
    drift had been measured against the shipped bundle's validation scores, PSI 1.1 "vs validation", an alert every
    week (review 7, quality figures 4). The shipped v1 keeps the shipped bundle's."""
    import json
    import shutil

    from inference.shipped_models import SHIPPED_MODELS_DIR
    from quality.drift import validation_score_distribution, version_validation_distribution

    own = [60, 4, 2, 2, 2, 2, 2, 2, 4, 20]  # v2's validation counts per tenth
    uri = app.state.settings.resolved_mlflow_tracking_uri
    shutil.copyfile(registered_store, app.state.settings.home / "mlflow.db")
    mlflow = MlflowClient(uri, uri)
    run = mlflow.create_run(mlflow.get_experiment_by_name("medscreen-chest-xray").experiment_id)
    table = [{"bin_low": i / 10, "bin_high": (i + 1) / 10, "count": c} for i, c in enumerate(own)]
    mlflow.log_text(run.info.run_id, json.dumps({"evaluations": {"validation": {"reliability": table}}}), "bundle/metrics.json")
    assert str(mlflow.create_model_version("chest-xray", f"{run.info.artifact_uri}/model", run_id=run.info.run_id).version) == "2"
    with session_scope(app.state.session_factory) as session:
        at = T0
        for tenth, count in enumerate(own):
            for _ in range(count):
                at += timedelta(minutes=1)
                add_result(session, add_study(session, arrived=at), score=tenth / 10 + 0.05, model_version="2", at=at)
    drift = client.get("/api/quality/drift", params={"task": "chest-xray", "version": "2"},
                       headers=add_user("quinn", "quality")).json()
    assert drift["reference"] == "validation" and [(w["n"], w["psi"]) for w in drift["weeks"]] == [(100, 0.0)]
    assert [a for a in drift["alerts"] if a["kind"] == "score_psi"] == []
    shipped = validation_score_distribution(SHIPPED_MODELS_DIR, "chest-xray")
    assert version_validation_distribution(uri, SHIPPED_MODELS_DIR, "chest-xray", "1") == shipped != own
