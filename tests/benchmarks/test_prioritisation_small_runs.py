"""``benchmarks/prioritisation.py`` at small settings prints its figures: it had crashed with a StatisticsError
(``--days 1``; ``--days 2 --per-day 50``, with no missed positive) and printed "± nan" next to "met" with one seed."""

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
