"""A bundle gets at most what its figures earn, and each `defer` rule refuses on its own (mutation review 3: S1, S2,
S6). Unit-level calls of the rules, and one registration through the real MLflow store."""

from __future__ import annotations

import json
import shutil

import pytest

from service.lifecycle import SteeringRight
from service.model_registry import version_of
from service.steering import DeferRules, SteeringEvidence, defer_refusals, registration_right

EARNING = {"val_auroc_ci_low": 0.9, "n_val": 500, "n_val_positive": 250}
GOOD = SteeringEvidence("site-confirmed", "site A final reads", 900, 0.95, 0.9, training_source="Kermany",
                        specificity_ci_low=0.88, sensitivity=0.96, sensitivity_ci_low=0.93)


@pytest.mark.parametrize(
    "headline, why",
    [
        ({"val_auroc_ci_low": 0.6, "n_val": 500, "n_val_positive": 250}, "AUROC lower 95% bound 0.600 < 0.80"),
        ({"val_auroc_ci_low": 0.95, "n_val": 500, "n_val_positive": 10}, "10 positive and 490 negative"),
        ({}, "no development figures"),
    ],
)
def test_a_bundle_asking_raise_only_gets_shadow_when_its_figures_do_not_earn_it(headline: dict, why: str) -> None:
    right, _, reason = registration_right({"right": "raise-only"}, headline, DeferRules())
    assert right == SteeringRight.shadow
    assert reason.startswith("asked raise-only") and why in reason


def test_a_bundle_asking_raise_only_with_earning_figures_gets_it_and_shadow_is_kept() -> None:
    assert registration_right({"right": "raise-only"}, EARNING, DeferRules())[0] == SteeringRight.raise_only
    assert registration_right({"right": "shadow"}, EARNING, DeferRules())[0] == SteeringRight.shadow


def test_good_evidence_earns_defer() -> None:
    assert defer_refusals(GOOD, DeferRules()) == []
    asked = {"right": "defer", "evidence": json.loads(GOOD.to_json())}
    assert registration_right(asked, EARNING, DeferRules())[0] == SteeringRight.defer


@pytest.mark.parametrize(
    "changes, reason",
    [
        ({"specificity": 0.55, "specificity_ci_low": 0.5},
         "specificity lower 95% bound 0.500 at the operating point (specificity 0.550); at least 0.70 needed"),
        ({"kind": "cross-validation"}, "evidence kind 'cross-validation' is not a site's confirmed studies or a held-out source"),
        ({"n_studies": 199}, "199 studies; at least 200 needed"),
        ({"auroc_ci_low": 0.84}, "AUROC lower 95% bound 0.840; at least 0.85 needed"),
        ({"source": "Kermany"}, "the validation data come from the training source"),
    ],
)
def test_each_defer_rule_refuses_on_its_own(changes: dict, reason: str) -> None:
    evidence = SteeringEvidence(**{**json.loads(GOOD.to_json()), **changes})
    assert defer_refusals(evidence, DeferRules()) == [reason]
    right, _, why = registration_right({"right": "defer", "evidence": json.loads(evidence.to_json())}, EARNING, DeferRules())
    assert right == SteeringRight.raise_only and reason in why


def test_a_registered_bundle_asking_raise_only_is_recorded_with_what_its_figures_earn(registered_store, tmp_path) -> None:
    """The shipped mammography bundle (cross-validated AUROC lower bound 0.49) asking raise-only is recorded shadow."""
    from inference.shipped_models import SHIPPED_MODELS_DIR, log_onnx_bundle

    shutil.copyfile(registered_store, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    folder = tmp_path / "mammography"
    shutil.copytree(SHIPPED_MODELS_DIR / "mammography", folder)
    bundle = json.loads((folder / "bundle.json").read_text())
    bundle["steering"] = {"right": "raise-only"}
    (folder / "bundle.json").write_text(json.dumps(bundle))
    version = log_onnx_bundle(uri, folder).version
    assert version_of(uri, "mammography", version).steering == SteeringRight.shadow
