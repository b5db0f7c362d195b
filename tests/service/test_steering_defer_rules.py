"""The `defer` rule on a validation's evidence (service/steering.py): deferral makes the positives a version calls
negative wait, so the lower bound of its sensitivity at its operating point must reach the site's floor, and its
specificity is judged on its lower bound as well (review 4, defect 1)."""

from __future__ import annotations

import pytest

from service.settings import Settings
from service.steering import DeferRules, SteeringEvidence, defer_refusals, defer_rules_from_settings

# The review's site: AUROC lower bound 1.000 and specificity 1.000 on 250 studies, but 20 of the 50 positives under the
# threshold (sensitivity 0.600, Wilson 95% lower bound 0.462).
MISSES_FORTY_PERCENT = SteeringEvidence("site-confirmed", "St Elsewhere", 250, 1.0, 1.0, specificity_ci_low=0.981,
                                        sensitivity=0.6, sensitivity_ci_low=0.462, n_patients=250)


def test_defer_is_refused_on_a_sensitivity_lower_bound_under_the_floor() -> None:
    assert defer_refusals(MISSES_FORTY_PERCENT, DeferRules()) == [
        "sensitivity lower 95% bound 0.462 at the operating point (sensitivity 0.600); at least 0.90 needed"
    ]
    assert defer_refusals(SteeringEvidence(**{**MISSES_FORTY_PERCENT.__dict__, "sensitivity_ci_low": 0.91}), DeferRules()) == []


def test_the_specificity_rule_reads_the_lower_bound_not_the_point() -> None:
    point_above = SteeringEvidence(**{**MISSES_FORTY_PERCENT.__dict__, "sensitivity_ci_low": 0.93, "specificity": 0.74,
                                      "specificity_ci_low": 0.66})
    assert defer_refusals(point_above, DeferRules()) == [
        "specificity lower 95% bound 0.660 at the operating point (specificity 0.740); at least 0.70 needed"
    ]


def test_evidence_recorded_without_the_bounds_earns_nothing() -> None:
    """A right granted before the rule (its evidence has no bounds) is not served as defer any more: validate again."""
    old = SteeringEvidence.from_json('{"kind": "site-confirmed", "source": "St Elsewhere", "n_studies": 400, '
                                     '"auroc_ci_low": 0.93, "specificity": 0.9, "training_source": ""}')
    assert old is not None and [r.split(" at the")[0] for r in defer_refusals(old, DeferRules())] == [
        "no lower 95% bound of sensitivity", "no lower 95% bound of specificity"
    ]


@pytest.mark.parametrize("floor, refused", [(0.90, True), (0.40, False)])
def test_the_sensitivity_floor_is_the_sites_setting(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, floor: float, refused: bool
) -> None:
    assert defer_rules_from_settings(Settings(home=settings.home)) == DeferRules()  # the defaults agree
    monkeypatch.setenv("MEDSCREEN_STEERING_DEFER_MIN_SENSITIVITY", str(floor))
    rules = defer_rules_from_settings(Settings(home=settings.home))
    assert rules.min_sensitivity == floor and bool(defer_refusals(MISSES_FORTY_PERCENT, rules)) is refused
