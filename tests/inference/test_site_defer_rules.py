"""Every place that loads a version for scoring, or brings one back, judges a recorded ``defer`` by the site's
``MEDSCREEN_STEERING_DEFER_*``, not the defaults: the scoring workers of ``medscreen serve`` and ``medscreen score``
had checked it against the defaults (200 studies, 0.85, 0.70) whatever the site had set."""

from __future__ import annotations

from pathlib import Path

from inference.worker_process import build_worker
from service.settings import Settings
from service.steering import DeferRules


def test_the_scoring_worker_judges_defer_by_the_sites_rules(tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path / "var", steering_defer_min_studies=900, steering_defer_min_auroc_ci_low=0.9,
        steering_defer_min_specificity=0.95,
    )
    settings.home.mkdir(parents=True)
    worker = build_worker(settings)
    assert worker.selector.defer_rules == DeferRules(900, 0.9, 0.95)
