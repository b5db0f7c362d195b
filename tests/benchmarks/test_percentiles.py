"""The benchmarks' tail figures (p90, p95, p99) are nearest-rank percentiles, never below the median.

``benchmarks/inference.py`` had taken ``samples[int(0.9 * (n - 1))]``: with ``--repeats 2`` its "p90" was the
faster run, below the median (425.0 ms median, 351.9 ms "p90")."""

from __future__ import annotations

import math
import statistics

import pytest

from benchmarks import inference, worklist_api
from benchmarks.percentiles import percentile


@pytest.mark.parametrize("n", [1, 2, 3, 5, 10, 29, 30, 100, 101])
def test_nearest_rank_is_a_sample_at_or_above_the_median(n: int) -> None:
    samples = [float(v) for v in range(n, 0, -1)]  # unsorted on purpose
    for q in (90, 95, 99):
        value = percentile(samples, q)
        assert value in samples and value >= statistics.median(samples)
        assert value == math.ceil(q / 100 * n)  # the smallest sample with q% of them at or below it


def test_nearest_rank_values() -> None:
    assert percentile([10.0, 30.0], 90) == 30.0
    assert percentile(range(1, 101), 99) == 99
    assert percentile(range(1, 101), 50) == 50
    assert math.isnan(percentile([], 99))
    with pytest.raises(ValueError, match="outside"):
        percentile([1.0], 0)


def test_inference_p90_of_two_repeats_is_the_slower_one(monkeypatch: pytest.MonkeyPatch) -> None:
    # Two timed runs of 10 ms and 30 ms (the clock is read at the start and end of each).
    ticks = iter([0.0, 0.010, 1.0, 1.030])
    monkeypatch.setattr(inference.time, "perf_counter", lambda: next(ticks))
    median, p90 = inference._timed(lambda: None, repeats=2, warmup=0)
    assert median == pytest.approx(20.0) and p90 == pytest.approx(30.0)


def test_worklist_p99_is_nearest_rank(capsys: pytest.CaptureFixture[str]) -> None:
    worklist_api.report("sqlite", "saturated", [float(v) for v in range(1, 101)], seconds=1.0)
    assert capsys.readouterr().out.strip() == "| sqlite | saturated | 100 | 50.5 | 99.0 | no |"
