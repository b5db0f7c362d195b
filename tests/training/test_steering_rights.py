"""Steering rights kept with each version in the real MLflow registry: the shipped versions get what their cards
say, `defer` is earned only by validation on another source, and promotion refuses an unearned `defer`."""

from __future__ import annotations

import pytest

from inference.shipped_models import register_shipped_bundles
from service.errors import SteeringRefused
from service.lifecycle import SteeringRight
from service.model_registry import move_champion, set_steering, set_version_tags, version_of
from service.steering import DeferRules, SteeringEvidence
from training.errors import PromotionRefused
from training.registry import make_first_champion

SITE = SteeringEvidence(
    kind="site-confirmed", source="site A final reads 2026-09..11", n_studies=420, auroc_ci_low=0.88, specificity=0.74,
    training_source="Kermany (Guangzhou)", specificity_ci_low=0.71, sensitivity=0.95, sensitivity_ci_low=0.91,
)


def test_shipped_versions_get_the_steering_their_cards_allow(tracking_uri) -> None:
    register_shipped_bundles(tracking_uri)
    rights = {task: version_of(tracking_uri, task, "1") for task in ("chest-xray", "mammography", "ct-chest")}
    assert {task: v.steering if v else None for task, v in rights.items()} == {
        "chest-xray": SteeringRight.raise_only,  # validated only on its own source
        "mammography": SteeringRight.shadow,  # card: cross-validated AUROC 0.58, far below the 0.85 goal
        "ct-chest": SteeringRight.shadow,  # card: must not steer clinical priority
    }


def test_defer_is_earned_only_by_other_source_evidence_meeting_the_thresholds(tracking_uri) -> None:
    register_shipped_bundles(tracking_uri)
    rules = DeferRules()
    with pytest.raises(SteeringRefused, match="no validation on data from another source"):
        set_steering(tracking_uri, "chest-xray", "1", SteeringRight.defer, evidence=None, rules=rules)
    weak = SteeringEvidence("site-confirmed", "site A", n_studies=150, auroc_ci_low=0.80, specificity=0.6)
    with pytest.raises(SteeringRefused) as refused:
        set_steering(tracking_uri, "chest-xray", "1", SteeringRight.defer, evidence=weak, rules=rules)
    assert "150 studies; at least 200" in str(refused.value) and "lower 95% bound 0.800" in str(refused.value)
    same_source = SteeringEvidence("held-out-source", "Kermany", 900, 0.95, 0.9, training_source="Kermany")
    with pytest.raises(SteeringRefused, match="come from the training source"):
        set_steering(tracking_uri, "chest-xray", "1", SteeringRight.defer, evidence=same_source, rules=rules)
    assert version_of(tracking_uri, "chest-xray", "1").steering == SteeringRight.raise_only
    set_steering(tracking_uri, "chest-xray", "1", SteeringRight.defer, evidence=SITE, rules=rules)
    version = version_of(tracking_uri, "chest-xray", "1")
    assert version is not None and version.steering == SteeringRight.defer
    assert SteeringEvidence.from_json(version.tags["steering_evidence"]) == SITE


def test_promotion_refuses_a_version_claiming_defer_without_evidence(tracking_uri, make_bundle) -> None:
    from inference.shipped_models import log_onnx_bundle

    v1 = log_onnx_bundle(tracking_uri, make_bundle(val_auroc=0.90)).version
    v2 = log_onnx_bundle(tracking_uri, make_bundle(val_auroc=0.95)).version
    set_version_tags(tracking_uri, "chest-xray", v1, {"steering": "defer"})  # written around set_steering
    with pytest.raises(PromotionRefused, match="defer without the evidence"):
        make_first_champion(tracking_uri, "chest-xray", v1, rules=DeferRules())
    set_version_tags(tracking_uri, "chest-xray", v1, {"steering": "shadow"})
    make_first_champion(tracking_uri, "chest-xray", v1, rules=DeferRules())
    set_version_tags(tracking_uri, "chest-xray", v2, {"steering": "defer"})
    with pytest.raises(SteeringRefused):
        move_champion(tracking_uri, "chest-xray", v2)
    set_steering(tracking_uri, "chest-xray", v2, SteeringRight.defer, evidence=SITE, rules=DeferRules())
    assert move_champion(tracking_uri, "chest-xray", v2) == v1


def test_a_training_run_earns_raise_only_from_its_own_figures_and_never_defer() -> None:
    from service.steering import RAISE_ONLY_MIN_AUROC_CI_LOW, RAISE_ONLY_MIN_PER_CLASS, development_right

    assert development_right(0.984, 5216, 3875)["right"] == "raise-only"
    assert development_right(RAISE_ONLY_MIN_AUROC_CI_LOW, 200, 100)["right"] == "raise-only"
    weak = development_right(0.62, 5216, 3875)
    assert weak["right"] == "shadow" and "0.620" in weak["why"]
    assert development_right(0.84, 170, 62, floor=0.85)["right"] == "shadow"  # a task may ask more (mammography)
    # A perfect bootstrap interval on a handful of studies (a retrain's 4 held-out studies gave 1.000-1.000).
    few = development_right(1.0, 4, 2)
    assert few["right"] == "shadow" and f"at least {RAISE_ONLY_MIN_PER_CLASS} of each" in few["why"]
    assert development_right(1.0, 2 * RAISE_ONLY_MIN_PER_CLASS, RAISE_ONLY_MIN_PER_CLASS)["right"] == "raise-only"
    assert development_right(1.0, 1000, 1000 - RAISE_ONLY_MIN_PER_CLASS + 1)["right"] == "shadow"
    assert all(development_right(x, 5216, 3875)["right"] != "defer" for x in (0.0, 0.5, 0.99, 1.0))


@pytest.mark.parametrize("task", ["chest-xray", "mammography", "ct-chest"])
def test_no_shipped_bundle_claims_more_than_its_own_figures_earn(task: str) -> None:
    """The shipped files were written before the rule: none of them may hold more than it grants now."""
    import json

    from inference.shipped_models import SHIPPED_MODELS_DIR
    from service.steering import development_right

    folder = SHIPPED_MODELS_DIR / task
    headline = json.loads((folder / "metrics.json").read_text())["headline"]
    claimed = json.loads((folder / "bundle.json").read_text())["steering"]["right"]
    earned = development_right(headline["val_auroc_ci_low"], headline["n_val"], headline["n_val_positive"])["right"]
    order = ["shadow", "raise-only", "defer"]
    assert order.index(claimed) <= order.index(earned)


def _store_copy(registered_store, tmp_path) -> str:
    import shutil

    shutil.copyfile(registered_store, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_a_version_without_a_known_right_is_shadow_until_start_up_records_what_its_bundle_earns(
    registered_store, tmp_path
) -> None:
    """A site first started before rights were recorded has v1 of each shipped model without a ``steering`` tag (so
    has a version registered with MLflow's own client, or a tag with a typo). Such a version had been served as
    raise-only: the mammography model (cross-validated AUROC 0.58, card: shadow) raised positives and wrote SRs.
    Now it is shadow, and start-up records on it the right its own logged bundle asks and earns."""
    from mlflow.tracking import MlflowClient

    from inference.champions import ModelSelector

    uri = _store_copy(registered_store, tmp_path)
    client = MlflowClient(uri, uri)
    for task in ("chest-xray", "mammography", "ct-chest"):
        client.delete_model_version_tag(task, "1", "steering")
        assert version_of(uri, task, "1").steering == SteeringRight.shadow
    selector = ModelSelector(uri, tmp_path / "cache", intra_op_threads=1, refresh_s=0)
    assert selector.load("mammography", "1").steering == SteeringRight.shadow

    register_shipped_bundles(uri)  # start-up on the upgraded site
    assert {task: client.get_model_version(task, "1").tags.get("steering") for task in ("chest-xray", "mammography", "ct-chest")} == {
        "chest-xray": "raise-only", "mammography": "shadow", "ct-chest": "shadow",
    }
    set_version_tags(uri, "chest-xray", "1", {"steering": "raise_only"})  # an unknown value
    assert version_of(uri, "chest-xray", "1").steering == SteeringRight.shadow


@pytest.mark.parametrize(("task", "earned"), [("mammography", "shadow"), ("chest-xray", "raise-only")])
def test_a_bundle_asking_defer_without_evidence_is_recorded_with_what_its_figures_earn(
    registered_store, tmp_path, task: str, earned: str
) -> None:
    """Refused defer had fallen back to raise-only by fiat, whatever the figures: a mammography bundle (lower AUROC
    bound 0.49) asking defer became raise-only."""
    import json
    import shutil

    from inference.shipped_models import SHIPPED_MODELS_DIR, log_onnx_bundle

    uri = _store_copy(registered_store, tmp_path)
    folder = tmp_path / task
    shutil.copytree(SHIPPED_MODELS_DIR / task, folder)
    bundle = json.loads((folder / "bundle.json").read_text())
    bundle["steering"] = {"right": "defer"}
    (folder / "bundle.json").write_text(json.dumps(bundle))
    version = log_onnx_bundle(uri, folder).version
    assert version_of(uri, task, version).steering.value == earned


def test_a_bundle_without_figures_or_a_known_right_is_recorded_shadow(tracking_uri, make_bundle) -> None:
    from inference.shipped_models import log_onnx_bundle

    assert version_of(tracking_uri, "chest-xray", log_onnx_bundle(tracking_uri, make_bundle()).version).steering == SteeringRight.shadow


HELD_OUT = {"kind": "held-out-source", "source": "NIH ChestX-ray14 sample", "n_studies": 250, "auroc_ci_low": 0.86,
            "specificity": 0.75, "training_source": "Kermany (Guangzhou)", "specificity_ci_low": 0.71, "sensitivity": 0.96,
            "sensitivity_ci_low": 0.91}


def test_the_sites_defer_thresholds_apply_at_registration_and_at_promotion(
    registered_store, tmp_path, monkeypatch, capsys
) -> None:
    """A site that tightened MEDSCREEN_STEERING_DEFER_* (1000 studies, lower bound 0.90) had them applied only by
    POST /api/quality/steering: `register-shipped --update` recorded a bundle's defer on 250 studies (lower bound 0.86)
    under the default thresholds, and promotion let such a version become champion."""
    import json
    import shutil

    from inference.shipped_models import SHIPPED_MODELS_DIR
    from medscreen.cli import main
    from quality.api import gate_rules
    from quality.errors import GateRefused
    from quality.gate import promote_through_gate
    from service.db import make_engine, make_session_factory
    from service.settings import Settings
    from tests.training.confirmed_pairs import seed_confirmed_pairs

    uri = _store_copy(registered_store, tmp_path)
    database_url = f"sqlite:///{tmp_path / 'medscreen.db'}"
    for key, value in {"HOME": str(tmp_path), "MLFLOW_TRACKING_URI": uri, "DATABASE_URL": database_url,
                       "STEERING_DEFER_MIN_STUDIES": "1000", "STEERING_DEFER_MIN_AUROC_CI_LOW": "0.90"}.items():
        monkeypatch.setenv(f"MEDSCREEN_{key}", value)
    upgraded = tmp_path / "models" / "chest-xray"
    shutil.copytree(SHIPPED_MODELS_DIR / "chest-xray", upgraded)
    bundle = json.loads((upgraded / "bundle.json").read_text())
    bundle["steering"] = {"right": "defer", "evidence": HELD_OUT}
    (upgraded / "bundle.json").write_text(json.dumps(bundle))
    assert main(["models", "register-shipped", "--update", "--models-dir", str(upgraded.parent)]) == 0
    assert "chest-xray version 2: registered as challenger" in capsys.readouterr().out
    assert version_of(uri, "chest-xray", "2").steering == SteeringRight.raise_only  # what its figures earn

    # Recorded defer under the default thresholds (as the API of another site would grant it): refused here.
    set_steering(uri, "chest-xray", "2", SteeringRight.defer, evidence=SteeringEvidence(**HELD_OUT), rules=DeferRules())
    seed_confirmed_pairs(database_url, 440, champion="1", challenger="2")
    session = make_session_factory(make_engine(database_url))()
    with pytest.raises((SteeringRefused, GateRefused), match="1000 needed"):
        promote_through_gate(session, uri, "chest-xray", "2", actor="emma", rules=gate_rules(Settings()), force=True)
    session.close()
    assert str(version_of(uri, "chest-xray", "1").aliases) == "('champion',)"


def test_a_raise_only_recorded_under_earlier_rules_is_served_only_while_its_figures_earn_it(
    registered_store, tmp_path
) -> None:
    """Before 83e720a every chest training run was recorded raise-only: a site upgrading with such a version (here
    trained on 8 films: n_val 8) kept raising every film. It is served as shadow now, with a WARNING; a reviewer's
    audited grant of raise-only (quality steering) stands."""
    from inference.champions import ModelSelector
    from service.model_registry import served_right

    uri = _store_copy(registered_store, tmp_path)
    rules = DeferRules()
    assert served_right(version_of(uri, "chest-xray", "1"), rules)[0] == SteeringRight.raise_only  # its figures earn it
    set_version_tags(uri, "chest-xray", "1", {"n_val": "8", "n_val_positive": "4", "val_auroc_ci_low": "0"})
    right, why = served_right(version_of(uri, "chest-xray", "1"), rules)
    assert right == SteeringRight.shadow and why is not None and "development figures" in why
    selector = ModelSelector(uri, tmp_path / "cache", intra_op_threads=1, refresh_s=0)
    assert selector.load("chest-xray", "1").steering == SteeringRight.shadow
    set_steering(uri, "mammography", "1", SteeringRight.raise_only, evidence=None, rules=rules, granted_by="qa-lead")
    assert served_right(version_of(uri, "mammography", "1"), rules)[0] == SteeringRight.raise_only
