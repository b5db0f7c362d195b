"""``benchmarks/prioritisation.py`` at small settings prints its figures: it had crashed with a StatisticsError
(``--days 1``; ``--days 2 --per-day 50``, with no missed positive) and printed "± nan" next to "met" with one seed.
It draws a study's call only from per-study figures: ct-chest's per-patch figures had been used as series rates."""

from __future__ import annotations

import math

import pytest

from benchmarks import prioritisation
from service.settings import Settings
from worklist.policy import policy_from_settings


def test_a_short_run_without_missed_positives_gives_no_mean_instead_of_crashing(settings: Settings) -> None:
    row = prioritisation.simulate(policy_from_settings(settings), prioritisation.load_tasks(), days=2, per_day=50, seed=0)
    assert math.isnan(row["fifo_missed_mean"]) and math.isnan(row["ai_missed_max"])
    assert not math.isnan(row["fifo_all_mean"])


def test_one_seed_has_no_interval() -> None:
    row = {"fifo_tp_mean": 10.0, "ai_tp_mean": 5.0, "ai_p99_neg": 30.0, "fifo_p99_all": 31.0}
    change, diff, error = prioritisation.summarise([row])
    assert (change, diff, error) == (-0.5, -1.0, None)
    assert prioritisation.summarise([row, {**row, "ai_p99_neg": 32.0}])[2] == pytest.approx(1.0)


def test_small_runs_print_their_figures(capsys: pytest.CaptureFixture[str]) -> None:
    prioritisation.main(["--days", "2", "--per-day", "50", "--seeds", "1"])
    out = capsys.readouterr().out
    assert "nan" not in out
    assert "n/a (no missed positives)" in out and "one seed: no interval" in out


def test_one_day_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        prioritisation.main(["--days", "1"])
    assert stopped.value.code == 2
    assert "--days: must be 2 or more, got 1 (day 1 starts from an empty list and is not counted)" in capsys.readouterr().err


def test_ct_chest_per_patch_figures_are_not_used_as_per_study_rates(capsys: pytest.CaptureFixture[str]) -> None:
    """Stats review 4, defect 8: the shipped ct-chest headline (0.909 / 0.962) is per reader-mark patch and per
    candidate patch, yet each CT study's call had been drawn with it, and `--steering defer` deferred CT negatives
    on it. Its series figures (2 of 3 called, none without a nodule) give no specificity: no call is simulated."""
    mix = {task.task: task for task in prioritisation.load_tasks("defer")}
    ct, chest = mix["ct-chest"], mix["chest-xray"]
    assert ct.sensitivity is None and ct.specificity is None
    assert "per reader-mark patch and per candidate patch" in ct.source and "series called 2 of 3" in ct.source
    assert chest.sensitivity is not None and chest.source == "metrics.json"
    studies = prioritisation.simulate_arrivals(prioritisation.random.Random(0), 2, 100, list(mix.values()))
    ct_studies = [s for s in studies if s.modality == "CT"]
    assert ct_studies and all(not s.has_model and s.model_call is None for s in ct_studies)
    facts = prioritisation._facts(ct_studies[0], with_model=True)
    assert facts.state == "not_applicable" and facts.champion is None
    prioritisation.main(["--days", "2", "--per-day", "50", "--seeds", "1", "--steering", "defer"])
    out = capsys.readouterr().out
    assert "ct-chest" in out and "no model call simulated" in out and "0.909 specificity 0.962" not in out


def test_a_series_model_with_series_of_both_kinds_gives_series_rates() -> None:
    headline = {"sensitivity": 0.9, "specificity": 0.95, "threshold": 0.5}
    series = [{"positive_marks": 3, "series_score": 0.8}, {"positive_marks": 2, "series_score": 0.2},
              {"positive_marks": 0, "series_score": 0.7}, {"positive_marks": 0, "series_score": 0.1},
              {"positive_marks": 0, "series_score": 0.3}, {"positive_marks": 0, "series_score": 0.4}]
    assert prioritisation.per_study_rates({"headline": headline, "series_validation": series}) == (
        0.5, 0.75, "metrics.json series_validation, per series")
    assert prioritisation.per_study_rates({"headline": headline}) == (0.9, 0.95, "metrics.json")
