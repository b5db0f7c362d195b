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
from training.registry import promote

SITE = SteeringEvidence(
    kind="site-confirmed", source="site A final reads 2026-09..11", n_studies=420, auroc_ci_low=0.88, specificity=0.74,
    training_source="Kermany (Guangzhou)",
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
    assert promote(tracking_uri, "chest-xray", v1) is None
    set_version_tags(tracking_uri, "chest-xray", v2, {"steering": "defer"})  # written around set_steering
    with pytest.raises(PromotionRefused, match="defer without the evidence"):
        promote(tracking_uri, "chest-xray", v2)
    with pytest.raises(SteeringRefused):
        move_champion(tracking_uri, "chest-xray", v2)
    set_steering(tracking_uri, "chest-xray", v2, SteeringRight.defer, evidence=SITE, rules=DeferRules())
    assert promote(tracking_uri, "chest-xray", v2) == v1


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
