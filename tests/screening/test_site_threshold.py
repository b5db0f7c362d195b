"""A site's own alert threshold: ``medscreen screening calibrate`` on a ``screen-emr --all`` output, and the
setting (or ``--threshold``) that screen-emr and the API then use."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from medscreen.cli import main
from screening.errors import CalibrationError
from screening.site_threshold import _resampled_thresholds, _threshold, risks_of_output, site_threshold


def test_the_threshold_flags_at_most_the_budget_and_keeps_ties_together() -> None:
    risks = np.array([0.9, 0.8, 0.8, 0.5, *([0.1] * 96)])
    assert _threshold(risks, 0.01) == 0.9  # one child of 100
    two = _threshold(risks, 0.02)  # the second and third tie: neither is flagged rather than one of them
    assert two > 0.8 and np.sum(risks >= two) == 1
    assert np.sum(risks >= _threshold(risks, 0.03)) == 3
    assert np.sum(risks >= _threshold(risks, 0.005)) == 0


def _sorted_rule(risks: np.ndarray, budget: float) -> float:
    """The threshold rule as first written, on the children sorted one by one: the reference for the counting form."""
    allowed = math.floor(budget * len(risks) + 1e-9)
    ordered = np.sort(risks)[::-1]
    if allowed <= 0:
        return float(np.nextafter(ordered[0], np.inf))
    if allowed >= len(ordered):
        return float(ordered[-1])
    cut = ordered[allowed - 1]
    return float(cut) if ordered[allowed] < cut else float(np.nextafter(cut, np.inf))


def test_each_resampled_threshold_is_the_threshold_of_that_resample() -> None:
    """The rule counts the children of each distinct risk, and the interval's resamples are drawn as such counts (one
    sort in all); each must be exactly what the rule written on sorted children gives, on the children and on each
    resample written out, ties, an empty budget and a whole one included."""
    rng = np.random.default_rng(1)
    for trial in range(200):
        risks = rng.integers(0, 8, size=int(rng.integers(1, 60))) / 7.0
        budget = float(rng.choice([0.0, 0.01, 0.1, 0.3, 0.5, 1.0]))
        assert _threshold(risks, budget) == _sorted_rule(risks, budget)
        values, copies = np.unique(risks, return_counts=True)
        draws = np.random.default_rng(trial)  # the same draws as the function's
        for got in _resampled_thresholds(risks, budget, 5, trial):
            counts = draws.multinomial(len(risks), copies[::-1] / len(risks))
            assert got == _sorted_rule(np.repeat(values[::-1], counts), budget)


def test_too_few_children_or_an_output_of_flags_only_cannot_set_a_threshold(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match="needs at least 1000"):
        site_threshold([0.1] * 999, 0.01, 0.5)
    flags_only = tmp_path / "flags.ndjson"
    flags_only.write_text("".join(json.dumps({"status": "screened", "risk": 0.9, "threshold": 0.5, "model_version": "v",
                                              "flagged": True}) + "\n" for _ in range(3)))
    with pytest.raises(CalibrationError, match="--all"):
        risks_of_output(flags_only)
    mixed = tmp_path / "mixed.ndjson"
    mixed.write_text("".join(json.dumps({"status": "screened", "risk": 0.1, "threshold": t, "model_version": v,
                                         "flagged": False}) + "\n" for t, v in ((0.5, "v1"), (0.4, "v2"))))
    with pytest.raises(CalibrationError, match="mixes screener versions"):
        risks_of_output(mixed)


def test_a_site_that_flags_beyond_its_budget_gets_a_threshold_that_holds_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A population with a twentieth of cases flags several times the 1% budget at the shipped threshold;
    calibrate reads the threshold that holds the budget from its own children, and screen-emr flags that rate
    with it, given as the setting or on the command line."""
    children = tmp_path / "children.ndjson"
    assert main(["screening", "simulate", "--n", "1200", "--case-share", "0.05", "--out", str(children)]) == 0
    everyone = tmp_path / "all.ndjson"
    capsys.readouterr()
    assert main(["screen-emr", str(children), "--out", str(everyone), "--all", "--no-store", "--quiet"]) == 0
    before = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert before["threshold_from"] == "the budget"
    assert before["flag_rate"] > 0.02  # beyond twice the budget: screen-emr warned and named calibrate
    assert main(["screening", "calibrate", str(everyone), "--budget", "0.01"]) == 0
    captured = capsys.readouterr()
    found = json.loads(captured.out)
    assert "MEDSCREEN_SCREENING_RISK_THRESHOLD=" in captured.err
    assert found["children"] == before["screened"] + before["incomplete"]
    assert found["flag_rate_at_site_threshold"] <= 0.01 < found["current_flag_rate"]
    assert found["site_threshold"] > found["current_threshold"] and found["still_flagged_at_site_threshold"] < found["flagged_now"]
    low, high = found["site_threshold_95_interval"]
    assert low <= found["site_threshold"] <= high
    assert found["simulated_children_flag_rate_at_site_threshold"] <= 0.01  # stricter than the shipped threshold there

    for extra in ([], ["--threshold", str(found["site_threshold"])]):  # the setting, then the option over another setting
        monkeypatch.setenv("MEDSCREEN_SCREENING_RISK_THRESHOLD", str(found["site_threshold"]) if not extra else "0.99")
        flags = tmp_path / f"flags{len(extra)}.ndjson"
        assert main(["screen-emr", str(children), "--out", str(flags), "--no-store", "--quiet", *extra]) == 0
        after = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
        assert after["threshold"] == pytest.approx(found["site_threshold"]) and after["threshold_from"] == "the site's own threshold"
        assert after["flagged"] == found["still_flagged_at_site_threshold"] and after["flag_rate"] <= 0.01


def test_the_api_loads_its_screener_with_the_sites_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    """The API's screener is loaded once with the settings: the site's threshold among them."""
    from types import SimpleNamespace

    from screening import api
    from service.settings import Settings

    loaded: list[tuple[object, ...]] = []
    monkeypatch.setattr(api.Screener, "load", classmethod(lambda cls, *args: loaded.append(args) or "screener"))
    request = SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace()))
    settings = Settings(screening_risk_threshold=0.0147)
    assert api.get_screener(request, settings) == "screener"  # type: ignore[arg-type]
    assert loaded == [(settings.screening_alert_budget, settings.screening_max_age_years, None, 0.0147)]
    assert api.get_screener(request, settings) == "screener" and len(loaded) == 1  # type: ignore[arg-type]  # kept
