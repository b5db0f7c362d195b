"""The gate's per-class share, and a retrained version's own site never validating it (mutation review 3: G1, S3).
The real app on SQLite and a real MLflow registry, as in test_quality_api."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from quality.gate import GateRules, compare_versions, evaluate_gate
from service.db import session_scope
from tests.quality.quality_rows import add_final_read, add_result, add_study, quality_db  # noqa: F401
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
    "n, positives, reasons",
    [
        # 9 positives cannot bound a sensitivity drop either (upper bound 0.30 with both versions agreeing on all).
        (450, 9, ["9 positive studies (2.0%); the gate needs at least 10% per class", "not enough evidence that sensitivity"]),
        # Exactly 10%, and enough positives for agreement on all of them to bound the drop below 0.05 (0.049).
        (750, 75, []),
    ],
)
def test_the_gate_needs_a_tenth_of_each_class(
    app: FastAPI, client: TestClient, add_user: AddUser, n: int, positives: int, reasons: list[str]  # noqa: F811
) -> None:
    """A comparison with 9 positives does not pass, however well the versions agree."""
    seed_with_positives(app, n, positives)
    gate = client.get("/api/quality/compare", params={"task": "chest-xray", "challenger": "4"},
                      headers=add_user("emma", "ml-engineer")).json()
    assert gate["comparison"]["n_paired"] == n and gate["comparison"]["challenger"]["n_positive"] == positives
    assert [r[: len(start)] for r, start in zip(gate["reasons"], reasons, strict=False)] == reasons
    assert len(gate["reasons"]) == len(reasons) and gate["passed"] is (not reasons)


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


def test_the_gate_asks_for_non_inferiority_not_only_no_significant_drop(quality_db) -> None:  # noqa: F811
    """At the gate's minimum evidence (400 studies, 40 positive) a challenger that misses 4 of the 38 positives the
    champion finds, and finds none it misses (sensitivity 0.950 -> 0.850), had passed: McNemar's p = 0.0625 (review
    4, defect 3). The upper bound of the drop's 95% interval (Tango: 0.231) must be below the 0.05 margin."""
    with session_scope(quality_db) as session:
        for i in range(400):
            truth = i < 40
            study = add_study(session, arrived=T0 + timedelta(minutes=i))
            add_result(session, study, score=0.9 if truth and i >= 2 else 0.1, model_version="1")
            add_result(session, study, score=0.9 if truth and i >= 6 else 0.1, role="challenger", model_version="2")
            add_final_read(session, study, truth, read_at=T0 + timedelta(minutes=i, hours=1))
        comparison = compare_versions(session, "chest-xray", "2", "1")
    decision = evaluate_gate(comparison, GateRules())
    assert comparison.sensitivity_drop_p == pytest.approx(0.0625)  # still reported
    sensitivity, specificity = decision.drops
    assert sensitivity.value == pytest.approx(0.1) and sensitivity.ci_high == pytest.approx(0.2305, abs=1e-4)
    assert (sensitivity.non_inferior, specificity.non_inferior) == (False, True)
    assert not decision.passed and decision.reasons == [
        "not enough evidence that sensitivity is no more than 0.05 below champion v1's: sensitivity drop (champion's minus "
        "challenger's) 0.100, 95% interval 0.004 to 0.231, on 40 confirmed positives of 40 patients; the interval's "
        "upper bound must be below 0.05 (4 positives flagged by the champion only vs 0 by the challenger only; McNemar "
        "p=0.0625, for information)"
    ]
    # A wider margin is the site's to set; at 0.25 the same evidence is enough.
    assert evaluate_gate(comparison, GateRules(margin=0.25)).passed
    assert decision.to_dict()["non_inferiority"]["sensitivity"]["ci_high"] == sensitivity.ci_high


def test_a_patients_repeated_studies_widen_the_drops_interval() -> None:
    from quality.gate import PairedCalls

    alone = PairedCalls(studies=200, patients=200, champion_only=4, challenger_only=2)
    clustered = PairedCalls(studies=200, patients=50, champion_only=4, challenger_only=2, design_effect=4.0)
    assert alone.drop(0.05)[0] == clustered.drop(0.05)[0] == pytest.approx(0.01)
    assert alone.drop(0.05)[2] < 0.05 < clustered.drop(0.05)[2]


def test_the_gate_leaves_out_the_studies_a_version_may_have_been_trained_on(quality_db) -> None:  # noqa: F811
    """`export-training` then `retrain`: a re-score of the exported studies queues the challenger on them, and the
    gate had paired the versions on every study both scored, so 300 training studies (where the challenger is right)
    outweighed 14 new positives it missed (review 4, defect 2). Studies exported for the task at or before a
    version's first result are left out of its figures and of the comparison, and counted."""
    from quality.metrics import load_paired_cases
    from service.audit import record_audit
    from service.db import utcnow

    start = utcnow() - timedelta(days=30)  # the export rows are stamped now: the champion's results come before
    with session_scope(quality_db) as session:
        exported = []
        for i in range(30):  # phase 1: the champion's studies, read and exported for training
            truth = i % 2 == 0
            study = add_study(session, arrived=start + timedelta(minutes=i))
            add_result(session, study, score=0.9 if truth else 0.1, model_version="1", at=start + timedelta(minutes=i, seconds=5))
            add_final_read(session, study, truth, read_at=start + timedelta(minutes=i, hours=2))
            record_audit(session, "cli:ml", "study.export", "study", study.study_instance_uid, {"task": "chest-xray"})
            exported.append((study, truth))
        other_task = add_study(session, arrived=start + timedelta(hours=5))  # exported for another task: still evidence
        record_audit(session, "cli:ml", "study.export", "study", other_task.study_instance_uid, {"task": "mammography"})
        session.flush()
        # Version 2 is trained on the export, then scores the exported studies again (a re-score) and new ones.
        for study, truth in exported:
            add_result(session, study, score=0.9 if truth else 0.1, role="challenger", model_version="2")
        for study in [other_task]:
            add_result(session, study, score=0.1, model_version="1")
            add_result(session, study, score=0.1, role="challenger", model_version="2")
            add_final_read(session, study, False, read_at=start + timedelta(hours=6))
        session.flush()
        later = add_study(session, arrived=start + timedelta(days=1))  # read and exported after v2 was in use
        add_result(session, later, score=0.9, model_version="1")
        add_result(session, later, score=0.9, role="challenger", model_version="2")
        add_final_read(session, later, True, read_at=start + timedelta(days=1, hours=1))
        record_audit(session, "cli:ml", "study.export", "study", later.study_instance_uid, {"task": "chest-xray"})
        session.flush()

        challenger = load_paired_cases(session, task="chest-xray", model_version="2")
        champion = load_paired_cases(session, task="chest-xray", model_version="1")
        comparison = compare_versions(session, "chest-xray", "2", "1")
    assert {c.study_id for c in challenger} == {other_task.id, later.id}
    assert len(champion) == 32  # v1 was in use before the export: all its studies count
    left_out = challenger.unscored_of("chest-xray", "2")
    assert (left_out.trained_on, left_out.trained_on_positive, left_out.n) == (30, 15, 0)
    assert "30 scored studies (15 read positive) were left out of the figures: exported for training before this " \
           "version's first result" in left_out.sentence()
    assert (comparison.n_paired, comparison.left_out_trained_on) == (2, 30)
    assert comparison.to_dict()["trained_on_note"].startswith("30 studies both versions scored and a radiologist read are left out")


def test_defer_needs_the_sites_sensitivity_at_the_operating_point(quality_db, registered_store, tmp_path) -> None:  # noqa: F811
    """Scores run low at this site: 20 of 50 positives fall under the version's threshold, yet AUROC (lower bound
    1.000) and specificity (1.000) had earned `defer`, letting those positives wait up to the aging cap (review 4,
    defect 1). The evidence now records the sensitivity and both lower bounds, and the sensitivity bound refuses."""
    import shutil

    from quality.statistics import wilson_interval
    from quality.steering import grant_steering, site_evidence
    from service.errors import SteeringRefused
    from service.lifecycle import SteeringRight
    from service.model_registry import version_of
    from service.steering import DeferRules

    shutil.copyfile(registered_store, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with session_scope(quality_db) as session:
        for i in range(250):
            truth = i < 50
            # positives 0.30-0.95 (20 of 50 under the threshold 0.5), negatives 0.02-0.27
            score = (0.30 + 0.0065 * i if i < 20 else 0.60 + 0.01 * (i - 20)) if truth else 0.02 + 0.001 * (i - 50)
            study = add_study(session, arrived=T0 + timedelta(minutes=i))
            add_result(session, study, score=score, threshold=0.5, model_version="1")
            add_final_read(session, study, truth, read_at=T0 + timedelta(minutes=i, hours=1))
        evidence = site_evidence(session, "chest-xray", "1", site="St Elsewhere", training_source="")
        with pytest.raises(SteeringRefused, match=r"sensitivity lower 95% bound 0\.462 at the operating point "
                                                  r"\(sensitivity 0\.600\); at least 0\.90 needed$"):
            grant_steering(session, uri, "chest-xray", "1", SteeringRight.defer, actor="emma", site="St Elsewhere",
                           rules=DeferRules())
    assert evidence is not None and (evidence.auroc_ci_low, evidence.specificity, evidence.sensitivity) == (1.0, 1.0, 0.6)
    assert (evidence.sensitivity_ci_low, evidence.specificity_ci_low) == (wilson_interval(30, 50)[0], wilson_interval(200, 200)[0])
    assert evidence.n_patients == 250
    assert version_of(uri, "chest-xray", "1").steering == SteeringRight.raise_only  # as shipped
